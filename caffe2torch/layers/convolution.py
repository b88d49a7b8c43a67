"""Convolution: N spatial axes, group, dilation, per-axis kernel/pad/stride, bias_term, axis, and
several bottom/top pairs sharing one filter bank (each bottom convolved on its own)."""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from torch import nn

from caffe2torch.ir.graph import LayerNode
from caffe2torch.layers._common import expect_bottoms
from caffe2torch.layers._spatial import ConvGeometry, conv_geometry, zero_dilation_note
from caffe2torch.layers.registry import Converter, register_converter, shape_error
from caffe2torch.modules.conv import CONV, EACH_CONV, AxisConv, PointConv, ZeroDilation

Shape = tuple[int, ...]


def conv_output(size: int, kernel: int, pad: int, stride: int, dilation: int) -> int:
    return (size + 2 * pad - (dilation * (kernel - 1) + 1)) // stride + 1


def check_fits(layer: LayerNode, shape: Shape, g: ConvGeometry) -> None:
    """The dilated kernel must fit in the padded input.

    Caffe's own division truncates toward zero, so where it does not fit by less than a stride
    Caffe still gives one output that reads zeros past the far edge (and an empty or negative
    size otherwise); we refuse both as a shape error rather than reproduce that accident.
    """
    spatial = shape[g.axis + 1:]
    extent = tuple(d * (k - 1) + 1 for k, d in zip(g.kernel, g.dilation))
    if any(n + 2 * p < e for n, p, e in zip(spatial, g.pad, extent)):
        raise shape_error(layer, f"input {tuple(shape)} is smaller than the dilated kernel "
                                 f"{extent} with pad {g.pad} on spatial axes {tuple(spatial)}")


def conv_like_shapes(layer: LayerNode, inputs: Sequence[Shape],
                     spatial_rule: Callable[[Shape, ConvGeometry], tuple[int, ...]]) -> list[Shape]:
    """Caffe's BaseConvolutionLayer::Reshape: every bottom has bottom 0's shape, one top each."""
    expect_bottoms(layer, inputs, 1, -1)
    n_tops = len(layer.tops) or len(layer.param.top)
    if n_tops != len(inputs):
        raise shape_error(layer, f"has {len(inputs)} bottom(s) and {n_tops} top(s); Caffe pairs "
                                 "each bottom with one top")
    for i, shape in enumerate(inputs[1:], 1):
        if tuple(shape) != tuple(inputs[0]):
            raise shape_error(layer, f"bottom {i} has shape {tuple(shape)}; all bottoms must "
                                     f"have the shape of bottom 0, {tuple(inputs[0])}")
    g = conv_geometry(layer, inputs[0])
    if len(g.kernel) not in CONV and g.kernel:
        raise shape_error(layer, f"{len(g.kernel)} spatial axes; torch convolves 1 to 3 (CPU "
                                 "Caffe's N-D im2col runs more; not reproduced here)")
    spatial = spatial_rule(tuple(inputs[0]), g)
    out = (*inputs[0][:g.axis], g.num_output, *spatial)
    if spatial and min(spatial) <= 0:
        raise shape_error(layer, f"input {tuple(inputs[0])} gives an empty output {out}")
    return [out] * len(inputs)


def with_axis(conv: nn.Module, axis: int, bias_term: bool,
              zero_dilation: tuple[int, ...] = ()) -> nn.Module:
    conv.caffe_blobs = ("weight", "bias") if bias_term else ("weight",)
    if zero_dilation:
        conv = ZeroDilation(conv, zero_dilation)
    return conv if axis == 1 else AxisConv(conv, axis)


def _conv_spatial(layer: LayerNode) -> Callable[[Shape, ConvGeometry], tuple[int, ...]]:
    def rule(shape: Shape, g: ConvGeometry) -> tuple[int, ...]:
        check_fits(layer, shape, g)
        return tuple(conv_output(n, k, p, s, d) for n, k, p, s, d in
                     zip(shape[g.axis + 1:], g.kernel, g.pad, g.stride, g.dilation))
    return rule


@register_converter
class ConvolutionConverter(Converter):
    caffe_type = "Convolution"

    def output_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        return conv_like_shapes(layer, inputs, _conv_spatial(layer))

    def blob_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        g = conv_geometry(layer, inputs[0])
        weight = (g.num_output, inputs[0][g.axis] // g.group, *g.kernel)
        return [weight, (g.num_output,)] if g.bias_term else [weight]

    def accepted(self, layer: LayerNode) -> list[str]:
        return zero_dilation_note(layer)

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> nn.Module:
        g = conv_geometry(layer, inputs[0])
        if not g.kernel:
            return PointConv(inputs[0][g.axis], g.num_output, g.group, g.bias_term, False)
        zero = tuple(i for i, d in enumerate(g.dilation) if d == 0)
        classes = CONV if len(inputs) == 1 or g.axis != 1 or zero else EACH_CONV
        conv = classes[len(g.kernel)](inputs[0][g.axis], g.num_output, g.kernel,
                                      stride=g.stride, padding=g.pad,
                                      dilation=tuple(d or 1 for d in g.dilation),
                                      groups=g.group, bias=g.bias_term)
        return with_axis(conv, g.axis, g.bias_term, zero)

    def flops(self, layer, inputs, outputs) -> int:
        g = conv_geometry(layer, inputs[0])
        per_output = inputs[0][g.axis] // g.group * math.prod(g.kernel)
        return int(sum(math.prod(out) for out in outputs) * per_output)
