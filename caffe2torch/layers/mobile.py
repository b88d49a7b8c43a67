"""Mobile-net fork layers: ReLU6, HardSwish / HSwish, HardSigmoid / HSigmoid, ShuffleChannel,
the two depthwise convolution types and Axpy.

Where each formula comes from (``src/caffe/layers/`` of each repository):

- ``ReLU6``: inisis/caffe ``relu6_layer.cpp`` (``ReLU6Parameter`` negative_slope, threshold) and
  eric612/MobileNet-YOLO ``relu6_layer.cpp`` (its ``relu6_param`` is a ReLUParameter; the clip
  is always 6, the schema's threshold default). Both: ``min(max(x, 0) + slope * min(x, 0), t)``.
- ``HardSwish`` / ``HardSigmoid``: inisis/caffe ``hardswish_layer.cpp`` (``x * clip(x / 6 + 0.5,
  0, 1)``) and ``hardsigmoid_layer.cpp`` (``clip(alpha * x + beta, 0, 1)``). eric612's
  ``hard_sigmoid_layer.cpp`` computes ``clip(0.2 x + 0.5)`` too (in double) but registers no type.
- ``HSwish`` / ``HSigmoid``: aovoc/caffe ``hswish_layer.cpp`` (``x * clip(x + 3, 0, 6) / 6``) and
  ``hsigmoid_layer.cpp`` (``clip(x + 3, 0, 6) / 6``).
- ``ShuffleChannel``: farmingyard/ShuffleNet ``shuffle_channel_layer.cpp``.
- ``ConvolutionDepthwise``: BVLC PR #5665 (as farmingyard/caffe-mobilenet uses it),
  ``conv_dw_layer.cpp``: 4-D only, one filter per input channel whatever num_output and group
  say (weights (C, 1, kh, kw), bias (C,)).
- ``DepthwiseConvolution``: yonghenglh6's layer in eric612/MobileNet-YOLO,
  ``depthwise_conv_layer.cpp``: its CPU path is BaseConvolutionLayer's, i.e. Convolution with
  the layer's group (its CUDA kernel assumes group = channels and ignores dilation).
- ``Axpy``: hujie-frank/SENet ``axpy_layer.cpp``.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from torch import nn

from caffe2torch.ir.graph import LayerNode
from caffe2torch.layers._common import count, expect_bottoms
from caffe2torch.layers.convolution import ConvolutionConverter
from caffe2torch.layers.elementwise import SameShapeConverter
from caffe2torch.layers.registry import Converter, register_converter, shape_error
from caffe2torch.modules.mobile import (
    Axpy,
    HardSigmoid,
    HardSwish,
    HSigmoid,
    HSwish,
    ReLU6,
    ShuffleChannel,
)
from caffe2torch.proto import caffe_pb2

Shape = tuple[int, ...]

INISIS = "inisis/caffe; eric612/MobileNet-YOLO"
AOVOC = "aovoc/caffe"


@register_converter
class ReLU6Converter(SameShapeConverter):
    caffe_type = "ReLU6"
    origin = INISIS

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> ReLU6:
        p = layer.param.relu6_param
        return ReLU6(p.negative_slope, p.threshold)


@register_converter
class HardSwishConverter(SameShapeConverter):
    caffe_type = "HardSwish"
    origin = "inisis/caffe"
    param_field = None

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> HardSwish:
        return HardSwish()


@register_converter
class HSwishConverter(SameShapeConverter):
    caffe_type = "HSwish"
    origin = AOVOC
    param_field = None

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> HSwish:
        return HSwish()


@register_converter
class HardSigmoidConverter(SameShapeConverter):
    caffe_type = "HardSigmoid"
    origin = "inisis/caffe"
    param_field = "hardsigmoid_param"

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> HardSigmoid:
        p = layer.param.hardsigmoid_param
        return HardSigmoid(p.alpha, p.beta)


@register_converter
class HSigmoidConverter(SameShapeConverter):
    caffe_type = "HSigmoid"
    origin = AOVOC
    param_field = None

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> HSigmoid:
        return HSigmoid()


@register_converter
class ShuffleChannelConverter(Converter):
    """Channel ``i * (C / group) + j`` of the bottom becomes channel ``j * group + i``."""

    caffe_type = "ShuffleChannel"
    origin = "ShuffleNet (farmingyard/ShuffleNet)"

    def output_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        expect_bottoms(layer, inputs, 1)
        shape = tuple(inputs[0])
        group = layer.param.shuffle_channel_param.group
        if len(shape) < 2:
            raise shape_error(layer, f"input shape {shape} has no channel axis")
        if group <= 0 or shape[1] % group:
            raise shape_error(layer, f"group {group} must be positive and divide the "
                                     f"{shape[1]} channels of input {shape}")
        return [shape]

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> ShuffleChannel:
        return ShuffleChannel(layer.param.shuffle_channel_param.group)


@register_converter
class DepthwiseConvolutionConverter(ConvolutionConverter):
    """eric612/yonghenglh6 DepthwiseConvolution: Caffe's Convolution (num_output, group as
    given; prototxts set both to the channel count)."""

    caffe_type = "DepthwiseConvolution"
    origin = "eric612/MobileNet-YOLO (yonghenglh6)"
    param_field = "convolution_param"


def _pair(values: Sequence[int]) -> tuple[int, int] | None:
    """The PR #5665 reading of a repeated field: one value for both axes, else the first two."""
    if not values:
        return None
    return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])


def _dw_geometry(p: caffe_pb2.ConvolutionParameter) -> dict[str, tuple[int, int] | None]:
    """kernel / stride / pad / dilation as conv_dw_layer.cpp's LayerSetUp reads them: the _h/_w
    pair where both are set, else the list (None where it is empty)."""
    def read(name: str) -> tuple[int, int] | None:
        if p.HasField(f"{name}_h") and p.HasField(f"{name}_w"):
            return (getattr(p, f"{name}_h"), getattr(p, f"{name}_w"))
        return _pair(getattr(p, "kernel_size" if name == "kernel" else name))
    return {"kernel": read("kernel"), "stride": read("stride"), "pad": read("pad"),
            "dilation": _pair(p.dilation) or (1, 1)}


@register_converter
class ConvolutionDepthwiseConverter(Converter):
    """BVLC PR #5665 ConvolutionDepthwise: a Convolution with group = num_output = the input
    channels, built by the Convolution converter from the geometry the PR reads."""

    caffe_type = "ConvolutionDepthwise"
    origin = "BVLC PR #5665 (farmingyard/caffe-mobilenet)"
    param_field = "convolution_param"
    limits = "num_output, group and axis are ignored, as the fork's layer ignores them"

    def _as_convolution(self, layer: LayerNode, inputs: Sequence[Shape]) -> LayerNode:
        if len(inputs) != 1 or len(inputs[0]) != 4:
            raise shape_error(layer, f"bottom shapes {[tuple(s) for s in inputs]}; the fork's "
                                     "ConvolutionDepthwise takes one 4-D (N, C, H, W) bottom")
        g = _dw_geometry(layer.param.convolution_param)
        missing = [name for name, value in g.items() if value is None]
        if missing:
            raise shape_error(layer, f"no {', '.join(missing)} given; the fork's layer reads "
                                     "the first value of each (undefined when there is none)")
        param = caffe_pb2.LayerParameter()
        param.CopyFrom(layer.param)
        conv = param.convolution_param
        channels = inputs[0][1]
        for name in ("kernel_size", "stride", "pad", "dilation"):
            conv.ClearField(name)
        conv.ClearField("axis")
        conv.num_output, conv.group = channels, channels
        conv.kernel_h, conv.kernel_w = g["kernel"]
        conv.stride_h, conv.stride_w = g["stride"]
        conv.pad_h, conv.pad_w = g["pad"]
        conv.dilation.extend(g["dilation"])
        return dataclasses.replace(layer, param=param)

    def unsupported(self, layer: LayerNode) -> list[str]:
        g = _dw_geometry(layer.param.convolution_param)
        return [f"convolution_param has no {name} (the fork reads {name}(0) regardless: "
                "undefined in Caffe)" for name, value in g.items() if value is None]

    def output_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        return ConvolutionConverter().output_shapes(self._as_convolution(layer, inputs), inputs)

    def blob_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        return ConvolutionConverter().blob_shapes(self._as_convolution(layer, inputs), inputs)

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> nn.Module:
        return ConvolutionConverter().build(self._as_convolution(layer, inputs), inputs)

    def flops(self, layer, inputs, outputs) -> int:
        return ConvolutionConverter().flops(self._as_convolution(layer, inputs), inputs, outputs)


@register_converter
class AxpyConverter(Converter):
    """``top = a * x + y`` for bottoms (a, x, y): a's axes 0 and 1 are x's (and a 4-D a is
    (N, C, 1, 1)), y has x's shape; Caffe reads a's first N * C values as the scales."""

    caffe_type = "Axpy"
    origin = "SENet (hujie-frank/SENet)"
    param_field = None

    def output_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        expect_bottoms(layer, inputs, 3)
        a, x, y = (tuple(s) for s in inputs)
        if not 2 <= len(x) <= 4:
            raise shape_error(layer, f"x (bottom 1) has shape {x}; Caffe's Axpy needs 2 to 4 "
                                     "axes (it reads num() and channels())")
        if len(a) < 2 or a[:2] != x[:2] or (len(a) == 4 and a[2:] != (1, 1)):
            raise shape_error(layer, f"scale a (bottom 0) has shape {a}; expected ({x[0]}, "
                                     f"{x[1]}) or ({x[0]}, {x[1]}, 1, 1) for x of shape {x}")
        if count(a) < x[0] * x[1]:
            raise shape_error(layer, f"scale a {a} has fewer than N * C = {x[0] * x[1]} values")
        if y != x:
            raise shape_error(layer, f"y (bottom 2) has shape {y}; expected x's shape {x}")
        return [x]

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> Axpy:
        return Axpy()

    def flops(self, layer, inputs, outputs) -> int:
        return count(outputs[0])
