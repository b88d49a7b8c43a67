"""Caffe's normalisation layers: BatchNorm (statistics only), Scale, Bias and MVN."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from caffe2torch.modules.precision import float32_inside


def _trailing(t: torch.Tensor, ndim: int, axis: int) -> torch.Tensor:
    """``t`` (covering axes ``axis ..`` of an ``ndim``-D blob) with 1s appended to broadcast."""
    return t.reshape(t.shape + (1,) * (ndim - axis - t.dim()))


class CaffeBatchNorm(nn.Module):
    """Caffe's BatchNorm: ``(x - mean) / sqrt(var + eps)`` per channel (axis 1), no affine part.

    ``running_mean`` / ``running_var`` hold Caffe's stored sums already divided by its scale
    factor, so they read as torch's; ``factor`` is that scale factor (Caffe's blob 2).
    ``use_global_stats``: ``None`` (unset in the prototxt) follows the module mode (eval: stored
    statistics, train: batch statistics, as Caffe's TEST and TRAIN phases); ``True`` always uses
    the stored ones; ``False`` always normalises with the batch statistics (Caffe does so even at
    TEST time). The stored statistics are updated only in train mode, by Caffe's own rule
    (BatchNormLayer::Forward_cpu) with ``lambda = moving_average_fraction``: ``f = lambda * f + 1``,
    ``sum_mean = lambda * sum_mean + mean``, ``sum_var = lambda * sum_var + m / (m - 1) * var``
    (the sums being the statistics times f), not torch's momentum rule.
    """

    def __init__(self, channels: int, eps: float = 1e-5, use_global_stats: bool | None = None,
                 moving_average_fraction: float = 0.999) -> None:
        super().__init__()
        self.channels, self.eps = channels, eps
        self.use_global_stats, self.moving_average_fraction = \
            use_global_stats, moving_average_fraction
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))
        self.register_buffer("factor", torch.ones(1))

    def extra_repr(self) -> str:
        return (f"{self.channels}, eps={self.eps:g}, use_global_stats={self.use_global_stats}, "
                f"moving_average_fraction={self.moving_average_fraction:g}")

    @float32_inside
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch_stats = (not self.use_global_stats if self.use_global_stats is not None
                       else self.training)
        if not batch_stats:
            return F.batch_norm(x, self.running_mean, self.running_var, training=False,
                                eps=self.eps)
        dims = [0, *range(2, x.dim())]
        mean = x.mean(dims, keepdim=True)
        centred = x - mean
        var = (centred * centred).mean(dims, keepdim=True)
        if self.training:
            self._update(mean.flatten(), var.flatten(), x.numel() // self.channels)
        return centred / torch.sqrt(var + self.eps)

    @torch.no_grad()
    def _update(self, mean: torch.Tensor, var: torch.Tensor, m: int) -> None:
        """Caffe's accumulation; the sums are recovered as statistic * f (0 when f == 0)."""
        lam = self.moving_average_fraction
        correction = m / (m - 1) if m > 1 else 1.0  # Caffe's bias_correction_factor
        old = self.factor.clone()
        self.factor.mul_(lam).add_(1.0)
        sum_mean = self.running_mean * old * lam + mean.to(self.running_mean.dtype)
        sum_var = self.running_var * old * lam + (var * correction).to(self.running_var.dtype)
        scale = torch.where(self.factor == 0, torch.zeros_like(self.factor), 1.0 / self.factor)
        self.running_mean.copy_(sum_mean * scale)
        self.running_var.copy_(sum_var * scale)


class Scale(nn.Module):
    """Caffe's Scale: ``x * scale (+ bias)``, the scale covering axes ``axis ..`` of ``x``.

    The scale is the ``weight`` parameter, or the second input when ``from_bottom``; ``bias``
    (``bias_term``) has the scale's shape. Both broadcast over the axes before and after.
    """

    def __init__(self, axis: int, shape: tuple[int, ...], bias: bool = False,
                 from_bottom: bool = False) -> None:
        super().__init__()
        self.axis, self.from_bottom = axis, from_bottom
        self.weight = None if from_bottom else nn.Parameter(torch.ones(shape))
        self.bias = nn.Parameter(torch.zeros(shape)) if bias else None
        self.caffe_blobs = (() if from_bottom else ("weight",)) + (("bias",) if bias else ())

    def extra_repr(self) -> str:
        what = "scale=bottom 1" if self.from_bottom else f"scale={tuple(self.weight.shape)}"
        return f"axis={self.axis}, {what}, bias={self.bias is not None}"

    def forward(self, x: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        scale = self.weight if scale is None else scale
        y = x * _trailing(scale, x.dim(), self.axis)
        if self.bias is not None:
            y = y + _trailing(self.bias, x.dim(), self.axis)
        return y


class Bias(nn.Module):
    """Caffe's Bias: ``x + bias``, the bias (``bias`` parameter or second input) covering axes
    ``axis ..`` of ``x`` and broadcast over the others."""

    def __init__(self, axis: int, shape: tuple[int, ...], from_bottom: bool = False) -> None:
        super().__init__()
        self.axis, self.from_bottom = axis, from_bottom
        self.bias = None if from_bottom else nn.Parameter(torch.zeros(shape))
        self.caffe_blobs = () if from_bottom else ("bias",)

    def extra_repr(self) -> str:
        what = "bias=bottom 1" if self.from_bottom else f"bias={tuple(self.bias.shape)}"
        return f"axis={self.axis}, {what}"

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        bias = self.bias if bias is None else bias
        return x + _trailing(bias, x.dim(), self.axis)


class MVN(nn.Module):
    """Caffe's MVN: subtract the mean over (C,) H, W per sample (and channel), then divide by
    ``std + eps`` (eps on the standard deviation, not the variance).

    Caffe sizes the top with the legacy 4-D accessors, so an input of fewer than 4 axes comes
    out padded with trailing 1s: (N, C) -> (N, C, 1, 1).
    """

    def __init__(self, normalize_variance: bool = True, across_channels: bool = False,
                 eps: float = 1e-9) -> None:
        super().__init__()
        self.normalize_variance, self.across_channels = normalize_variance, across_channels
        self.eps = eps

    def extra_repr(self) -> str:
        return (f"normalize_variance={self.normalize_variance}, "
                f"across_channels={self.across_channels}, eps={self.eps:g}")

    @float32_inside
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape + (1,) * (4 - x.dim()))
        dims = (1, 2, 3) if self.across_channels else (2, 3)
        centred = x - x.mean(dims, keepdim=True)
        if not self.normalize_variance:
            return centred
        std = (centred * centred).mean(dims, keepdim=True).sqrt()
        return centred / (std + self.eps)
