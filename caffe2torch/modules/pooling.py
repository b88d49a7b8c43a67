"""Caffe's 2-D pooling: its output size rule, padding up to kernel-1, its AVE divisor; and SPP.

Caffe's PoolingLayer (pooling_layer.cpp) windows start at ``i * stride - pad``:
- MAX takes the maximum of the in-image pixels by a strict ``>`` scan from -FLT_MAX, so a window
  holding no pixel (stride > kernel with the ceil overhang) gives -FLT_MAX and mask -1, ties keep
  the first pixel in row-major order, and -inf inputs come out as -FLT_MAX. NaN inputs are the
  one difference: Caffe skips them (``NaN > m`` is false), torch propagates them.
- AVE sums the in-image pixels and divides by the window clipped to ``size + pad`` (padding counts,
  the ceil overhang does not), measured before clipping to the image, so an overhang window may
  divide by 0 (NaN) or by a negative count (-0), as Caffe does.
- STOCHASTIC at test time is implemented only by Caffe's GPU kernel (StoPoolForwardTest; the CPU
  path is NOT_IMPLEMENTED). This follows BVLC master (since commit d17fbea, "avoid divide by
  zeros", in 1.0): ``sum > 0 ? sum(x^2) / sum(x) : 0`` over the unpadded window, so a window
  whose sum is <= 0 (or NaN) gives 0. rc3 and the brocolli/inisis fork divide by
  ``FLT_MIN + sum(x)`` instead, which differs there (negative for a negative sum).
torch's own pooling differs in the last-window rule and rejects pad > kernel / 2, so the input is
padded explicitly here and torch pools with no padding of its own.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from caffe2torch.errors import ShapeError

FLT_MAX = 3.4028234663852886e38  # Caffe fills MAX outputs with -FLT_MAX before the scan


def lowest(dtype: torch.dtype) -> float:
    """-FLT_MAX, or the lowest finite value of a narrower dtype (float16, bfloat16)."""
    return max(-FLT_MAX, torch.finfo(dtype).min)


Pair = tuple[int, int]


def pooled_size(size: int, kernel: int, pad: int, stride: int, ceil: bool,
                padded: bool | None = None) -> int:
    """Caffe's pooled length along one axis: ceil/floor rounding, then the clip rule.

    PoolingLayer::Reshape clips when the layer is padded on EITHER axis (``if (pad_h_ ||
    pad_w_)``), and then clips both axes, each with its own pad (which may be 0): ``padded`` says
    whether any axis of the layer is padded (default: this axis's pad).
    """
    span = size + 2 * pad - kernel
    pooled = (math.ceil(span / stride) if ceil else span // stride) + 1
    if (pad > 0 if padded is None else padded) and (pooled - 1) * stride >= size + pad:
        pooled -= 1
    return pooled


def pooled_hw(size: Pair, kernel: Pair, pad: Pair, stride: Pair, ceil: bool) -> Pair:
    """Caffe's pooled (H, W): the clip rule applies to both axes when either is padded."""
    padded = any(pad)
    return (pooled_size(size[0], kernel[0], pad[0], stride[0], ceil, padded),
            pooled_size(size[1], kernel[1], pad[1], stride[1], ceil, padded))


def _ave_divisor(size: int, pooled: int, kernel: int, pad: int, stride: int,
                 like: torch.Tensor) -> torch.Tensor:
    """Per-axis AVE window lengths: end clipped to size + pad, measured before the image clip
    (computed on ``like``'s device, in its dtype: no host copy in the forward)."""
    start = torch.arange(pooled, device=like.device) * stride - pad
    return (torch.clamp(start + kernel, max=size + pad) - start).to(like.dtype)


def caffe_pool2d(x: torch.Tensor, method: str, kernel: Pair, stride: Pair, pad: Pair,
                 ceil: bool = True, with_mask: bool = False):
    """Caffe pooling of the last two axes of ``x``; MAX ``with_mask`` also returns Caffe's mask
    (the flat ``h * W + w`` index of the maximum, as float, -1 for an empty window)."""
    height, width = x.shape[-2], x.shape[-1]
    pooled = pooled_hw((height, width), kernel, pad, stride, ceil)
    if method == "STOCHASTIC":
        return _stochastic(x, kernel, stride, pooled)
    right = [max(0, (o - 1) * s + k - n - p) for o, s, k, n, p in
             zip(pooled, stride, kernel, (height, width), pad)]
    fill = lowest(x.dtype) if method == "MAX" else 0.0
    sides = (pad[1], right[1], pad[0], right[0])
    padded = F.pad(x, sides, value=fill) if any(sides) else x
    if method == "MAX":
        return _max(padded, kernel, stride, pad, pooled, width, with_mask)
    total = F.avg_pool2d(padded, kernel, stride, divisor_override=1)[..., :pooled[0], :pooled[1]]
    rows = _ave_divisor(height, pooled[0], kernel[0], pad[0], stride[0], x)
    cols = _ave_divisor(width, pooled[1], kernel[1], pad[1], stride[1], x)
    return total / (rows[:, None] * cols[None, :])


def _max(padded, kernel, stride, pad, pooled, width, with_mask):
    if not with_mask:
        out = F.max_pool2d(padded, kernel, stride)[..., :pooled[0], :pooled[1]]
        return out.clamp_min(lowest(out.dtype))
    out, index = F.max_pool2d(padded, kernel, stride, return_indices=True)
    out, index = out[..., :pooled[0], :pooled[1]], index[..., :pooled[0], :pooled[1]]
    padded_width = padded.shape[-1]
    row, col = index // padded_width - pad[0], index % padded_width - pad[1]
    found = out > lowest(out.dtype)
    mask = torch.where(found, row * width + col, torch.full_like(index, -1))
    return out.clamp_min(lowest(out.dtype)), mask.to(out.dtype)


def _stochastic(x, kernel, stride, pooled):
    """BVLC's test-time stochastic pooling (GPU kernel): sum > 0 ? sum(x^2) / sum(x) : 0."""
    right = [max(0, (o - 1) * s + k - n) for o, s, k, n in
             zip(pooled, stride, kernel, x.shape[-2:])]
    padded = F.pad(x, (0, right[1], 0, right[0])) if any(right) else x
    squares = F.avg_pool2d(padded * padded, kernel, stride, divisor_override=1)
    total = F.avg_pool2d(padded, kernel, stride, divisor_override=1)
    positive = total > 0
    out = torch.where(positive, squares / torch.where(positive, total, 1.0),
                      torch.zeros_like(total))
    return out[..., :pooled[0], :pooled[1]]


class CaffePool2d(nn.Module):
    """MAX / AVE / STOCHASTIC (test-time) pooling exactly as Caffe computes it.

    ``global_pooling`` pools the whole H x W (kernel taken from the input at call time).
    ``with_mask`` (MAX only) returns ``(out, mask)`` like Caffe's second top.
    """

    def __init__(self, method: str, kernel: Pair, stride: Pair, pad: Pair, ceil: bool = True,
                 global_pooling: bool = False, with_mask: bool = False) -> None:
        super().__init__()
        self.method, self.kernel, self.stride, self.pad = method, kernel, stride, pad
        self.ceil, self.global_pooling, self.with_mask = ceil, global_pooling, with_mask

    def extra_repr(self) -> str:
        if self.global_pooling:
            return f"{self.method}, global"
        return (f"{self.method}, kernel={self.kernel}, stride={self.stride}, pad={self.pad}, "
                f"round={'ceil' if self.ceil else 'floor'}")

    def forward(self, x: torch.Tensor):
        if self.global_pooling:
            kernel, stride, pad = (x.shape[-2], x.shape[-1]), (1, 1), (0, 0)
        else:
            kernel, stride, pad = self.kernel, self.stride, self.pad
        return caffe_pool2d(x, self.method, kernel, stride, pad, self.ceil, self.with_mask)


def spp_level(height: int, width: int, level: int) -> tuple[Pair, Pair]:
    """SPPLayer::GetPoolingParam: (kernel, pad) of pyramid level ``level``; stride = kernel."""
    bins = 2 ** level
    kernel = (-(-height // bins), -(-width // bins))
    pad = ((kernel[0] * bins - height + 1) // 2, (kernel[1] * bins - width + 1) // 2)
    return kernel, pad


def spp_problem(height: int, width: int, levels: int, method: str) -> str | None:
    """Why Caffe's SPP fails for this input size (a CHECK in the inner pooling layer), or None."""
    for level in range(levels):
        kernel, pad = spp_level(height, width, level)
        if any(pad) and method == "STOCHASTIC":
            return (f"level {level} of a {height}x{width} input needs pad {pad}, and Caffe pads "
                    "only AVE and MAX pooling")
        if any(p >= k for p, k in zip(pad, kernel)) and any(pad):
            return (f"level {level} ({2 ** level} bins) of a {height}x{width} input needs pad "
                    f"{pad}, not smaller than its kernel {kernel}; Caffe's pooling CHECK fails")
    return None


def spp_output_sizes(height: int, width: int, levels: int) -> list[Pair]:
    """The pooled (H, W) of every level (Caffe's ceil rule can give other than 2^level bins)."""
    sizes = []
    for level in range(levels):
        kernel, pad = spp_level(height, width, level)
        sizes.append(pooled_hw((height, width), kernel, pad, kernel, True))
    return sizes


class SpatialPyramidPool(nn.Module):
    """Caffe's SPP layer: per level, pooling with kernel/pad from the input size, flattened and
    concatenated into (N, sum C * h_l * w_l); with ``pyramid_height: 1`` Caffe returns the one
    pooled level unflattened, (N, C, 1, 1)."""

    def __init__(self, method: str, levels: int) -> None:
        super().__init__()
        self.method, self.levels = method, levels

    def extra_repr(self) -> str:
        return f"{self.method}, pyramid_height={self.levels}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2], x.shape[-1]
        problem = spp_problem(height, width, self.levels, self.method)
        if problem:
            raise ShapeError(f"SPP: {problem}")
        outputs = []
        for level in range(self.levels):
            kernel, pad = spp_level(height, width, level)
            outputs.append(caffe_pool2d(x, self.method, kernel, kernel, pad))
        if self.levels == 1:
            return outputs[0]
        return torch.cat([o.flatten(1) for o in outputs], dim=1)

