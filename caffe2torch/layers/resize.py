"""Bilinear resizing layers of the segmentation forks: Interp, Resize, BilinearInterpolate.

- ``Interp``: hszhao/PSPNet and DeepLab (gpapan/caffe), ``src/caffe/layers/interp_layer.cpp``
  (output size) and ``src/caffe/util/interp.cpp`` (``caffe_cpu_interp2``: align-corners
  bilinear in float32). ``pad_beg`` / ``pad_end`` must be <= 0 (a crop of the input, the same on
  both axes); the size comes from ``shrink_factor`` alone, ``zoom_factor`` alone,
  ``height`` + ``width``, or shrink then zoom, tried in that order.
- ``Resize``: inisis/caffe, ``src/caffe/layers/resize_layer.cpp`` and
  ``src/caffe/util/util_img.cpp`` (``BiLinearResizeMat_cpu``): samples at ``dst * in / out``.
- ``BilinearInterpolate``: inisis/caffe, ``src/caffe/layers/bilinear_interpolate_layer.cpp``:
  ``dst_h`` / ``dst_w`` or ``scale_factor``, ``align_corners`` (default true).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from caffe2torch.ir.graph import LayerNode
from caffe2torch.layers._common import expect_bottoms
from caffe2torch.layers.registry import Converter, register_converter, shape_error
from caffe2torch.modules.segmentation import BilinearInterpolate, Interp, Resize, interp_size

Shape = tuple[int, ...]


def _four_d(layer: LayerNode, inputs: Sequence[Shape]) -> Shape:
    expect_bottoms(layer, inputs, 1)
    shape = tuple(inputs[0])
    if len(shape) != 4:
        raise shape_error(layer, f"input has shape {shape}; expected a 4-D (N, C, H, W) blob")
    return shape


def _bilinear_flops(outputs: Sequence[Shape]) -> int:
    return int(np.prod(outputs[0])) * 4


# ----------------------------------------------------------------------------- Interp


def _interp_factors(layer: LayerNode) -> tuple[int | None, int | None, int | None, int | None]:
    """(zoom, shrink, height, width) as InterpLayer::Reshape reads them (None where unused)."""
    p = layer.param.interp_param
    zoom = p.zoom_factor if p.HasField("zoom_factor") else None
    shrink = p.shrink_factor if p.HasField("shrink_factor") else None
    for name, value in (("zoom_factor", zoom), ("shrink_factor", shrink)):
        if value is not None and value < 1:
            raise shape_error(layer, f"{name} is {value}; expected >= 1")
    if zoom is None and shrink is None:
        if not (p.HasField("height") and p.HasField("width")):
            raise shape_error(layer, "give zoom_factor, shrink_factor, or both height and width "
                                     "(Interp has no other output size)")
        return None, None, p.height, p.width
    return zoom, shrink, None, None


@register_converter
class InterpConverter(Converter):
    """PSPNet / DeepLab Interp (align-corners bilinear with crop); see the module docstring."""

    caffe_type = "Interp"
    origin = "PSPNet (hszhao/PSPNet), DeepLab (gpapan/caffe)"

    def output_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        n, c, h, w = _four_d(layer, inputs)
        p = layer.param.interp_param
        for name, pad in (("pad_beg", p.pad_beg), ("pad_end", p.pad_end)):
            if pad > 0:
                raise shape_error(layer, f"{name} is {pad}; Interp only crops (pad <= 0)")
        h_in, w_in = h + p.pad_beg + p.pad_end, w + p.pad_beg + p.pad_end
        if h_in <= 0 or w_in <= 0:
            raise shape_error(layer, f"pad_beg {p.pad_beg} and pad_end {p.pad_end} crop the "
                                     f"{h}x{w} input to {h_in}x{w_in}; expected a positive size")
        zoom, shrink, height, width = _interp_factors(layer)
        h_out, w_out = interp_size(h_in, zoom, shrink, height), interp_size(w_in, zoom, shrink,
                                                                            width)
        if h_out <= 0 or w_out <= 0:
            raise shape_error(layer, f"output size {h_out}x{w_out}; expected a positive size")
        return [(n, c, h_out, w_out)]

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> Interp:
        p = layer.param.interp_param
        return Interp(*_interp_factors(layer), pad_beg=p.pad_beg, pad_end=p.pad_end)

    def flops(self, layer, inputs, outputs) -> int:
        return _bilinear_flops(outputs)


# ----------------------------------------------------------------------------- Resize


@register_converter
class ResizeConverter(Converter):
    """inisis/caffe Resize: bilinear at ``dst * in / out``; see the module docstring."""

    caffe_type = "Resize"
    origin = "inisis/caffe"
    limits = "is_pyramid_test sizes are int(scale * input size), as the fork"

    def _size(self, layer: LayerNode, h: int, w: int) -> tuple[int, int]:
        p = layer.param.resize_param
        if not p.is_pyramid_test:
            if not (p.HasField("height") and p.HasField("width")):
                raise shape_error(layer, "resize_param needs height and width (or "
                                         "is_pyramid_test with out_height_scale/out_width_scale)")
            return p.height, p.width
        if not (p.HasField("out_height_scale") and p.HasField("out_width_scale")):
            raise shape_error(layer, "is_pyramid_test needs out_height_scale and out_width_scale")
        return (int(np.float32(p.out_height_scale) * np.float32(h)),
                int(np.float32(p.out_width_scale) * np.float32(w)))

    def output_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        n, c, h, w = _four_d(layer, inputs)
        out = self._size(layer, h, w)
        if min(out) <= 0:
            raise shape_error(layer, f"output size {out[0]}x{out[1]}; expected a positive size")
        return [(n, c, *out)]

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> Resize:
        p = layer.param.resize_param
        if p.is_pyramid_test:
            return Resize(None, (p.out_height_scale, p.out_width_scale))
        return Resize((p.height, p.width), None)

    def flops(self, layer, inputs, outputs) -> int:
        return _bilinear_flops(outputs)


# ----------------------------------------------------------------------------- BilinearInterpolate


@register_converter
class BilinearInterpolateConverter(Converter):
    """inisis/caffe BilinearInterpolate; the output size is fixed at set-up, as the fork's
    LayerSetUp fixes it (``int(H * scale_factor)`` with the declared input)."""

    caffe_type = "BilinearInterpolate"
    origin = "inisis/caffe"
    limits = "output size fixed at set-up (as the fork); align_corners needs an output > 1"

    def _size(self, layer: LayerNode, h: int, w: int) -> tuple[int, int]:
        p = layer.param.bilinear_interpolate_param
        has_dst = p.HasField("dst_h") or p.HasField("dst_w")
        if has_dst == p.HasField("scale_factor"):
            raise shape_error(layer, "give dst_h and/or dst_w, or scale_factor (exactly one of "
                                     "the two ways; the fork leaves the size unset otherwise)")
        if has_dst:
            return (p.dst_h if p.HasField("dst_h") else h, p.dst_w if p.HasField("dst_w") else w)
        scale = np.float32(p.scale_factor)
        return int(np.float32(h) * scale), int(np.float32(w) * scale)

    def output_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        n, c, h, w = _four_d(layer, inputs)
        out = self._size(layer, h, w)
        if min(out) <= 0:
            raise shape_error(layer, f"output size {out[0]}x{out[1]}; expected a positive size")
        if layer.param.bilinear_interpolate_param.align_corners and min(out) == 1:
            raise shape_error(layer, f"output size {out[0]}x{out[1]} with align_corners: the "
                                     "fork divides by (size - 1) = 0 there; expected sizes > 1")
        return [(n, c, *out)]

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> BilinearInterpolate:
        _, _, h, w = inputs[0]
        return BilinearInterpolate(self._size(layer, h, w),
                                   layer.param.bilinear_interpolate_param.align_corners)

    def flops(self, layer, inputs, outputs) -> int:
        return _bilinear_flops(outputs)
