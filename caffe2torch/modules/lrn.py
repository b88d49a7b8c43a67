"""Caffe's LRN layer (lrn_layer.cpp), both normalisation regions, for (N, C, H, W) blobs.

ACROSS_CHANNELS: ``y = x * (k + alpha / n * sum_{n channels centred on c, zero padded} x^2)^-beta``,
with the sum as CrossChannelForward_cpu keeps it, a float32 running sum: channel 0's scale is
``k`` plus the window's ``alpha / n * x^2`` terms added in order; each next channel's scale is the
previous one plus the entering channel's term minus the leaving one's. This loses small channels
after a very large one (the large term's rounding stays), and that is Caffe's result.
WITHIN_CHANNEL: Caffe chains its own layers, square -> AVE pooling (kernel n, pad (n-1)/2,
stride 1) -> power ``(1 + alpha * s)^-beta`` -> product with x; ``k`` is not used there. The AVE
pooling counts the padding, so its divisor is n^2 everywhere.
torch's nn.LocalResponseNorm divides by the power instead of multiplying by its inverse and pads
an even size asymmetrically; Caffe requires an odd ``local_size``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from caffe2torch.modules.pooling import caffe_pool2d
from caffe2torch.modules.precision import float32_inside


class CaffeLRN(nn.Module):
    def __init__(self, local_size: int, alpha: float, beta: float, k: float,
                 region: str = "ACROSS_CHANNELS") -> None:
        super().__init__()
        if local_size % 2 != 1:
            raise ValueError(f"local_size {local_size}: Caffe's LRN needs an odd size")
        self.local_size, self.alpha, self.beta, self.k, self.region = \
            local_size, alpha, beta, k, region

    def extra_repr(self) -> str:
        return (f"{self.region}, local_size={self.local_size}, alpha={self.alpha}, "
                f"beta={self.beta}" + (f", k={self.k}" if self.region == "ACROSS_CHANNELS" else ""))

    @float32_inside
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, half = self.local_size, (self.local_size - 1) // 2
        squares = x * x
        if self.region == "WITHIN_CHANNEL":
            mean = caffe_pool2d(squares, "AVE", (n, n), (1, 1), (half, half))
            return x * (1.0 + self.alpha * mean).pow(-self.beta)
        return x * self._running_scale(squares).pow(-self.beta)

    def _running_scale(self, squares: torch.Tensor) -> torch.Tensor:
        """CrossChannelForward_cpu's scale: k, then += / -= (alpha / n) * x^2 channel by channel."""
        n, half = self.local_size, (self.local_size - 1) // 2
        alpha_over_size = float(torch.tensor(self.alpha, dtype=torch.float32) / n)
        terms = F.pad(squares, (0, 0, 0, 0, half, half)) * alpha_over_size
        scale = torch.full_like(squares[:, 0], self.k)
        for c in range(n):
            scale = scale + terms[:, c]
        scales = [scale]
        for c in range(1, squares.shape[1]):
            scale = scale + terms[:, c + n - 1]
            scale = scale - terms[:, c - 1]
            scales.append(scale)
        return torch.stack(scales, dim=1)
