"""SPP: spatial pyramid pooling; each level's kernel and pad come from the input size."""
from __future__ import annotations

from collections.abc import Sequence

from caffe2torch.ir.graph import LayerNode
from caffe2torch.layers._common import expect_bottoms
from caffe2torch.layers.registry import Converter, register_converter, shape_error
from caffe2torch.modules.pooling import SpatialPyramidPool, spp_output_sizes, spp_problem
from caffe2torch.proto import caffe_pb2

Shape = tuple[int, ...]
P = caffe_pb2.SPPParameter


@register_converter
class SPPConverter(Converter):
    caffe_type = "SPP"

    def output_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        expect_bottoms(layer, inputs, 1)
        p = layer.param.spp_param
        shape = tuple(inputs[0])
        if len(shape) != 4:
            raise shape_error(layer, f"input has shape {shape}; SPP needs a 4-D (N, C, H, W) blob")
        if p.pyramid_height < 1:
            raise shape_error(layer, f"pyramid_height is {p.pyramid_height}; expected at least 1")
        problem = spp_problem(shape[2], shape[3], p.pyramid_height, P.PoolMethod.Name(p.pool))
        if problem:
            raise shape_error(layer, problem)
        sizes = spp_output_sizes(shape[2], shape[3], p.pyramid_height)
        if p.pyramid_height == 1:
            return [(shape[0], shape[1], *sizes[0])]
        return [(shape[0], sum(shape[1] * h * w for h, w in sizes))]

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> SpatialPyramidPool:
        p = layer.param.spp_param
        return SpatialPyramidPool(P.PoolMethod.Name(p.pool), p.pyramid_height)
