"""Modules of the mobile-net and YOLO v2 fork layers: the clipped activations (ReLU6, HardSwish,
HardSigmoid in both forks' formulas), ShuffleChannel, Axpy, darknet's Reorg and the Region head.

Each activation evaluates its fork's Forward_cpu expression in the same order, in float32, so
the results match the fork to the last bit where the fork's compiler does the same.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from caffe2torch.modules.precision import float32_inside


class ReLU6(nn.Module):
    """``min(max(x, 0) + negative_slope * min(x, 0), threshold)``: the slope applies below zero,
    only the top is clipped (inisis/caffe; eric612/MobileNet-YOLO with threshold 6)."""

    def __init__(self, negative_slope: float = 0.0, threshold: float = 6.0) -> None:
        super().__init__()
        self.negative_slope, self.threshold = negative_slope, threshold

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope:g}, threshold={self.threshold:g}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.negative_slope == 0:
            return torch.clamp(x, min=0.0, max=self.threshold)
        return torch.clamp(F.leaky_relu(x, self.negative_slope), max=self.threshold)


class HardSwish(nn.Module):
    """inisis/caffe ``HardSwish``: ``x * max(0, min(1, x / 6 + 0.5))``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.clamp(x / 6.0 + 0.5, 0.0, 1.0)


class HSwish(nn.Module):
    """aovoc/caffe ``HSwish``: ``x * min(max(x + 3, 0), 6) / 6``, multiplied before dividing."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.clamp(x + 3.0, 0.0, 6.0) / 6.0


class HardSigmoid(nn.Module):
    """inisis/caffe ``HardSigmoid``: ``max(0, min(1, x * alpha + beta))``."""

    def __init__(self, alpha: float = 0.2, beta: float = 0.5) -> None:
        super().__init__()
        self.alpha, self.beta = alpha, beta

    def extra_repr(self) -> str:
        return f"alpha={self.alpha:g}, beta={self.beta:g}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x * self.alpha + self.beta, 0.0, 1.0)


class HSigmoid(nn.Module):
    """aovoc/caffe ``HSigmoid``: ``min(max(x + 3, 0), 6) / 6``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x + 3.0, 0.0, 6.0) / 6.0


class ShuffleChannel(nn.Module):
    """farmingyard/ShuffleNet: channel ``i * (C / group) + j`` moves to ``j * group + i``
    (the (group, C / group) channel matrix transposed), for any number of trailing axes."""

    def __init__(self, group: int) -> None:
        super().__init__()
        self.group = group

    def extra_repr(self) -> str:
        return f"group={self.group}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        grouped = x.reshape(shape[0], self.group, shape[1] // self.group, -1)
        return grouped.transpose(1, 2).reshape(shape)


class Axpy(nn.Module):
    """hujie-frank/SENet ``Axpy(a, x, y) = a * x + y``: the scale of image n, channel c is the
    (n * C + c)-th value of ``a`` (whose axes 0 and 1 are x's; a 4-D ``a`` is (N, C, 1, 1))."""

    def forward(self, a: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[0], x.shape[1]
        scale = a.reshape(-1)[: n * c].reshape((n, c) + (1,) * (x.dim() - 2))
        return scale * x + y


class Reorg(nn.Module):
    """darknet's ``reorg_cpu`` as the YOLO v2 Caffe ports call it (``forward = reverse``).

    With ``reverse`` false the bottom's memory, read as (N, C/s², H·s, W·s), is gathered into
    the index space of the bottom's own (N, C, H, W): top channel ``(dy·s + dx)·C/s² + c``, row
    h, column w takes that view's (c, h·s + dy, w·s + dx); the result is then read as
    (N, C·s², H/s, W/s). With ``reverse`` true the same mapping scatters: the bottom's (N, C, H, W)
    is written into a (N, C/s², H·s, W·s) top.
    """

    def __init__(self, stride: int, reverse: bool = False) -> None:
        super().__init__()
        self.stride, self.reverse = stride, reverse

    def extra_repr(self) -> str:
        return f"stride={self.stride}, reverse={self.reverse}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        s = self.stride
        if self.reverse:
            # (n, dy, dx, c', h, w) -> (n, c', h, dy, w, dx)
            parts = x.reshape(n, s, s, c // (s * s), h, w).permute(0, 3, 4, 1, 5, 2)
            return parts.reshape(n, c // (s * s), h * s, w * s)
        # the view (n, c', h, dy, w, dx) -> (n, dy, dx, c', h, w)
        parts = x.reshape(n, c // (s * s), h, s, w, s).permute(0, 3, 5, 1, 2, 4)
        return parts.reshape(n, c * s * s, h // s, w // s)


class Region(nn.Module):
    """BirdeeChen/caffe_yolo_v2 ``Region``: the (N, C, H·W) bottom transposed to (N, H·W, C),
    i.e. one row of ``coords + classes + 1`` values per cell and box; the logistic of value 4
    (objectness) and, with ``softmax``, a softmax over the ``classes`` values from 5; the result
    keeps the bottom's (N, C, H, W) shape. x, y, w, h pass unchanged."""

    def __init__(self, classes: int, coords: int, boxes: int, softmax: bool) -> None:
        super().__init__()
        self.classes, self.coords, self.boxes, self.softmax = classes, coords, boxes, softmax

    def extra_repr(self) -> str:
        return (f"classes={self.classes}, coords={self.coords}, boxes={self.boxes}, "
                f"softmax={self.softmax}")

    @float32_inside
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        size = self.coords + self.classes + 1
        rows = x.reshape(shape[0], shape[1], -1).transpose(1, 2).reshape(shape[0], -1, size)
        parts = [rows[..., :4], torch.sigmoid(rows[..., 4:5])]
        classes = rows[..., 5:5 + self.classes]
        parts.append(torch.softmax(classes, dim=-1) if self.softmax else classes)
        parts.append(rows[..., 5 + self.classes:])
        return torch.cat(parts, dim=-1).reshape(shape)
