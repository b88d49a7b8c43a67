"""Convert a Caffe net and print its layer table.

examples:
  caffe2torch build deploy.prototxt -w net.caffemodel -o net.pt
  caffe2torch build --zoo vgg_face -w VGG_FACE.caffemodel -o vgg_face.safetensors
  caffe2torch build lenet_train_test.prototxt --input-shape data=64,1,28,28
"""
from __future__ import annotations

import argparse
import logging
import sys

from caffe2torch.errors import Caffe2TorchError, WeightsError
from caffe2torch.options import add_net_arguments, parse_input_shapes, parse_variants

log = logging.getLogger("caffe2torch")

NAME = "build"
HELP = "convert a net (and its weights), print the layer table, optionally write the result"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_net_arguments(parser)
    parser.add_argument("--zoo", metavar="ID", help="use the model zoo's prototxt for ID")
    parser.add_argument("-o", "--output", metavar="OUT",
                        help="write the converted model; the format follows the extension")
    parser.add_argument("--naming", choices=["caffe", "torchvision"], default="caffe",
                        help="parameter names in .pt/.safetensors output: the Caffe layer names "
                             "(default) or, for VGG-like nets, torchvision's VGG keys "
                             "(features.0.weight ... classifier.6.bias)")
    parser.add_argument("--lenient", action="store_true",
                        help="load the weights that fit and report the rest instead of failing")


def resolve_net(args: argparse.Namespace):
    """The prototxt to use: NET, or the zoo entry's.

    With ``--zoo``, weights that are not the published file (another size or checksum: fine-tuned
    or re-exported) are used all the same, with a warning; the build still checks that they fit.
    """
    if args.zoo and args.net:
        raise Caffe2TorchError("give either NET.prototxt or --zoo ID, not both")
    if args.zoo:
        from caffe2torch.zoo import get_entry
        entry = get_entry(args.zoo)
        weights = getattr(args, "weights", None)
        if weights:
            try:
                entry.verify_weights(weights)
            except WeightsError as err:
                log.warning("warning: %s; using it with --zoo %s's prototxt and preprocessing as "
                            "fine-tuned or re-exported weights", err, entry.id)
        return entry.prototxt
    if not args.net:
        raise Caffe2TorchError("no network given: pass NET.prototxt or --zoo ID")
    return args.net


def run(args: argparse.Namespace) -> int:
    from caffe2torch.api import build
    from caffe2torch.summary import format_table, summarize

    naming = getattr(args, "naming", "caffe")
    if args.output:
        from caffe2torch.export import check_output
        check_output(args.output, naming)
    if args.lenient and not args.weights:
        raise Caffe2TorchError("--lenient applies to loading weights; give them with -w")
    net = build(resolve_net(args), weights=args.weights,
                input_shapes=parse_input_shapes(args.input_shape), phase=args.phase,
                variants=parse_variants(args.variant), strict=not args.lenient)
    print(format_table(summarize(net.caffe.graph)))
    for note in net.caffe.notes:
        print(f"note: {note}", file=sys.stderr)
    report = net.caffe.weights_report
    if report is not None and not report.ok:
        print(str(report), file=sys.stderr)
        wanted = len(report.loaded) + len(report.missing) + len(report.mismatched)
        print(f"caffe2torch: warning: --lenient bound {len(report.loaded)} of the {wanted} "
              "layer(s) with parameters; the others keep their initial values",
              file=sys.stderr)
    if args.output:
        from caffe2torch.export import export
        written = export(net, args.output, naming=naming)
        print(f"wrote {written}", file=sys.stderr)
        if written.suffix.lower() == ".py":
            print(f"wrote {written.with_suffix('.pt')} (its weights)", file=sys.stderr)
    return 0
