"""Layers that reduce a blob: ArgMax (top_k, out_max_val, axis) and Reduction (SUM, ASUM,
SUMSQ, MEAN over every axis from ``axis`` on, times ``coeff``)."""
from __future__ import annotations

from collections.abc import Sequence

from caffe2torch.ir.graph import LayerNode
from caffe2torch.layers._common import canonical_axis, count, expect_bottoms
from caffe2torch.layers.registry import Converter, register_converter, shape_error
from caffe2torch.modules.basic import ArgMax, Reduction
from caffe2torch.proto import caffe_pb2

Shape = tuple[int, ...]


def _argmax_axis(layer: LayerNode, shape: Shape) -> int | None:
    """The canonical axis, or None for Caffe's per-example mode; checks top_k as Caffe does."""
    p = layer.param.argmax_param
    if p.top_k < 1:
        raise shape_error(layer, f"top_k is {p.top_k}; expected at least 1")
    if p.HasField("axis"):
        axis = canonical_axis(layer, p.axis, len(shape))
        if p.top_k > shape[axis]:
            raise shape_error(layer, f"top_k {p.top_k} exceeds the size {shape[axis]} of axis "
                                     f"{axis} of the input {shape}")
        return axis
    if p.top_k > count(shape, 1):
        raise shape_error(layer, f"top_k {p.top_k} exceeds the {count(shape, 1)} values per "
                                 f"example of the input {shape}")
    return None


@register_converter
class ArgMaxConverter(Converter):
    """Ties rank the larger index first, as Caffe's ``std::partial_sort`` with ``greater<pair>``."""

    caffe_type = "ArgMax"

    def output_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        expect_bottoms(layer, inputs, 1)
        shape = inputs[0]
        p = layer.param.argmax_param
        axis = _argmax_axis(layer, shape)
        if axis is not None:
            return [(*shape[:axis], p.top_k, *shape[axis + 1:])]
        top = [1] * max(len(shape), 3)
        top[0], top[1], top[2] = shape[0], 2 if p.out_max_val else 1, p.top_k
        return [tuple(top)]

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> ArgMax:
        p = layer.param.argmax_param
        return ArgMax(p.top_k, p.out_max_val, _argmax_axis(layer, inputs[0]),
                      max(len(inputs[0]), 3))


@register_converter
class ReductionConverter(Converter):
    caffe_type = "Reduction"

    def output_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        expect_bottoms(layer, inputs, 1)
        shape = inputs[0]
        return [tuple(shape[:canonical_axis(layer, layer.param.reduction_param.axis, len(shape))])]

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> Reduction:
        p = layer.param.reduction_param
        operation = caffe_pb2.ReductionParameter.ReductionOp.Name(p.operation)
        return Reduction(operation, canonical_axis(layer, p.axis, len(inputs[0])), p.coeff)
