"""Subcommands of the ``caffe2torch`` command line (one module each).

Each module imports only the standard library and :mod:`caffe2torch.options` at the top (torch
and the converters are imported when the command runs), so ``caffe2torch --help`` is fast.
"""
from __future__ import annotations

from caffe2torch.options import add_device_arguments, add_net_arguments, parse_input_shapes

__all__ = ["add_device_arguments", "add_net_arguments", "parse_input_shapes"]
