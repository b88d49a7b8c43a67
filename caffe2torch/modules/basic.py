"""Small modules for Caffe layers whose computation torch has but whose interface differs."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class InnerProduct(nn.Module):
    """Caffe's InnerProduct: flatten from ``axis``, then ``x W^T + b`` (``W^T`` given if transpose)."""

    def __init__(self, in_features: int, out_features: int, axis: int = 1,
                 bias: bool = True, transpose: bool = False) -> None:
        super().__init__()
        self.axis, self.transpose = axis, transpose
        shape = (in_features, out_features) if transpose else (out_features, in_features)
        self.weight = nn.Parameter(torch.empty(shape))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)
        self.caffe_blobs = ("weight", "bias") if bias else ("weight",)

    def extra_repr(self) -> str:
        return (f"axis={self.axis}, weight={tuple(self.weight.shape)}, "
                f"transpose={self.transpose}, bias={self.bias is not None}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(self.axis) if x.dim() > self.axis + 1 else x
        weight = self.weight.t() if self.transpose else self.weight
        return F.linear(x, weight, self.bias)


class Softmax(nn.Module):
    def __init__(self, axis: int = 1) -> None:
        super().__init__()
        self.axis = axis

    def extra_repr(self) -> str:
        return f"axis={self.axis}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x, dim=self.axis)


class Concat(nn.Module):
    def __init__(self, axis: int = 1) -> None:
        super().__init__()
        self.axis = axis

    def extra_repr(self) -> str:
        return f"axis={self.axis}"

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, dim=self.axis)


class Split(nn.Module):
    """Caffe's Split: the same blob under several names."""

    def __init__(self, count: int) -> None:
        super().__init__()
        self.count = count

    def extra_repr(self) -> str:
        return f"count={self.count}"

    def forward(self, x: torch.Tensor):
        return x if self.count == 1 else (x,) * self.count


class Flatten(nn.Module):
    def __init__(self, axis: int = 1, end_axis: int = -1) -> None:
        super().__init__()
        self.axis, self.end_axis = axis, end_axis

    def extra_repr(self) -> str:
        return f"axis={self.axis}, end_axis={self.end_axis}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(self.axis, self.end_axis)


class Eltwise(nn.Module):
    """SUM (with one coefficient per bottom), PROD or MAX over any number of bottoms."""

    def __init__(self, operation: str, coeffs: tuple[float, ...] = ()) -> None:
        super().__init__()
        self.operation, self.coeffs = operation, coeffs

    def extra_repr(self) -> str:
        return f"{self.operation}" + (f", coeffs={self.coeffs}" if self.coeffs else "")

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        if self.operation == "PROD":
            out = xs[0] * xs[1]
            for x in xs[2:]:
                out = out * x
            return out
        if self.operation == "MAX":
            out = torch.maximum(xs[0], xs[1])
            for x in xs[2:]:
                out = torch.maximum(out, x)
            return out
        if not self.coeffs:
            out = xs[0] + xs[1]
            for x in xs[2:]:
                out = out + x
            return out
        out = xs[0] * self.coeffs[0]
        for c, x in zip(self.coeffs[1:], xs[1:]):
            out = out + x * c
        return out
