"""Command-line options the research commands share: the net, its zoo entry, preprocessing."""
from __future__ import annotations

import argparse
import logging

from caffe2torch.api import build, load_graph
from caffe2torch.build import CaffeNet
from caffe2torch.commands import parse_input_shapes
from caffe2torch.preprocess import Preprocessing, default_preprocessing, parse_mean, parse_size

log = logging.getLogger("caffe2torch")


def add_zoo_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--zoo", metavar="ID",
                        help="use the model zoo's prototxt and preprocessing for ID")


def add_preprocess_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "preprocessing", "defaults: the model zoo manifest, else the prototxt's Data layer "
        "transform_param, else BGR 0..255 at the input size without a mean")
    group.add_argument("--mean", metavar="B,G,R|FILE",
                       help="per-channel means in the net's channel order, or a "
                            "mean.binaryproto / .npy mean image")
    group.add_argument("--scale", type=float, help="multiply after the mean subtraction")
    group.add_argument("--raw-scale", type=float,
                       help="value of a white pixel before the mean (default 255)")
    group.add_argument("--size", metavar="N|HxW",
                       help="resize: N for the shorter side (aspect kept) or HxW exactly")
    group.add_argument("--crop", metavar="N|HxW", help="center crop after resizing")
    group.add_argument("--rgb", action="store_true",
                       help="the net takes RGB (Caffe nets usually take BGR)")


def add_optimize_argument(parser: argparse.ArgumentParser) -> None:
    """``--no-optimize``: run the net as built instead of :func:`caffe2torch.optimize`'s model
    (commands that run nets for their results use the optimised one by default)."""
    parser.add_argument("--no-optimize", dest="optimize", action="store_false",
                        help="run the plain converted net, not the inference-optimised one "
                             "(same results within 1e-5, slower)")


def optimized_for(args: argparse.Namespace, net: CaffeNet, keep=()) -> CaffeNet:
    """The net to run for ``args``: optimised (keeping the blobs ``keep`` names readable with
    ``outputs=``) unless ``--no-optimize`` was given. ``net`` is consumed: its modules move
    into the optimised model, so run only the returned one."""
    if not getattr(args, "optimize", True):
        return net
    from caffe2torch.passes import optimize
    return optimize(net, keep=keep, copy_modules=False)


def zoo_entry(args: argparse.Namespace):
    if not getattr(args, "zoo", None):
        return None
    from caffe2torch.zoo import get_entry
    return get_entry(args.zoo)


def preprocessing_from_args(args: argparse.Namespace, graph) -> Preprocessing:
    """The net's default preprocessing with the command line's overrides applied."""
    prep = default_preprocessing(graph, zoo_entry(args), load_mean_file=not args.mean)
    crop = parse_size(args.crop) if args.crop else None
    if isinstance(crop, int):
        crop = (crop, crop)
    prep = prep.replace(mean=parse_mean(args.mean) if args.mean else None, scale=args.scale,
                        raw_scale=args.raw_scale,
                        size=parse_size(args.size) if args.size else None, crop=crop,
                        channel_order="RGB" if args.rgb else None)
    if prep.source == "defaults" and not args.mean:
        log.warning("%s records no preprocessing (no zoo manifest, no Data layer); using %s; "
                    "pass --mean (and --scale) if the net was trained with them",
                    graph.definition.source, prep.describe())
    else:
        log.info("preprocessing: %s", prep.describe())
    return prep


def build_for_images(args: argparse.Namespace, net_path) -> tuple[CaffeNet, Preprocessing]:
    """Build the net (with ``args.weights``) for images preprocessed as the options say.

    The input is set to the preprocessed size when that is fixed (a crop or an exact resize),
    so shape inference checks that the net accepts it.
    """
    shapes = parse_input_shapes(args.input_shape)
    graph = load_graph(net_path, shapes, phase=args.phase)
    prep = preprocessing_from_args(args, graph)
    if len(graph.inputs) == 1 and not shapes:
        declared = graph.blobs[graph.inputs[0]].shape
        hw = prep.crop or (prep.size if isinstance(prep.size, tuple) else None)
        if declared is not None and len(declared) == 4 and hw is not None:
            shapes = {graph.blobs[graph.inputs[0]].name: (1, declared[1], *hw)}
    net = build(net_path, args.weights, input_shapes=shapes or None, phase=args.phase)
    return net, prep
