"""Numpy specs of the SSD fork's layers (weiliu89/caffe, branch ssd), loop for loop as their
Forward_cpu and bbox_util.cpp compute them; FaceBoxes' PriorBox (sfzhang15/FaceBoxes) too."""
from __future__ import annotations

import math

import numpy as np

F = np.float32


def prior_box(layer_hw, image_hw, min_sizes, max_sizes=(), aspect_ratios=(), flip=True,
              clip=False, variance=(), img_hw=(0, 0), step_hw=(0.0, 0.0), offset=0.5,
              faceboxes=False):
    """PriorBoxLayer::Forward_cpu; ``faceboxes``: sfzhang15/FaceBoxes' loop."""
    ratios = [1.0]
    for ar in aspect_ratios:
        if all(abs(ar - r) >= 1e-6 for r in ratios):
            ratios.append(ar)
            if flip:
                ratios.append(float(F(1.0 / ar)))
    lh, lw = layer_hw
    ih, iw = image_hw if 0 in img_hw else img_hw
    if step_hw[0] == 0 or step_hw[1] == 0:
        sw, sh = F(F(iw) / F(lw)), F(F(ih) / F(lh))
    else:
        sh, sw = F(step_hw[0]), F(step_hw[1])
    out = []

    def box(cx, cy, bw, bh):
        out.extend([(cx - bw / 2.0) / iw, (cy - bh / 2.0) / ih,
                    (cx + bw / 2.0) / iw, (cy + bh / 2.0) / ih])

    for h in range(lh):
        for w in range(lw):
            cx, cy = F(F(w + F(offset)) * sw), F(F(h + F(offset)) * sh)
            for s, size in enumerate(min_sizes):
                size = int(size)
                if faceboxes and size in (32, 64):
                    n, step = (4, 8) if size == 32 else (2, 16)
                    for i in range(-(n // 2), n // 2):
                        for j in range(-(n // 2), n // 2):
                            side = float(F(size - 1))
                            box(float(F(cx + F(j * step))), float(F(cy + F(i * step))),
                                side, side)
                elif faceboxes:
                    box(float(cx), float(cy), float(F(size - 1)), float(F(size - 1)))
                else:
                    box(float(cx), float(cy), float(F(size)), float(F(size)))
                if max_sizes:
                    side = float(F(math.sqrt(size * int(max_sizes[s]))))
                    box(float(cx), float(cy), side, side)
                for ar in ratios:
                    if abs(ar - 1.0) < 1e-6:
                        continue
                    box(float(cx), float(cy), float(F(size * math.sqrt(ar))),
                        float(F(size / math.sqrt(ar))))
    boxes = np.array(out, dtype=np.float32)
    if clip:
        boxes = np.clip(boxes, 0, 1)
    var = list(variance) or [0.1]
    variances = np.tile(np.array(var, dtype=np.float32), len(boxes) // len(var))
    return np.stack([boxes, variances])[None]


def normalize(x, scale, across_spatial=True, channel_shared=True, eps=1e-10):
    n, c = x.shape[:2]
    flat = x.reshape(n, c, -1).astype(np.float32)
    scale = np.asarray(scale, dtype=np.float32).reshape(-1)
    out = np.empty_like(flat)
    for i in range(n):
        if across_spatial:
            norm = F(np.sqrt(np.sum(flat[i] ** 2, dtype=np.float64) + eps))
            out[i] = flat[i] * F(1.0 / norm)
        else:
            norm = np.sqrt(F(eps) + np.sum(flat[i] ** 2, axis=0))
            out[i] = flat[i] / norm
        out[i] *= scale[0] if channel_shared else scale[:, None]
    return out.reshape(x.shape)


def permute(x, order):
    order = list(order) + [a for a in range(x.ndim) if a not in order]
    return np.ascontiguousarray(np.transpose(x, order))


def _size(b):
    if b[2] < b[0] or b[3] < b[1]:
        return F(0)
    return F(F(b[2] - b[0]) * F(b[3] - b[1]))


def _jaccard(a, b):
    if b[0] > a[2] or b[2] < a[0] or b[1] > a[3] or b[3] < a[1]:
        return F(0)
    iw = F(min(a[2], b[2]) - max(a[0], b[0]))
    ih = F(min(a[3], b[3]) - max(a[1], b[1]))
    if iw > 0 and ih > 0:
        inter = F(iw * ih)
        return F(inter / F(F(_size(a) + _size(b)) - inter))
    return F(0)


def _decode(p, v, l, code, in_target):
    if in_target:
        v = [F(1)] * 4
    if code == 1:
        if in_target:
            return [F(p[k] + l[k]) for k in range(4)]
        return [F(p[k] + F(v[k] * l[k])) for k in range(4)]
    pw, ph = F(p[2] - p[0]), F(p[3] - p[1])
    if code == 2:
        pcx, pcy = F(F(p[0] + p[2]) / 2), F(F(p[1] + p[3]) / 2)
        cx = F(F(F(v[0] * l[0]) * pw) + pcx) if not in_target else F(F(l[0] * pw) + pcx)
        cy = F(F(F(v[1] * l[1]) * ph) + pcy) if not in_target else F(F(l[1] * ph) + pcy)
        bw = F(np.exp(F(v[2] * l[2]), dtype=np.float32) * pw)
        bh = F(np.exp(F(v[3] * l[3]), dtype=np.float32) * ph)
        return [F(cx - bw / 2), F(cy - bh / 2), F(cx + bw / 2), F(cy + bh / 2)]
    sizes = [pw, ph, pw, ph]
    if in_target:
        return [F(p[k] + F(l[k] * sizes[k])) for k in range(4)]
    return [F(p[k] + F(F(v[k] * l[k]) * sizes[k])) for k in range(4)]


def _nms(boxes, scores, threshold, nms_threshold, eta, top_k):
    pairs = [(s, i) for i, s in enumerate(scores) if s > threshold]
    pairs.sort(key=lambda p: -p[0])  # stable, as std::stable_sort
    if top_k > -1:
        pairs = pairs[:top_k]
    kept, adaptive = [], F(nms_threshold)
    for _, idx in pairs:
        keep = all(_jaccard(boxes[idx], boxes[k]) <= adaptive for k in kept)
        if keep:
            kept.append(idx)
            if eta < 1 and adaptive > 0.5:
                adaptive = F(adaptive * F(eta))
    return kept


def detection_output(loc, conf, prior, num_classes, share_location=True, background_label_id=0,
                     code_type=1, variance_encoded_in_target=False, keep_top_k=-1,
                     confidence_threshold=None, nms_threshold=0.3, eta=1.0, top_k=-1):
    """DetectionOutputLayer::Forward_cpu: rows (1, 1, R, 7)."""
    num, num_priors = loc.shape[0], prior.shape[2] // 4
    loc_classes = 1 if share_location else num_classes
    locs = loc.reshape(num, num_priors, loc_classes, 4)
    confs = conf.reshape(num, num_priors, num_classes)
    pboxes, pvars = prior[0, 0].reshape(-1, 4), prior[0, 1].reshape(-1, 4)
    threshold = -np.finfo(np.float32).max if confidence_threshold is None \
        else F(confidence_threshold)
    rows = []
    for i in range(num):
        decoded = {}
        for c in range(loc_classes):
            label = -1 if share_location else c
            if label == background_label_id:
                continue
            decoded[label] = [_decode(pboxes[p], pvars[p], locs[i, p, c], code_type,
                                      variance_encoded_in_target) for p in range(num_priors)]
        indices = {}
        for c in range(num_classes):
            if c == background_label_id:
                continue
            boxes = decoded[-1 if share_location else c]
            indices[c] = _nms(boxes, list(confs[i, :, c]), threshold, nms_threshold, eta, top_k)
        total = sum(len(v) for v in indices.values())
        if keep_top_k > -1 and total > keep_top_k:
            pairs = [(confs[i, idx, c], c, idx) for c in sorted(indices) for idx in indices[c]]
            pairs.sort(key=lambda p: -p[0])
            new = {}
            for _, c, idx in pairs[:keep_top_k]:
                new.setdefault(c, []).append(idx)
            indices = new
        for c in sorted(indices):
            boxes = decoded[-1 if share_location else c]
            for idx in indices[c]:
                rows.append([i, c, confs[i, idx, c], *boxes[idx]])
    if not rows:
        rows = [[i, -1, -1, -1, -1, -1, -1] for i in range(num)]
    return np.array(rows, dtype=np.float32).reshape(1, 1, -1, 7)
