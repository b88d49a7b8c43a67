"""``.ts`` / ``.torchscript``: ``torch.jit.trace`` of the plain fx forward.
"""
from __future__ import annotations

from pathlib import Path

import torch

from caffe2torch.build import CaffeNet
from caffe2torch.export.registry import PathLike, register_exporter
from caffe2torch.export.traced import (
    _eval_mode,
    _quiet_tracing,
    check_traceable,
    example_inputs,
    plain_module,
)


@register_exporter(".ts", ".torchscript")
def export_torchscript(net: CaffeNet, path: PathLike) -> Path:
    """``torch.jit.trace`` of the plain forward at the net's input shapes, saved with
    ``torch.jit.save``. The trace keeps size computations, so other batch sizes work wherever
    the modules compute from ``x.shape`` (as they do); recurrent layers (LSTM, RNN) are unrolled
    over the declared sequence length."""
    path = Path(path)
    check_traceable(net, "TorchScript")
    with _eval_mode(net), _quiet_tracing(), torch.no_grad():
        traced = torch.jit.trace(plain_module(net), example_inputs(net))
    torch.jit.save(traced, str(path))
    return path
