"""The SSD fork's layers (weiliu89/caffe, branch ``ssd``): PriorBox, Normalize, Permute and
DetectionOutput, computed as their ``Forward_cpu`` and ``src/caffe/util/bbox_util.cpp`` do.

PriorBox and DetectionOutput read the bottoms' sizes at run time. DetectionOutput's row count
depends on the values (NMS), so its forward holds data-dependent Python control flow: it is a
leaf of the net's graph, runs eagerly, and is not traceable into ONNX / TorchScript / .pt2.

Devices: PriorBox depends on shapes only; it computes on the CPU (float64 half sizes, as Caffe,
which MPS lacks) and copies its float32 result to the input's device without waiting for it.
DetectionOutput copies its bottoms to the CPU in float32 (one host sync per call: its greedy NMS
reads values one at a time, as Caffe's own GPU path does on the host) and returns its rows on
the input's device, in float32 (half precision would round the box corners to 1/256).
"""
from __future__ import annotations

import math
import struct
from collections.abc import Sequence

import torch
from torch import nn

from caffe2torch.modules.precision import float32_inside

CORNER, CENTER_SIZE, CORNER_SIZE = 1, 2, 3  # PriorBoxParameter.CodeType


def _f32(value: float) -> float:
    """``value`` rounded to float32, as a C++ ``float`` holds it."""
    return struct.unpack("f", struct.pack("f", value))[0]


def _legacy(shape: Sequence[int], index: int) -> int:
    """Caffe's Blob::LegacyShape: axis ``index`` of (num, channels, height, width), 1 past
    the last axis."""
    return shape[index] if index < len(shape) else 1


class PriorBox(nn.Module):
    """SSD's PriorBox: top (1, 2, H * W * P * 4), boxes then variances, priors ordered by cell
    (row-major) and within a cell as ``priors`` lists them.

    ``priors`` holds one ``(dx, dy, half_w, half_h)`` per prior of a cell: a shift of the cell
    centre (float, added in float32 as Caffe does) and the half sizes (float64, as Caffe's
    ``box_width / 2.``). Image size and step are fixed (``img_hw``, ``step_hw``) or, where 0,
    taken from the bottoms at run time: image from bottom 1, step = image / layer size.
    """

    def __init__(self, priors: Sequence[tuple[float, float, float, float]],
                 variance: Sequence[float], img_hw: tuple[int, int], step_hw: tuple[float, float],
                 offset: float, clip: bool) -> None:
        super().__init__()
        self.priors = [tuple(float(v) for v in p) for p in priors]
        self.variance = [float(v) for v in variance]
        self.img_hw = (int(img_hw[0]), int(img_hw[1]))
        self.step_hw = (float(step_hw[0]), float(step_hw[1]))
        self.offset, self.clip = float(offset), bool(clip)

    def extra_repr(self) -> str:
        return (f"priors_per_cell={len(self.priors)}, img_hw={self.img_hw}, "
                f"step_hw={self.step_hw}, offset={self.offset}, clip={self.clip}")

    def forward(self, x: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
        height, width = _legacy(x.shape, 2), _legacy(x.shape, 3)
        img_h, img_w = self.img_hw
        if img_h == 0 or img_w == 0:
            img_h, img_w = _legacy(image.shape, 2), _legacy(image.shape, 3)
        f32 = {"dtype": torch.float32}
        if self.step_hw[0] == 0 or self.step_hw[1] == 0:  # float(img) / layer, in float
            step_h = torch.as_tensor(img_h, **f32) / height
            step_w = torch.as_tensor(img_w, **f32) / width
        else:
            step_h, step_w = (torch.tensor(s, **f32) for s in self.step_hw)
        offset = torch.tensor(self.offset, **f32)
        center_y = (torch.arange(height, **f32) + offset) * step_h          # (H,)
        center_x = (torch.arange(width, **f32) + offset) * step_w           # (W,)
        table = torch.tensor(self.priors, dtype=torch.float64)                     # (P, 4)
        shift_x, shift_y = table[:, 0].to(torch.float32), table[:, 1].to(torch.float32)
        cx = (center_x[None, :, None] + shift_x).double()                  # (1, W, P)
        cy = (center_y[:, None, None] + shift_y).double()                  # (H, 1, P)
        half_w, half_h = table[:, 2], table[:, 3]
        boxes = torch.stack(torch.broadcast_tensors(
            (cx - half_w) / img_w, (cy - half_h) / img_h,
            (cx + half_w) / img_w, (cy + half_h) / img_h), dim=-1).to(torch.float32)
        if self.clip:
            boxes = boxes.clamp(0.0, 1.0)
        boxes = boxes.reshape(-1)
        variance = torch.tensor(self.variance, **f32)
        variances = variance.repeat(boxes.numel() // len(self.variance))
        return torch.stack([boxes, variances]).unsqueeze(0).to(x.device, non_blocking=True)


class Normalize(nn.Module):
    """SSD's Normalize: ``x / sqrt(sum x^2 + eps) * scale``, the sum over C, H, W per item
    (``across_spatial``; Caffe multiplies by the reciprocal) or over C per position; the scale
    is one value (``channel_shared``) or one per channel."""

    def __init__(self, channels: int, across_spatial: bool, channel_shared: bool,
                 eps: float) -> None:
        super().__init__()
        self.across_spatial, self.channel_shared = bool(across_spatial), bool(channel_shared)
        self.eps = float(eps)
        self.weight = nn.Parameter(torch.ones(() if channel_shared else (channels,)))
        self.caffe_blobs = ("weight",)

    def extra_repr(self) -> str:
        return (f"across_spatial={self.across_spatial}, channel_shared={self.channel_shared}, "
                f"eps={self.eps}")

    @float32_inside
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(x.shape[0], x.shape[1], -1)                       # (N, C, HW)
        eps = self.eps  # a Python number: x's dtype, no tensor to copy to the device
        if self.across_spatial:
            norm = torch.sqrt(flat.square().sum(dim=(1, 2), keepdim=True) + eps)
            y = flat * (1.0 / norm)
        else:
            norm = torch.sqrt(eps + flat.square().sum(dim=1, keepdim=True))
            y = flat / norm
        scale = self.weight if self.channel_shared else self.weight.reshape(1, -1, 1)
        return (y * scale).reshape(x.shape)


class Permute(nn.Module):
    """SSD's Permute: the axes in ``order`` (Caffe appends the axes it does not name)."""

    def __init__(self, order: Sequence[int]) -> None:
        super().__init__()
        self.order = [int(a) for a in order]

    def extra_repr(self) -> str:
        return f"order={self.order}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(self.order).contiguous()


class DetectionOutput(nn.Module):
    """SSD's DetectionOutput: decode every prior's box, per class keep the scores above
    ``confidence_threshold``, the best ``top_k`` of them, greedy NMS (adaptive by ``eta``),
    then the best ``keep_top_k`` over all classes of an image.

    Bottoms: loc (N, P * L * 4) with L = 1 (``share_location``) or ``num_classes``, conf
    (N, P * num_classes), priors (1, 2, P * 4). Top (1, 1, R, 7): rows ``[image, label, score,
    xmin, ymin, xmax, ymax]``, by image, then label ascending, then score descending (ties keep
    the prior order). When no image has a detection, one row ``[i, -1, -1, -1, -1, -1, -1]``
    per image.
    """

    def __init__(self, num_classes: int, share_location: bool = True,
                 background_label_id: int = 0, code_type: int = CORNER,
                 variance_encoded_in_target: bool = False, keep_top_k: int = -1,
                 confidence_threshold: float = -3.4028234663852886e38,
                 nms_threshold: float = 0.3, eta: float = 1.0, top_k: int = -1) -> None:
        super().__init__()
        self.num_classes, self.share_location = int(num_classes), bool(share_location)
        self.background_label_id, self.code_type = int(background_label_id), int(code_type)
        self.variance_encoded_in_target = bool(variance_encoded_in_target)
        self.keep_top_k, self.top_k = int(keep_top_k), int(top_k)
        self.confidence_threshold = _f32(confidence_threshold)
        self.nms_threshold, self.eta = _f32(nms_threshold), _f32(eta)

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, share_location={self.share_location}, "
                f"background_label_id={self.background_label_id}, code_type={self.code_type}, "
                f"confidence_threshold={self.confidence_threshold}, "
                f"nms_threshold={self.nms_threshold}, top_k={self.top_k}, eta={self.eta}, "
                f"keep_top_k={self.keep_top_k}")

    def forward(self, loc: torch.Tensor, conf: torch.Tensor,
                prior: torch.Tensor) -> torch.Tensor:
        device = loc.device
        loc, conf, prior = (t.to("cpu", torch.float32) for t in (loc, conf, prior))
        return self._detect(loc, conf, prior).to(device)

    def _detect(self, loc: torch.Tensor, conf: torch.Tensor,
                prior: torch.Tensor) -> torch.Tensor:
        num, num_priors = loc.shape[0], prior.shape[2] // 4
        loc_classes = 1 if self.share_location else self.num_classes
        locs = loc.reshape(-1)[:num * num_priors * loc_classes * 4].reshape(
            num, num_priors, loc_classes, 4)
        scores = conf.reshape(-1)[:num * num_priors * self.num_classes].reshape(
            num, num_priors, self.num_classes)
        priors = prior.reshape(-1)[:2 * num_priors * 4].reshape(2, num_priors, 4)
        boxes = decode_boxes(priors[0], priors[1], locs.permute(0, 2, 1, 3), self.code_type,
                             self.variance_encoded_in_target)              # (N, L, P, 4)
        rows = []
        for i in range(num):
            for label, index in self._image_detections(boxes[i], scores[i]):
                box = boxes[i, 0 if self.share_location else label, index]
                head = torch.tensor([float(i), float(label)], dtype=box.dtype,
                                    device=box.device).expand(len(index), 2)
                rows.append(torch.cat([head, scores[i, index, label, None], box], dim=1))
        if not rows:
            out = torch.full((num, 7), -1.0, dtype=loc.dtype, device=loc.device)
            out[:, 0] = torch.arange(num, dtype=loc.dtype, device=loc.device)
            return out.reshape(1, 1, num, 7)
        return torch.cat(rows).reshape(1, 1, -1, 7)

    def _image_detections(self, boxes: torch.Tensor, scores: torch.Tensor
                          ) -> list[tuple[int, torch.Tensor]]:
        """One image's kept (label, prior indices), labels ascending."""
        kept: list[tuple[int, torch.Tensor, torch.Tensor]] = []
        for c in range(self.num_classes):
            if c == self.background_label_id:
                continue
            label_boxes = boxes[0 if self.share_location else c]
            index = nms_fast(label_boxes, scores[:, c], self.confidence_threshold,
                             self.nms_threshold, self.eta, self.top_k)
            if len(index):
                kept.append((c, index, scores[index, c]))
        total = sum(len(index) for _, index, _ in kept)
        if self.keep_top_k <= -1 or total <= self.keep_top_k:
            return [(c, index) for c, index, _ in kept]
        labels = torch.cat([torch.full_like(index, c) for c, index, _ in kept])
        order = torch.sort(torch.cat([s for _, _, s in kept]), descending=True,
                           stable=True).indices[:self.keep_top_k]
        chosen_labels = labels[order]
        chosen = torch.cat([index for _, index, _ in kept])[order]
        return [(c, chosen[chosen_labels == c]) for c, _, _ in kept
                if bool((chosen_labels == c).any())]


def decode_boxes(prior_boxes: torch.Tensor, variances: torch.Tensor, loc: torch.Tensor,
                 code_type: int, variance_encoded_in_target: bool) -> torch.Tensor:
    """bbox_util's DecodeBBox over (..., P, 4) predictions, in float32 and Caffe's order."""
    pxmin, pymin, pxmax, pymax = prior_boxes.unbind(-1)
    lx0, ly0, lx1, ly1 = loc.unbind(-1)
    v0, v1, v2, v3 = (torch.ones_like(pxmin),) * 4 if variance_encoded_in_target \
        else variances.unbind(-1)
    if code_type == CORNER:
        if variance_encoded_in_target:
            out = (pxmin + lx0, pymin + ly0, pxmax + lx1, pymax + ly1)
        else:
            out = (pxmin + v0 * lx0, pymin + v1 * ly0, pxmax + v2 * lx1, pymax + v3 * ly1)
        return torch.stack(out, dim=-1)
    width, height = pxmax - pxmin, pymax - pymin
    if not torch.jit.is_tracing() and bool(((width <= 0) | (height <= 0)).any()):
        raise ValueError("DetectionOutput: a prior box has width or height <= 0; Caffe "
                         "aborts there (CHECK_GT(prior_width, 0))")
    if code_type == CENTER_SIZE:
        center_x, center_y = (pxmin + pxmax) / 2, (pymin + pymax) / 2
        if variance_encoded_in_target:
            cx, cy = lx0 * width + center_x, ly0 * height + center_y
            w, h = torch.exp(lx1) * width, torch.exp(ly1) * height
        else:
            cx, cy = v0 * lx0 * width + center_x, v1 * ly0 * height + center_y
            w, h = torch.exp(v2 * lx1) * width, torch.exp(v3 * ly1) * height
        return torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), dim=-1)
    if code_type == CORNER_SIZE:
        if variance_encoded_in_target:
            out = (pxmin + lx0 * width, pymin + ly0 * height,
                   pxmax + lx1 * width, pymax + ly1 * height)
        else:
            out = (pxmin + v0 * lx0 * width, pymin + v1 * ly0 * height,
                   pxmax + v2 * lx1 * width, pymax + v3 * ly1 * height)
        return torch.stack(out, dim=-1)
    raise ValueError(f"DetectionOutput: code_type {code_type}; expected 1 (CORNER), "
                     "2 (CENTER_SIZE) or 3 (CORNER_SIZE)")


def box_sizes(boxes: torch.Tensor) -> torch.Tensor:
    """bbox_util's BBoxSize (normalised): width * height, 0 for an inverted box."""
    xmin, ymin, xmax, ymax = boxes.unbind(-1)
    inverted = (xmax < xmin) | (ymax < ymin)
    return torch.where(inverted, torch.zeros_like(xmin), (xmax - xmin) * (ymax - ymin))


def jaccard_overlaps(box: torch.Tensor, size: torch.Tensor, boxes: torch.Tensor,
                     sizes: torch.Tensor) -> torch.Tensor:
    """bbox_util's JaccardOverlap of one box with each of ``boxes`` (0 where they do not
    intersect)."""
    width = torch.minimum(boxes[:, 2], box[2]) - torch.maximum(boxes[:, 0], box[0])
    height = torch.minimum(boxes[:, 3], box[3]) - torch.maximum(boxes[:, 1], box[1])
    inter = width * height
    overlap = inter / (sizes + size - inter)
    return torch.where((width > 0) & (height > 0), overlap, torch.zeros_like(overlap))


def nms_fast(boxes: torch.Tensor, scores: torch.Tensor, score_threshold: float,
             nms_threshold: float, eta: float, top_k: int) -> torch.Tensor:
    """bbox_util's ApplyNMSFast: the indices kept, best score first.

    Candidates are the scores above ``score_threshold`` in descending order (a stable sort),
    the first ``top_k``; each is kept when its overlap with every box kept before it is at most
    the threshold, which is multiplied by ``eta`` after each kept box while it is above 0.5.
    """
    candidates = (scores > score_threshold).nonzero().reshape(-1)
    order = torch.sort(scores[candidates], descending=True, stable=True).indices
    candidates = candidates[order]
    if top_k > -1:
        candidates = candidates[:top_k]
    boxes = boxes[candidates]
    sizes = box_sizes(boxes)
    worst = torch.zeros(len(candidates), dtype=boxes.dtype, device=boxes.device)
    threshold, kept = nms_threshold, []
    for j in range(len(candidates)):
        if not worst[j].item() <= threshold:  # NaN overlaps are never kept, as in C++
            continue
        kept.append(j)
        worst = torch.maximum(worst, jaccard_overlaps(boxes[j], sizes[j], boxes, sizes))
        if eta < 1 and threshold > 0.5:
            threshold = _f32(threshold * eta)
    return candidates[torch.tensor(kept, dtype=torch.long, device=candidates.device)]


def priors_per_cell(min_sizes: Sequence[float], max_sizes: Sequence[float],
                    aspect_ratios: Sequence[float], dense: dict[int, tuple[int, int]] | None = None
                    ) -> list[tuple[float, float, float, float]]:
    """The ``(dx, dy, half_w, half_h)`` of each prior of a cell, in Caffe's order.

    For each min size (truncated to int, as Caffe's ``int min_size_``): the square box of that
    size, the square of ``sqrt(min * max)`` when max sizes are given, then one box per aspect
    ratio other than 1. ``dense`` (FaceBoxes' variant) maps a min size to ``(n, interval)``:
    its square box becomes n x n boxes, rows then columns, whose centres are shifted by
    ``interval * k`` for k in ``-n/2 .. n/2 - 1``; there every square min-size box measures
    ``min_size - 1``.
    """
    out = []
    for s, size in enumerate(min_sizes):
        size = int(size)
        if dense is None:
            out.append((0.0, 0.0, _f32(size) / 2.0, _f32(size) / 2.0))
        else:
            n, interval = dense.get(size, (1, 0))
            half = _f32(size - 1) / 2.0
            shifts = [interval * k for k in range(-(n // 2), n - n // 2)]
            out += [(float(dx), float(dy), half, half) for dy in shifts for dx in shifts]
        if max_sizes:
            side = _f32(math.sqrt(size * int(max_sizes[s])))
            out.append((0.0, 0.0, side / 2.0, side / 2.0))
        for ar in aspect_ratios:
            if abs(ar - 1.0) < 1e-6:
                continue
            w, h = _f32(size * math.sqrt(ar)), _f32(size / math.sqrt(ar))
            out.append((0.0, 0.0, w / 2.0, h / 2.0))
    return out
