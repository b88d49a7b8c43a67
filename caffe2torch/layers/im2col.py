"""Im2col: the convolution_param's windows laid out as channels (Caffe's channel-major order)."""
from __future__ import annotations

import math
from collections.abc import Sequence

from caffe2torch.ir.graph import LayerNode
from caffe2torch.layers._common import expect_bottoms
from caffe2torch.layers._spatial import spatial_geometry, zero_dilation_note
from caffe2torch.layers.convolution import conv_output
from caffe2torch.layers.registry import Converter, register_converter, shape_error
from caffe2torch.modules.conv import Im2col

Shape = tuple[int, ...]


def im2col_geometry(layer: LayerNode, shape: Shape):
    """(axis, kernel, stride, pad, dilation) as Im2colLayer::LayerSetUp reads them; unlike
    Convolution, num_output and group are ignored."""
    geometry = spatial_geometry(layer, shape)
    if not geometry[1]:
        raise shape_error(layer, f"input {tuple(shape)} has no spatial axis after axis "
                                 f"{geometry[0]}; Im2col needs at least one")
    return geometry


@register_converter
class Im2colConverter(Converter):
    caffe_type = "Im2col"

    def output_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        expect_bottoms(layer, inputs, 1)
        shape = tuple(inputs[0])
        axis, kernel, stride, pad, dilation = im2col_geometry(layer, shape)
        spatial = shape[axis + 1:]
        extent = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
        if any(size + 2 * p < e for size, p, e in zip(spatial, pad, extent)):
            raise shape_error(layer, f"input {shape} is smaller than the dilated kernel {extent} "
                                     f"with pad {pad} on spatial axes {spatial}")
        out = tuple(conv_output(size, k, p, s, d) for size, k, p, s, d in
                    zip(spatial, kernel, pad, stride, dilation))
        return [(*shape[:axis], shape[axis] * math.prod(kernel), *out)]

    def accepted(self, layer: LayerNode) -> list[str]:
        return zero_dilation_note(layer)

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> Im2col:
        return Im2col(*im2col_geometry(layer, tuple(inputs[0])))
