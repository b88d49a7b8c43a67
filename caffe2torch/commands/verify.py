"""Check the conversion layer by layer against OpenCV's Caffe importer (OpenCV 4.x).

Both run the same input -- the preprocessed --image, else seeded random values -- and every
layer's output is compared: max absolute, max relative (to the largest |value| of OpenCV's
output) and mean absolute error. Exit status 1 when a layer is over the tolerance. Layer types
where OpenCV is known to differ from Caffe (LRN on few channels, MVN) carry a note.

examples:
  caffe2torch verify deploy.prototxt -w net.caffemodel
  caffe2torch verify deploy.prototxt -w net.caffemodel --image cat.jpg --tolerance 1e-5
  caffe2torch verify --zoo vgg_face -w VGG_FACE.caffemodel --image face.jpg
"""
from __future__ import annotations

import argparse
import math

from caffe2torch.commands.build import resolve_net
from caffe2torch.errors import Caffe2TorchError
from caffe2torch.options import (
    add_device_arguments,
    add_net_arguments,
    add_preprocess_arguments,
    add_zoo_argument,
    given_preprocess_options,
    parse_input_shapes,
    parse_variants,
)

NAME = "verify"
HELP = "compare every layer's output with OpenCV's Caffe importer; exit 1 over the tolerance"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_net_arguments(parser, weights_required=True)
    add_zoo_argument(parser)
    parser.add_argument("--image", metavar="IMG", help="input image (default: random values)")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="largest relative error accepted per layer (default 1e-4)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random input")
    add_device_arguments(parser)
    add_preprocess_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from caffe2torch.api import load_graph
    from caffe2torch.devices import resolve_placement
    from caffe2torch.research._options import preprocessing_from_args
    from caffe2torch.research.verification import format_report, verify

    check_options(args)
    resolve_placement(args.device, args.dtype)  # a missing device fails before any work
    net = resolve_net(args)
    shapes = parse_input_shapes(args.input_shape)
    variants = parse_variants(args.variant)
    prep = None
    if args.image:
        prep = preprocessing_from_args(args, load_graph(net, shapes, phase=args.phase,
                                                        variants=variants))
    report = verify(net, args.weights, image=args.image, preprocessing=prep,
                    tolerance=args.tolerance, seed=args.seed, input_shapes=shapes,
                    phase=args.phase, device=args.device, dtype=args.dtype, variants=variants)
    print(format_report(report))
    return 0 if report.passed else 1


def check_options(args: argparse.Namespace) -> None:
    """Refuse, before any work, options that would be ignored or mean nothing."""
    if not math.isfinite(args.tolerance) or args.tolerance < 0:
        raise Caffe2TorchError(f"--tolerance {args.tolerance:g}: expected a relative error >= 0 "
                               "(e.g. 1e-4)")
    given = given_preprocess_options(args)
    if given and not args.image:
        raise Caffe2TorchError(f"{', '.join(given)}: preprocessing applies to an image; give one "
                               "with --image (without it, verify feeds seeded random values)")
