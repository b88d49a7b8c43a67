"""Blob routing: Concat (axis / legacy concat_dim), Split, Flatten (axis, end_axis)."""
from __future__ import annotations

from collections.abc import Sequence

from caffe2torch.ir.graph import LayerNode
from caffe2torch.layers._common import canonical_axis, count, expect_bottoms
from caffe2torch.layers.registry import Converter, register_converter, shape_error
from caffe2torch.modules.basic import Concat, Flatten, Split

Shape = tuple[int, ...]


def concat_axis(layer: LayerNode, ndim: int) -> int:
    p = layer.param.concat_param
    if p.HasField("concat_dim"):
        return canonical_axis(layer, p.concat_dim, ndim, "concat_dim")
    return canonical_axis(layer, p.axis, ndim)


@register_converter
class ConcatConverter(Converter):
    caffe_type = "Concat"

    def output_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        expect_bottoms(layer, inputs, 1, -1)
        first = inputs[0]
        axis = concat_axis(layer, len(first))
        for i, shape in enumerate(inputs[1:], 1):
            if len(shape) != len(first) or any(
                    a != b for j, (a, b) in enumerate(zip(shape, first)) if j != axis):
                raise shape_error(layer, f"bottom {i} has shape {shape}; expected {first} "
                                         f"in every axis but the concat axis {axis}")
        return [(*first[:axis], sum(s[axis] for s in inputs), *first[axis + 1:])]

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> Concat:
        return Concat(concat_axis(layer, len(inputs[0])))


@register_converter
class SplitConverter(Converter):
    caffe_type = "Split"

    def output_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        expect_bottoms(layer, inputs, 1)
        return [inputs[0]] * len(layer.param.top)

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> Split:
        return Split(len(layer.param.top))


@register_converter
class FlattenConverter(Converter):
    caffe_type = "Flatten"

    def _axes(self, layer: LayerNode, ndim: int) -> tuple[int, int]:
        p = layer.param.flatten_param
        start = canonical_axis(layer, p.axis, ndim)
        end = canonical_axis(layer, p.end_axis, ndim, "end_axis")
        if end < start:
            raise shape_error(layer, f"end_axis {p.end_axis} comes before axis {p.axis}")
        return start, end

    def output_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        expect_bottoms(layer, inputs, 1)
        shape = inputs[0]
        start, end = self._axes(layer, len(shape))
        return [(*shape[:start], count(shape, start, end + 1), *shape[end + 1:])]

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> Flatten:
        return Flatten(*self._axes(layer, len(inputs[0])))
