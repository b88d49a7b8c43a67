"""Caffe's layers that pick items along axis 0 by the values of another blob: BatchReindex and
Filter. Their choice is read at run time, so the same module serves any batch."""
from __future__ import annotations

import torch
from torch import nn


def _tracing() -> bool:
    """True while torch traces or compiles the module (no data-dependent Python checks then)."""
    return torch.jit.is_tracing() or torch.compiler.is_compiling()


class BatchReindex(nn.Module):
    """Caffe's BatchReindex: ``top[k] = x[int(indices[k])]`` with float indices truncated as
    ``static_cast<int>``; Caffe aborts unless ``0 <= indices[k] < x.shape[0]``, so this raises
    ``IndexError`` there (checked eagerly, outside tracing)."""

    def forward(self, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        if not _tracing():
            bad = ~((indices >= 0) & (indices < x.shape[0]))
            if bool(bad.any()):
                raise IndexError(f"BatchReindex: index {indices[bad][0].item()!r} is out of "
                                 f"range for a batch of {x.shape[0]}; expected "
                                 f"0 <= index < {x.shape[0]}")
        return x.index_select(0, indices.reshape(-1).to(torch.long))


class Filter(nn.Module):
    """Caffe's Filter: forward(*blobs, selector) keeps, in every blob, the items (axis 0) whose
    selector value is non-zero (NaN counts as non-zero, as in C++), in order. The number kept
    depends on the selector's values."""

    def forward(self, *xs: torch.Tensor):
        *blobs, selector = xs
        keep = selector.reshape(-1)[:selector.shape[0]] != 0
        index = keep.nonzero().reshape(-1)
        outs = tuple(x.index_select(0, index) for x in blobs)
        return outs[0] if len(outs) == 1 else outs
