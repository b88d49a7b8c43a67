"""Command-line options shared by the commands and the research helpers: the net, its zoo entry,
the input shapes and the preprocessing.

Only argparse and the standard library here, so ``caffe2torch --help`` stays fast; the parsing
of values that need numpy (means, sizes) happens when a command runs.
"""
from __future__ import annotations

import argparse

from caffe2torch.errors import Caffe2TorchError


def parse_input_shapes(values: list[str] | None) -> dict[str, tuple[int, ...]]:
    """``NAME=N,C,H,W`` strings -> ``{NAME: (N, C, H, W)}``."""
    shapes = {}
    for value in values or []:
        name, _, dims = value.partition("=")
        try:
            shapes[name] = tuple(int(d) for d in dims.replace("x", ",").split(","))
        except ValueError:
            raise Caffe2TorchError(f"--input-shape '{value}': expected NAME=N,C,H,W") from None
        if not name or not dims:
            raise Caffe2TorchError(f"--input-shape '{value}': expected NAME=N,C,H,W")
    return shapes


def add_net_arguments(parser: argparse.ArgumentParser, weights_required: bool = False,
                      weights: bool = True) -> None:
    """The options every command that reads a net shares (``weights=False``: no ``-w``)."""
    parser.add_argument("net", metavar="NET.prototxt", nargs="?",
                        help="Caffe network definition (V0, V1 or V2 prototxt)")
    if weights:
        parser.add_argument("-w", "--weights", metavar="NET.caffemodel",
                            required=weights_required,
                            help="trained weights (.caffemodel or .caffemodel.h5)")
    parser.add_argument("--input-shape", metavar="NAME=N,C,H,W", action="append",
                        help="shape of an input the file leaves open, or to override (repeatable)")
    parser.add_argument("--phase", default="TEST", choices=["TEST", "TRAIN"],
                        help="which layers to keep by include/exclude rules (default TEST)")
    parser.add_argument("--variant", metavar="TYPE=NAME", action="append",
                        help="a fork's variant of a layer type (or LAYER=NAME for one layer) "
                             "that the prototxt cannot tell apart, e.g. PriorBox=faceboxes "
                             "(repeatable; the support table lists the variants)")


def parse_variants(values: list[str] | None) -> dict[str, str]:
    """``TYPE=NAME`` (or ``LAYER=NAME``) strings -> ``{TYPE: NAME}``."""
    variants = {}
    for value in values or []:
        key, _, name = value.partition("=")
        if not key or not name:
            raise Caffe2TorchError(f"--variant '{value}': expected TYPE=NAME or LAYER=NAME, "
                                   "e.g. PriorBox=faceboxes")
        variants[key] = name
    return variants


def add_optimize_argument(parser: argparse.ArgumentParser) -> None:
    """``--no-optimize``: run the net as built instead of :func:`caffe2torch.optimize`'s model
    (commands that run nets for their results use the optimised one by default)."""
    parser.add_argument("--no-optimize", dest="optimize", action="store_false",
                        help="run the plain converted net, not the inference-optimised one "
                             "(same results within 1e-5, slower)")


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    """``--device`` and ``--dtype``, for the commands that run a net."""
    group = parser.add_argument_group("device")
    group.add_argument("--device", default="cpu", metavar="DEVICE",
                       help="where the net runs: cpu (default), cuda, cuda:N or mps")
    group.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                       help="the net's precision (default float32); half precision computes "
                            "Softmax, BatchNorm, LRN, MVN and Normalize in float32 inside")


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


PREPROCESS_OPTIONS = ("mean", "scale", "raw_scale", "size", "crop", "rgb")


def given_preprocess_options(args: argparse.Namespace) -> list[str]:
    """The preprocessing options given on the command line, as flags (``--mean``...)."""
    return [f"--{name.replace('_', '-')}" for name in PREPROCESS_OPTIONS
            if getattr(args, name, None) not in (None, False)]
