r"""Run an SSD-style detection net (one with a DetectionOutput layer) on an image.

The image is preprocessed as the net expects (the model zoo manifest, else the prototxt's Data
layer, else the preprocessing options); the DetectionOutput rows with a score >= --threshold
are printed as a table (or JSON) with the boxes in the image's pixels (x1 y1 x2 y2, clipped to
the image), and with -o drawn on the photograph.

Labels: --labels FILE has one class name per line, line 1 naming label 0 -- the background
class of SSD nets, which the detector never reports but which keeps its place -- or is an SSD
LabelMap prototxt (labelmap_voc.prototxt); without it the zoo entry's labels are used, else the
label ids are shown.

examples:
  caffe2torch detect --zoo res10_ssd_face -w res10_300x300_ssd_iter_140000.caffemodel \
      --image people.jpg -o faces.png
  caffe2torch detect --zoo mobilenet_ssd -w MobileNetSSD_deploy.caffemodel --image street.jpg \
      --threshold 0.3 --json
  caffe2torch detect deploy.prototxt -w net.caffemodel --image x.jpg --labels labels.txt \
      --size 300x300 --mean 127.5 --scale 0.007843
"""
from __future__ import annotations

import argparse
import json
import sys

from caffe2torch.commands.build import resolve_net
from caffe2torch.options import (
    add_device_arguments,
    add_net_arguments,
    add_optimize_argument,
    add_preprocess_arguments,
    add_zoo_argument,
)

NAME = "detect"
HELP = "run a detection net (SSD DetectionOutput) on an image; print and draw the boxes"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_net_arguments(parser, weights_required=True)
    add_zoo_argument(parser)
    parser.add_argument("--image", metavar="IMG", required=True, help="the photograph")
    parser.add_argument("--threshold", type=float, default=0.5,
                        help="smallest score shown (default 0.5)")
    parser.add_argument("--labels", metavar="FILE",
                        help="class names, one per line from label 0 (the background), or a "
                             "LabelMap prototxt (default: the zoo entry's labels)")
    parser.add_argument("-o", "--output", metavar="IMG",
                        help="write the photograph with the boxes drawn (.png, .jpg, ...)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--blob", help="the blob with the detections (default: the top of the "
                                       "net's DetectionOutput layer)")
    add_device_arguments(parser)
    add_optimize_argument(parser)
    add_preprocess_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from caffe2torch.preprocess import load_image
    from caffe2torch.research._options import build_for_images, optimized_for, zoo_entry
    from caffe2torch.research.detection import (
        background_label,
        check_image_output,
        check_labels,
        check_threshold,
        detect,
        detection_blob,
        draw_detections,
        format_detections,
        num_classes,
        read_labels,
    )
    from caffe2torch.zoo import entry_for_prototxt

    threshold = check_threshold(args.threshold)
    if args.output:
        check_image_output(args.output, args.image)
    labels = read_labels(args.labels) if args.labels else None
    picture = load_image(args.image)
    net_path = resolve_net(args)
    net, prep = build_for_images(args, net_path)
    graph = net.caffe.graph
    if labels is not None:
        check_labels(labels, num_classes(graph), f"labels file {args.labels}",
                     background_label(graph))
    else:
        entry = zoo_entry(args) or entry_for_prototxt(net_path)
        labels = entry.manifest.get("labels") if entry is not None else None
    net = optimized_for(args, net, keep=[detection_blob(graph, args.blob)])
    found = detect(net, picture, preprocessing=prep, threshold=threshold, labels=labels,
                   blob=args.blob)
    if args.json:
        report = {"image": str(args.image), "net": str(net_path), **found.to_dict(),
                  "preprocessing": prep.to_dict()}
        print(json.dumps(report, indent=2))
    elif found.detections:
        print(format_detections(found.detections))
    print(f"{len(found.detections)} detection(s) with score >= {threshold:g} in {args.image} "
          f"({found.image_size[0]}x{found.image_size[1]}; blob '{found.blob}', "
          f"{found.rows} row(s))", file=sys.stderr)
    if args.output:
        draw_detections(picture, found.detections).save(args.output)
        print(f"wrote {args.output}", file=sys.stderr)
    return 0
