"""Subcommands of the ``caffe2torch`` command line (one module each) and their shared options."""
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


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    """``--device`` and ``--dtype``, for the commands that run a net."""
    group = parser.add_argument_group("device")
    group.add_argument("--device", default="cpu", metavar="DEVICE",
                       help="where the net runs: cpu (default), cuda, cuda:N or mps")
    group.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                       help="the net's precision (default float32); half precision computes "
                            "Softmax, BatchNorm, LRN, MVN and Normalize in float32 inside")
