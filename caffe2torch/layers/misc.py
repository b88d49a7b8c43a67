"""Embed (index lookup), Silence (consumes its bottoms, no top) and Parameter (a learned blob as
a top, no bottom)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from caffe2torch.ir.graph import LayerNode
from caffe2torch.layers._common import expect_bottoms
from caffe2torch.layers.registry import Converter, register_converter, shape_error
from caffe2torch.modules.basic import Embed, ParameterBlob

Shape = tuple[int, ...]


@register_converter
class EmbedConverter(Converter):
    """Weight (input_dim, num_output), transposed from InnerProduct's; bias (num_output,)."""

    caffe_type = "Embed"

    def _sizes(self, layer: LayerNode) -> tuple[int, int]:
        p = layer.param.embed_param
        for field in ("num_output", "input_dim"):
            if getattr(p, field) <= 0:
                raise shape_error(layer, f"{field} is {getattr(p, field)}; expected a positive "
                                         "number")
        return p.input_dim, p.num_output

    def output_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        expect_bottoms(layer, inputs, 1)
        _, num_output = self._sizes(layer)
        return [(*inputs[0], num_output)]

    def blob_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        input_dim, num_output = self._sizes(layer)
        weight = (input_dim, num_output)
        return [weight, (num_output,)] if layer.param.embed_param.bias_term else [weight]

    def random_blobs(self, layer: LayerNode, inputs: Sequence[Shape],
                     rng: np.random.Generator) -> list[np.ndarray]:
        # Rows are looked up, not summed: unit-scale values, small bias.
        return [(rng.standard_normal(s) * (1.0 if i == 0 else 0.1)).astype(np.float32)
                for i, s in enumerate(self.blob_shapes(layer, inputs))]

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> Embed:
        input_dim, num_output = self._sizes(layer)
        return Embed(input_dim, num_output, bias=layer.param.embed_param.bias_term)


class _NoOutput(nn.Module):
    def forward(self, *xs: torch.Tensor) -> tuple:
        return ()


@register_converter
class SilenceConverter(Converter):
    """Caffe's Silence: consumes its bottoms (so they are no net outputs) and has no top; the
    graph builder emits no node for a layer without tops."""

    caffe_type = "Silence"

    def output_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        expect_bottoms(layer, inputs, 1, -1)
        return []

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> nn.Module:
        return _NoOutput()


@register_converter
class ParameterConverter(Converter):
    caffe_type = "Parameter"

    def _shape(self, layer: LayerNode) -> Shape:
        shape = tuple(int(d) for d in layer.param.parameter_param.shape.dim)
        if any(d < 0 for d in shape):
            raise shape_error(layer, f"parameter_param shape {list(shape)} has a negative dim")
        return shape

    def output_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        expect_bottoms(layer, inputs, 0)
        return [self._shape(layer)]

    def blob_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        return [self._shape(layer)]

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> ParameterBlob:
        return ParameterBlob(self._shape(layer))
