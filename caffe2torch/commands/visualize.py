r"""Figures for one image: the first convolution's filters, a layer's activation channels, and
a heatmap (the layer's channel mean, upsampled and blended over the image), as PNG files.

examples:
  caffe2torch visualize deploy.prototxt -w net.caffemodel --image cat.jpg -o figures/
  caffe2torch visualize --zoo vgg_face -w VGG_FACE.caffemodel --image face.jpg -o figures/ \
      --layer pool5 --filters conv1_1
"""
from __future__ import annotations

import argparse
import sys

from caffe2torch.commands.build import resolve_net
from caffe2torch.options import add_net_arguments, add_preprocess_arguments, add_zoo_argument

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
    add_preprocess_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from caffe2torch.research._options import build_for_images
    from caffe2torch.research.figures import visualize

    net, prep = build_for_images(args, resolve_net(args))
    figures = visualize(net, args.image, args.output, layer=args.layer, filters=args.filters,
                        preprocessing=prep, max_channels=args.channels, alpha=args.alpha)
    for path in (figures.filters, figures.activations, figures.heatmap):
        if path is not None:
            print(path)
    print(f"layer '{figures.layer}', filters of '{figures.filter_layer}'", file=sys.stderr)
    return 0
