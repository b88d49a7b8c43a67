"""inisis/caffe's shape layers: Pad, PixelShuffle, Unsqueeze.

- ``Pad``: ``src/caffe/layers/pad_layer.cpp``: pads H and W of a 4-D blob by ``pad_u``,
  ``pad_d``, ``pad_l``, ``pad_r`` with CONSTANT (``pad_value``), REPLICATE or REFLECT (the edge
  row/column not repeated); when all four are negative it crops instead. Mixed signs (some
  negative, not all) make the fork write outside its blob: refused. Not in place (its CHECK).
- ``PixelShuffle``: ``src/caffe/layers/pixelshuffle_layer.cpp``: ``C / r^2`` channels of
  ``rH x rW``; output (p, sh, sw) reads channel ``p r^2 + sh r + sw`` (torch's order). The fork
  checks only ``C % r == 0``; channels past ``(C / r^2) r^2`` are ignored, as there.
- ``Unsqueeze``: ``src/caffe/layers/unsqueeze.cpp``: an axis of size 1 at ``dim`` (required;
  negative counts from the end, ``-1`` appends).
"""
from __future__ import annotations

from collections.abc import Sequence

from caffe2torch.ir.graph import LayerNode
from caffe2torch.layers._common import expect_bottoms
from caffe2torch.layers.registry import Converter, register_converter, shape_error
from caffe2torch.modules.segmentation import Pad, PixelShuffle, Unsqueeze
from caffe2torch.proto import caffe_pb2

Shape = tuple[int, ...]
P = caffe_pb2.PadParameter


def _pads(layer: LayerNode) -> tuple[int, int, int, int]:
    p = layer.param.pad_param
    return p.pad_u, p.pad_d, p.pad_l, p.pad_r


@register_converter
class PadConverter(Converter):
    """inisis/caffe Pad; see the module docstring."""

    caffe_type = "Pad"
    origin = "inisis/caffe"
    limits = "4-D blobs; pads all >= 0 or all < 0 (crop)"

    def unsupported(self, layer: LayerNode) -> list[str]:
        pads = _pads(layer)
        if min(pads) < 0 < max(pads) or (min(pads) < 0 and max(pads) == 0):
            return [(f"pad_u/pad_d/pad_l/pad_r {pads}: the fork crops only when all four are "
                    "negative and writes outside its blob for mixed signs")]
        return []

    def output_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        expect_bottoms(layer, inputs, 1)
        if list(layer.param.top) == list(layer.param.bottom):
            raise shape_error(layer, "Pad cannot run in place (top == bottom); give it its own top")
        shape = tuple(inputs[0])
        if len(shape) != 4:
            raise shape_error(layer, f"input has shape {shape}; expected a 4-D (N, C, H, W) blob")
        up, down, left, right = _pads(layer)
        h, w = shape[2] + up + down, shape[3] + left + right
        if h < 0 or w < 0:
            raise shape_error(layer, f"pads {(up, down, left, right)} give an output of {h}x{w}")
        if layer.param.pad_param.pad_type == P.REFLECT and \
                (max(up, down) >= shape[2] or max(left, right) >= shape[3]):
            raise shape_error(layer, f"REFLECT pads {(up, down, left, right)} must be smaller "
                                     f"than the input's {shape[2]}x{shape[3]}")
        return [(shape[0], shape[1], h, w)]

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> Pad:
        p = layer.param.pad_param
        return Pad(_pads(layer), P.PadType.Name(p.pad_type).lower(), p.pad_value)


@register_converter
class PixelShuffleConverter(Converter):
    """inisis/caffe PixelShuffle; see the module docstring."""

    caffe_type = "PixelShuffle"
    origin = "inisis/caffe"
    param_field = "pixelshuffle_param"

    def _factor(self, layer: LayerNode) -> int:
        p = layer.param.pixelshuffle_param
        if not p.HasField("upscale_factor") or p.upscale_factor < 1:
            raise shape_error(layer, "pixelshuffle_param needs upscale_factor >= 1 (got "
                                     f"{p.upscale_factor if p.HasField('upscale_factor') else 'none'})")
        return p.upscale_factor

    def output_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        expect_bottoms(layer, inputs, 1)
        r = self._factor(layer)
        shape = tuple(inputs[0])
        if len(shape) != 4:
            raise shape_error(layer, f"input has shape {shape}; expected a 4-D (N, C, H, W) blob")
        if shape[1] % r:
            raise shape_error(layer, f"{shape[1]} channels are not a multiple of "
                                     f"upscale_factor {r}")
        if shape[1] < r * r:
            raise shape_error(layer, f"{shape[1]} channels give no output channel; expected at "
                                     f"least upscale_factor^2 = {r * r}")
        return [(shape[0], shape[1] // (r * r), shape[2] * r, shape[3] * r)]

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> PixelShuffle:
        return PixelShuffle(self._factor(layer))


@register_converter
class UnsqueezeConverter(Converter):
    """inisis/caffe Unsqueeze; see the module docstring."""

    caffe_type = "Unsqueeze"
    origin = "inisis/caffe"

    def _dim(self, layer: LayerNode, axes: int) -> int:
        p = layer.param.unsqueeze_param
        if not p.HasField("dim"):
            raise shape_error(layer, "unsqueeze_param needs dim")
        dim = p.dim + axes + 1 if p.dim < 0 else p.dim
        if not 0 <= dim <= axes:
            raise shape_error(layer, f"dim {p.dim} is out of range for a {axes}-D input; "
                                     f"expected {-axes - 1} <= dim <= {axes}")
        return dim

    def output_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        expect_bottoms(layer, inputs, 1)
        shape = tuple(inputs[0])
        dim = self._dim(layer, len(shape))
        return [shape[:dim] + (1,) + shape[dim:]]

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> Unsqueeze:
        return Unsqueeze(self._dim(layer, len(inputs[0])))
