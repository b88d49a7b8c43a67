"""Show a net without converting it: layer table with shapes, parameters and MACs, inputs,
outputs, every unsupported layer, and with -w what the caffemodel holds and which layers bind.

A net with unsupported layers is still shown (exit status 0): the problems are listed and the
shapes after them are marked ?.

examples:
  caffe2torch info deploy.prototxt
  caffe2torch info deploy.prototxt -w net.caffemodel
  caffe2torch info train_val.prototxt --phase TRAIN --input-shape data=1,3,227,227 --json
  caffe2torch info --zoo vgg_face
"""
from __future__ import annotations

import argparse
import json
import sys

from caffe2torch.commands.build import resolve_net
from caffe2torch.options import (add_net_arguments, add_zoo_argument, parse_input_shapes,
                                 parse_variants)

NAME = "info"
HELP = "show the layers, shapes, parameters, MACs and problems of a net (and its caffemodel)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_net_arguments(parser)
    add_zoo_argument(parser)
    parser.add_argument("--json", action="store_true", help="print the findings as JSON")


def run(args: argparse.Namespace) -> int:
    from caffe2torch.research.netinfo import describe_net, format_info

    info = describe_net(resolve_net(args), args.weights,
                        input_shapes=parse_input_shapes(args.input_shape), phase=args.phase,
                        variants=parse_variants(args.variant))
    if args.json:
        print(json.dumps(info.as_dict(), indent=1))
    else:
        print(format_info(info, all_weights=args.verbose))
    if args.verbose:
        for note in info.notes:
            print(f"note: {note}", file=sys.stderr)
    return 0
