r"""Figures for one image: the first convolution's filters, a layer's activation channels, and
a heatmap (the layer's channel mean, upsampled and blended over the image), as PNG files.

With --class N (or --class top, the most probable class) a fourth figure puts a Grad-CAM map
beside the heatmap: the evidence for that class at the layer (the class score's gradients,
averaged over each channel, weight the channels; ReLU of the sum), with a colour bar. --dpi
enlarges every figure (100: one image pixel per figure pixel).

examples:
  caffe2torch visualize deploy.prototxt -w net.caffemodel --image cat.jpg -o figures/
  caffe2torch visualize --zoo vgg_face -w VGG_FACE.caffemodel --image face.jpg -o figures/ \
      --layer pool5 --filters conv1_1
  caffe2torch visualize --zoo bvlc_alexnet -w bvlc_alexnet.caffemodel --image cat.jpg \
      -o figures/ --layer conv5 --class top --dpi 200
"""
from __future__ import annotations

import argparse
import sys

from caffe2torch.commands.build import resolve_net
from caffe2torch.options import (
    add_device_arguments,
    add_net_arguments,
    add_preprocess_arguments,
    add_zoo_argument,
)

NAME = "visualize"
HELP = "write filter, activation and heatmap figures (PNG) for an image"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_net_arguments(parser, weights_required=True)
    add_zoo_argument(parser)
    parser.add_argument("--image", metavar="IMG", required=True, help="the input image")
    parser.add_argument("-o", "--output", metavar="DIR", required=True,
                        help="folder for the PNG files")
    parser.add_argument("--layer", help="layer (or blob) for the activations and the heatmap "
                                        "(default: the last layer with a spatial output)")
    parser.add_argument("--filters", metavar="LAYER",
                        help="convolution whose filters to show (default: the first)")
    parser.add_argument("--channels", type=int, default=64,
                        help="how many activation channels to show (default 64)")
    parser.add_argument("--alpha", type=float, default=0.5, help="heatmap opacity (default 0.5)")
    parser.add_argument("--class", dest="class_index", metavar="N|top", type=_class_option,
                        help="also draw a Grad-CAM map of class N (or the top class) at --layer")
    parser.add_argument("--dpi", type=int, default=100,
                        help="figure resolution (default 100: one image pixel per figure pixel)")
    add_device_arguments(parser)
    add_preprocess_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from caffe2torch.research._options import build_for_images, zoo_entry
    from caffe2torch.research.figures import check_output_dir, visualize
    from caffe2torch.zoo import entry_for_prototxt

    check_output_dir(args.output)
    net_path = resolve_net(args)
    net, prep = build_for_images(args, net_path)
    entry = zoo_entry(args) or entry_for_prototxt(net_path)
    figures = visualize(net, args.image, args.output, layer=args.layer, filters=args.filters,
                        preprocessing=prep, max_channels=args.channels, alpha=args.alpha,
                        class_index=args.class_index, dpi=args.dpi,
                        labels=entry.labels if entry is not None else None)
    for path in (figures.filters, figures.activations, figures.heatmap, figures.gradcam):
        if path is not None:
            print(path)
    print(f"layer '{figures.layer}', filters of '{figures.filter_layer}'", file=sys.stderr)
    if figures.gradcam is not None:
        named = f" ({figures.class_label})" if figures.class_label else ""
        print(f"Grad-CAM of class {figures.class_index}{named}", file=sys.stderr)
    return 0


def _class_option(text: str) -> int | str:
    if text == "top":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}': expected a class index or 'top'") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"'{text}': a class index is 0 or more")
    return value
