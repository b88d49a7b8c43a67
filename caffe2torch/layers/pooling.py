"""Pooling: MAX, AVE, STOCHASTIC (test time), global; Caffe's ceil rule, clip rule, AVE divisor."""
from __future__ import annotations

from collections.abc import Sequence

from caffe2torch.ir.graph import LayerNode
from caffe2torch.layers._common import expect_bottoms
from caffe2torch.layers.registry import Converter, register_converter, shape_error
from caffe2torch.modules.pooling import CaffePool2d, pooled_hw
from caffe2torch.proto import caffe_pb2

Shape = tuple[int, ...]
P = caffe_pb2.PoolingParameter


def pooling_geometry(layer: LayerNode):
    """(kernel, stride, pad) pairs with PoolingLayer::LayerSetUp's CHECKs; None if global."""
    p = layer.param.pooling_param
    pad = _pair(layer, "pad", p.HasField("pad"), p.pad, p.HasField("pad_h"), p.HasField("pad_w"),
                (p.pad_h, p.pad_w))
    stride = _pair(layer, "stride", p.HasField("stride"), p.stride, p.HasField("stride_h"),
                   p.HasField("stride_w"), (p.stride_h, p.stride_w))
    if p.global_pooling:
        if p.HasField("kernel_size") or p.HasField("kernel_h") or p.HasField("kernel_w"):
            raise shape_error(layer, "global_pooling is set, so no kernel size may be given")
        if any(pad) or stride != (1, 1):
            raise shape_error(layer, f"global_pooling allows only pad 0 and stride 1 "
                                     f"(got pad {pad}, stride {stride})")
        return None
    both_hw = p.HasField("kernel_h") and p.HasField("kernel_w")
    if p.HasField("kernel_size") == both_hw:
        raise shape_error(layer, "give either kernel_size or both kernel_h and kernel_w "
                                 "(or global_pooling)")
    kernel = (p.kernel_size, p.kernel_size) if p.HasField("kernel_size") else \
        (p.kernel_h, p.kernel_w)
    if min(kernel) <= 0 or min(stride) <= 0:
        raise shape_error(layer, f"kernel {kernel} and stride {stride} must be positive")
    if any(pad):
        if p.pool == P.STOCHASTIC:
            raise shape_error(layer, f"pad {pad}: Caffe pads only AVE and MAX pooling")
        if any(pd >= k for pd, k in zip(pad, kernel)):
            raise shape_error(layer, f"pad {pad} must be smaller than kernel {kernel}")
    return kernel, stride, pad


def _pair(layer: LayerNode, name: str, has_one: bool, one: int, has_h: bool, has_w: bool,
          hw: tuple[int, int]) -> tuple[int, int]:
    """Caffe's rule: ``name`` alone, or both ``name_h`` and ``name_w`` and no ``name``."""
    if not (has_h or has_w):
        return (one, one)
    if has_one or not (has_h and has_w):
        raise shape_error(layer, f"give either {name} or both {name}_h and {name}_w")
    return hw


def rounds_up(layer: LayerNode) -> bool:
    """True for CEIL rounding: BVLC's round_mode, or the forks' ``ceil_mode`` (same meaning flipped)."""
    p = layer.param.pooling_param
    if p.HasField("ceil_mode"):
        return p.ceil_mode
    return p.round_mode == P.CEIL


@register_converter
class PoolingConverter(Converter):
    caffe_type = "Pooling"

    def unsupported(self, layer: LayerNode) -> list[str]:
        p = layer.param.pooling_param
        problems = []
        if p.HasField("ceil_mode") and p.HasField("round_mode") and \
                p.ceil_mode != (p.round_mode == P.CEIL):
            problems.append(f"round_mode {P.RoundMode.Name(p.round_mode)} contradicts "
                            f"ceil_mode {str(p.ceil_mode).lower()}")
        return problems

    def output_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        expect_bottoms(layer, inputs, 1)
        shape = inputs[0]
        if len(shape) != 4:
            raise shape_error(layer, f"input has shape {shape}; Caffe pools 4-D (N, C, H, W) blobs")
        pooled = self._pooled(layer, shape)
        out = (shape[0], shape[1], *pooled)
        p = layer.param.pooling_param
        n_tops = len(layer.param.top)
        most = 2 if p.pool == P.MAX else 1  # PoolingLayer::MinTopBlobs / MaxTopBlobs
        if not 1 <= n_tops <= most:
            why = "MAX takes 1 or 2 (the second is the mask)" if most == 2 else \
                f"{P.PoolMethod.Name(p.pool)} takes exactly 1 (a mask top exists only for MAX)"
            raise shape_error(layer, f"has {n_tops} top(s); Caffe's Pooling {why}")
        if min(pooled) <= 0:
            raise shape_error(layer, f"input {shape} gives an empty output {out}")
        return [out] * n_tops

    def _pooled(self, layer: LayerNode, shape: Shape) -> tuple[int, int]:
        geometry = pooling_geometry(layer)
        if geometry is None:
            return (1, 1)
        kernel, stride, pad = geometry
        return pooled_hw((shape[2], shape[3]), kernel, pad, stride, rounds_up(layer))

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> CaffePool2d:
        p = layer.param.pooling_param
        geometry = pooling_geometry(layer)
        kernel, stride, pad = geometry if geometry else ((1, 1), (1, 1), (0, 0))
        return CaffePool2d(P.PoolMethod.Name(p.pool), kernel, stride, pad, ceil=rounds_up(layer),
                           global_pooling=geometry is None, with_mask=len(layer.tops) == 2)

    def flops(self, layer, inputs, outputs) -> int:
        geometry = pooling_geometry(layer)
        window = inputs[0][2] * inputs[0][3] if geometry is None else geometry[0][0] * geometry[0][1]
        return int(outputs[0][0] * outputs[0][1] * outputs[0][2] * outputs[0][3] * window)
