"""``.onnx``: torch.onnx's TorchScript-based exporter on the net's ``torch.export`` program.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch

from caffe2torch.build import CaffeNet
from caffe2torch.errors import Caffe2TorchError
from caffe2torch.export.registry import PathLike, register_exporter
from caffe2torch.export.traced import (
    _batch_inputs,
    _dynamic_inputs,
    _exported_program,
    _quiet_tracing,
    check_traceable,
)


@register_exporter(".onnx")
def export_onnx(net: CaffeNet, path: PathLike, *, opset: int = 17,
                dynamic_batch: bool = True) -> Path:
    """ONNX by torch.onnx's TorchScript-based exporter (offline, no onnxscript needed), run on
    the net's ``torch.export`` program, in which sizes that modules compute from input shapes
    (global pooling kernels...) are constants. Inputs and outputs keep their Caffe blob names;
    the batch axis is dynamic when the net allows it (see :func:`export_program`)."""
    path = Path(path)
    info = net.caffe
    check_traceable(net, "ONNX")
    program, dynamic = _exported_program(net, dynamic_batch)
    dynamic_axes = None
    if dynamic:
        dynamic_axes = {name: {0: "N"} for name, dyn in
                        zip(info.input_names, _dynamic_inputs(net)) if dyn}
        dynamic_axes.update({name: {0: "N"} for name in info.output_names})
    module = program.module()
    module.train = lambda mode=True: module  # torch.onnx sets eval mode; programs refuse train()
    with _quiet_tracing(), torch.no_grad(), _onnx_avg_pool_divisor(opset):
        torch.onnx.export(module, _batch_inputs(net, dynamic), str(path), dynamo=False,
                          opset_version=opset, input_names=info.input_names,
                          output_names=info.output_names, dynamic_axes=dynamic_axes)
    return path


@contextlib.contextmanager
def _onnx_avg_pool_divisor(opset: int) -> Iterator[None]:
    """torch.onnx's TorchScript exporter drops ``avg_pool*d``'s ``divisor_override`` without a
    word (torch 2.x), which CaffePool2d uses to sum windows; during our export these symbolics
    keep it: AveragePool (padding counted) times ``prod(kernel) / divisor``."""
    names = [f"aten::avg_pool{dims}d" for dims in (1, 2, 3)]
    for dims, name in enumerate(names, 1):
        torch.onnx.register_custom_op_symbolic(name, _avg_pool_symbolic(dims), opset)
    try:
        yield
    finally:
        for name in names:
            torch.onnx.unregister_custom_op_symbolic(name, opset)


def _avg_pool_symbolic(dims: int) -> Callable:
    from torch.onnx import symbolic_helper as helper

    def each(values: Sequence[int], default: Sequence[int]) -> list[int]:
        values = list(values) or list(default)
        return values * dims if len(values) == 1 else values

    @helper.parse_args("v", "is", "is", "is", "i", "i", "none")
    def symbolic(g, x, kernel, stride, padding, ceil_mode, count_include_pad, divisor=None):
        kernel = each(kernel, [])
        stride, padding = each(stride, kernel), each(padding, [0])
        if divisor is not None and not helper._is_none(divisor):
            divisor = helper._maybe_get_const(divisor, "i")
            if helper._is_value(divisor) or ceil_mode:
                raise Caffe2TorchError(f"avg_pool{dims}d with a divisor_override and "
                                       f"ceil_mode, or a divisor that is not constant, has no "
                                       f"exact ONNX form here")
            count_include_pad = 1
        else:
            divisor = None
        out = g.op("AveragePool", x, ceil_mode_i=ceil_mode, count_include_pad_i=count_include_pad,
                   kernel_shape_i=kernel, pads_i=padding * 2, strides_i=stride)
        if divisor is None or math.prod(kernel) == divisor:
            return out
        scale = torch.tensor(math.prod(kernel) / divisor, dtype=torch.float32)
        return g.op("Mul", out, g.op("Constant", value_t=scale))

    return symbolic
