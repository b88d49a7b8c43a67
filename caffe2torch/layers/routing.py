"""Blob routing: Concat (axis / legacy concat_dim), Split, Flatten (axis, end_axis).

Slice, Reshape, Crop and Tile live in ``shape.py``.
"""
from __future__ import annotations

from collections.abc import Sequence

from caffe2torch.ir.graph import LayerNode
from caffe2torch.layers._common import canonical_axis, count, expect_bottoms
from caffe2torch.layers.registry import Converter, register_converter, shape_error
from caffe2torch.modules.basic import Concat, Flatten, Split
from caffe2torch.proto import caffe_pb2

Shape = tuple[int, ...]


def legacy_axis(layer: LayerNode,
                param: caffe_pb2.ConcatParameter | caffe_pb2.SliceParameter,
                legacy: str, ndim: int) -> int:
    """Caffe's ``axis`` or its legacy uint32 alias (``concat_dim``, ``slice_dim``): never both,
    and the alias takes no negative value."""
    if param.HasField("axis") and param.HasField(legacy):
        raise shape_error(layer, f"sets both axis ({param.axis}) and {legacy} "
                                 f"({getattr(param, legacy)}); Caffe takes one or the other")
    if param.HasField(legacy):
        value = getattr(param, legacy)
        if value >= ndim:
            raise shape_error(layer, f"{legacy} {value} is out of range for a {ndim}-D input; "
                                     f"expected 0 <= {legacy} < {ndim}")
        return value
    return canonical_axis(layer, param.axis, ndim)


def concat_axis(layer: LayerNode, ndim: int) -> int:
    return legacy_axis(layer, layer.param.concat_param, "concat_dim", ndim)


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

    def shares_data(self, layer: LayerNode) -> list[tuple[int, int]]:
        # ConcatLayer::Reshape: one bottom -> top[0]->ShareData(*bottom[0])
        return [(0, 0)] if len(layer.param.bottom) == 1 and layer.param.top else []


@register_converter
class SplitConverter(Converter):
    caffe_type = "Split"

    def output_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        expect_bottoms(layer, inputs, 1)
        if not layer.param.top:
            raise shape_error(layer, "has no top; expected at least 1")
        if layer.param.bottom[0] in layer.param.top:
            raise shape_error(layer, f"top '{layer.param.bottom[0]}' is its bottom; Caffe's Split "
                                     "does not allow in-place computation")
        return [inputs[0]] * len(layer.param.top)

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> Split:
        return Split(len(layer.param.top))

    def shares_data(self, layer: LayerNode) -> list[tuple[int, int]]:
        return [(i, 0) for i in range(len(layer.param.top))]  # SplitLayer::Forward_cpu


@register_converter
class FlattenConverter(Converter):
    caffe_type = "Flatten"

    def _axes(self, layer: LayerNode, ndim: int) -> tuple[int, int]:
        p = layer.param.flatten_param
        start = canonical_axis(layer, p.axis, ndim)
        end = canonical_axis(layer, p.end_axis, ndim, "end_axis")
        # Blob::count(start, end + 1) needs start <= end + 1; the empty range (end == start - 1)
        # counts 1, so Caffe inserts an axis of size 1 there.
        if end < start - 1:
            raise shape_error(layer, f"end_axis {p.end_axis} (axis {end}) comes before axis "
                                     f"{p.axis} (axis {start}); expected end_axis >= axis - 1")
        return start, end

    def output_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        expect_bottoms(layer, inputs, 1)
        if list(layer.param.top) == list(layer.param.bottom):
            raise shape_error(layer, "is in place (top == bottom); Caffe's Flatten does not "
                                     "allow in-place computation")
        shape = inputs[0]
        start, end = self._axes(layer, len(shape))
        return [(*shape[:start], count(shape, start, end + 1), *shape[end + 1:])]

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> Flatten:
        return Flatten(*self._axes(layer, len(inputs[0])))

    def shares_data(self, layer: LayerNode) -> list[tuple[int, int]]:
        return [(0, 0)]  # FlattenLayer::Forward_cpu: top[0]->ShareData(*bottom[0])
