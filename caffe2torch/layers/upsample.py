"""Upsample (both forks' layers of that name) and MaxUnPool.

One type string, two layers, told apart by the number of bottoms:

- **one bottom: nearest-neighbour upsampling** — eric612/MobileNet-YOLO and the darknet2caffe
  ports (``src/caffe/layers/upsample_layer.cpp``: ``top[h][w] = bottom[h / scale][w / scale]``,
  ``scale`` default 1) and inisis/caffe (the same, plus ``dims_num``: 4 scales H and W of a
  4-D blob, 3 scales W of a 3-D one). ``scale_h`` / ``scale_w`` (both) give one factor per
  axis; Huawei's ``stride`` / ``stride_h`` / ``stride_w`` name the factor too (with ``scale``
  unset or 1). Factors must be integers >= 1.
- **two bottoms (data, MAX Pooling mask): SegNet's unpooling** — alexgkendall/caffe-segnet
  ``src/caffe/layers/upsample_layer.cpp``: zeros of ``upsample_h x upsample_w`` (both > 1), else
  ``H * scale_h - pad_out_h`` by ``W * scale_w - pad_out_w`` (``scale``, default 2 here, or both
  ``scale_h`` and ``scale_w``, each > 1; ``pad_out_*`` only with a factor of 2), and each value
  written where its mask points.

The schema's ``scale`` has no default because the two disagree (1 vs 2); the converter applies
the default of the form the layer has. ``MaxUnPool`` (inisis/caffe
``src/caffe/layers/maxunpool_layer.cpp``) is SegNet's unpooling with a required ``dst_h x dst_w``.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from caffe2torch.ir.graph import LayerNode
from caffe2torch.layers._common import expect_bottoms
from caffe2torch.layers.registry import Converter, register_converter, shape_error
from caffe2torch.modules.segmentation import MaxUnpool, UpsampleNearest

Shape = tuple[int, ...]

_SEGNET_ONLY = ("upsample_h", "upsample_w", "pad_out_h", "pad_out_w")


def _integer(layer: LayerNode, name: str, value: float) -> int:
    if value != int(value) or value < 1:
        raise shape_error(layer, f"{name} is {value:g}; expected an integer >= 1")
    return int(value)


def nearest_scales(layer: LayerNode) -> tuple[int, ...]:
    """The nearest form's factors, one per scaled axis (last axes), from what the layer sets."""
    p = layer.param.upsample_param
    declared = [f for f in _SEGNET_ONLY if p.HasField(f)]
    if declared:
        raise shape_error(layer, f"{', '.join(declared)} belong to SegNet's Upsample, which takes "
                                 "the pooling mask as a second bottom; this layer has one bottom")
    if p.dims_num not in (3, 4):
        raise shape_error(layer, f"dims_num is {p.dims_num}; expected 3 or 4")
    scale = p.scale if p.HasField("scale") else 1.0
    strides = [p.HasField(f) for f in ("stride", "stride_h", "stride_w")]
    if any(strides):
        if scale != 1:
            raise shape_error(layer, f"scale {scale:g} together with stride: that fork's meaning "
                                     "of scale is not reproduced; expected scale unset or 1")
        h = p.stride_h if p.HasField("stride_h") else p.stride if p.HasField("stride") else 2
        w = p.stride_w if p.HasField("stride_w") else p.stride if p.HasField("stride") else 2
        factors = (_integer(layer, "stride_h", h), _integer(layer, "stride_w", w))
    elif p.HasField("scale_h") or p.HasField("scale_w"):
        if not (p.HasField("scale_h") and p.HasField("scale_w")) or p.HasField("scale"):
            raise shape_error(layer, "give scale, or both scale_h and scale_w (not scale too)")
        factors = (_integer(layer, "scale_h", p.scale_h), _integer(layer, "scale_w", p.scale_w))
    else:
        factors = (_integer(layer, "scale", scale),) * 2
    return factors if p.dims_num == 4 else factors[1:]


def segnet_geometry(layer: LayerNode) -> tuple[tuple[int, int] | None, tuple[int, int],
                                                tuple[int, int]]:
    """(fixed size or None, (scale_h, scale_w), (pad_out_h, pad_out_w)) with SegNet's CHECKs."""
    p = layer.param.upsample_param
    has_size = p.HasField("upsample_h") and p.HasField("upsample_w")
    has_hw = p.HasField("scale_h") and p.HasField("scale_w")
    if not (has_size or (not p.HasField("scale") and has_hw)
            or (not p.HasField("scale_h") and not p.HasField("scale_w"))):
        raise shape_error(layer, "give upsample_h and upsample_w, or scale, or both scale_h and "
                                 "scale_w without scale")
    if has_size:
        if p.upsample_h <= 1 or p.upsample_w <= 1:
            raise shape_error(layer, f"upsample_h {p.upsample_h} and upsample_w {p.upsample_w} "
                                     "must both be > 1")
        return (p.upsample_h, p.upsample_w), (1, 1), (0, 0)
    if has_hw:
        scales = (int(p.scale_h), int(p.scale_w))
    else:
        scale = p.scale if p.HasField("scale") else 2.0  # SegNet's default
        if scale != int(scale):
            raise shape_error(layer, f"scale is {scale:g}; SegNet's scale is an integer")
        scales = (int(scale),) * 2
    if min(scales) <= 1:
        raise shape_error(layer, f"scale factors {scales} must be > 1")
    trims = (int(p.pad_out_h), int(p.pad_out_w))
    for axis, trim, scale in zip("hw", trims, scales):
        if trim and scale != 2:
            raise shape_error(layer, f"pad_out_{axis} needs scale_{axis} == 2 (got {scale})")
    return None, scales, trims


def _unpool_shapes(layer: LayerNode, inputs: Sequence[Shape], size) -> list[Shape]:
    data, mask = (tuple(s) for s in inputs)
    if len(data) != 4 or len(mask) != 4:
        raise shape_error(layer, f"data {data} and mask {mask} must both be 4-D (N, C, H, W)")
    if data != mask:
        raise shape_error(layer, f"mask (bottom 1) has shape {mask}; expected the data's {data}")
    if min(size) <= 0:
        raise shape_error(layer, f"output size {size[0]}x{size[1]}; expected a positive size")
    return [(data[0], data[1], *size)]


@register_converter
class UpsampleConverter(Converter):
    """Upsample: nearest with one bottom (YOLO ports, inisis/caffe), SegNet's unpooling with two;
    see the module docstring for which fork is which."""

    caffe_type = "Upsample"
    origin = "SegNet (alexgkendall/caffe-segnet); YOLO ports (eric612/MobileNet-YOLO), inisis/caffe"
    limits = "one bottom: nearest by integer factors; two bottoms: SegNet's mask unpooling"

    def output_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        expect_bottoms(layer, inputs, 1, 2)
        if len(inputs) == 2:
            size, scales, trims = segnet_geometry(layer)
            _, _, h, w = inputs[0] if len(inputs[0]) == 4 else (0, 0, 0, 0)
            size = size or (h * scales[0] - trims[0], w * scales[1] - trims[1])
            return _unpool_shapes(layer, inputs, size)
        scales = nearest_scales(layer)
        shape = tuple(inputs[0])
        if len(shape) != len(scales) + 2:
            raise shape_error(layer, f"input has shape {shape}; dims_num "
                                     f"{layer.param.upsample_param.dims_num} expects a "
                                     f"{len(scales) + 2}-D blob")
        return [shape[:2] + tuple(n * s for n, s in zip(shape[2:], scales))]

    def build(self, layer: LayerNode, inputs: Sequence[Shape]):
        if len(inputs) == 2:
            size, scales, trims = segnet_geometry(layer)
            return MaxUnpool(size, scales, trims)
        return UpsampleNearest(nearest_scales(layer))

    def flops(self, layer, inputs, outputs) -> int:
        return 0


@register_converter
class MaxUnPoolConverter(Converter):
    """inisis/caffe MaxUnPool: data + MAX Pooling mask into a ``dst_h x dst_w`` plane of zeros."""

    caffe_type = "MaxUnPool"
    origin = "inisis/caffe"
    param_field = "max_unpool_param"

    def _size(self, layer: LayerNode) -> tuple[int, int]:
        p = layer.param.max_unpool_param
        if not (p.HasField("dst_h") and p.HasField("dst_w")):
            raise shape_error(layer, "max_unpool_param needs dst_h and dst_w")
        return p.dst_h, p.dst_w

    def output_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        expect_bottoms(layer, inputs, 2)
        return _unpool_shapes(layer, inputs, self._size(layer))

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> MaxUnpool:
        return MaxUnpool(self._size(layer))

    def flops(self, layer, inputs, outputs) -> int:
        return int(np.prod(inputs[0]))
