"""Caffe's LRN layer (lrn_layer.cpp), both normalisation regions, for (N, C, H, W) blobs.

ACROSS_CHANNELS: ``y = x * (k + alpha / n * sum_{n channels centred on c, zero padded} x^2)^-beta``.
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
        # sum over a window of n channels: a (n, 1, 1) box over (N, 1, C + n - 1, H, W)
        padded = F.pad(squares, (0, 0, 0, 0, half, half)).unsqueeze(1)
        window = F.avg_pool3d(padded, (n, 1, 1), stride=1, divisor_override=1).squeeze(1)
        return x * (self.k + (self.alpha / n) * window).pow(-self.beta)
