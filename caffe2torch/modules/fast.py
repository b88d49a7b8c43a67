"""Modules of the inference-optimised model (:func:`caffe2torch.optimize`): torch's own kernels
where they give Caffe's result, and the per-channel affine that folded layers leave behind.

Native pooling. Caffe's PoolingLayer and torch's pooling place window ``i`` of an axis of length
``n`` at ``[i * s - p, i * s - p + k)`` alike, clip it to the image alike (MAX: the in-image
pixels; AVE: the sum over the in-image pixels divided by the window clipped to ``n + p``, which is
torch's ``count_include_pad=True`` divisor) and round the output length alike,
``raw = ceil_or_floor((n + 2p - k) / s) + 1``. They differ in three places only:

1. the clip rule: torch (ceil mode) drops the last window when ``(raw - 1) * s >= n + p``, on
   every axis; Caffe drops it only when the layer is padded (BVLC: when ``pad_h`` or ``pad_w`` is
   non-zero, on both axes; our code before that fix: on an axis whose own pad is non-zero). In
   floor mode neither ever drops one, since ``(raw - 1) * s <= n + 2p - k < n + p``;
2. torch rejects ``p > k / 2`` (Caffe takes any ``p < k``);
3. an empty window (every pixel in the overhang) is -FLT_MAX in Caffe's MAX and NaN or -0 in its
   AVE; torch has none.

So, per axis, torch's kernel gives Caffe's output when ``p <= k // 2`` and either ``p > 0`` (then
both Caffe rules drop the last window exactly when torch does) or ``(raw - 1) * s < n`` (no rule
drops one). With torch's clip applied every window starts before ``n`` (``(out - 1) * s - p < n``)
and ends after 0 (``k - p > 0``), so no window is empty and difference 3 cannot arise. What is
left is MAX of -inf inputs: Caffe's scan from -FLT_MAX returns -FLT_MAX, torch -inf; the module
clamps unless the optimiser has proved its input has no -inf (it follows a ReLU, say).
"""
from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from caffe2torch.modules.pooling import FLT_MAX, Pair, caffe_pool2d
from caffe2torch.modules.precision import float32_inside


def native_pooling_applies(size: int, kernel: int, pad: int, stride: int) -> bool:
    """True when torch's pooling of an axis of length ``size`` gives Caffe's windows (any rounding,
    either Caffe clip rule; see the module docstring)."""
    span = size + 2 * pad - kernel
    if span < 0 or pad > kernel // 2:
        return False
    if pad > 0:
        return True
    raw = -(-span // stride) + 1  # the ceil rounding; floor never reaches the clip
    return (raw - 1) * stride < size


class NativePool2d(nn.Module):
    """Caffe's MAX / AVE pooling through torch's kernels wherever they agree (decided from the
    input size at each call), else :func:`caffe_pool2d`. ``clamp=False`` where the input is known
    to hold no -inf (MAX only)."""

    def __init__(self, method: str, kernel: Pair, stride: Pair, pad: Pair, ceil: bool = True,
                 global_pooling: bool = False, clamp: bool = True) -> None:
        super().__init__()
        self.method, self.kernel, self.stride, self.pad = method, kernel, stride, pad
        self.ceil, self.global_pooling = ceil, global_pooling
        self.clamp = clamp and method == "MAX"

    def extra_repr(self) -> str:
        where = "global" if self.global_pooling else (
            f"kernel={self.kernel}, stride={self.stride}, pad={self.pad}, "
            f"round={'ceil' if self.ceil else 'floor'}")
        return f"{self.method}, {where}, clamp={self.clamp}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.global_pooling:
            if self.method == "AVE":
                return x.mean((-2, -1), keepdim=True)
            out = x.amax((-2, -1), keepdim=True)
        elif all(native_pooling_applies(n, k, p, s) for n, k, p, s in
                 zip(x.shape[-2:], self.kernel, self.pad, self.stride)):
            if self.method == "AVE":
                return F.avg_pool2d(x, self.kernel, self.stride, self.pad, ceil_mode=self.ceil)
            out = F.max_pool2d(x, self.kernel, self.stride, self.pad, ceil_mode=self.ceil)
        else:
            return caffe_pool2d(x, self.method, self.kernel, self.stride, self.pad, self.ceil)
        # -FLT_MAX, or the lowest finite value of a narrower dtype
        return out.clamp_min_(max(-FLT_MAX, torch.finfo(out.dtype).min)) if self.clamp else out


class ChannelAffine(nn.Module):
    """``x * weight[c] + bias[c]`` along axis 1, in one pass (torch's batch norm with unit
    statistics): what BatchNorm, Scale, Bias and linear Power layers reduce to when no
    convolution or inner product before them can absorb them."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = nn.Parameter(bias, requires_grad=False)
        self.register_buffer("zeros", torch.zeros_like(weight), persistent=False)
        self.register_buffer("ones", torch.ones_like(weight), persistent=False)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (x - 0) / sqrt(1 + 0) * weight + bias: exact unit statistics, one fused kernel
        return F.batch_norm(x, self.zeros, self.ones, self.weight, self.bias, False, 0.0, 0.0)


class InPlace(nn.Module):
    """An element-wise activation computed in place on its input, which the optimiser has
    proved is a fresh tensor nothing else reads."""

    OPS: ClassVar[dict] = {"relu": torch.relu_, "sigmoid": torch.sigmoid_, "tanh": torch.tanh_}

    def __init__(self, op: str, negative_slope: float = 0.0) -> None:
        super().__init__()
        self.op, self.negative_slope = op, negative_slope

    def extra_repr(self) -> str:
        return self.op + (f", negative_slope={self.negative_slope:g}"
                          if self.op == "leaky_relu" else "")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.op == "leaky_relu":
            return F.leaky_relu_(x, self.negative_slope)
        return self.OPS[self.op](x)


class SumInPlace(nn.Module):
    """Caffe's Eltwise SUM (no coefficients) accumulated into input ``into``, which the
    optimiser has proved is a fresh tensor nothing else reads."""

    def __init__(self, into: int) -> None:
        super().__init__()
        self.into = into

    def extra_repr(self) -> str:
        return f"into=input {self.into}"

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        out = xs[self.into]
        for i, x in enumerate(xs):
            if i != self.into:
                out = out.add_(x)
        return out


class ChannelLRN(nn.Module):
    """Caffe's ACROSS_CHANNELS LRN, ``x * (k + alpha / n * window sum of x^2)^-beta``, with the
    window sum taken as ``n`` shifted slices of the zero-padded squares (torch's
    ``local_response_norm`` and :class:`CaffeLRN` pool in 3-D, which is several times slower);
    ``beta = 0.75`` as ``rsqrt(t) * sqrt(rsqrt(t))``. Each window is summed afresh, where
    :class:`CaffeLRN` keeps Caffe's float32 running sum: the two agree to float rounding except
    where a channel is thousands of times larger than the ones after it, whose running-sum
    rounding Caffe keeps (and this does not)."""

    def __init__(self, local_size: int, alpha: float, beta: float, k: float) -> None:
        super().__init__()
        self.local_size, self.alpha, self.beta, self.k = local_size, alpha, beta, k

    def extra_repr(self) -> str:
        return f"local_size={self.local_size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"

    @float32_inside
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, channels = self.local_size, x.shape[1]
        half = (n - 1) // 2
        squares = F.pad(x * x, (0, 0) * (x.dim() - 2) + (half, half))
        total = squares[:, :channels].clone()
        for offset in range(1, n):
            total += squares[:, offset:offset + channels]
        scale = total.mul_(self.alpha / n).add_(self.k)
        if self.beta == 0.75:
            inverse = scale.rsqrt_()
            return x * inverse * inverse.sqrt()
        return x * scale.pow_(-self.beta)
