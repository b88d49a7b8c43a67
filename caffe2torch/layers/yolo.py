"""YOLO v2 head layers of the Caffe ports: Reorg and Region.

- ``Reorg``: gklz1982/caffe-yolov2 and BirdeeChen/caffe_yolo_v2 (eric612/MobileNet-YOLO has
  the same code), ``src/caffe/layers/reorg_layer.cpp`` with ``reorg_cpu`` (BirdeeChen:
  ``src/caffe/util/math_functions.cpp``; eric612: ``include/caffe/layers/reorg_layer.hpp``), a
  copy of darknet's ``reorg_cpu`` called with ``forward = reverse``. Not SpaceToDepth: see
  :class:`caffe2torch.modules.mobile.Reorg` for the index mapping.
- ``Region``: BirdeeChen/caffe_yolo_v2 ``src/caffe/layers/region_layer.cpp`` (CPU path):
  logistic on objectness only, optional softmax on the classes, nothing on x, y, w, h.
"""
from __future__ import annotations

from collections.abc import Sequence

from caffe2torch.ir.graph import LayerNode
from caffe2torch.layers._common import count, expect_bottoms
from caffe2torch.layers.registry import Converter, register_converter, shape_error
from caffe2torch.modules.mobile import Region, Reorg

Shape = tuple[int, ...]


def _not_in_place(layer: LayerNode, inputs: Sequence[Shape]) -> tuple[int, ...]:
    expect_bottoms(layer, inputs, 1)
    if set(layer.param.top) & set(layer.param.bottom):
        raise shape_error(layer, f"computes in place (top {list(layer.param.top)}); the fork's "
                                 f"{layer.type} does not allow in-place computation")
    shape = tuple(inputs[0])
    if len(shape) != 4:
        raise shape_error(layer, f"input shape {shape}; expected 4-D (N, C, H, W)")
    return shape


@register_converter
class ReorgConverter(Converter):
    """reverse false: (N, C, H, W) -> (N, C·s², H/s, W/s); reverse true: -> (N, C/s², H·s, W·s).

    The fork does not check divisibility; where C is not a multiple of s² (or, not reversed,
    H or W not of s) its loops read or write past a blob, so we refuse such shapes.
    """

    caffe_type = "Reorg"
    origin = "YOLO v2 (gklz1982/caffe-yolov2, BirdeeChen/caffe_yolo_v2)"

    def output_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        n, c, h, w = _not_in_place(layer, inputs)
        p = layer.param.reorg_param
        if not p.HasField("stride"):
            raise shape_error(layer, "reorg_param has no stride; the fork requires one")
        s = p.stride
        if s <= 0:
            raise shape_error(layer, f"stride {s}; expected a positive number")
        if c % (s * s) or (not p.reverse and (h % s or w % s)):
            need = "C" if p.reverse else "C, and H and W"
            of = "stride²" if p.reverse else "stride² (C) and stride (H, W)"
            raise shape_error(layer, f"input {(n, c, h, w)} with stride {s}: {need} must be "
                                     f"multiples of {of} (the fork's loops leave the blob "
                                     "otherwise)")
        if p.reverse:
            return [(n, c // (s * s), h * s, w * s)]
        return [(n, c * s * s, h // s, w // s)]

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> Reorg:
        p = layer.param.reorg_param
        return Reorg(p.stride, p.reverse)


@register_converter
class RegionConverter(Converter):
    """Output: the bottom's shape, holding per image an (H·W·boxes, coords + classes + 1)
    matrix (cell-major), objectness through the logistic, classes through softmax if asked."""

    caffe_type = "Region"
    origin = "YOLO v2 (BirdeeChen/caffe_yolo_v2)"
    limits = ("`softmax` as the field says: the fork's LayerSetUp never reads it (its member "
              "is left uninitialised)")

    def unsupported(self, layer: LayerNode) -> list[str]:
        coords = layer.param.region_param.coords
        if coords < 4:
            why = ("the fork always takes value 4 as objectness and values from 5 as classes, "
                   "which spill into the next box when coords < 4")
            return [f"region_param coords {coords}: {why}"]
        return []

    def output_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        shape = _not_in_place(layer, inputs)
        p = layer.param.region_param
        size = p.coords + p.classes + 1
        if shape[1] != p.boxes_of_each_grid * size:
            raise shape_error(layer, f"input {shape} has {shape[1]} channels; expected "
                                     f"boxes_of_each_grid * (coords + classes + 1) = "
                                     f"{p.boxes_of_each_grid} * {size}")
        return [shape]

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> Region:
        p = layer.param.region_param
        return Region(p.classes, p.coords, p.boxes_of_each_grid, p.softmax)

    def flops(self, layer, inputs, outputs) -> int:
        return count(outputs[0])
