"""Convolution helpers for Caffe semantics: ``axis``, several bottoms sharing one filter bank, and
Caffe's Im2col layer."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class _EachInput:
    """Mixin: apply the convolution to every positional input (Caffe's bottom/top pairs that
    share one filter bank) and return one output per input."""

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        one = super().forward  # type: ignore[misc]
        return tuple(one(x) for x in inputs)


class EachConv1d(_EachInput, nn.Conv1d):
    """nn.Conv1d applied to each of several inputs."""


class EachConv2d(_EachInput, nn.Conv2d):
    """nn.Conv2d applied to each of several inputs."""


class EachConv3d(_EachInput, nn.Conv3d):
    """nn.Conv3d applied to each of several inputs."""


class EachConvTranspose1d(_EachInput, nn.ConvTranspose1d):
    """nn.ConvTranspose1d applied to each of several inputs."""


class EachConvTranspose2d(_EachInput, nn.ConvTranspose2d):
    """nn.ConvTranspose2d applied to each of several inputs."""


class EachConvTranspose3d(_EachInput, nn.ConvTranspose3d):
    """nn.ConvTranspose3d applied to each of several inputs."""


CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
EACH_CONV = {1: EachConv1d, 2: EachConv2d, 3: EachConv3d}
DECONV = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
EACH_DECONV = {1: EachConvTranspose1d, 2: EachConvTranspose2d, 3: EachConvTranspose3d}


class AxisConv(nn.Module):
    """Wrap a torch ConvNd so that it applies to ``(*batch, C, *spatial)`` blobs (Caffe's
    ``axis`` > 1: the leading axes act as batch axes); several inputs give several outputs."""

    def __init__(self, conv: nn.Module, axis: int) -> None:
        super().__init__()
        self.conv, self.axis = conv, axis
        self.caffe_blobs = tuple(f"conv.{name}" for name in conv.caffe_blobs)

    def forward(self, *inputs: torch.Tensor):
        outputs = tuple(self._one(x) for x in inputs)
        return outputs[0] if len(outputs) == 1 else outputs

    def _one(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:self.axis]
        y = self.conv(x.reshape(-1, *x.shape[self.axis:]))
        return y.reshape(*lead, *y.shape[1:])


class PointConv(nn.Module):
    """Caffe's Convolution / Deconvolution on a blob with no spatial axis after the channel axis
    (BaseConvolutionLayer with 0 spatial axes): per group, ``x W^T`` (Convolution, weight
    (num_output, C / group)) or ``x W`` (Deconvolution, weight (C, num_output / group)), + bias,
    over the last axis."""

    def __init__(self, channels: int, num_output: int, group: int, bias: bool,
                 transposed: bool) -> None:
        super().__init__()
        shape = (channels, num_output // group) if transposed else \
            (num_output, channels // group)
        self.weight = nn.Parameter(torch.empty(shape))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.bias = nn.Parameter(torch.zeros(num_output)) if bias else None
        self.group, self.transposed = group, transposed
        self.caffe_blobs = ("weight", "bias") if bias else ("weight",)

    def extra_repr(self) -> str:
        return f"weight={tuple(self.weight.shape)}, group={self.group}, " \
            f"transposed={self.transposed}"

    def forward(self, *inputs: torch.Tensor):
        g = self.group
        # (g, out/g, in/g) per group, out = x_g @ w_g^T
        w = self.weight.reshape(g, -1, self.weight.shape[1])
        w = w.transpose(1, 2) if self.transposed else w
        outputs = []
        for x in inputs:
            xs = x.reshape(*x.shape[:-1], g, x.shape[-1] // g)
            y = torch.einsum("...gi,goi->...go", xs, w).reshape(*x.shape[:-1], -1)
            outputs.append(y if self.bias is None else y + self.bias)
        return outputs[0] if len(outputs) == 1 else tuple(outputs)


class ZeroDilation(nn.Module):
    """A torch ConvNd / ConvTransposeNd (built with dilation 1 there) for Caffe's ``dilation: 0``
    on ``axes``: every tap along such an axis reads (or, transposed, writes) the same pixel, so
    the result is the convolution with the kernel summed over that axis. The weight keeps
    Caffe's shape. Several inputs give several outputs (bottom/top pairs)."""

    def __init__(self, conv: nn.Module, axes: tuple[int, ...]) -> None:
        super().__init__()
        self.conv, self.axes = conv, axes
        self.caffe_blobs = tuple(f"conv.{name}" for name in conv.caffe_blobs)

    def extra_repr(self) -> str:
        return f"dilation 0 on spatial axes {self.axes}"

    def forward(self, *inputs: torch.Tensor):
        conv = self.conv
        weight = conv.weight.sum([2 + a for a in self.axes], keepdim=True)
        dims = len(conv.kernel_size)
        if isinstance(conv, nn.modules.conv._ConvTransposeNd):
            fn = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[dims - 1]
            outputs = tuple(fn(x, weight, conv.bias, conv.stride, conv.padding,
                               conv.output_padding, conv.groups, conv.dilation) for x in inputs)
        else:
            fn = (F.conv1d, F.conv2d, F.conv3d)[dims - 1]
            outputs = tuple(fn(x, weight, conv.bias, conv.stride, conv.padding, conv.dilation,
                               conv.groups) for x in inputs)
        return outputs[0] if len(outputs) == 1 else outputs


class Im2col(nn.Module):
    """Caffe's Im2col layer: ``(*batch, C, *spatial)`` -> ``(*batch, C * prod(kernel), *out)``,
    channel-major (row ``c * prod(kernel) + kernel offset``), zero padding, any number of
    spatial axes; pure indexing, so the values are copied exactly."""

    def __init__(self, axis: int, kernel: tuple[int, ...], stride: tuple[int, ...],
                 pad: tuple[int, ...], dilation: tuple[int, ...]) -> None:
        super().__init__()
        self.axis, self.kernel, self.stride, self.pad, self.dilation = \
            axis, kernel, stride, pad, dilation

    def extra_repr(self) -> str:
        return (f"axis={self.axis}, kernel={self.kernel}, stride={self.stride}, pad={self.pad}, "
                f"dilation={self.dilation}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = len(self.kernel)
        flat_pad = [p for p in reversed(self.pad) for _ in (0, 1)]
        windows = F.pad(x, flat_pad)
        for i, (k, s, d) in enumerate(zip(self.kernel, self.stride, self.dilation)):
            extent = d * (k - 1) + 1
            # Tensor.unfold appends the window as the last axis; keep every d-th tap of it
            # (dilation 0, which Caffe runs: all k taps read the window's one pixel)
            windows = windows.unfold(self.axis + 1 + i, extent, s)
            windows = windows[..., ::d] if d else windows.expand(*windows.shape[:-1], k)
        # (*batch, C, *out, *kernel) -> (*batch, C, *kernel, *out)
        first = self.axis + 1
        order = [*range(first), *range(first + n, first + 2 * n), *range(first, first + n)]
        windows = windows.permute(order)
        out = windows.shape[first + n:]
        return windows.reshape(*x.shape[:self.axis], x.shape[self.axis] * math.prod(self.kernel),
                               *out)
