"""InnerProduct: flatten from ``axis``, weight (N, K) or (K, N) with ``transpose``, bias_term."""
from __future__ import annotations

from collections.abc import Sequence

from caffe2torch.ir.graph import LayerNode
from caffe2torch.layers._common import canonical_axis, count, expect_bottoms
from caffe2torch.layers.registry import Converter, register_converter, shape_error
from caffe2torch.modules.basic import InnerProduct

Shape = tuple[int, ...]


def _axis_and_k(layer: LayerNode, shape: Shape) -> tuple[int, int]:
    axis = canonical_axis(layer, layer.param.inner_product_param.axis, len(shape))
    return axis, count(shape, axis)


@register_converter
class InnerProductConverter(Converter):
    caffe_type = "InnerProduct"

    def output_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        expect_bottoms(layer, inputs, 1)
        num_output = layer.param.inner_product_param.num_output
        if num_output <= 0:
            raise shape_error(layer, f"num_output is {num_output}; expected a positive number")
        axis, _ = _axis_and_k(layer, inputs[0])
        return [(*inputs[0][:axis], num_output)]

    def blob_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        p = layer.param.inner_product_param
        _, k = _axis_and_k(layer, inputs[0])
        weight = (k, p.num_output) if p.transpose else (p.num_output, k)
        return [weight, (p.num_output,)] if p.bias_term else [weight]

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> InnerProduct:
        p = layer.param.inner_product_param
        axis, k = _axis_and_k(layer, inputs[0])
        return InnerProduct(k, p.num_output, axis=axis, bias=p.bias_term, transpose=p.transpose)

    def flops(self, layer, inputs, outputs) -> int:
        _, k = _axis_and_k(layer, inputs[0])
        return int(count(outputs[0]) * k)
