"""Caffe's 2-D pooling: its output size rule, padding up to kernel-1 and its AVE divisor."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

FLT_MAX = 3.4028234663852886e38  # Caffe fills MAX outputs with -FLT_MAX before the scan


def pooled_size(size: int, kernel: int, pad: int, stride: int, ceil: bool) -> int:
    """Caffe's pooled length: ceil/floor rounding, then the clip rule when padded."""
    span = size + 2 * pad - kernel
    pooled = (math.ceil(span / stride) if ceil else span // stride) + 1
    if pad > 0 and (pooled - 1) * stride >= size + pad:
        pooled -= 1
    return pooled


def _ave_divisor(size: int, pooled: int, kernel: int, pad: int, stride: int) -> list[float]:
    """Per-axis AVE window lengths: end clipped to size + pad, measured before the image clip."""
    return [float(min(i * stride - pad + kernel, size + pad) - (i * stride - pad))
            for i in range(pooled)]


class CaffePool2d(nn.Module):
    """MAX / AVE / STOCHASTIC (test-time) pooling exactly as Caffe computes it.

    Caffe windows start at ``i * stride - pad``; MAX takes the maximum of the pixels inside the
    image (a window wholly outside gives -FLT_MAX), AVE divides the in-image sum by the window
    size clipped to ``size + pad``. torch's own pooling differs in the last-window rule and
    rejects pad > kernel / 2, so the input is padded here explicitly.
    """

    def __init__(self, method: str, kernel: tuple[int, int], stride: tuple[int, int],
                 pad: tuple[int, int], ceil: bool = True, global_pooling: bool = False,
                 with_mask: bool = False) -> None:
        super().__init__()
        self.method, self.kernel, self.stride, self.pad = method, kernel, stride, pad
        self.ceil, self.global_pooling, self.with_mask = ceil, global_pooling, with_mask

    def extra_repr(self) -> str:
        if self.global_pooling:
            return f"{self.method}, global"
        return (f"{self.method}, kernel={self.kernel}, stride={self.stride}, pad={self.pad}, "
                f"round={'ceil' if self.ceil else 'floor'}")

    def geometry(self, height: int, width: int):
        if self.global_pooling:
            return (height, width), (1, 1), (0, 0), (1, 1)
        pooled = tuple(pooled_size(n, k, p, s, self.ceil) for n, k, p, s in
                       zip((height, width), self.kernel, self.pad, self.stride))
        return self.kernel, self.stride, self.pad, pooled

    def forward(self, x: torch.Tensor):
        height, width = x.shape[-2], x.shape[-1]
        kernel, stride, pad, pooled = self.geometry(height, width)
        if self.method == "STOCHASTIC":
            return self._stochastic(x, kernel, stride, pooled)
        right = [max(0, (o - 1) * s + k - n - p) for o, s, k, n, p in
                 zip(pooled, stride, kernel, (height, width), pad)]
        fill = -FLT_MAX if self.method == "MAX" else 0.0
        padded = F.pad(x, (pad[1], right[1], pad[0], right[0]), value=fill)
        if self.method == "MAX":
            return self._max(padded, kernel, stride, pad, pooled, width)
        total = F.avg_pool2d(padded, kernel, stride, divisor_override=1)
        total = total[..., :pooled[0], :pooled[1]]
        rows = _ave_divisor(height, pooled[0], kernel[0], pad[0], stride[0])
        cols = _ave_divisor(width, pooled[1], kernel[1], pad[1], stride[1])
        divisor = torch.tensor(rows, dtype=x.dtype, device=x.device)[:, None] * \
            torch.tensor(cols, dtype=x.dtype, device=x.device)[None, :]
        return total / divisor

    def _max(self, padded, kernel, stride, pad, pooled, width):
        if not self.with_mask:
            return F.max_pool2d(padded, kernel, stride)[..., :pooled[0], :pooled[1]]
        out, index = F.max_pool2d(padded, kernel, stride, return_indices=True)
        out, index = out[..., :pooled[0], :pooled[1]], index[..., :pooled[0], :pooled[1]]
        padded_width = padded.shape[-1]
        row, col = index // padded_width - pad[0], index % padded_width - pad[1]
        return out, (row * width + col).to(out.dtype)

    def _stochastic(self, x, kernel, stride, pooled):
        """Caffe's test-time stochastic pooling: sum(x^2) / sum(x) per window, no padding."""
        right = [max(0, (o - 1) * s + k - n) for o, s, k, n in
                 zip(pooled, stride, kernel, x.shape[-2:])]
        padded = F.pad(x, (0, right[1], 0, right[0]))
        squares = F.avg_pool2d(padded * padded, kernel, stride, divisor_override=1)
        total = F.avg_pool2d(padded, kernel, stride, divisor_override=1) + torch.finfo(x.dtype).tiny
        return (squares / total)[..., :pooled[0], :pooled[1]]
