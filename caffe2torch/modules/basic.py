"""Small modules for Caffe layers whose computation torch has but whose interface differs."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from caffe2torch.modules.precision import HALF, float32_inside
from caffe2torch.modules.pooling import lowest  # Caffe's in-place MAX starts at -FLT_MAX


class InnerProduct(nn.Module):
    """Caffe's InnerProduct: flatten from ``axis``, then ``x W^T + b`` (``W^T`` stored if
    transpose)."""

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

    @float32_inside
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
    """Caffe's Flatten of axes ``axis..end_axis`` (canonical); ``end_axis == axis - 1`` is an
    empty range, which Caffe turns into a new axis of size 1."""

    def __init__(self, axis: int = 1, end_axis: int = -1) -> None:
        super().__init__()
        self.axis, self.end_axis = axis, end_axis

    def extra_repr(self) -> str:
        return f"axis={self.axis}, end_axis={self.end_axis}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.end_axis < self.axis:
            return x.unsqueeze(self.axis)
        return x.flatten(self.axis, self.end_axis)


class Eltwise(nn.Module):
    """SUM (with one coefficient per bottom), PROD or MAX over any number of bottoms.

    MAX picks as Caffe's loop does: ``a > b ? a : b`` for the first two bottoms, then a later
    bottom only where it is strictly greater (so NaN and signed-zero ties resolve as in Caffe).
    """

    def __init__(self, operation: str, coeffs: tuple[float, ...] = (),
                 aliased: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.operation, self.coeffs, self.aliased = operation, coeffs, aliased

    def extra_repr(self) -> str:
        return f"{self.operation}" + (f", coeffs={self.coeffs}" if self.coeffs else "") + \
            (f", in place over bottoms {self.aliased}" if self.aliased else "")

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        if self.aliased:
            return self._in_place(xs)
        if self.operation == "PROD":
            out = xs[0] * xs[1]
            for x in xs[2:]:
                out = out * x
            return out
        if self.operation == "MAX":
            out = torch.where(xs[0] > xs[1], xs[0], xs[1])
            for x in xs[2:]:
                out = torch.where(x > out, x, out)
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

    def _in_place(self, xs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """EltwiseLayer::Forward_cpu when the top is the memory of the ``aliased`` bottoms:
        SUM clears the top to 0 and MAX fills it with -FLT_MAX before reading the bottoms, so an
        aliased bottom reads the running result (bottom 0 of an in-place SUM counts 0); PROD
        writes only after reading bottoms 0 and 1."""
        def read(i: int, acc: torch.Tensor) -> torch.Tensor:
            return acc if i in self.aliased else xs[i]

        if self.operation == "PROD":
            out = xs[0] * xs[1]
            for i in range(2, len(xs)):
                out = out * read(i, out)
            return out
        if self.operation == "MAX":
            acc = torch.full_like(xs[0], lowest(xs[0].dtype))
            a, b = read(0, acc), read(1, acc)
            out = torch.where(a > b, a, b)
            for i in range(2, len(xs)):
                x = read(i, out)
                out = torch.where(x > out, x, out)
            return out
        coeffs = self.coeffs or (1.0,) * len(xs)
        out = torch.zeros_like(xs[0])
        for i, c in enumerate(coeffs):
            x = read(i, out)
            out = out + (x if c == 1.0 else x * c)
        return out


def caffe_top_k(x: torch.Tensor, k: int, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest values along ``dim`` and their indices, in Caffe's ArgMax order.

    Caffe's ``std::partial_sort`` with ``std::greater<pair<value, index>>`` orders by value, then
    ties by the LARGER index first. Sorting the reversed axis stably (descending) gives exactly
    that order; ``torch.max`` on the reversed axis returns the first maximum, i.e. the last one.
    NaN breaks Caffe's strict weak ordering (its result is unspecified); torch ranks NaN highest.
    """
    size = x.shape[dim]
    flipped = x.flip(dim)
    if k == 1:
        values, indices = flipped.max(dim=dim, keepdim=True)
    else:
        values, indices = torch.sort(flipped, dim=dim, descending=True, stable=True)
        values, indices = values.narrow(dim, 0, k), indices.narrow(dim, 0, k)
    return values, (size - 1) - indices


class ArgMax(nn.Module):
    """Caffe's ArgMax. With ``axis``: indices (or, with out_max_val, values only) replace that
    axis by ``top_k``. Without: each example is flattened and the top is (N, 1, top_k) indices or
    (N, 2, top_k) indices then values, padded with size-1 axes to ``out_axes`` (>= 3) axes.
    Indices are returned in the input's floating dtype, as Caffe stores them; in float32 for a
    float16 / bfloat16 input, whose 11 / 8 bits of mantissa cannot hold indices past 2048 / 256.
    """

    def __init__(self, top_k: int = 1, out_max_val: bool = False, axis: int | None = None,
                 out_axes: int = 3) -> None:
        super().__init__()
        self.top_k, self.out_max_val, self.axis, self.out_axes = top_k, out_max_val, axis, out_axes

    def extra_repr(self) -> str:
        where = "per example" if self.axis is None else f"axis={self.axis}"
        return f"top_k={self.top_k}, out_max_val={self.out_max_val}, {where}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        index_dtype = torch.float32 if x.dtype in HALF else x.dtype
        if self.axis is not None:
            values, indices = caffe_top_k(x, self.top_k, self.axis)
            return values if self.out_max_val else indices.to(index_dtype)
        num = x.shape[0]
        values, indices = caffe_top_k(x.reshape(num, -1), self.top_k, 1)
        indices, values = indices.to(index_dtype), values.to(index_dtype)
        out = torch.stack((indices, values), 1) if self.out_max_val else indices.unsqueeze(1)
        return out.reshape(num, out.shape[1], self.top_k, *[1] * (self.out_axes - 3))


class Reduction(nn.Module):
    """Caffe's Reduction over every axis from ``axis`` on: SUM, ASUM, SUMSQ or MEAN, times coeff
    (MEAN uses ``coeff / count``, rounded to float as Caffe's ``coeff_ /= dim_``)."""

    def __init__(self, operation: str, axis: int, coeff: float = 1.0) -> None:
        super().__init__()
        self.operation, self.axis, self.coeff = operation, axis, coeff

    def extra_repr(self) -> str:
        return f"{self.operation}, axis={self.axis}, coeff={self.coeff:g}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(*x.shape[:self.axis], -1)
        if self.operation == "ASUM":
            rows = rows.abs()
        elif self.operation == "SUMSQ":
            rows = rows * rows
        out = rows.sum(-1)
        coeff = self.coeff / rows.shape[-1] if self.operation == "MEAN" else self.coeff
        return out * coeff if coeff != 1.0 else out


class Embed(nn.Module):
    """Caffe's Embed: the input holds indices as floats (truncated toward zero, as Caffe's
    ``static_cast<int>``); each becomes a row of ``weight`` (input_dim, num_output), plus bias."""

    def __init__(self, input_dim: int, num_output: int, bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(input_dim, num_output))
        self.bias = nn.Parameter(torch.zeros(num_output)) if bias else None
        nn.init.normal_(self.weight)
        self.caffe_blobs = ("weight", "bias") if bias else ("weight",)

    def extra_repr(self) -> str:
        return f"input_dim={self.weight.shape[0]}, num_output={self.weight.shape[1]}, " \
               f"bias={self.bias is not None}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.embedding(x.long(), self.weight)
        return out + self.bias if self.bias is not None else out


class ParameterBlob(nn.Module):
    """Caffe's Parameter layer: no input; its top is its one learned blob."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(shape))
        self.caffe_blobs = ("weight",)

    def extra_repr(self) -> str:
        return f"shape={tuple(self.weight.shape)}"

    def forward(self) -> torch.Tensor:
        # The blob itself, shared as in Caffe; detached under no_grad so that the top is a plain
        # tensor like every other layer's there (a view would keep requires_grad).
        return self.weight if torch.is_grad_enabled() else self.weight.detach()
