"""Element-wise activations: PReLU, ELU, Sigmoid, TanH, AbsVal, BNLL, Power, Exp, Log,
Threshold, Clip, Swish (ReLU lives in ``elementwise``).

Exp/Log/Power constants are computed in float32, in Caffe's order, so the special cases Caffe
takes (``power * scale == 0``, ``inner_scale == 1`` ...) are taken here too.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from torch import nn

from caffe2torch.ir.graph import LayerNode
from caffe2torch.layers._common import expect_bottoms
from caffe2torch.layers.elementwise import SameShapeConverter
from caffe2torch.layers.normalization import fill_from_filler
from caffe2torch.layers.registry import Converter, register_converter, shape_error
from caffe2torch.modules.activations import (
    BNLL,
    AbsVal,
    Clip,
    Exp,
    Log,
    Power,
    PReLU,
    Swish,
    Threshold,
)

Shape = tuple[int, ...]
f32 = np.float32


@register_converter
class PReLUConverter(Converter):
    """One slope per channel (axis 1), blob (C,); or one shared slope, a 0-D blob."""

    caffe_type = "PReLU"

    def output_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        expect_bottoms(layer, inputs, 1)
        if not 2 <= len(inputs[0]) <= 4:
            raise shape_error(layer, f"input shape {tuple(inputs[0])} has {len(inputs[0])} "
                                     "axes; Caffe's PReLU needs 2 to 4 (its channels() is a "
                                     "legacy 4-D accessor)")
        return [inputs[0]]

    def blob_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        return [()] if layer.param.prelu_param.channel_shared else [(inputs[0][1],)]

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> PReLU:
        p = layer.param.prelu_param
        module = PReLU(inputs[0][1], p.channel_shared)
        fill_from_filler(module.weight, p.filler if p.HasField("filler") else None, 0.25,
                         layer)
        return module

    def random_blobs(self, layer: LayerNode, inputs: Sequence[Shape],
                     rng: np.random.Generator) -> list[np.ndarray]:
        return [rng.uniform(0.0, 0.5, shape).astype(f32)
                for shape in self.blob_shapes(layer, inputs)]


@register_converter
class ELUConverter(SameShapeConverter):
    caffe_type = "ELU"

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> nn.Module:
        # Caffe: max(x, 0) + alpha * (exp(min(x, 0)) - 1), torch's ELU
        return nn.ELU(layer.param.elu_param.alpha)


@register_converter
class SigmoidConverter(SameShapeConverter):
    caffe_type = "Sigmoid"

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> nn.Module:
        return nn.Sigmoid()


@register_converter
class TanHConverter(SameShapeConverter):
    caffe_type = "TanH"

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> nn.Module:
        return nn.Tanh()


@register_converter
class AbsValConverter(SameShapeConverter):
    caffe_type = "AbsVal"

    def output_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        if set(layer.param.top) & set(layer.param.bottom):
            raise shape_error(layer, f"computes in place (top {list(layer.param.top)}); Caffe's "
                                     "AbsVal does not allow in-place computation")
        return super().output_shapes(layer, inputs)

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> AbsVal:
        return AbsVal()


@register_converter
class BNLLConverter(SameShapeConverter):
    caffe_type = "BNLL"

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> BNLL:
        return BNLL()


@register_converter
class PowerConverter(SameShapeConverter):
    caffe_type = "Power"

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> Power:
        p = layer.param.power_param
        power, scale, shift = f32(p.power), f32(p.scale), f32(p.shift)
        constant = None
        if power * scale == 0:  # Caffe's diff_scale_ == 0: the input is ignored
            with np.errstate(all="ignore"):
                constant = 1.0 if power == 0 else float(shift ** power)
        return Power(float(power), float(scale), float(shift), constant)


def _log_base(layer: LayerNode, base: float) -> np.float32:
    """ln(base) in float32, base -1 meaning e (exactly 1), with Caffe's LayerSetUp checks."""
    if base == -1:
        return f32(1)
    if not base > 0:
        raise shape_error(layer, f"base is {base:g}; expected -1 (for e) or a number > 0")
    log_base = np.log(f32(base))
    if not math.isfinite(log_base):
        raise shape_error(layer, f"base {base:g} gives log(base) = {log_base}; expected finite")
    return log_base


@register_converter
class ExpConverter(SameShapeConverter):
    """``y = base ^ (shift + scale * x)``, base -1 meaning e."""

    caffe_type = "Exp"

    def output_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        _log_base(layer, layer.param.exp_param.base)
        return super().output_shapes(layer, inputs)

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> Exp:
        p = layer.param.exp_param
        base, scale, shift = f32(p.base), f32(p.scale), f32(p.shift)
        inner = _log_base(layer, p.base) * scale
        with np.errstate(all="ignore"):
            outer = f32(1) if shift == 0 else (np.exp(shift) if base == -1 else base ** shift)
        return Exp(float(inner), float(outer))


@register_converter
class LogConverter(SameShapeConverter):
    """``y = log_base(shift + scale * x)``, base -1 meaning e."""

    caffe_type = "Log"

    def _base_scale(self, layer: LayerNode) -> np.float32:
        log_base = _log_base(layer, layer.param.log_param.base)
        if log_base == 0:
            raise shape_error(layer, f"base is {layer.param.log_param.base:g}, so "
                                     "1 / log(base) is infinite; expected a base other than 1")
        return f32(1) / log_base

    def output_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        self._base_scale(layer)
        return super().output_shapes(layer, inputs)

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> Log:
        p = layer.param.log_param
        return Log(float(f32(p.scale)), float(f32(p.shift)), float(self._base_scale(layer)))


@register_converter
class ThresholdConverter(SameShapeConverter):
    caffe_type = "Threshold"

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> Threshold:
        return Threshold(layer.param.threshold_param.threshold)


@register_converter
class ClipConverter(SameShapeConverter):
    caffe_type = "Clip"

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> Clip:
        p = layer.param.clip_param
        return Clip(p.min, p.max)


@register_converter
class SwishConverter(SameShapeConverter):
    caffe_type = "Swish"

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> Swish:
        return Swish(layer.param.swish_param.beta)
