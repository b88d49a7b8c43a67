"""Modules of the segmentation and upsampling forks' layers (Interp, Upsample, Resize,
BilinearInterpolate, Pad, PixelShuffle, MaxUnPool / SegNet unpooling, Unsqueeze).

Each interpolating module recomputes the forks' float32 sample positions and weights with the
same operations in the same order as their C++ (see the converters' docstrings for the files),
so the outputs agree with the forks' CPU code to the last bit, not just to rounding.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from caffe2torch.modules.batch import _tracing

# ----------------------------------------------------------------------------- Interp


def interp_size(size: int, zoom: int | None, shrink: int | None, fixed: int | None) -> int:
    """PSPNet/DeepLab InterpLayer::Reshape's output size of one (cropped) axis."""
    if shrink is not None and zoom is None:
        return (size - 1) // shrink + 1
    if zoom is not None and shrink is None:
        return size + (size - 1) * (zoom - 1)
    if fixed is not None:
        return fixed
    out = (size - 1) // shrink + 1
    return out + (out - 1) * (zoom - 1)


def _align_corners_taps(n_in: int, n_out: int, device: torch.device):
    """caffe_cpu_interp2's taps along one axis: (index, next-index step, lambda0, lambda1)."""
    if n_out > 1:  # static_cast<float>(in - 1) / (out - 1), in float
        ratio = torch.tensor(float(n_in - 1), dtype=torch.float32) / float(n_out - 1)
    else:
        ratio = torch.tensor(0.0, dtype=torch.float32)
    position = ratio.to(device) * torch.arange(n_out, dtype=torch.float32, device=device)
    index = position.to(torch.long)  # C++'s int conversion truncates (positions are >= 0)
    step = (index < n_in - 1).to(torch.long)
    lambda1 = position - index.to(torch.float32)
    return index, step, 1.0 - lambda1, lambda1


class Interp(nn.Module):
    """PSPNet/DeepLab's Interp: crop by ``-pad_beg`` / ``-pad_end`` (both axes), then resize with
    align-corners bilinear interpolation, computed as ``caffe_cpu_interp2`` does in float32:
    ``h0 * (w0 * p00 + w1 * p01) + h1 * (w0 * p10 + w1 * p11)``; an output axis of size 1 samples
    the first row/column; equal sizes copy."""

    def __init__(self, zoom: int | None, shrink: int | None, height: int | None,
                 width: int | None, pad_beg: int, pad_end: int) -> None:
        super().__init__()
        self.zoom, self.shrink, self.height, self.width = zoom, shrink, height, width
        self.pad_beg, self.pad_end = pad_beg, pad_end

    def extra_repr(self) -> str:
        return (f"zoom={self.zoom}, shrink={self.shrink}, size=({self.height}, {self.width}), "
                f"pad_beg={self.pad_beg}, pad_end={self.pad_end}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h_in, w_in = x.shape[2] + self.pad_beg + self.pad_end, x.shape[3] + self.pad_beg + \
            self.pad_end
        x = x[:, :, -self.pad_beg:-self.pad_beg + h_in, -self.pad_beg:-self.pad_beg + w_in]
        h_out = interp_size(h_in, self.zoom, self.shrink, self.height)
        w_out = interp_size(w_in, self.zoom, self.shrink, self.width)
        if (h_out, w_out) == (h_in, w_in):
            return x.clone()
        hi, hs, h0, h1 = _align_corners_taps(h_in, h_out, x.device)
        wi, ws, w0, w1 = _align_corners_taps(w_in, w_out, x.device)
        top, bottom = x.index_select(2, hi), x.index_select(2, hi + hs)
        h0, h1 = h0.to(x.dtype).view(-1, 1), h1.to(x.dtype).view(-1, 1)
        w0, w1 = w0.to(x.dtype), w1.to(x.dtype)
        upper = w0 * top.index_select(3, wi) + w1 * top.index_select(3, wi + ws)
        lower = w0 * bottom.index_select(3, wi) + w1 * bottom.index_select(3, wi + ws)
        return h0 * upper + h1 * lower


# ----------------------------------------------------------------------------- Resize


def _resize_taps(n_in: int, n_out: int, device: torch.device):
    """BiLinearResizeMat_cpu's taps along one axis: index, whether index + 1 exists, weights."""
    scale = torch.tensor(float(n_in), dtype=torch.float32) / float(n_out)
    position = torch.arange(n_out, dtype=torch.float32, device=device) * scale.to(device)
    index = torch.floor(position)
    fraction = position - index
    index = index.to(torch.long)
    return index, index + 1 < n_in, torch.abs(1.0 - fraction), torch.abs(fraction)


class Resize(nn.Module):
    """inisis/caffe's Resize: bilinear at ``src = dst * in / out`` (no half-pixel offset); a
    neighbour past the last row/column is dropped without renormalising the other weights, and
    the corner term is added only when both neighbours exist, as BiLinearResizeMat_cpu does.
    ``height``/``width`` fixed, or ``int(scale * in)`` (``is_pyramid_test``)."""

    def __init__(self, size: tuple[int, int] | None, scales: tuple[float, float] | None) -> None:
        super().__init__()
        self.size, self.scales = size, scales

    def extra_repr(self) -> str:
        return f"size={self.size}" if self.size else f"scales={self.scales}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h_in, w_in = x.shape[2], x.shape[3]
        if self.size is not None:
            h_out, w_out = self.size
        else:
            h_out, w_out = (int(torch.tensor(s, dtype=torch.float32) * n)
                            for s, n in zip(self.scales, (h_in, w_in)))
        hi, h_next, h0, h1 = _resize_taps(h_in, h_out, x.device)
        wi, w_next, w0, w1 = _resize_taps(w_in, w_out, x.device)
        h0, h1 = h0.to(x.dtype).view(-1, 1), h1.to(x.dtype).view(-1, 1)
        w0, w1 = w0.to(x.dtype), w1.to(x.dtype)
        h_next = h_next.view(-1, 1)
        top = x.index_select(2, hi)
        bottom = x.index_select(2, torch.clamp(hi + 1, max=h_in - 1))
        wj = torch.clamp(wi + 1, max=w_in - 1)
        zero = x.new_zeros(())
        out = (h0 * w0) * top.index_select(3, wi)
        out = out + torch.where(w_next, (h0 * w1) * top.index_select(3, wj), zero)
        out = out + torch.where(h_next, (h1 * w0) * bottom.index_select(3, wi), zero)
        return out + torch.where(h_next & w_next, (h1 * w1) * bottom.index_select(3, wj), zero)


# ----------------------------------------------------------------------------- BilinearInterpolate


def _bilinear_taps(n_in: int, n_out: int, align_corners: bool, device: torch.device):
    """BilinearInterpolateLayer's source positions (clamped) and the two indices around them."""
    i = torch.arange(n_out, dtype=torch.float64, device=device)
    if align_corners:
        ratio = torch.tensor(float(n_in - 1), dtype=torch.float32) / float(n_out - 1)
        position = ratio.to(device) * i.to(torch.float32)
    else:  # float ratio times (i + 0.5) in double, then stored as float
        ratio = (torch.tensor(float(n_in), dtype=torch.float32) / float(n_out)).double()
        position = (ratio.to(device) * (i + 0.5) - 0.5).to(torch.float32)
    position = torch.clamp(position, 0.0, float(n_in - 1))
    low = torch.clamp(torch.floor(position), 0.0, float(n_in - 2)).to(torch.long)
    return position, low, low + 1


class BilinearInterpolate(nn.Module):
    """inisis/caffe's BilinearInterpolate to a size fixed at set-up (as the fork's LayerSetUp):
    ``(h1 - h) * ((w1 - w) * q00 + (w - w0) * q01) + (h - h0) * ((w1 - w) * q10 + ...)`` in
    float32, the lower index clamped to ``in - 2``. A 1-pixel input axis reads its only row
    (the fork reads one row before it with weight 0)."""

    def __init__(self, size: tuple[int, int], align_corners: bool) -> None:
        super().__init__()
        self.size, self.align_corners = size, align_corners

    def extra_repr(self) -> str:
        return f"size={self.size}, align_corners={self.align_corners}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h_in, w_in = x.shape[2], x.shape[3]
        h, h0, h1 = _bilinear_taps(h_in, self.size[0], self.align_corners, x.device)
        w, w0, w1 = _bilinear_taps(w_in, self.size[1], self.align_corners, x.device)
        rows0, rows1 = x.index_select(2, h0.clamp(min=0)), x.index_select(2, h1)
        c0, c1 = w0.clamp(min=0), w1
        wa, wb = (w1.to(torch.float32) - w).to(x.dtype), (w - w0.to(torch.float32)).to(x.dtype)
        ha = (h1.to(torch.float32) - h).to(x.dtype).view(-1, 1)
        hb = (h - h0.to(torch.float32)).to(x.dtype).view(-1, 1)
        r0 = wa * rows0.index_select(3, c0) + wb * rows0.index_select(3, c1)
        r1 = wa * rows1.index_select(3, c0) + wb * rows1.index_select(3, c1)
        return ha * r0 + hb * r1


# ----------------------------------------------------------------------------- nearest, shuffle, pad


class UpsampleNearest(nn.Module):
    """The YOLO forks' and inisis/caffe's Upsample: each value repeated ``scale`` times along
    the last ``len(scales)`` axes (``top[h][w] = bottom[h / s][w / s]``)."""

    def __init__(self, scales: tuple[int, ...]) -> None:
        super().__init__()
        self.scales = tuple(scales)

    def extra_repr(self) -> str:
        return f"scales={self.scales}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for offset, scale in enumerate(reversed(self.scales)):
            x = torch.repeat_interleave(x, scale, dim=x.dim() - 1 - offset)
        return x


class PixelShuffle(nn.Module):
    """inisis/caffe's PixelShuffle: output channel p, offset (sh, sw) reads input channel
    ``p * r * r + sh * r + sw`` (torch's order); channels past ``C // (r * r) * r * r`` are unused."""

    def __init__(self, factor: int) -> None:
        super().__init__()
        self.factor = factor

    def extra_repr(self) -> str:
        return f"upscale_factor={self.factor}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        used = x.shape[1] // (self.factor * self.factor) * self.factor * self.factor
        return F.pixel_shuffle(x[:, :used], self.factor)


class Pad(nn.Module):
    """inisis/caffe's Pad of H and W: CONSTANT (``value``), REPLICATE or REFLECT (edge not
    repeated); four negative pads crop instead. ``pads`` is (up, down, left, right)."""

    def __init__(self, pads: tuple[int, int, int, int], mode: str, value: float) -> None:
        super().__init__()
        self.pads, self.mode, self.value = tuple(pads), mode, value

    def extra_repr(self) -> str:
        return f"pads(u, d, l, r)={self.pads}, mode={self.mode}, value={self.value:g}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up, down, left, right = self.pads
        if min(self.pads) < 0:
            return x[:, :, -up:x.shape[2] + down, -left:x.shape[3] + right].clone()
        if self.mode == "constant":
            return F.pad(x, (left, right, up, down), mode="constant", value=self.value)
        return F.pad(x, (left, right, up, down), mode=self.mode)


class Unsqueeze(nn.Module):
    """inisis/caffe's Unsqueeze: a new axis of size 1 at ``dim`` (already made non-negative)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def extra_repr(self) -> str:
        return f"dim={self.dim}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(self.dim)


# ----------------------------------------------------------------------------- unpooling


class MaxUnpool(nn.Module):
    """SegNet's two-bottom Upsample and inisis/caffe's MaxUnPool: zeros of ``size`` (fixed) or
    ``(H * scale_h - pad_h, W * scale_w - pad_w)``, then ``top[n, c].flat[int(mask[n, c, i])] =
    data[n, c, i]`` for i in order, so where two entries name one position the later one wins.
    Caffe aborts on an index past the plane; this raises ``IndexError`` (checked eagerly)."""

    def __init__(self, size: tuple[int, int] | None = None, scales: tuple[int, int] = (2, 2),
                 trims: tuple[int, int] = (0, 0)) -> None:
        super().__init__()
        self.size, self.scales, self.trims = size, tuple(scales), tuple(trims)

    def extra_repr(self) -> str:
        if self.size is not None:
            return f"size={self.size}"
        return f"scales={self.scales}, trims={self.trims}"

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h, w = self.size if self.size is not None else (
            x.shape[2] * self.scales[0] - self.trims[0], x.shape[3] * self.scales[1] - self.trims[1])
        target = mask.flatten(2).to(torch.long)  # static_cast<int> truncates
        if not _tracing():
            bad = (target < 0) | (target >= h * w)
            if bool(bad.any()):
                raise IndexError(f"unpooling: mask index {int(target[bad][0])} is out of range "
                                 f"for a {h}x{w} output plane; expected 0 <= index < {h * w}")
        # The last writer of each position wins: scatter the entries' order, keep the largest.
        order = torch.zeros_like(target) + torch.arange(target.shape[2], device=x.device)
        winner = torch.zeros_like(target[:, :, :1]).repeat(1, 1, h * w) - 1
        winner = winner.scatter_reduce(2, target, order, reduce="amax")
        values = x.flatten(2).gather(2, winner.clamp(min=0))
        return torch.where(winner >= 0, values, x.new_zeros(())).unflatten(2, (h, w))


# ----------------------------------------------------------------------------- BN (forks)


class ForkBN(nn.Module):
    """The forks' ``BN`` layer, in one of its stored forms (``form``):

    - ``"inv_std"`` (inisis/caffe): blobs slope, bias, mean, and the moving average of the
      *inverse* standard deviation: ``y = ((x - mean) * inv_std) * slope + bias`` (no eps);
    - ``"variance"`` (hszhao/PSPNet): blob 3 is the variance:
      ``y = ((x - mean) * (var + eps)^-1/2) * slope + bias``;
    - ``"segnet"`` (alexgkendall/caffe-segnet): blobs scale, shift; ``learn`` (bn_mode LEARN)
      normalises with the batch's statistics even at test time, ``var = E(x^2) - E(x)^2`` and
      eps 1e-9, and may return them as extra tops; INFERENCE is ``y = x * scale + shift``.

    The slope forms use the stored statistics in eval mode (Caffe's TEST phase) or when
    ``frozen``; in train mode they normalise with the batch's (biased) statistics, as Caffe's
    TRAIN phase, without updating the stored ones.
    """

    def __init__(self, channels: int, form: str, eps: float = 1e-5, frozen: bool = False,
                 learn: bool = False, extra_tops: int = 0, chosen_by: str = "declared") -> None:
        super().__init__()
        self.channels, self.eps, self.frozen, self.learn = channels, eps, frozen, learn
        self.extra_tops, self.chosen_by = extra_tops, chosen_by
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.form = ""
        self.set_form(form)

    def set_form(self, form: str) -> None:
        """Switch the stored form (binding does, from the blobs a caffemodel holds)."""
        slope_form = form in ("inv_std", "variance")
        if slope_form and "running_mean" not in self._buffers:
            self.register_buffer("running_mean", torch.zeros(self.channels))
            self.register_buffer("running_var", torch.ones(self.channels))
        if not slope_form:
            self._buffers.pop("running_mean", None)
            self._buffers.pop("running_var", None)
        self.form = form
        self.caffe_blobs = ("weight", "bias", "running_mean", "running_var") if slope_form \
            else ("weight", "bias")

    def extra_repr(self) -> str:
        mode = f"learn={self.learn}" if self.form == "segnet" else \
            f"eps={self.eps:g}, frozen={self.frozen}"
        return f"{self.channels}, form={self.form} ({self.chosen_by}), {mode}"

    def forward(self, x: torch.Tensor):
        shape = (1, -1) + (1,) * (x.dim() - 2)
        weight, bias = self.weight.view(shape), self.bias.view(shape)
        if self.form == "segnet":
            if not self.learn:
                return x * weight + bias
            return self._segnet_learn(x, weight, bias, shape)
        dims = [0, *range(2, x.dim())]
        if self.frozen or not self.training:
            mean = self.running_mean.view(shape)
            factor = self.running_var.view(shape)
            if self.form == "variance":
                factor = torch.pow(factor + self.eps, -0.5)
        else:
            mean = x.mean(dims, keepdim=True)
            factor = torch.pow(((x - mean) ** 2).mean(dims, keepdim=True) + self.eps, -0.5)
        return ((x - mean) * factor) * weight + bias

    def _segnet_learn(self, x, weight, bias, shape):
        spatial = list(range(2, x.dim()))
        mean = x.mean(spatial).mean(0).view(shape)
        var = (x * x).mean(spatial).mean(0).view(shape) - mean * mean
        y = (x - mean) / torch.sqrt(var + 1e-9) * weight + bias
        if not self.extra_tops:
            return y
        stats = (mean.reshape(1, -1, 1, 1), var.reshape(1, -1, 1, 1))
        return (y, *stats[:self.extra_tops])
