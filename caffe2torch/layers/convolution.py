"""Convolution: N spatial axes, group, dilation, per-axis kernel/pad/stride, bias_term, axis."""
from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn

from caffe2torch.ir.graph import LayerNode
from caffe2torch.layers._common import expect_bottoms
from caffe2torch.layers._spatial import conv_geometry
from caffe2torch.layers.registry import Converter, register_converter, shape_error
from caffe2torch.modules.conv import AxisConv

Shape = tuple[int, ...]
_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


def conv_output(size: int, kernel: int, pad: int, stride: int, dilation: int) -> int:
    return (size + 2 * pad - (dilation * (kernel - 1) + 1)) // stride + 1


def with_axis(conv: nn.Module, axis: int, bias_term: bool) -> nn.Module:
    conv.caffe_blobs = ("weight", "bias") if bias_term else ("weight",)
    return conv if axis == 1 else AxisConv(conv, axis)


@register_converter
class ConvolutionConverter(Converter):
    caffe_type = "Convolution"

    def output_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        expect_bottoms(layer, inputs, 1, -1)
        outputs = []
        for shape in inputs:
            g = conv_geometry(layer, shape)
            if shape[g.axis] != inputs[0][g.axis]:
                raise shape_error(layer, "all bottoms must have the same number of channels")
            spatial = tuple(conv_output(n, k, p, s, d) for n, k, p, s, d in
                            zip(shape[g.axis + 1:], g.kernel, g.pad, g.stride, g.dilation))
            if min(spatial) <= 0:
                raise shape_error(layer, f"input {tuple(shape)} is smaller than the dilated "
                                         f"kernel {g.kernel} (pad {g.pad}): output {spatial}")
            outputs.append((*shape[:g.axis], g.num_output, *spatial))
        return outputs

    def unsupported(self, layer: LayerNode) -> list[str]:
        if len(layer.param.bottom) > 1:
            return [f"{len(layer.param.bottom)} bottoms sharing one filter bank"]
        return []

    def blob_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        g = conv_geometry(layer, inputs[0])
        weight = (g.num_output, inputs[0][g.axis] // g.group, *g.kernel)
        return [weight, (g.num_output,)] if g.bias_term else [weight]

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> nn.Module:
        g = conv_geometry(layer, inputs[0])
        if len(g.kernel) not in _CONV:
            raise shape_error(layer, f"{len(g.kernel)} spatial axes; torch convolves 1 to 3")
        conv = _CONV[len(g.kernel)](inputs[0][g.axis], g.num_output, g.kernel, stride=g.stride,
                                    padding=g.pad, dilation=g.dilation, groups=g.group,
                                    bias=g.bias_term)
        return with_axis(conv, g.axis, g.bias_term)

    def flops(self, layer, inputs, outputs) -> int:
        g = conv_geometry(layer, inputs[0])
        per_output = inputs[0][g.axis] // g.group * math.prod(g.kernel)
        return int(math.prod(outputs[0]) * per_output)
