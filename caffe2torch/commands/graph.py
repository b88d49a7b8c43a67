"""Draw the layer graph: layers as boxes, blobs as edges labelled with their shapes.

The format follows the extension: .svg, .png or .pdf (drawn with matplotlib, no graphviz
needed) or .dot (graphviz text). In-place layers (ReLU, BatchNorm, Scale...) are folded into
the box that feeds them unless --no-fold. Unsupported layers are drawn in red.

examples:
  caffe2torch graph deploy.prototxt -o net.svg
  caffe2torch graph resnet101_deploy.prototxt -o resnet101.png
  caffe2torch graph deploy.prototxt -o net.dot && dot -Tpdf net.dot -o net.pdf
  caffe2torch graph deploy.prototxt -o net.svg --engine dot   # graphviz from PATH
"""
from __future__ import annotations

import argparse
import sys

from caffe2torch.commands.build import resolve_net
from caffe2torch.options import (add_net_arguments, add_zoo_argument, parse_input_shapes,
                                 parse_variants)

NAME = "graph"
HELP = "draw the layer graph with blob shapes (.svg, .png, .pdf or .dot)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_net_arguments(parser, weights=False)
    add_zoo_argument(parser)
    parser.add_argument("-o", "--output", metavar="OUT", required=True,
                        help="the drawing: .svg, .png, .pdf or .dot")
    parser.add_argument("--no-fold", action="store_true",
                        help="one box per layer, in-place layers included")
    parser.add_argument("--engine", choices=["matplotlib", "dot"], default="matplotlib",
                        help="renderer for .svg/.png/.pdf (default matplotlib)")
    parser.add_argument("--dpi", type=int, default=100, help="PNG resolution (default 100)")


def run(args: argparse.Namespace) -> int:
    from caffe2torch.research.graphing import draw_graph
    from caffe2torch.research.netinfo import describe_graph

    args.weights = None
    graph = describe_graph(resolve_net(args), parse_input_shapes(args.input_shape),
                           phase=args.phase, variants=parse_variants(args.variant))
    written = draw_graph(graph, args.output, fold_inplace=not args.no_fold, engine=args.engine,
                         dpi=args.dpi)
    for problem in graph.problems:
        print(f"note: {problem}", file=sys.stderr)
    print(f"wrote {written} ({len(graph.layers)} layers)", file=sys.stderr)
    return 0
