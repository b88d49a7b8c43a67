"""Numpy specs of the two-stage detector layers, element by element as their C++ / Python
computes them: ROIPooling (caffe-fast-rcnn roi_pooling_layer.cpp), PSROIPooling (caffe-rfcn
psroi_pooling_layer.cu), Proposal (inisis/caffe proposal_layer.cpp + nms.cpp) and
py-faster-rcnn's ProposalLayer (lib/rpn/proposal_layer.py with gpu_nms's IoU)."""
from __future__ import annotations

import math
import sys

import numpy as np

f32 = np.float32
FLT_MAX = float(np.finfo(np.float32).max)


def c_round(v) -> float:
    """C's round of a float32 value: halves away from zero (exact in double)."""
    return math.copysign(math.floor(abs(float(v)) + 0.5), float(v))


def roi_pooling(x, rois, pooled_h, pooled_w, spatial_scale):
    n_rois = rois.shape[0]
    _, c, height, width = x.shape
    top = np.full((n_rois, c, pooled_h, pooled_w), -FLT_MAX, np.float32)
    scale = f32(spatial_scale)
    for n in range(n_rois):
        b = int(rois[n, 0])
        sw, sh, ew, eh = (int(c_round(float(f32(rois[n, i]) * scale))) for i in range(1, 5))
        rh, rw = max(eh - sh + 1, 1), max(ew - sw + 1, 1)
        bh, bw = f32(rh) / f32(pooled_h), f32(rw) / f32(pooled_w)
        for ph in range(pooled_h):
            for pw in range(pooled_w):
                hs = min(max(math.floor(f32(ph) * bh) + sh, 0), height)
                he = min(max(math.ceil(f32(ph + 1) * bh) + sh, 0), height)
                ws = min(max(math.floor(f32(pw) * bw) + sw, 0), width)
                we = min(max(math.ceil(f32(pw + 1) * bw) + sw, 0), width)
                if he <= hs or we <= ws:
                    top[n, :, ph, pw] = 0
                    continue
                for h in range(hs, he):
                    for w in range(ws, we):
                        v = x[b, :, h, w]
                        top[n, :, ph, pw] = np.where(v > top[n, :, ph, pw], v, top[n, :, ph, pw])
    return top


def psroi_pooling(x, rois, output_dim, group_size, spatial_scale):
    n_rois, g = rois.shape[0], group_size
    _, _, height, width = x.shape
    top = np.zeros((n_rois, output_dim, g, g), np.float32)
    scale = f32(spatial_scale)
    for n in range(n_rois):
        b = int(rois[n, 0])
        sw, sh = f32(c_round(rois[n, 1])) * scale, f32(c_round(rois[n, 2])) * scale
        ew, eh = f32(c_round(rois[n, 3]) + 1.0) * scale, f32(c_round(rois[n, 4]) + 1.0) * scale
        rw, rh = max(f32(ew - sw), f32(0.1)), max(f32(eh - sh), f32(0.1))
        bh, bw = rh / f32(g), rw / f32(g)
        for ctop in range(output_dim):
            for ph in range(g):
                for pw in range(g):
                    hs = min(max(math.floor(f32(ph) * bh + sh), 0), height)
                    he = min(max(math.ceil(f32(ph + 1) * bh + sh), 0), height)
                    ws = min(max(math.floor(f32(pw) * bw + sw), 0), width)
                    we = min(max(math.ceil(f32(pw + 1) * bw + sw), 0), width)
                    if he <= hs or we <= ws:
                        continue
                    ch = (ctop * g + ph) * g + pw
                    top[n, ctop, ph, pw] = x[b, ch, hs:he, ws:we].astype(np.float64).sum() / (
                        (he - hs) * (we - ws))
    return top


# --- inisis/caffe Proposal ---------------------------------------------------------------

def caffe_proposal_anchors(base_size, ratios, scales):
    center = f32(0.5) * f32(base_size - 1)
    out = []
    for r in ratios:
        rw = f32(math.sqrt(f32(f32(base_size * base_size) / f32(r))))
        rh = f32(rw * f32(r))
        for s in scales:
            hw = f32(0.5) * f32(int(float(f32(rw * f32(s))) * 1.0 / base_size - 1.0 + 0.5))
            hh = f32(0.5) * f32(int(float(f32(rh * f32(s))) * 1.0 / base_size - 1.0 + 0.5))
            out.append([center - hw, center - hh, center + hw, center + hh])
    return np.array(out, np.float32)


def _transform(box, d, img_w, img_h, min_w, min_h):
    w, h = box[2] - box[0] + f32(1), box[3] - box[1] + f32(1)
    cx, cy = box[0] + f32(0.5) * w, box[1] + f32(0.5) * h
    pcx, pcy = f32(d[0] * w) + cx, f32(d[1] * h) + cy
    pw, ph = f32(np.exp(d[2]) * w), f32(np.exp(d[3]) * h)
    out = [pcx - f32(0.5) * pw, pcy - f32(0.5) * ph, pcx + f32(0.5) * pw, pcy + f32(0.5) * ph]
    lim = [img_w - f32(1), img_h - f32(1)] * 2
    out = [f32(max(f32(0), min(v, m))) for v, m in zip(out, lim)]
    ok = (out[2] - out[0] + f32(1) >= min_w) and (out[3] - out[1] + f32(1) >= min_h)
    return out, ok


def _sort_box(items, start, end, num_top):
    """proposal_layer.cpp's sort_box, recursively, on a list of [x1, y1, x2, y2, score]."""
    pivot = items[start][4]
    left, right = start + 1, end
    while left <= right:
        while left <= end and items[left][4] >= pivot:
            left += 1
        while right > start and items[right][4] <= pivot:
            right -= 1
        if left <= right:
            items[left], items[right] = items[right], items[left]
            left += 1
            right -= 1
    if right > start:
        items[start], items[right] = items[right], items[start]
    if start < right - 1:
        _sort_box(items, start, right - 1, num_top)
    if right + 1 < num_top and right + 1 < end:
        _sort_box(items, right + 1, end, num_top)


def _iou_caffe(a, b):
    if a[0] > b[2] or a[1] > b[3] or a[2] < b[0] or a[3] < b[1]:
        return f32(0)
    w = max(f32(0), f32(min(a[2], b[2]) - max(a[0], b[0]) + f32(1)))
    h = max(f32(0), f32(min(a[3], b[3]) - max(a[1], b[1]) + f32(1)))
    inter = f32(w * h)
    area_a = f32((a[2] - a[0] + f32(1)) * (a[3] - a[1] + f32(1)))
    area_b = f32((b[2] - b[0] + f32(1)) * (b[3] - b[1] + f32(1)))
    return f32(inter / f32(f32(area_a + area_b) - inter))


def proposal(scores, deltas, im_info, feat_stride=16, base_size=16, min_size=16, ratios=(),
             scales=(), pre_nms_topn=6000, post_nms_topn=300, nms_thresh=0.7):
    """(rois (R, 5), scores (R,)) as inisis/caffe's Forward_cpu writes them."""
    anchors = caffe_proposal_anchors(base_size, ratios, scales)
    a = len(anchors)
    n_img, _, height, width = scores.shape
    info = np.asarray(im_info, np.float32).reshape(-1)
    rois, kept = [], []
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 20000))
    for n in range(n_img):
        items = []
        for h in range(height):
            for w in range(width):
                for k in range(a):
                    box = [f32(w * feat_stride) + anchors[k, 0], f32(h * feat_stride) + anchors[k, 1],
                           f32(w * feat_stride) + anchors[k, 2], f32(h * feat_stride) + anchors[k, 3]]
                    d = deltas[n, 4 * k:4 * k + 4, h, w]
                    box, ok = _transform(box, d, info[1], info[0], f32(min_size), f32(min_size))
                    items.append(box + [f32(int(ok) * scores[n, a + k, h, w])])
        _sort_box(items, 0, len(items) - 1, pre_nms_topn)
        top = items[:min(len(items), pre_nms_topn)]
        dead = [False] * len(top)
        keep = []
        for i in range(len(top)):
            if dead[i]:
                continue
            keep.append(i)
            if len(keep) == post_nms_topn:
                break
            for j in range(i + 1, len(top)):
                if not dead[j] and _iou_caffe(top[i], top[j]) > f32(nms_thresh):
                    dead[j] = True
        rois += [[n] + top[i][:4] for i in keep]
        kept += [top[i][4] for i in keep]
    return np.array(rois, np.float32).reshape(-1, 5), np.array(kept, np.float32)


# --- py-faster-rcnn's Python ProposalLayer ---------------------------------------------

def generate_anchors(base_size=16, ratios=(0.5, 1, 2), scales=(8, 16, 32)):
    """lib/rpn/generate_anchors.py."""
    def mk(ws, hs, cx, cy):
        return np.stack([cx - 0.5 * (ws - 1), cy - 0.5 * (hs - 1),
                         cx + 0.5 * (ws - 1), cy + 0.5 * (hs - 1)], 1)
    base = np.array([1, 1, base_size, base_size], float) - 1
    w, h = base[2] - base[0] + 1, base[3] - base[1] + 1
    cx, cy = base[0] + 0.5 * (w - 1), base[1] + 0.5 * (h - 1)
    ws = np.round(np.sqrt(w * h / np.array(ratios, float)))
    hs = np.round(ws * np.array(ratios, float))
    out = []
    for rw, rh in zip(ws, hs):
        out.append(mk(rw * np.array(scales, float), rh * np.array(scales, float), cx, cy))
    return np.vstack(out)


def _iou_gpu(a, b):
    w = max(f32(min(a[2], b[2]) - max(a[0], b[0]) + f32(1)), f32(0))
    h = max(f32(min(a[3], b[3]) - max(a[1], b[1]) + f32(1)), f32(0))
    inter = f32(w * h)
    sa = f32((a[2] - a[0] + f32(1)) * (a[3] - a[1] + f32(1)))
    sb = f32((b[2] - b[0] + f32(1)) * (b[3] - b[1] + f32(1)))
    return f32(inter / f32(f32(sa + sb) - inter))


def py_proposal(scores, deltas, im_info, feat_stride=16, scales=(8, 16, 32), ratios=(0.5, 1, 2),
                pre_nms_topn=6000, post_nms_topn=300, nms_thresh=0.7, min_size=16):
    """(rois (R, 5), scores (R, 1)) as proposal_layer.py's forward, TEST settings."""
    anchors = generate_anchors(ratios=ratios, scales=scales)
    a = len(anchors)
    height, width = scores.shape[-2:]
    sx, sy = np.meshgrid(np.arange(width) * feat_stride, np.arange(height) * feat_stride)
    shifts = np.vstack((sx.ravel(), sy.ravel(), sx.ravel(), sy.ravel())).T
    boxes = (anchors[None] + shifts[:, None]).reshape(-1, 4).astype(np.float32)
    d = deltas.transpose(0, 2, 3, 1).reshape(-1, 4)
    s = scores[:, a:].transpose(0, 2, 3, 1).reshape(-1)
    info = im_info.reshape(-1, im_info.shape[-1])[0]
    props = []
    for box, dd in zip(boxes, d):
        out, _ = _transform(list(box), dd, info[1], info[0], f32(0), f32(0))
        props.append(out)
    props = np.array(props, np.float32).reshape(-1, 4)
    size = f32(min_size) * info[2]
    big = (props[:, 2] - props[:, 0] + 1 >= size) & (props[:, 3] - props[:, 1] + 1 >= size)
    idx = np.nonzero(big)[0]
    # descending score, ties: the later box first (a stable argsort, reversed)
    idx = sorted(idx, key=lambda i: (-float(s[i]), -i))[:pre_nms_topn]
    keep = []
    for i in idx:
        if all(_iou_gpu(props[i], props[k]) <= f32(nms_thresh) for k in keep):
            keep.append(i)
    keep = keep[:post_nms_topn]
    rois = np.concatenate([np.zeros((len(keep), 1), np.float32), props[keep]], 1)
    return rois.reshape(-1, 5), s[keep].reshape(-1, 1)
