r"""Classify images: the top classes of each, with label names and probabilities.

Each image is preprocessed as the net expects (the model zoo manifest, else the prototxt's Data
layer, else the preprocessing options). The scores are the net's output (--blob to choose
another): a Softmax's probabilities as they are, other scores through a softmax (said on
stderr).

Labels: --labels FILE has one class name per line, line 1 naming class 0 (Caffe's
synset_words.txt works as it is); without it the zoo entry's labels are used (the ImageNet
entries ship the 1000 ILSVRC-2012 synsets), else class indices are shown.

examples:
  caffe2torch classify --zoo bvlc_alexnet -w bvlc_alexnet.caffemodel --image cat.jpg
  caffe2torch classify --zoo open_nsfw -w resnet_50_1by2_nsfw.caffemodel --image a.jpg b.jpg \
      --top 2 --json
  caffe2torch classify deploy.prototxt -w net.caffemodel --image x.jpg --labels labels.txt \
      --mean 104,117,123
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

NAME = "classify"
HELP = "classify images: the top classes with label names and probabilities"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_net_arguments(parser, weights_required=True)
    add_zoo_argument(parser)
    parser.add_argument("--image", metavar="IMG", nargs="+", required=True,
                        help="the image(s) to classify")
    parser.add_argument("--top", type=int, default=5, help="classes shown per image (default 5)")
    parser.add_argument("--labels", metavar="FILE",
                        help="class names, one per line from class 0 (default: the zoo entry's)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--blob", help="the blob with the class scores (default: the net's "
                                       "only output)")
    add_device_arguments(parser)
    add_optimize_argument(parser)
    add_preprocess_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from caffe2torch.preprocess import load_image
    from caffe2torch.research._options import build_for_images, optimized_for, zoo_entry
    from caffe2torch.research.classification import (
        check_class_labels,
        check_top,
        class_count,
        classify,
        format_classification,
        output_blob,
        read_class_labels,
    )
    from caffe2torch.zoo import entry_for_prototxt

    check_top(args.top)
    labels = read_class_labels(args.labels) if args.labels else None
    for image in args.image:  # every image readable before the net is built
        load_image(image)
    net_path = resolve_net(args)
    entry = zoo_entry(args) or entry_for_prototxt(net_path)
    source = f"labels file {args.labels}"
    if labels is None and entry is not None and entry.labels is not None:
        labels, source = entry.labels, f"model zoo entry '{entry.id}'"
    net, prep = build_for_images(args, net_path)
    blob = args.blob or output_blob(net)
    if labels is not None:
        check_class_labels(labels, class_count(net, blob), source)
    if blob in net.caffe.blob_nodes:  # else classify() names the missing blob
        net = optimized_for(args, net, keep=[blob])
    result = classify(net, args.image, top=args.top, labels=labels, preprocessing=prep,
                      blob=blob)
    if args.json:
        print(json.dumps({"net": str(net_path), **result.to_dict(),
                          "labels": source if labels is not None else None,
                          "preprocessing": prep.to_dict()}, indent=2))
    else:
        print(format_classification(result))
    scores = ("a softmax of its scores" if result.softmax_applied
              else "its Softmax probabilities")
    print(f"{len(result.images)} image(s); blob '{result.blob}': {result.classes} classes, "
          f"{scores}", file=sys.stderr)
    if labels is None:
        why = entry.manifest.get("labels_note") if entry is not None else None
        print(f"caffe2torch: note: no label names ({why or 'none known for this net'}); "
              "showing class indices; pass --labels FILE (one name per line)", file=sys.stderr)
    return 0
