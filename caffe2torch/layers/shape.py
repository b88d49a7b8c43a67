"""Layers that move data between blob shapes: Slice, Reshape, Crop, Tile (Caffe's checks each)."""
from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

from caffe2torch.ir.graph import LayerNode
from caffe2torch.layers._common import canonical_axis, count, expect_bottoms
from caffe2torch.layers.registry import Converter, register_converter, shape_error
from caffe2torch.layers.routing import legacy_axis
from caffe2torch.modules.shape import Crop, Reshape, Slice, Tile

Shape = tuple[int, ...]


def _slice_sizes(layer: LayerNode, size: int) -> list[int]:
    """Caffe's SliceLayer::Reshape: the length of each top along the slice axis."""
    points = list(layer.param.slice_param.slice_point)
    tops = len(layer.param.top)
    if tops < 1:
        raise shape_error(layer, "has no top; expected at least 1")
    if not points:
        if size % tops:
            raise shape_error(layer, f"{tops} tops do not evenly divide the slice axis of size "
                                     f"{size}; give slice_point values or another top count")
        return [size // tops] * tops
    if len(points) != tops - 1:
        raise shape_error(layer, f"{len(points)} slice_point values for {tops} tops; expected "
                                 f"{tops - 1} (one fewer than the tops)")
    if tops > size:
        raise shape_error(layer, f"{tops} tops exceed the slice axis size {size}")
    bounds = [0, *points, size]
    for prev, point in zip(bounds[:-2], points):
        if point <= prev:
            raise shape_error(layer, f"slice_point {point} does not exceed the previous bound "
                                     f"{prev}; expected strictly increasing points above 0")
    if points[-1] >= size:
        # Caffe's checks pass for a point equal to the size, but its Forward then dies on the
        # empty top ("Check failed: data_"); a point beyond the size fails its Reshape.
        raise shape_error(layer, f"slice_point {points[-1]} is out of range for the slice axis "
                                 f"of size {size}; expected points below {size}")
    return [b - a for a, b in pairwise(bounds)]


@register_converter
class SliceConverter(Converter):
    caffe_type = "Slice"

    def _axis(self, layer: LayerNode, ndim: int) -> int:
        return legacy_axis(layer, layer.param.slice_param, "slice_dim", ndim)

    def output_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        expect_bottoms(layer, inputs, 1)
        shape = inputs[0]
        axis = self._axis(layer, len(shape))
        return [(*shape[:axis], n, *shape[axis + 1:])
                for n in _slice_sizes(layer, shape[axis])]

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> Slice:
        points = tuple(int(p) for p in layer.param.slice_param.slice_point)
        return Slice(self._axis(layer, len(inputs[0])), len(layer.param.top), points)

    def shares_data(self, layer: LayerNode) -> list[tuple[int, int]]:
        # SliceLayer::Reshape: one top -> top[0]->ShareData(*bottom[0])
        return [(0, 0)] if len(layer.param.top) == 1 else []


def _reshape_axes(layer: LayerNode, ndim: int) -> tuple[int, int]:
    """``[start, end)``: the input axes the new dims replace (Caffe's axis / num_axes rules)."""
    p = layer.param.reshape_param
    start = p.axis if p.axis >= 0 else ndim + p.axis + 1
    if not 0 <= start <= ndim:
        raise shape_error(layer, f"axis {p.axis} is out of range for a {ndim}-D input; "
                                 f"expected {-ndim - 1} <= axis <= {ndim}")
    if p.num_axes < -1:
        raise shape_error(layer, f"num_axes is {p.num_axes}; expected >= 0, or -1 for all")
    end = ndim if p.num_axes == -1 else start + p.num_axes
    if end > ndim:
        raise shape_error(layer, f"axis + num_axes = {end} is out of range for a {ndim}-D "
                                 "input")
    return start, end


def _reshape_dims(layer: LayerNode) -> tuple[int, ...]:
    dims = tuple(int(d) for d in layer.param.reshape_param.shape.dim)
    if sum(d == -1 for d in dims) > 1:
        raise shape_error(layer, f"shape {list(dims)} has several -1 dims; at most one may be "
                                 "inferred")
    bad = [d for d in dims if d < -1]
    if bad:
        raise shape_error(layer, f"shape {list(dims)} has dim {bad[0]}; expected 0 (copy), "
                                 "-1 (infer) or a positive size")
    return dims


@register_converter
class ReshapeConverter(Converter):
    caffe_type = "Reshape"

    def output_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        expect_bottoms(layer, inputs, 1)
        if list(layer.param.top) == list(layer.param.bottom):
            raise shape_error(layer, "is in place (top == bottom); Caffe's Reshape does not "
                                     "allow in-place computation")
        shape = inputs[0]
        dims = _reshape_dims(layer)
        start, end = _reshape_axes(layer, len(shape))
        new = list(dims)
        for i, d in enumerate(dims):
            if d == 0:
                if start + i >= len(shape):
                    raise shape_error(layer, f"shape dim {i} is 0 (copy) but the input has no "
                                             f"axis {start + i} to copy")
                new[i] = shape[start + i]
        top = [*shape[:start], *new, *shape[end:]]
        if -1 in dims:
            known = -count(top)  # the product of every other dim (one -1, rest >= 0)
            if known == 0 or count(shape) % known:
                raise shape_error(layer, f"input count {count(shape)} ({shape}) is not divisible "
                                         f"by the product {known} of the other dims of {top}")
            top[start + dims.index(-1)] = count(shape) // known
        if count(top) != count(shape):
            raise shape_error(layer, f"output shape {tuple(top)} has {count(top)} elements; "
                                     f"the input {shape} has {count(shape)}")
        return [tuple(top)]

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> Reshape:
        start, end = _reshape_axes(layer, len(inputs[0]))
        return Reshape(start, end, _reshape_dims(layer))

    def shares_data(self, layer: LayerNode) -> list[tuple[int, int]]:
        return [(0, 0)]  # ReshapeLayer::Reshape: top[0]->ShareData(*bottom[0])


def _crop_offsets(layer: LayerNode, ndim: int) -> tuple[int, tuple[int, ...]]:
    """The first cropped axis and one offset per cropped axis."""
    p = layer.param.crop_param
    start = canonical_axis(layer, p.axis, ndim)
    offsets = list(p.offset)
    if len(offsets) > 1 and start + len(offsets) != ndim:
        raise shape_error(layer, f"{len(offsets)} offsets for {ndim - start} cropped axes "
                                 f"(axis {start} to {ndim - 1}); expected one, or one per axis")
    if len(offsets) <= 1:
        offsets = (offsets or [0]) * (ndim - start)
    return start, tuple(int(o) for o in offsets)


@register_converter
class CropConverter(Converter):
    caffe_type = "Crop"

    def output_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        expect_bottoms(layer, inputs, 2)
        shape, reference = inputs
        start, offsets = _crop_offsets(layer, len(shape))
        if len(reference) < len(shape):
            raise shape_error(layer, f"the reference (bottom 1) {reference} has fewer axes than "
                                     f"the input {shape}")
        for axis, offset in enumerate(offsets, start):
            if shape[axis] - offset < reference[axis]:
                raise shape_error(layer, f"crop of axis {axis} to size {reference[axis]} at "
                                         f"offset {offset} is out of bounds for input size "
                                         f"{shape[axis]} ({shape})")
        return [(*shape[:start], *reference[start:len(shape)])]

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> Crop:
        return Crop(*_crop_offsets(layer, len(inputs[0])))


@register_converter
class TileConverter(Converter):
    caffe_type = "Tile"

    def _params(self, layer: LayerNode, ndim: int) -> tuple[int, int]:
        p = layer.param.tile_param
        axis = canonical_axis(layer, p.axis, ndim)
        if not p.HasField("tiles"):
            raise shape_error(layer, "tiles is not set; Caffe requires the number of tiles")
        if p.tiles <= 0:
            raise shape_error(layer, f"tiles is {p.tiles}; expected a positive number")
        return axis, p.tiles

    def output_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        expect_bottoms(layer, inputs, 1)
        shape = inputs[0]
        axis, tiles = self._params(layer, len(shape))
        return [(*shape[:axis], shape[axis] * tiles, *shape[axis + 1:])]

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> Tile:
        return Tile(*self._params(layer, len(inputs[0])))
