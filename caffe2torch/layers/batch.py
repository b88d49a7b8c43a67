"""BatchReindex and Filter: items along axis 0 chosen by the values of another bottom.

Filter's top size depends on the selector's values, which shape inference cannot see. Its rule
is Caffe's own shape at net set-up: FilterLayer's first Reshape keeps the whole batch (the
``first_reshape_`` branch), so the inferred shape is what ``caffe.Net`` reports before its first
forward and an upper bound of the run-time size along axis 0; the module returns Caffe's actual
run-time top. ``data_dependent`` marks converters whose inferred axis 0 is such a bound.
"""
from __future__ import annotations

from collections.abc import Sequence

from caffe2torch.ir.graph import LayerNode
from caffe2torch.layers._common import expect_bottoms
from caffe2torch.layers.registry import Converter, register_converter, shape_error
from caffe2torch.modules.batch import BatchReindex, Filter

Shape = tuple[int, ...]


@register_converter
class BatchReindexConverter(Converter):
    """Bottoms: data (N, ...), indices (K,) as floats; top (K, ...)."""

    caffe_type = "BatchReindex"

    def output_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        expect_bottoms(layer, inputs, 2)
        data, indices = inputs
        if len(indices) != 1:
            raise shape_error(layer, f"the indices (bottom 1) have shape {tuple(indices)}; "
                                     "expected 1 axis")
        if len(data) < 1:
            raise shape_error(layer, "the data (bottom 0) has no axes; expected at least 1")
        return [(indices[0], *data[1:])]

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> BatchReindex:
        return BatchReindex()


@register_converter
class FilterConverter(Converter):
    """Bottoms: k blobs (N, ...) and the selector (N, 1, ..., 1) last; k tops (at most N, ...)."""

    caffe_type = "Filter"
    limits = ("a static top size: inferred axis 0 is the whole batch (Caffe's set-up shape); "
              "the run-time size follows the selector")
    #: The inferred axis 0 of the tops is an upper bound; the run-time size depends on values.
    data_dependent = True

    def output_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        expect_bottoms(layer, inputs, 2, -1)
        if len(layer.param.top) != len(inputs) - 1:
            raise shape_error(layer, f"has {len(layer.param.top)} top(s) for {len(inputs)} "
                                     f"bottoms; expected {len(inputs) - 1} (one per bottom but "
                                     "the selector)")
        *blobs, selector = (tuple(s) for s in inputs)
        if not selector or any(d != 1 for d in selector[1:]):
            raise shape_error(layer, f"the selector (last bottom) has shape {selector}; expected "
                                     "(N,) or (N, 1, ...): every axis but the first of size 1")
        for i, shape in enumerate(blobs):
            if not shape or shape[0] != selector[0]:
                raise shape_error(layer, f"bottom {i} has shape {shape}; expected {selector[0]} "
                                         "items along axis 0, as the selector")
        return blobs  # Caffe's set-up shape: the whole batch (see the module docstring)

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> Filter:
        return Filter()
