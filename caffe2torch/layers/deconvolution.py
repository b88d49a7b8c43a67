"""Deconvolution (DeconvolutionLayer): torch's ConvTranspose with Caffe's convolution_param.

Caffe stores the weight as (C_in, num_output / group, *kernel), which is torch's ConvTranspose
layout; out = stride * (in - 1) + dilation * (kernel - 1) + 1 - 2 * pad per spatial axis.
Several bottom/top pairs share one filter bank, as for Convolution.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn

from caffe2torch.ir.graph import LayerNode
from caffe2torch.layers._spatial import ConvGeometry, conv_geometry, zero_dilation_note
from caffe2torch.layers.convolution import conv_like_shapes, with_axis
from caffe2torch.layers.registry import Converter, register_converter
from caffe2torch.modules.conv import DECONV, EACH_DECONV, PointConv

Shape = tuple[int, ...]


def deconv_output(size: int, kernel: int, pad: int, stride: int, dilation: int) -> int:
    return stride * (size - 1) + dilation * (kernel - 1) + 1 - 2 * pad


def _deconv_spatial(shape: Shape, g: ConvGeometry) -> tuple[int, ...]:
    return tuple(deconv_output(n, k, p, s, d) for n, k, p, s, d in
                 zip(shape[g.axis + 1:], g.kernel, g.pad, g.stride, g.dilation))


@register_converter
class DeconvolutionConverter(Converter):
    caffe_type = "Deconvolution"

    def output_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        return conv_like_shapes(layer, inputs, _deconv_spatial)

    def blob_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        g = conv_geometry(layer, inputs[0])
        weight = (inputs[0][g.axis], g.num_output // g.group, *g.kernel)
        return [weight, (g.num_output,)] if g.bias_term else [weight]

    def accepted(self, layer: LayerNode) -> list[str]:
        return zero_dilation_note(layer)

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> nn.Module:
        g = conv_geometry(layer, inputs[0])
        if not g.kernel:
            return PointConv(inputs[0][g.axis], g.num_output, g.group, g.bias_term, True)
        zero = tuple(i for i, d in enumerate(g.dilation) if d == 0)
        classes = DECONV if len(inputs) == 1 or g.axis != 1 or zero else EACH_DECONV
        deconv = classes[len(g.kernel)](inputs[0][g.axis], g.num_output, g.kernel,
                                        stride=g.stride, padding=g.pad,
                                        dilation=tuple(d or 1 for d in g.dilation),
                                        groups=g.group, bias=g.bias_term)
        return with_axis(deconv, g.axis, g.bias_term, zero)

    def flops(self, layer, inputs, outputs) -> int:
        g = conv_geometry(layer, inputs[0])
        per_input = g.num_output // g.group * math.prod(g.kernel)
        return int(len(inputs) * math.prod(inputs[0]) * per_input)
