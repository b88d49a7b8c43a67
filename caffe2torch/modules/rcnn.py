"""Two-stage detector heads: ROIPooling (Fast R-CNN), PSROIPooling (R-FCN) and the region
proposal layers (inisis/caffe's C++ Proposal, py-faster-rcnn's Python ProposalLayer).

The pooling modules are plain torch ops (they trace and export). The proposal modules keep
Caffe's data-dependent work (its quicksort, greedy NMS, a run-time number of rows) in their own
``forward``, a leaf of the net's fx graph; they compute in float32 on the CPU, as Caffe does.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from caffe2torch.errors import ShapeError

FLT_MAX = float(np.finfo(np.float32).max)


def _tracing() -> bool:
    """True while torch traces or compiles the module (no data-dependent Python checks then)."""
    return torch.jit.is_tracing() or torch.compiler.is_compiling()


def round_half_away(x: torch.Tensor) -> torch.Tensor:
    """C's ``round``: halves away from zero (``torch.round`` rounds them to even)."""
    whole = torch.trunc(x)
    return whole + torch.sign(x) * ((x - whole).abs() >= 0.5).to(x.dtype)


def _roi_rows(rois: torch.Tensor, batch: int, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch index as int64, the 4 float coordinates) of rois (R, 5, ...). The index is
    truncated as C's ``static_cast<int>``; Caffe aborts where it is outside the batch, so this
    raises there (checked eagerly, outside tracing)."""
    rows = rois.reshape(rois.shape[0], 5)
    index = rows[:, 0].to(torch.int64)
    if not _tracing():
        bad = (index < 0) | (index >= batch)
        if bool(bad.any()):
            raise ShapeError(f"{what}: roi batch index {rows[:, 0][bad][0].item()!r} is out of "
                             f"range for a batch of {batch}; expected 0 <= index < {batch}")
    return index.clamp(0, batch - 1), rows[:, 1:]


class ROIPooling(nn.Module):
    """Fast R-CNN's ROIPooling (rbgirshick/caffe-fast-rcnn roi_pooling_layer.cpp):
    forward(x (N, C, H, W), rois (R, 5)) -> (R, C, pooled_h, pooled_w).

    Each roi ``(n, x1, y1, x2, y2)`` is scaled and rounded to cells, ``round(x1 * scale)``; bin
    ``ph`` covers rows ``floor(ph * bin_h)`` to ``ceil((ph + 1) * bin_h)`` past the roi start
    (``bin_h = max(y2 - y1 + 1, 1) / pooled_h`` in float), clipped to the map. The value is the
    bin's maximum (NaN ignored, and -FLT_MAX where nothing beats Caffe's initial -FLT_MAX);
    an empty bin is 0. The maxima come from a sparse table (maxima of 2^k x 2^l windows):
    each bin is the maximum of four overlapping power-of-two windows, exactly.
    """

    def __init__(self, pooled_h: int, pooled_w: int, spatial_scale: float) -> None:
        super().__init__()
        self.pooled_h, self.pooled_w = pooled_h, pooled_w
        self.spatial_scale = spatial_scale

    def extra_repr(self) -> str:
        return f"pooled=({self.pooled_h}, {self.pooled_w}), spatial_scale={self.spatial_scale}"

    def forward(self, x: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        n, _, height, width = x.shape
        batch, coords = _roi_rows(rois, n, "ROIPooling")
        cells = round_half_away(coords * torch.tensor(self.spatial_scale, dtype=coords.dtype))
        cells = cells.to(torch.int64)
        hs, he = _bins(cells[:, 1], cells[:, 3], self.pooled_h, height)   # (R, PH)
        ws, we = _bins(cells[:, 0], cells[:, 2], self.pooled_w, width)    # (R, PW)
        hs, he = hs[:, :, None], he[:, :, None]
        ws, we = ws[:, None, :], we[:, None, :]
        empty = (he <= hs) | (we <= ws)                                    # (R, PH, PW)
        levels_h = _levels(height, he - hs, empty)
        levels_w = _levels(width, we - ws, empty)
        table = _max_table(x, levels_h, levels_w)           # (LH, LW, N, H, W, C)
        kh = _floor_log2(torch.clamp(he - hs, min=1)).expand_as(empty)
        kw = _floor_log2(torch.clamp(we - ws, min=1)).expand_as(empty)
        kh, kw = kh.clamp(max=levels_h - 1), kw.clamp(max=levels_w - 1)
        top, left = hs.clamp(max=height - 1).expand_as(empty), ws.clamp(max=width - 1).expand_as(empty)
        bottom = (he - (1 << kh)).clamp(0, height - 1)
        right = (we - (1 << kw)).clamp(0, width - 1)
        b = batch[:, None, None].expand_as(empty)
        value = torch.fmax(torch.fmax(table[kh, kw, b, top, left], table[kh, kw, b, bottom, left]),
                           torch.fmax(table[kh, kw, b, top, right],
                                      table[kh, kw, b, bottom, right]))  # (R, PH, PW, C)
        value = torch.fmax(value, torch.tensor(-FLT_MAX, dtype=value.dtype))
        value = torch.where(empty[..., None], torch.zeros_like(value), value)
        return value.permute(0, 3, 1, 2).contiguous()


def _bins(start: torch.Tensor, end: torch.Tensor, pooled: int, size: int
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Caffe's bin edges along one axis, [first, last) per roi and bin, clipped to [0, size]."""
    length = torch.clamp(end - start + 1, min=1).to(torch.float32)
    bin_size = length / torch.tensor(float(pooled), dtype=torch.float32)
    p = torch.arange(pooled, dtype=torch.float32)
    first = torch.floor(p[None, :] * bin_size[:, None]).to(torch.int64) + start[:, None]
    last = torch.ceil((p[None, :] + 1) * bin_size[:, None]).to(torch.int64) + start[:, None]
    return first.clamp(0, size), last.clamp(0, size)


def _floor_log2(n: torch.Tensor) -> torch.Tensor:
    """floor(log2(n)) of positive int64 values, exactly (bit length - 1)."""
    result = torch.zeros_like(n)
    for shift in (32, 16, 8, 4, 2, 1):
        big = n >= (1 << shift)
        result = result + big.to(n.dtype) * shift
        n = torch.where(big, n >> shift, n)
    return result


def _levels(size: int, lengths: torch.Tensor, empty: torch.Tensor) -> int:
    """How many power-of-two levels the table needs along an axis: enough for every bin of
    this call when run eagerly, for any bin of an axis of ``size`` while tracing."""
    if _tracing() or lengths.numel() == 0:
        return size.bit_length() if size > 0 else 1
    longest = int(torch.where(empty, torch.ones_like(lengths), lengths).max())
    return max(longest, 1).bit_length()


def _max_table(x: torch.Tensor, levels_h: int, levels_w: int) -> torch.Tensor:
    """table[k, l, n, h, w, c] = max of x[n, c, h:h + 2^k, w:w + 2^l] (NaN ignored; cells
    whose window leaves the map are never read)."""
    rows = [x.permute(0, 2, 3, 1)]                                  # (N, H, W, C)
    for k in range(1, levels_h):
        prev, step = rows[-1], 1 << (k - 1)
        rows.append(torch.cat([torch.fmax(prev[:, :-step], prev[:, step:]), prev[:, -step:]], 1)
                    if step < prev.shape[1] else prev)
    table = []
    for level in rows:
        cols = [level]
        for k in range(1, levels_w):
            prev, step = cols[-1], 1 << (k - 1)
            cols.append(torch.cat([torch.fmax(prev[:, :, :-step], prev[:, :, step:]),
                                   prev[:, :, -step:]], 2) if step < prev.shape[2] else prev)
        table.append(torch.stack(cols))
    return torch.stack(table)


class PSROIPooling(nn.Module):
    """R-FCN's position-sensitive ROI pooling (daijifeng001/caffe-rfcn psroi_pooling_layer.cu):
    forward(x (N, output_dim * g * g, H, W), rois (R, 5)) -> (R, output_dim, g, g).

    The roi is rounded in image pixels, then scaled: ``start = round(x1) * scale``,
    ``end = (round(x2) + 1) * scale``, size ``max(end - start, 0.1)``; bin ``(ph, pw)`` covers
    ``floor(ph * bin + start)`` to ``ceil((ph + 1) * bin + start)``, clipped to the map, and
    averages input channel ``(c * g + ph) * g + pw``; an empty bin is 0. Sums come from a
    float64 summed-area table.
    """

    def __init__(self, output_dim: int, group_size: int, spatial_scale: float) -> None:
        super().__init__()
        self.output_dim, self.group_size = output_dim, group_size
        self.spatial_scale = spatial_scale

    def extra_repr(self) -> str:
        return (f"output_dim={self.output_dim}, group_size={self.group_size}, "
                f"spatial_scale={self.spatial_scale}")

    def forward(self, x: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        n, _, height, width = x.shape
        g = self.group_size
        batch, coords = _roi_rows(rois, n, "PSROIPooling")
        scale = torch.tensor(self.spatial_scale, dtype=torch.float32)
        rounded = round_half_away(coords.to(torch.float32))
        start = rounded[:, :2] * scale                           # (R, 2): x, y
        end = (rounded[:, 2:] + 1) * scale
        size = torch.clamp(end - start, min=0.1)
        bin_size = size / torch.tensor(float(g), dtype=torch.float32)
        p = torch.arange(g, dtype=torch.float32)
        first = torch.floor(p[None, :, None] * bin_size[:, None, :] + start[:, None, :])
        last = torch.ceil((p[None, :, None] + 1) * bin_size[:, None, :] + start[:, None, :])
        limit = torch.tensor([width, height])
        first = torch.minimum(first.to(torch.int64).clamp(min=0), limit)   # (R, g, 2)
        last = torch.minimum(last.to(torch.int64).clamp(min=0), limit)
        ws, we = first[:, None, None, :, 0], last[:, None, None, :, 0]     # (R, 1, 1, g)
        hs, he = first[:, None, :, None, 1], last[:, None, :, None, 1]     # (R, 1, g, 1)
        c = torch.arange(self.output_dim)[:, None, None] * g * g \
            + torch.arange(g)[None, :, None] * g + torch.arange(g)[None, None, :]
        sat = torch.zeros(n, x.shape[1], height + 1, width + 1, dtype=torch.float64,
                          device=x.device)
        sat[:, :, 1:, 1:] = x.to(torch.float64).cumsum(2).cumsum(3)
        b = batch[:, None, None, None]
        total = sat[b, c, he, we] - sat[b, c, hs, we] - sat[b, c, he, ws] + sat[b, c, hs, ws]
        area = ((he - hs) * (we - ws)).to(torch.float64)
        empty = (he <= hs) | (we <= ws)
        out = torch.where(empty, torch.zeros_like(total), total / area.clamp(min=1))
        return out.to(x.dtype)


def caffe_anchors(base_size: int, ratios, scales) -> np.ndarray:
    """inisis/caffe proposal_layer.cpp's anchors (A, 4), ratio-major: a box of area base_size^2
    of each ratio h/w, scaled to ``ROUND(w * scale / base_size - 1) + 1`` wide."""
    base_area = np.float32(base_size * base_size)
    center = np.float32(0.5) * np.float32(base_size - 1)
    anchors = []
    for ratio in np.asarray(ratios, dtype=np.float32):
        ratio_w = np.float32(np.sqrt(np.float32(base_area / ratio)))
        ratio_h = np.float32(ratio_w * ratio)
        for scale in np.asarray(scales, dtype=np.float32):
            half_w = 0.5 * int(float(np.float32(ratio_w * scale)) / base_size - 1 + 0.5)
            half_h = 0.5 * int(float(np.float32(ratio_h * scale)) / base_size - 1 + 0.5)
            anchors.append([center - half_w, center - half_h, center + half_w, center + half_h])
    return np.asarray(anchors, dtype=np.float32).reshape(-1, 4)


def py_faster_rcnn_anchors(base_size: int = 16, ratios=(0.5, 1, 2), scales=(8, 16, 32)
                           ) -> np.ndarray:
    """py-faster-rcnn's generate_anchors (float64): widths ``round(sqrt(size / ratio))``
    (numpy rounds halves to even), heights ``round(w * ratio)``, each times every scale."""
    size = float(base_size * base_size)
    ctr = 0.5 * (base_size - 1)
    anchors = []
    for ratio in ratios:
        w = np.round(np.sqrt(size / ratio))
        h = np.round(w * ratio)
        for scale in scales:
            ws, hs = w * scale, h * scale
            anchors.append([ctr - 0.5 * (ws - 1), ctr - 0.5 * (hs - 1),
                            ctr + 0.5 * (ws - 1), ctr + 0.5 * (hs - 1)])
    return np.asarray(anchors, dtype=np.float64).reshape(-1, 4)


def _shifted_anchors(anchors: np.ndarray, height: int, width: int, stride: int) -> np.ndarray:
    """Anchors at every cell, (H * W * A, 4) in (h, w, a) order, in the anchors' dtype."""
    ys, xs = np.meshgrid(np.arange(height) * stride, np.arange(width) * stride, indexing="ij")
    shifts = np.stack([xs, ys, xs, ys], -1).reshape(-1, 1, 4).astype(anchors.dtype)
    return (shifts + anchors[None]).reshape(-1, 4)


def _cell_major(blob: np.ndarray, per_anchor: int) -> np.ndarray:
    """(A * per_anchor, H, W) -> (H * W * A, per_anchor), rows in (h, w, a) order."""
    return blob.transpose(1, 2, 0).reshape(-1, per_anchor)


def _apply_deltas(boxes: np.ndarray, deltas: np.ndarray) -> np.ndarray:
    """Both forks' box transform, in float32: centre += d * size, size *= exp(d)."""
    f = np.float32
    w = boxes[:, 2] - boxes[:, 0] + f(1)
    h = boxes[:, 3] - boxes[:, 1] + f(1)
    cx, cy = boxes[:, 0] + f(0.5) * w, boxes[:, 1] + f(0.5) * h
    pcx, pcy = deltas[:, 0] * w + cx, deltas[:, 1] * h + cy
    pw, ph = np.exp(deltas[:, 2]) * w, np.exp(deltas[:, 3]) * h
    return np.stack([pcx - f(0.5) * pw, pcy - f(0.5) * ph, pcx + f(0.5) * pw,
                     pcy + f(0.5) * ph], 1)


def _clip(boxes: np.ndarray, img_h: np.float32, img_w: np.float32) -> np.ndarray:
    f = np.float32
    limit = np.array([img_w - f(1), img_h - f(1)] * 2, dtype=np.float32)
    return np.maximum(np.minimum(boxes, limit), f(0))


def caffe_sort_order(scores: np.ndarray, num_top: int) -> np.ndarray:
    """The order inisis/caffe's ``sort_box`` leaves the boxes in: its partial quicksort
    (first element as pivot, descending, the part right of a pivot sorted only while it starts
    before ``num_top``), run as Caffe runs it, so that tied scores end up where Caffe puts
    them. A range whose scores are all equal is left as is (Caffe's passes change nothing)."""
    s = [float(v) for v in scores]
    order = list(range(len(s)))
    stack = [(0, len(s) - 1)] if s else []
    while stack:
        start, end = stack.pop()
        pivot = s[start]
        if all(v == pivot for v in s[start:end + 1]):
            continue
        left, right = start + 1, end
        while left <= right:
            while left <= end and s[left] >= pivot:
                left += 1
            while right > start and s[right] <= pivot:
                right -= 1
            if left <= right:
                s[left], s[right] = s[right], s[left]
                order[left], order[right] = order[right], order[left]
                left, right = left + 1, right - 1
        if right > start:
            s[start], s[right] = s[right], s[start]
            order[start], order[right] = order[right], order[start]
        if start < right - 1:
            stack.append((start, right - 1))
        if right + 1 < num_top and right + 1 < end:
            stack.append((right + 1, end))
    return np.asarray(order, dtype=np.int64)


def greedy_nms(boxes: np.ndarray, threshold: float, max_out: int, disjoint_is_zero: bool
               ) -> list[int]:
    """Greedy NMS over boxes in order (float32, the +1 pixel convention): a box survives
    unless its IoU with a kept box before it exceeds ``threshold``; stops after ``max_out``
    (0: no limit). ``disjoint_is_zero``: inisis/caffe's iou returns 0 for boxes apart by any
    gap (GPU py-faster-rcnn counts gaps under a pixel as overlap)."""
    f = np.float32
    x1, y1, x2, y2 = (boxes[:, i].astype(np.float32) for i in range(4))
    areas = (x2 - x1 + f(1)) * (y2 - y1 + f(1))
    dead = np.zeros(len(boxes), dtype=bool)
    keep: list[int] = []
    thresh = f(threshold)
    for i in range(len(boxes)):
        if dead[i]:
            continue
        keep.append(i)
        if len(keep) == max_out:
            break
        j = slice(i + 1, None)
        w = np.maximum(f(0), np.minimum(x2[i], x2[j]) - np.maximum(x1[i], x1[j]) + f(1))
        h = np.maximum(f(0), np.minimum(y2[i], y2[j]) - np.maximum(y1[i], y1[j]) + f(1))
        inter = w * h
        iou = inter / (areas[i] + areas[j] - inter)
        if disjoint_is_zero:
            apart = (x1[i] > x2[j]) | (y1[i] > y2[j]) | (x2[i] < x1[j]) | (y2[i] < y1[j])
            iou = np.where(apart, f(0), iou)
        dead[j] |= iou > thresh
    return keep


class Proposal(nn.Module):
    """inisis/caffe's C++ Proposal (src/caffe/layers/proposal_layer.cpp):
    forward(scores (N, 2A, H, W), deltas (N, 4A, H, W), im_info) -> rois (R, 5)
    [, scores (R,)], at most ``post_nms_topn`` rows per image.

    Per image: anchors (``caffe_anchors``) shifted by ``feat_stride`` per cell, moved by the
    deltas, clipped to ``im_info[0]`` x ``im_info[1]`` (the first image's, for every image, as
    Caffe reads it; the scale ``im_info[2]`` is unused); a box narrower or lower than
    ``min_size`` keeps its place with score 0. Caffe's partial quicksort orders the scores
    (channels A..2A-1), the first ``pre_nms_topn`` go through greedy NMS (IoU > nms_thresh
    suppresses), and the survivors' rows are ``(n, x1, y1, x2, y2)``.
    """

    def __init__(self, feat_stride: int, anchors: np.ndarray, min_size: float, pre_nms_topn: int,
                 post_nms_topn: int, nms_thresh: float, scores_top: bool) -> None:
        super().__init__()
        self.feat_stride, self.min_size = feat_stride, min_size
        self.pre_nms_topn, self.post_nms_topn = pre_nms_topn, post_nms_topn
        self.nms_thresh, self.scores_top = nms_thresh, scores_top
        self.register_buffer("anchors", torch.from_numpy(np.asarray(anchors, np.float32)),
                             persistent=False)

    def extra_repr(self) -> str:
        return (f"feat_stride={self.feat_stride}, anchors={self.anchors.shape[0]}, "
                f"pre_nms_topn={self.pre_nms_topn}, post_nms_topn={self.post_nms_topn}, "
                f"nms_thresh={self.nms_thresh}, min_size={self.min_size}")

    def forward(self, scores: torch.Tensor, deltas: torch.Tensor, im_info: torch.Tensor):
        anchors = self.anchors.cpu().numpy()
        a = anchors.shape[0]
        prob = scores.detach().cpu().to(torch.float32).numpy()
        delta = deltas.detach().cpu().to(torch.float32).numpy()
        info = im_info.detach().cpu().to(torch.float32).numpy().reshape(-1)
        height, width = prob.shape[2:]
        boxes = _shifted_anchors(anchors, height, width, self.feat_stride)
        rows, kept_scores = [], []
        for n in range(prob.shape[0]):
            box = _clip(_apply_deltas(boxes, _cell_major(delta[n], 4)), info[0], info[1])
            size = np.float32(self.min_size)
            big = (box[:, 2] - box[:, 0] + 1 >= size) & (box[:, 3] - box[:, 1] + 1 >= size)
            score = _cell_major(prob[n, a:], 1)[:, 0] * big.astype(np.float32)
            order = caffe_sort_order(score, self.pre_nms_topn)[:self.pre_nms_topn]
            keep = order[greedy_nms(box[order], self.nms_thresh, self.post_nms_topn, True)]
            rows.append(np.concatenate([np.full((len(keep), 1), n, np.float32), box[keep]], 1))
            kept_scores.append(score[keep])
        return _outputs(rows, kept_scores, scores, self.scores_top, (-1,))


def _outputs(rows, kept_scores, like: torch.Tensor, scores_top: bool, score_shape):
    rois = torch.from_numpy(np.concatenate(rows).reshape(-1, 5)).to(like.device, like.dtype)
    if not scores_top:
        return rois
    values = torch.from_numpy(np.concatenate(kept_scores).astype(np.float32))
    return rois, values.reshape(*score_shape).to(like.device, like.dtype)


class PyFasterRCNNProposal(nn.Module):
    """py-faster-rcnn's Python ProposalLayer (lib/rpn/proposal_layer.py) with its TEST-phase
    settings: forward(scores (1, 2A, H, W), deltas (1, 4A, H, W), im_info (1, 3)) -> rois (R, 5)
    [, scores (R, 1)].

    Anchors from ``generate_anchors`` shifted by ``feat_stride``, moved by the deltas
    (bbox_transform_inv, float32), clipped to ``im_info[:2]``; boxes under
    ``min_size * im_info[2]`` on a side are dropped; the rest sorted by score (ties: the later
    anchor first, as a stable argsort reversed), the first ``pre_nms_topn`` go through greedy
    NMS (gpu_nms's IoU: a gap under one pixel still overlaps; IoU > nms_thresh suppresses),
    the first ``post_nms_topn`` survivors are kept. Batch index 0 (one image only).
    """

    def __init__(self, feat_stride: int, anchors: np.ndarray, min_size: float, pre_nms_topn: int,
                 post_nms_topn: int, nms_thresh: float, scores_top: bool) -> None:
        super().__init__()
        self.feat_stride, self.min_size = feat_stride, min_size
        self.pre_nms_topn, self.post_nms_topn = pre_nms_topn, post_nms_topn
        self.nms_thresh, self.scores_top = nms_thresh, scores_top
        self.register_buffer("anchors", torch.from_numpy(np.asarray(anchors, np.float64)),
                             persistent=False)

    def extra_repr(self) -> str:
        return (f"feat_stride={self.feat_stride}, anchors={self.anchors.shape[0]}, "
                f"pre_nms_topn={self.pre_nms_topn}, post_nms_topn={self.post_nms_topn}, "
                f"nms_thresh={self.nms_thresh}, min_size={self.min_size}")

    def forward(self, scores: torch.Tensor, deltas: torch.Tensor, im_info: torch.Tensor):
        if scores.shape[0] != 1:
            raise ShapeError(f"py-faster-rcnn's ProposalLayer: a batch of {scores.shape[0]}; "
                             "it supports only single item batches (batch 1)")
        anchors = self.anchors.cpu().numpy()
        a = anchors.shape[0]
        prob = scores.detach().cpu().to(torch.float32).numpy()[0]
        delta = deltas.detach().cpu().to(torch.float32).numpy()[0]
        info = im_info.detach().cpu().to(torch.float32).numpy().reshape(-1)
        boxes = _shifted_anchors(anchors, *prob.shape[1:], self.feat_stride).astype(np.float32)
        box = _clip(_apply_deltas(boxes, _cell_major(delta, 4)), info[0], info[1])
        size = np.float32(self.min_size) * info[2]
        big = (box[:, 2] - box[:, 0] + 1 >= size) & (box[:, 3] - box[:, 1] + 1 >= size)
        box, score = box[big], _cell_major(prob[a:], 1)[big, 0]
        order = np.argsort(-score[::-1], kind="stable")
        order = (len(score) - 1 - order)[:self.pre_nms_topn or None]
        keep = order[greedy_nms(box[order], self.nms_thresh, self.post_nms_topn, False)]
        rows = [np.concatenate([np.zeros((len(keep), 1), np.float32), box[keep]], 1)]
        return _outputs(rows, [score[keep]], scores, self.scores_top, (-1, 1))

