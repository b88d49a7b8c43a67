"""Half precision for the layers whose statistics need more than 8 or 11 bits of mantissa.

Softmax, BatchNorm, LRN, MVN and Normalize sum or exponentiate many values; in float16 such sums
overflow (65504) and in bfloat16 they keep 3 significant digits, enough to change a net's top-1.
Their modules decorate ``forward`` with :func:`float32_inside`: a float16 or bfloat16 call runs
in float32 and its result is rounded back to the input's dtype; float32 and float64 calls run
unchanged. Their own tensors (BatchNorm's statistics, Normalize's scale) stay float32 when a net
is built in half precision (:func:`keeps_float32`).
"""
from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import nn

HALF = (torch.float16, torch.bfloat16)


def float32_inside(forward: Callable) -> Callable:
    """Decorate a module's ``forward``: half-precision tensor arguments are computed in float32,
    the results (a tensor or a tuple of them) come back in the first argument's dtype."""

    @functools.wraps(forward)
    def wrapper(self, *args, **kwargs):
        dtype = next((a.dtype for a in args if isinstance(a, torch.Tensor)), None)
        if dtype not in HALF:
            return forward(self, *args, **kwargs)
        args = tuple(a.float() if isinstance(a, torch.Tensor) and a.dtype in HALF else a
                     for a in args)
        result = forward(self, *args, **kwargs)
        if isinstance(result, tuple):
            return tuple(r.to(dtype) if r.is_floating_point() else r for r in result)
        return result.to(dtype) if result.is_floating_point() else result

    wrapper.float32_inside = True
    return wrapper


def keeps_float32(module: nn.Module) -> bool:
    """True for a module computing in float32 inside (its parameters and buffers stay float32)."""
    return bool(getattr(type(module).forward, "float32_inside", False))


def float_tensors(module: nn.Module, dtype: torch.dtype) -> torch.dtype:
    """The dtype of ``module``'s own floating tensors in a net of ``dtype``."""
    return torch.float32 if dtype in HALF and keeps_float32(module) else dtype
