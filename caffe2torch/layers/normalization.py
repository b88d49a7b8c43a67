"""Normalisation: BatchNorm (mean*f, var*f, f), Scale and Bias (learned or second bottom), MVN.

Initial values (``weights=None``) follow the layer's filler as Caffe does: Scale ``filler``
(default constant 1), Scale ``bias_filler`` and Bias ``filler`` (default constant 0). Constant,
uniform and gaussian fillers are reproduced (the random ones with torch's generator); any other
filler type leaves the default constant, since a caffemodel normally replaces these values.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from caffe2torch.ir.graph import LayerNode
from caffe2torch.layers._common import canonical_axis, expect_bottoms
from caffe2torch.layers.registry import Converter, register_converter, shape_error
from caffe2torch.modules.normalization import MVN, Bias, CaffeBatchNorm, Scale
from caffe2torch.proto import caffe_pb2

Shape = tuple[int, ...]


def fill_from_filler(tensor: torch.Tensor, filler: caffe_pb2.FillerParameter | None,
                     default: float, layer: LayerNode) -> None:
    """Initialise ``tensor`` as Caffe's constant/uniform/gaussian filler, else ``default``;
    the random fillers' bounds are checked as Caffe's caffe_rng_uniform / caffe_rng_gaussian
    CHECK them (min <= max, std > 0), and must be finite."""
    kind = filler.type if filler is not None else ""
    if kind == "uniform" and not (math.isfinite(filler.min) and math.isfinite(filler.max)
                                  and filler.min <= filler.max):
        raise shape_error(layer, f"uniform filler has min {filler.min} and max {filler.max}; "
                                 "expected finite values with min <= max")
    if kind == "gaussian" and not (math.isfinite(filler.mean) and math.isfinite(filler.std)
                                   and filler.std > 0):
        raise shape_error(layer, f"gaussian filler has mean {filler.mean} and std "
                                 f"{filler.std}; expected finite values with std > 0")
    with torch.no_grad():
        if kind == "constant":
            tensor.fill_(filler.value)
        elif kind == "uniform":
            tensor.uniform_(filler.min, filler.max)
        elif kind == "gaussian":
            tensor.normal_(filler.mean, filler.std)
        else:
            tensor.fill_(default)


# ----------------------------------------------------------------------------- BatchNorm


@register_converter
class BatchNormConverter(Converter):
    """Blobs: mean * f, variance * f, f (one value); Caffe divides by f (0 when f == 0)."""

    caffe_type = "BatchNorm"

    def output_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        expect_bottoms(layer, inputs, 1)
        if len(inputs[0]) < 2:
            raise shape_error(layer, f"input shape {tuple(inputs[0])} has no channel axis; "
                                     "expected at least 2 axes (N, C, ...)")
        return [inputs[0]]

    def blob_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        channels = inputs[0][1]
        return [(channels,), (channels,), (1,)]

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> CaffeBatchNorm:
        p = layer.param.batch_norm_param
        use_global = p.use_global_stats if p.HasField("use_global_stats") else None
        return CaffeBatchNorm(inputs[0][1], eps=p.eps, use_global_stats=use_global,
                              moving_average_fraction=p.moving_average_fraction)

    def load_blobs(self, module: nn.Module, blobs: Sequence[np.ndarray]) -> None:
        mean, var, factor = (np.asarray(b, dtype=np.float32) for b in blobs)
        f = factor.reshape(-1)[0]
        scale = np.float32(0) if f == 0 else np.float32(1) / f  # as Caffe, in float
        with torch.no_grad():
            module.running_mean.copy_(torch.from_numpy(mean.reshape(-1) * scale))
            module.running_var.copy_(torch.from_numpy(var.reshape(-1) * scale))
            module.factor.fill_(float(f))

    def dump_blobs(self, module: nn.Module, layer: LayerNode,
                   inputs: Sequence[Shape]) -> list[np.ndarray]:
        """Caffe's blobs (sums = statistics * f, and f); f == 0 (nothing accumulated: Caffe
        reads the statistics as 0) is written as the statistics with f = 1."""
        f = np.float32(module.factor.detach().cpu().reshape(-1)[0])
        mean = module.running_mean.detach().cpu().numpy().astype(np.float32)
        var = module.running_var.detach().cpu().numpy().astype(np.float32)
        if f == 0:
            return [mean, var, np.ones(1, dtype=np.float32)]
        return [mean * f, var * f, np.array([f], dtype=np.float32)]

    def random_blobs(self, layer: LayerNode, inputs: Sequence[Shape],
                     rng: np.random.Generator) -> list[np.ndarray]:
        channels = inputs[0][1]
        # f != 1 exercises the scale factor; the zero guard (f = 0, y = x / sqrt(eps), ~316x)
        # has its own tests and would blow up deep random nets, so it is not drawn here.
        f = rng.uniform(0.5, 4.0)
        mean = rng.normal(0.0, 0.5, channels) * f
        var = rng.uniform(0.5, 2.0, channels) * f
        return [mean.astype(np.float32), var.astype(np.float32), np.array([f], np.float32)]


# ----------------------------------------------------------------------------- Scale and Bias


def _operand(layer: LayerNode, inputs: Sequence[Shape], axis: int,
             num_axes: int) -> tuple[int, Shape]:
    """(axis, shape) of the scale/bias: Caffe's shape rule for a learned blob or bottom 1."""
    shape = inputs[0]
    if len(inputs) == 2:
        operand = tuple(inputs[1])
        start = 0 if not operand else canonical_axis(layer, axis, len(shape))
    else:
        start = canonical_axis(layer, axis, len(shape))
        if num_axes < -1:
            raise shape_error(layer, f"num_axes is {num_axes}; expected -1 (to the last axis) "
                                     "or a number >= 0")
        if num_axes >= 0 and start + num_axes > len(shape):
            raise shape_error(layer, f"axis {axis} with num_axes {num_axes} extends past the "
                                     f"{len(shape)} axes of input shape {tuple(shape)}")
        operand = tuple(shape[start:] if num_axes == -1 else shape[start:start + num_axes])
        start = start if operand else 0
    if tuple(shape[start:start + len(operand)]) != operand:
        raise shape_error(layer, f"bottom 1 has shape {operand}; expected input axes "
                                 f"{start}.. of {tuple(shape)}, i.e. "
                                 f"{tuple(shape[start:start + len(operand)])}")
    return start, operand


@register_converter
class ScaleConverter(Converter):
    """``y = x * scale (+ bias)``; blobs: [scale] + [bias] if ``bias_term`` (no scale blob when
    the scale is the second bottom)."""

    caffe_type = "Scale"

    def _operand(self, layer: LayerNode, inputs: Sequence[Shape]) -> tuple[int, Shape]:
        p = layer.param.scale_param
        if len(inputs) == 2 and p.bias_term:
            canonical_axis(layer, p.axis, len(inputs[0]))  # Caffe's inner Bias layer checks it
        return _operand(layer, inputs, p.axis, p.num_axes)

    def output_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        expect_bottoms(layer, inputs, 1, 2)
        self._operand(layer, inputs)
        return [inputs[0]]

    def blob_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        _, shape = self._operand(layer, inputs)
        blobs = [shape] if len(inputs) == 1 else []
        return blobs + [shape] if layer.param.scale_param.bias_term else blobs

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> Scale:
        p = layer.param.scale_param
        axis, shape = self._operand(layer, inputs)
        module = Scale(axis, shape, bias=p.bias_term, from_bottom=len(inputs) == 2)
        if module.weight is not None:
            fill_from_filler(module.weight, p.filler if p.HasField("filler") else None, 1.0,
                             layer)
        if module.bias is not None:
            fill_from_filler(module.bias, p.bias_filler, 0.0, layer)
        return module

    def random_blobs(self, layer: LayerNode, inputs: Sequence[Shape],
                     rng: np.random.Generator) -> list[np.ndarray]:
        shapes = self.blob_shapes(layer, inputs)
        blobs = [rng.uniform(0.5, 1.5, shapes[0])] if len(inputs) == 1 else []
        if layer.param.scale_param.bias_term:
            blobs.append(rng.normal(0.0, 0.1, shapes[-1]))
        return [np.asarray(b, dtype=np.float32) for b in blobs]


@register_converter
class BiasConverter(Converter):
    """``y = x + bias``; one blob, or none when the bias is the second bottom."""

    caffe_type = "Bias"

    def _operand(self, layer: LayerNode, inputs: Sequence[Shape]) -> tuple[int, Shape]:
        p = layer.param.bias_param
        return _operand(layer, inputs, p.axis, p.num_axes)

    def output_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        expect_bottoms(layer, inputs, 1, 2)
        self._operand(layer, inputs)
        return [inputs[0]]

    def blob_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        return [self._operand(layer, inputs)[1]] if len(inputs) == 1 else []

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> Bias:
        axis, shape = self._operand(layer, inputs)
        module = Bias(axis, shape, from_bottom=len(inputs) == 2)
        if module.bias is not None:
            fill_from_filler(module.bias, layer.param.bias_param.filler, 0.0, layer)
        return module


# ----------------------------------------------------------------------------- MVN


@register_converter
class MVNConverter(Converter):
    """Mean-variance normalisation per sample (and channel unless ``across_channels``)."""

    caffe_type = "MVN"

    def output_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        expect_bottoms(layer, inputs, 1)
        shape = tuple(inputs[0])
        if not 1 <= len(shape) <= 4:
            raise shape_error(layer, f"input shape {shape} has {len(shape)} axes; Caffe's MVN "
                                     "uses the legacy num/channels/height/width accessors, "
                                     "which take 1 to 4 axes")
        # Caffe reshapes the top with those accessors: missing trailing axes become 1
        return [shape + (1,) * (4 - len(shape))]

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> MVN:
        p = layer.param.mvn_param
        return MVN(p.normalize_variance, p.across_channels, p.eps)
