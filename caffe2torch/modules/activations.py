"""Caffe's element-wise activations whose parameters or formulas torch's modules do not match."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PReLU(nn.Module):
    """``max(x, 0) + slope[c] * min(x, 0)`` with c on axis 1; one shared slope (a 0-D blob in
    Caffe) when ``channel_shared``."""

    def __init__(self, channels: int, channel_shared: bool = False) -> None:
        super().__init__()
        self.channel_shared = channel_shared
        self.weight = nn.Parameter(torch.full(() if channel_shared else (channels,), 0.25))
        self.caffe_blobs = ("weight",)

    def extra_repr(self) -> str:
        return "shared" if self.channel_shared else f"{self.weight.shape[0]}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.prelu(x, self.weight.reshape(-1))


class AbsVal(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.abs(x)


class BNLL(nn.Module):
    """Caffe's BNLL ``log(1 + exp(x))``, as ``x > 0 ? x + log(1 + exp(-x)) : log(1 + exp(x))``
    (torch's softplus returns x itself above its threshold)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x) + torch.log1p(torch.exp(-torch.abs(x)))


class Power(nn.Module):
    """``(shift + scale * x) ^ power``; when ``power * scale == 0`` Caffe ignores the input and
    outputs ``1`` (power 0) or ``shift ^ power``, which ``constant`` holds."""

    def __init__(self, power: float = 1.0, scale: float = 1.0, shift: float = 0.0,
                 constant: float | None = None) -> None:
        super().__init__()
        self.power, self.scale, self.shift, self.constant = power, scale, shift, constant

    def extra_repr(self) -> str:
        if self.constant is not None:
            return f"constant={self.constant:g}"
        return f"power={self.power:g}, scale={self.scale:g}, shift={self.shift:g}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.constant is not None:
            return torch.full_like(x, self.constant)
        if self.scale != 1:
            x = x * self.scale
        if self.shift != 0:
            x = x + self.shift
        return x.pow(self.power) if self.power != 1 else x


class Exp(nn.Module):
    """``outer_scale * exp(inner_scale * x)``: Caffe's ``base ^ (shift + scale * x)`` with
    ``inner_scale = ln(base) * scale`` and ``outer_scale = base ^ shift``."""

    def __init__(self, inner_scale: float = 1.0, outer_scale: float = 1.0) -> None:
        super().__init__()
        self.inner_scale, self.outer_scale = inner_scale, outer_scale

    def extra_repr(self) -> str:
        return f"inner_scale={self.inner_scale:g}, outer_scale={self.outer_scale:g}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.exp(x if self.inner_scale == 1 else blas_scale(x, self.inner_scale))
        return y if self.outer_scale == 1 else y * self.outer_scale


def blas_scale(x: torch.Tensor, alpha: float) -> torch.Tensor:
    """Caffe's caffe_cpu_scale / caffe_scal (BLAS ``sscal``): ``alpha * x``, where ``alpha == 0``
    writes zeros even over inf and NaN (the oracle's OpenBLAS; 0 * inf would be NaN)."""
    return torch.zeros_like(x) if alpha == 0 else x * alpha


class Log(nn.Module):
    """``base_scale * ln(shift + scale * x)``: Caffe's ``log_base(shift + scale * x)`` with
    ``base_scale = 1 / ln(base)``."""

    def __init__(self, scale: float = 1.0, shift: float = 0.0, base_scale: float = 1.0) -> None:
        super().__init__()
        self.scale, self.shift, self.base_scale = scale, shift, base_scale

    def extra_repr(self) -> str:
        return f"scale={self.scale:g}, shift={self.shift:g}, base_scale={self.base_scale:g}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale != 1:
            x = blas_scale(x, self.scale)
        if self.shift != 0:
            x = x + self.shift
        y = torch.log(x)
        return y if self.base_scale == 1 else y * self.base_scale


class Threshold(nn.Module):
    """``x > threshold ? 1 : 0`` (unlike torch's ``nn.Threshold``, which passes x through)."""

    def __init__(self, threshold: float = 0.0) -> None:
        super().__init__()
        self.threshold = threshold

    def extra_repr(self) -> str:
        return f"threshold={self.threshold:g}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x > self.threshold).to(x.dtype)


class Clip(nn.Module):
    """``max(min, min(x, max))``: with ``min > max`` every output is ``min`` (torch's clamp
    would give ``max``)."""

    def __init__(self, min: float, max: float) -> None:
        super().__init__()
        self.min, self.max = min, max

    def extra_repr(self) -> str:
        return f"min={self.min:g}, max={self.max:g}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x, max=self.max).clamp(min=self.min)


class Swish(nn.Module):
    """``x * sigmoid(beta * x)``."""

    def __init__(self, beta: float = 1.0) -> None:
        super().__init__()
        self.beta = beta

    def extra_repr(self) -> str:
        return f"beta={self.beta:g}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x if self.beta == 1 else x * self.beta)
