"""Two-stage detector heads: ROIPooling (Fast R-CNN), PSROIPooling (R-FCN) and the region
proposal layers (inisis/caffe's C++ Proposal, py-faster-rcnn's Python ProposalLayer).

The pooling modules are plain torch ops (they trace and export) and run on the input's device;
run eagerly they read the rois' batch indices and longest bin on the host (two syncs per call:
the range check Caffe aborts on, and the size of the max table). The proposal modules keep
Caffe's data-dependent work (its quicksort, greedy NMS, a run-time number of rows) in their own
``forward``, a leaf of the net's fx graph; they compute in float32 on the CPU, as Caffe does, and
return their rows on the input's device.
"""
from __future__ import annotations

import functools

import torch
from torch import nn

from caffe2torch.errors import ShapeError
from caffe2torch.modules.batch import _tracing
from caffe2torch.modules.pooling import lowest
from caffe2torch.modules.precision import HALF


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
        value = torch.fmax(value, torch.tensor(lowest(value.dtype), dtype=value.dtype))
        value = torch.where(empty[..., None], torch.zeros_like(value), value)
        return value.permute(0, 3, 1, 2).contiguous()


def _bins(start: torch.Tensor, end: torch.Tensor, pooled: int, size: int
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Caffe's bin edges along one axis, [first, last) per roi and bin, clipped to [0, size]."""
    length = torch.clamp(end - start + 1, min=1).to(torch.float32)
    bin_size = length / torch.tensor(float(pooled), dtype=torch.float32)
    p = torch.arange(pooled, dtype=torch.float32, device=start.device)
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
        return max(int(size), 1).bit_length()
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
        p = torch.arange(g, dtype=torch.float32, device=x.device)
        first = torch.floor(p[None, :, None] * bin_size[:, None, :] + start[:, None, :])
        last = torch.ceil((p[None, :, None] + 1) * bin_size[:, None, :] + start[:, None, :])
        limit = torch.tensor([width, height]).to(x.device, non_blocking=True)
        first = torch.minimum(first.to(torch.int64).clamp(min=0), limit)   # (R, g, 2)
        last = torch.minimum(last.to(torch.int64).clamp(min=0), limit)
        ws, we = first[:, None, None, :, 0], last[:, None, None, :, 0]     # (R, 1, 1, g)
        hs, he = first[:, None, :, None, 1], last[:, None, :, None, 1]     # (R, 1, g, 1)
        arange = functools.partial(torch.arange, device=x.device)
        c = arange(self.output_dim)[:, None, None] * g * g \
            + arange(g)[None, :, None] * g + arange(g)[None, None, :]
        wide = torch.float32 if x.device.type == "mps" else torch.float64  # MPS has no float64
        sat = torch.zeros(n, x.shape[1], height + 1, width + 1, dtype=wide, device=x.device)
        sat[:, :, 1:, 1:] = x.to(wide).cumsum(2).cumsum(3)
        b = batch[:, None, None, None]
        total = sat[b, c, he, we] - sat[b, c, hs, we] - sat[b, c, he, ws] + sat[b, c, hs, ws]
        area = ((he - hs) * (we - ws)).to(wide)
        empty = (he <= hs) | (we <= ws)
        out = torch.where(empty, torch.zeros_like(total), total / area.clamp(min=1))
        return out.to(x.dtype)


def _shifted_anchors(anchors: torch.Tensor, height: int, width: int, stride: int
                     ) -> torch.Tensor:
    """Anchors at every cell, (H * W * A, 4) in (h, w, a) order (float32: the anchors are
    multiples of 1/2, the shifts integers, every sum exact)."""
    ys, xs = torch.meshgrid(torch.arange(height) * stride, torch.arange(width) * stride,
                            indexing="ij")
    shifts = torch.stack([xs, ys, xs, ys], -1).reshape(-1, 1, 4).to(torch.float32)
    return (shifts + anchors[None]).reshape(-1, 4)


def _cell_major(blob: torch.Tensor, per_anchor: int) -> torch.Tensor:
    """(A * per_anchor, H, W) -> (H * W * A, per_anchor), rows in (h, w, a) order."""
    return blob.permute(1, 2, 0).reshape(-1, per_anchor)


def _apply_deltas(boxes: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """Both forks' box transform, in float32: centre += d * size, size *= exp(d)."""
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    cx, cy = boxes[:, 0] + 0.5 * w, boxes[:, 1] + 0.5 * h
    pcx, pcy = deltas[:, 0] * w + cx, deltas[:, 1] * h + cy
    pw, ph = torch.exp(deltas[:, 2]) * w, torch.exp(deltas[:, 3]) * h
    return torch.stack([pcx - 0.5 * pw, pcy - 0.5 * ph, pcx + 0.5 * pw, pcy + 0.5 * ph], 1)


def _clip(boxes: torch.Tensor, img_h: torch.Tensor, img_w: torch.Tensor) -> torch.Tensor:
    limit = torch.stack([img_w - 1, img_h - 1] * 2)
    return torch.clamp(torch.minimum(boxes, limit), min=0)


def _wide_enough(boxes: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    return (boxes[:, 2] - boxes[:, 0] + 1 >= size) & (boxes[:, 3] - boxes[:, 1] + 1 >= size)


def caffe_sort_order(scores: torch.Tensor, num_top: int) -> torch.Tensor:
    """The order inisis/caffe's ``sort_box`` leaves the boxes in: its partial quicksort
    (first element as pivot, descending, the part right of a pivot sorted only while it starts
    before ``num_top``), run as Caffe runs it, so that tied scores end up where Caffe puts
    them. A range whose scores are all equal is left as is (Caffe's passes change nothing)."""
    s = [float(v) for v in scores.tolist()]
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
    return torch.tensor(order, dtype=torch.int64)


def greedy_nms(boxes: torch.Tensor, threshold: float, max_out: int, disjoint_is_zero: bool
               ) -> torch.Tensor:
    """Greedy NMS over boxes (float32) in order, the +1 pixel convention: a box survives
    unless its IoU with a kept box before it exceeds ``threshold``; stops after ``max_out``
    (0: no limit). ``disjoint_is_zero``: inisis/caffe's iou is 0 for boxes apart by any gap
    (py-faster-rcnn's gpu_nms counts a gap under one pixel as overlap). Returns the kept
    positions."""
    x1, y1, x2, y2 = boxes.unbind(1)
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    thresh = torch.tensor(threshold, dtype=torch.float32)
    dead = torch.zeros(len(boxes), dtype=torch.bool)
    keep: list[int] = []
    for i in range(len(boxes)):
        if dead[i]:
            continue
        keep.append(i)
        if len(keep) == max_out:
            break
        w = torch.clamp(torch.minimum(x2[i], x2[i + 1:]) - torch.maximum(x1[i], x1[i + 1:]) + 1,
                        min=0)
        h = torch.clamp(torch.minimum(y2[i], y2[i + 1:]) - torch.maximum(y1[i], y1[i + 1:]) + 1,
                        min=0)
        inter = w * h
        iou = inter / (areas[i] + areas[i + 1:] - inter)
        if disjoint_is_zero:
            apart = (x1[i] > x2[i + 1:]) | (y1[i] > y2[i + 1:]) | (x2[i] < x1[i + 1:]) | \
                (y2[i] < y1[i + 1:])
            iou = torch.where(apart, torch.zeros_like(iou), iou)
        dead[i + 1:] |= iou > thresh
    return torch.tensor(keep, dtype=torch.int64)


class _ProposalBase(nn.Module):
    def __init__(self, feat_stride: int, anchors, min_size: float,
                 pre_nms_topn: int, post_nms_topn: int, nms_thresh: float,
                 scores_top: bool) -> None:
        super().__init__()
        self.feat_stride, self.min_size = feat_stride, min_size
        self.pre_nms_topn, self.post_nms_topn = pre_nms_topn, post_nms_topn
        self.nms_thresh, self.scores_top = nms_thresh, scores_top
        #: (A, 4) anchor boxes as Python numbers (a setting, not a parameter)
        self.anchors = tuple(tuple(float(v) for v in row) for row in anchors)

    def extra_repr(self) -> str:
        return (f"feat_stride={self.feat_stride}, anchors={len(self.anchors)}, "
                f"pre_nms_topn={self.pre_nms_topn}, post_nms_topn={self.post_nms_topn}, "
                f"nms_thresh={self.nms_thresh}, min_size={self.min_size}")

    def _inputs(self, scores, deltas, im_info):
        as_cpu = [t.detach().to("cpu", torch.float32) for t in (scores, deltas, im_info)]
        anchors = torch.tensor(self.anchors, dtype=torch.float32).reshape(-1, 4)
        return (*as_cpu[:2], as_cpu[2].reshape(-1), anchors)

    def _outputs(self, rows, kept, like: torch.Tensor, score_shape):
        """Rows on ``like``'s device, in its dtype, or float32 for half precision (bfloat16
        would round pixel coordinates past 256 to several pixels)."""
        dtype = torch.float32 if like.dtype in HALF else like.dtype
        rois = torch.cat(rows).reshape(-1, 5).to(like.device, dtype)
        if not self.scores_top:
            return rois
        return rois, torch.cat(kept).reshape(*score_shape).to(like.device, dtype)


class Proposal(_ProposalBase):
    """inisis/caffe's C++ Proposal (src/caffe/layers/proposal_layer.cpp):
    forward(scores (N, 2A, H, W), deltas (N, 4A, H, W), im_info) -> rois (R, 5)
    [, scores (R,)], at most ``post_nms_topn`` rows per image.

    Per image: the anchors shifted by ``feat_stride`` per cell, moved by the deltas, clipped
    to ``im_info[0]`` x ``im_info[1]`` (the first image's, for every image, as Caffe reads it;
    the scale ``im_info[2]`` is unused); a box narrower or lower than ``min_size`` keeps its
    place with score 0. Caffe's partial quicksort orders the scores (channels A..2A-1), the
    first ``pre_nms_topn`` go through greedy NMS (IoU > nms_thresh suppresses), and the
    survivors' rows are ``(n, x1, y1, x2, y2)``.
    """

    def forward(self, scores: torch.Tensor, deltas: torch.Tensor, im_info: torch.Tensor):
        prob, delta, info, anchors = self._inputs(scores, deltas, im_info)
        a = anchors.shape[0]
        boxes = _shifted_anchors(anchors, prob.shape[2], prob.shape[3], self.feat_stride)
        min_size = torch.tensor(self.min_size, dtype=torch.float32)
        rows, kept = [], []
        for n in range(prob.shape[0]):
            box = _clip(_apply_deltas(boxes, _cell_major(delta[n], 4)), info[0], info[1])
            score = _cell_major(prob[n, a:], 1)[:, 0] * _wide_enough(box, min_size).float()
            order = caffe_sort_order(score, self.pre_nms_topn)[:self.pre_nms_topn]
            keep = order[greedy_nms(box[order], self.nms_thresh, self.post_nms_topn, True)]
            rows.append(torch.cat([torch.full((len(keep), 1), float(n)), box[keep]], 1))
            kept.append(score[keep])
        return self._outputs(rows, kept, scores, (-1,))


class PyFasterRCNNProposal(_ProposalBase):
    """py-faster-rcnn's Python ProposalLayer (lib/rpn/proposal_layer.py) with its TEST-phase
    settings: forward(scores (1, 2A, H, W), deltas (1, 4A, H, W), im_info (1, 3)) -> rois (R, 5)
    [, scores (R, 1)].

    The anchors (generate_anchors) shifted by ``feat_stride``, moved by the deltas
    (bbox_transform_inv, float32), clipped to ``im_info[:2]``; boxes under
    ``min_size * im_info[2]`` on a side are dropped; the rest sorted by score (ties: the later
    anchor first, as a stable argsort reversed), the first ``pre_nms_topn`` go through greedy
    NMS (gpu_nms's IoU: a gap under one pixel still overlaps; IoU > nms_thresh suppresses),
    the first ``post_nms_topn`` survivors are kept. Batch index 0 (one image only).
    """

    def forward(self, scores: torch.Tensor, deltas: torch.Tensor, im_info: torch.Tensor):
        if scores.shape[0] != 1:
            raise ShapeError(f"py-faster-rcnn's ProposalLayer: a batch of {scores.shape[0]}; "
                             "it supports only single item batches (batch 1)")
        prob, delta, info, anchors = self._inputs(scores, deltas, im_info)
        a = anchors.shape[0]
        boxes = _shifted_anchors(anchors, prob.shape[2], prob.shape[3], self.feat_stride)
        box = _clip(_apply_deltas(boxes, _cell_major(delta[0], 4)), info[0], info[1])
        big = _wide_enough(box, torch.tensor(self.min_size, dtype=torch.float32) * info[2])
        box, score = box[big], _cell_major(prob[0, a:], 1)[big, 0]
        order = torch.sort(-score.flip(0), stable=True).indices
        order = (len(score) - 1 - order)[:self.pre_nms_topn or None]
        keep = order[greedy_nms(box[order], self.nms_thresh, self.post_nms_topn, False)]
        rows = [torch.cat([torch.zeros(len(keep), 1), box[keep]], 1)]
        return self._outputs(rows, [score[keep]], scores, (-1, 1))
