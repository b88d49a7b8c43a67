"""Convolution over Caffe's ``axis``: leading axes before the channel axis act as batch axes."""
from __future__ import annotations

import torch
from torch import nn


class AxisConv(nn.Module):
    """Wrap a torch ConvNd so that it applies to ``(*batch, C, *spatial)`` blobs."""

    def __init__(self, conv: nn.Module, axis: int) -> None:
        super().__init__()
        self.conv, self.axis = conv, axis
        self.caffe_blobs = tuple(f"conv.{name}" for name in conv.caffe_blobs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:self.axis]
        y = self.conv(x.reshape(-1, *x.shape[self.axis:]))
        return y.reshape(*lead, *y.shape[1:])
