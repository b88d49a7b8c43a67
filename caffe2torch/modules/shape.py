"""Caffe's blob-shape layers (Slice, Reshape, Crop, Tile), sized from the actual input at run time.

Each module keeps only the layer's parameters (axes canonicalised for the net's number of axes);
every size comes from ``x.shape`` in ``forward``, so other batch and spatial sizes work wherever
Caffe's own Reshape would accept them.
"""
from __future__ import annotations

from itertools import pairwise

import torch
from torch import nn


class Slice(nn.Module):
    """Caffe's Slice: cut ``axis`` at ``points`` (the last piece runs to the end) or in ``count``
    equal parts when there are no points. One top is the bottom itself (Caffe shares the data)."""

    def __init__(self, axis: int, count: int, points: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.axis, self.count, self.points = axis, count, tuple(points)

    def extra_repr(self) -> str:
        parts = f"points={self.points}" if self.points else f"equal parts={self.count}"
        return f"axis={self.axis}, {parts}"

    def forward(self, x: torch.Tensor):
        if self.count == 1:
            return x
        size = x.shape[self.axis]
        if self.points:
            bounds = (0, *self.points, size)
            sizes = [b - a for a, b in pairwise(bounds)]
        else:
            sizes = [size // self.count] * self.count
        return tuple(torch.split(x, sizes, dim=self.axis))


class Reshape(nn.Module):
    """Caffe's Reshape: axes ``[start, end)`` become ``dims``; 0 copies the input axis
    ``start + i``, -1 is inferred from the element count (torch's -1 rule is Caffe's)."""

    def __init__(self, start: int, end: int, dims: tuple[int, ...]) -> None:
        super().__init__()
        self.start, self.end, self.dims = start, end, tuple(dims)

    def extra_repr(self) -> str:
        return f"axes=[{self.start}, {self.end}), dims={self.dims}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        new = [shape[self.start + i] if d == 0 else d for i, d in enumerate(self.dims)]
        return x.reshape((*shape[:self.start], *new, *shape[self.end:]))


class Crop(nn.Module):
    """Caffe's Crop: every axis from ``start`` on takes the reference's size, from ``offsets``
    (one per cropped axis); the reference is the second bottom, read at run time."""

    def __init__(self, start: int, offsets: tuple[int, ...]) -> None:
        super().__init__()
        self.start, self.offsets = start, tuple(offsets)

    def extra_repr(self) -> str:
        return f"axis={self.start}, offsets={self.offsets}"

    def forward(self, x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        for i, offset in enumerate(self.offsets):
            axis = self.start + i
            x = x.narrow(axis, offset, reference.shape[axis])
        return x


class Tile(nn.Module):
    """Caffe's Tile: each block of axes ``axis..`` repeated ``tiles`` times along ``axis``."""

    def __init__(self, axis: int, tiles: int) -> None:
        super().__init__()
        self.axis, self.tiles = axis, tiles

    def extra_repr(self) -> str:
        return f"axis={self.axis}, tiles={self.tiles}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        repeats = [1] * x.dim()
        repeats[self.axis] = self.tiles
        return x.repeat(repeats)
