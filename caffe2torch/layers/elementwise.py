"""Shape-preserving layers of the core set: ReLU, Dropout, Softmax, Eltwise (any bottoms)."""
from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from caffe2torch.ir.graph import LayerNode
from caffe2torch.layers._common import canonical_axis, expect_bottoms, same_shapes
from caffe2torch.layers.registry import Converter, register_converter, shape_error
from caffe2torch.modules.basic import Eltwise, Softmax
from caffe2torch.proto import caffe_pb2

Shape = tuple[int, ...]


class SameShapeConverter(Converter):
    """A layer whose single top has the shape of its single bottom."""

    def output_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        expect_bottoms(layer, inputs, 1)
        return [inputs[0]]


@register_converter
class ReLUConverter(SameShapeConverter):
    caffe_type = "ReLU"

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> nn.Module:
        slope = layer.param.relu_param.negative_slope
        return nn.LeakyReLU(slope) if slope != 0 else nn.ReLU()


@register_converter
class DropoutConverter(SameShapeConverter):
    caffe_type = "Dropout"

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> nn.Module:
        # Caffe scales by 1 / (1 - ratio) at train time and is the identity at test time, as torch.
        # Caffe only DCHECKs 0 < ratio < 1, so a release build runs any ratio at test time.
        ratio = layer.param.dropout_param.dropout_ratio
        return nn.Dropout(ratio) if 0.0 <= ratio <= 1.0 else nn.Identity()


@register_converter
class SoftmaxConverter(SameShapeConverter):
    caffe_type = "Softmax"

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> Softmax:
        return Softmax(canonical_axis(layer, layer.param.softmax_param.axis, len(inputs[0])))

    def output_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        expect_bottoms(layer, inputs, 1)
        canonical_axis(layer, layer.param.softmax_param.axis, len(inputs[0]))
        return [inputs[0]]


@register_converter
class EltwiseConverter(Converter):
    caffe_type = "Eltwise"

    def output_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        expect_bottoms(layer, inputs, 2, -1)
        p = layer.param.eltwise_param
        if len(p.coeff) not in (0, len(inputs)):
            raise shape_error(layer, f"{len(p.coeff)} coeff values for {len(inputs)} bottoms; "
                                     "expected none or one per bottom")
        # Caffe rejects coeff only for PROD; MAX accepts and ignores it.
        if len(p.coeff) and p.operation == caffe_pb2.EltwiseParameter.PROD:
            raise shape_error(layer, "coeff is given with operation PROD; Caffe takes "
                                     "coefficients for SUM only")
        return [same_shapes(layer, inputs)]

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> Eltwise:
        p = layer.param.eltwise_param
        operation = caffe_pb2.EltwiseParameter.EltwiseOp.Name(p.operation)
        sums = p.operation == caffe_pb2.EltwiseParameter.SUM
        coeffs = tuple(float(c) for c in p.coeff) if sums else ()
        return Eltwise(operation, () if all(c == 1.0 for c in coeffs) else coeffs,
                       aliased=tuple(layer.aliased_bottoms))
