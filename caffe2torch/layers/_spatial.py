"""Convolution geometry as Caffe's BaseConvolutionLayer reads it (N spatial axes)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from caffe2torch.ir.graph import LayerNode
from caffe2torch.layers._common import canonical_axis
from caffe2torch.layers.registry import shape_error


@dataclass(frozen=True)
class ConvGeometry:
    axis: int
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    pad: tuple[int, ...]
    dilation: tuple[int, ...]
    group: int
    num_output: int
    bias_term: bool


def _repeated(layer: LayerNode, name: str, values: Sequence[int], n: int, default: int,
              hw: tuple[bool, bool, int, int]) -> tuple[int, ...]:
    has_h, has_w, h, w = hw
    if has_h or has_w:
        if n != 2 or values:
            raise shape_error(layer, f"{name}_h/{name}_w need 2 spatial axes and no '{name}' "
                                     f"list (got {n} axes, {name}={list(values)})")
        if name == "kernel" and not (has_h and has_w):
            raise shape_error(layer, "give both kernel_h and kernel_w")
        return (h, w)
    if not values:
        if name == "kernel":
            raise shape_error(layer, "no kernel_size (or kernel_h/kernel_w) given")
        return (default,) * n
    if len(values) not in (1, n):
        raise shape_error(layer, f"{name} has {len(values)} values; expected 1 or {n} "
                                 "(one per spatial axis)")
    return tuple(values) * n if len(values) == 1 else tuple(values)


def spatial_geometry(layer: LayerNode, input_shape: Sequence[int]):
    """(axis, kernel, stride, pad, dilation) from ``convolution_param``, as Caffe's
    BaseConvolutionLayer and Im2colLayer read them (no num_output / group checks)."""
    p = layer.param.convolution_param
    axis = canonical_axis(layer, p.axis, len(input_shape))
    n = len(input_shape) - axis - 1
    if n == 0:  # BaseConvolutionLayer with 0 spatial axes: a (grouped) x W^T + b per position
        return axis, (), (), (), ()
    kernel = _repeated(layer, "kernel", p.kernel_size, n, 0, (
        p.HasField("kernel_h"), p.HasField("kernel_w"), p.kernel_h, p.kernel_w))
    stride = _repeated(layer, "stride", p.stride, n, 1, (
        p.HasField("stride_h"), p.HasField("stride_w"), p.stride_h, p.stride_w))
    pad = _repeated(layer, "pad", p.pad, n, 0, (
        p.HasField("pad_h"), p.HasField("pad_w"), p.pad_h, p.pad_w))
    dilation = _repeated(layer, "dilation", p.dilation, n, 1, (False, False, 0, 0))
    if min(kernel) <= 0 or min(stride) <= 0:
        raise shape_error(layer, f"kernel {kernel} and stride {stride} must be positive")
    # dilation 0 is accepted, as Caffe does: every tap of that axis reads the same pixel
    return axis, kernel, stride, pad, dilation


def zero_dilation_note(layer: LayerNode) -> list[str]:
    """The note for a deliberate acceptance: ``dilation: 0`` (Caffe runs it; torch refuses)."""
    if 0 not in layer.param.convolution_param.dilation:
        return []
    return [("dilation 0: every kernel tap along that axis reads the same pixel, as in Caffe "
             "(computed with the kernel summed over that axis; torch's convolution refuses "
             "dilation 0)")]


def conv_geometry(layer: LayerNode, input_shape: Sequence[int]) -> ConvGeometry:
    p = layer.param.convolution_param
    axis, kernel, stride, pad, dilation = spatial_geometry(layer, input_shape)
    channels = input_shape[axis]
    if p.group <= 0 or channels % p.group or p.num_output % p.group:
        raise shape_error(layer, f"group {p.group} must divide both the input channels "
                                 f"({channels}) and num_output ({p.num_output})")
    if p.num_output <= 0:
        raise shape_error(layer, f"num_output is {p.num_output}; expected a positive number")
    return ConvGeometry(axis, kernel, stride, pad, dilation, p.group, p.num_output, p.bias_term)
