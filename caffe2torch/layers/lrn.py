"""LRN: local response normalisation across channels or within each channel (Caffe's formulas)."""
from __future__ import annotations

import math
from collections.abc import Sequence

from caffe2torch.ir.graph import LayerNode
from caffe2torch.layers._common import expect_bottoms
from caffe2torch.layers.registry import Converter, register_converter, shape_error
from caffe2torch.modules.lrn import CaffeLRN
from caffe2torch.proto import caffe_pb2

Shape = tuple[int, ...]
R = caffe_pb2.LRNParameter


@register_converter
class LRNConverter(Converter):
    caffe_type = "LRN"

    def output_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        expect_bottoms(layer, inputs, 1)
        p = layer.param.lrn_param
        if p.local_size % 2 != 1:
            raise shape_error(layer, f"local_size {p.local_size}: Caffe supports only odd sizes")
        if len(inputs[0]) != 4:
            raise shape_error(layer, f"input has shape {tuple(inputs[0])}; Caffe's LRN needs a "
                                     "4-D (N, C, H, W) blob")
        return [tuple(inputs[0])]

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> CaffeLRN:
        p = layer.param.lrn_param
        return CaffeLRN(p.local_size, p.alpha, p.beta, p.k, R.NormRegion.Name(p.norm_region))

    def flops(self, layer, inputs, outputs) -> int:
        p = layer.param.lrn_param
        window = p.local_size ** 2 if p.norm_region == R.WITHIN_CHANNEL else p.local_size
        return math.prod(inputs[0]) * (window + 3)
