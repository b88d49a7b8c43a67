"""Numpy specs of the mobile-net and YOLO v2 fork layers, written from each fork's Forward_cpu
(the index arithmetic of the loops kept as it is there, on flat arrays)."""
from __future__ import annotations

import numpy as np

f32 = np.float32


def relu6(x, negative_slope=0.0, threshold=6.0):
    """inisis/caffe, eric612: min(max(x, 0) + negative_slope * min(x, 0), threshold)."""
    x = x.astype(f32)
    return np.minimum(np.maximum(x, f32(0)) + f32(negative_slope) * np.minimum(x, f32(0)),
                      f32(threshold))


def hardswish(x):
    """inisis/caffe HardSwish: x * max(0, min(1, x / 6 + 0.5))."""
    x = x.astype(f32)
    return x * np.maximum(f32(0), np.minimum(f32(1), x / f32(6) + f32(0.5)))


def hswish(x):
    """aovoc/caffe HSwish: x * min(max(x + 3, 0), 6) / 6."""
    x = x.astype(f32)
    return x * np.minimum(np.maximum(x + f32(3), f32(0)), f32(6)) / f32(6)


def hardsigmoid(x, alpha=0.2, beta=0.5):
    """inisis/caffe HardSigmoid: max(0, min(1, x * alpha + beta))."""
    x = x.astype(f32)
    return np.maximum(f32(0), np.minimum(f32(1), x * f32(alpha) + f32(beta)))


def hsigmoid(x):
    """aovoc/caffe HSigmoid: min(max(x + 3, 0), 6) / 6."""
    x = x.astype(f32)
    return np.minimum(np.maximum(x + f32(3), f32(0)), f32(6)) / f32(6)


def shuffle_channel(x, group):
    """farmingyard/ShuffleNet Resize_cpu: input channel i * cols + j -> output j * rows + i,
    rows = group, cols = C / group, each channel a block of count(2) values."""
    n, c = x.shape[:2]
    rows, cols = group, c // group
    flat = x.reshape(n, c, -1)
    out = np.empty_like(flat)
    for i in range(rows):
        for j in range(cols):
            out[:, j * rows + i] = flat[:, i * cols + j]
    return out.reshape(x.shape)


def depthwise_conv(x, weight, bias=None, stride=(1, 1), pad=(0, 0), dilation=(1, 1)):
    """BVLC PR #5665 conv_dw_layer.cpp: channel c convolved with weight[c] (C, 1, kh, kw)."""
    n, c, h, w = x.shape
    kh, kw = weight.shape[2:]
    oh = (h + 2 * pad[0] - (dilation[0] * (kh - 1) + 1)) // stride[0] + 1
    ow = (w + 2 * pad[1] - (dilation[1] * (kw - 1) + 1)) // stride[1] + 1
    padded = np.zeros((n, c, h + 2 * pad[0], w + 2 * pad[1]), dtype=np.float64)
    padded[:, :, pad[0]:pad[0] + h, pad[1]:pad[1] + w] = x
    out = np.zeros((n, c, oh, ow), dtype=np.float64)
    for i in range(kh):
        for j in range(kw):
            rows = i * dilation[0] + stride[0] * np.arange(oh)
            cols = j * dilation[1] + stride[1] * np.arange(ow)
            out += padded[:, :, rows][:, :, :, cols] * weight[None, :, 0, i, j, None, None]
    if bias is not None:
        out += bias.reshape(1, c, 1, 1)
    return out.astype(f32)


def axpy(a, x, y):
    """hujie-frank/SENet: top = y; top[n, c, :] += a_flat[n * C + c] * x[n, c, :]."""
    n, c = x.shape[:2]
    scale = a.reshape(-1)[: n * c]
    out = y.reshape(n * c, -1).astype(np.float64).copy()
    out += scale[:, None].astype(np.float64) * x.reshape(n * c, -1)
    return out.reshape(x.shape).astype(f32)


def reorg(x, stride, reverse=False):
    """The YOLO v2 ports' reorg_cpu(bottom, W, H, C, N, stride, forward=reverse, top), its
    loops over the bottom's (N, C, H, W) index space; the flat top is reshaped to the layer's
    top shape."""
    n_, c_, h_, w_ = x.shape
    s = stride
    t_c, t_h, t_w = c_ // (s * s), h_ * s, w_ * s
    src = x.reshape(-1)
    dst = np.empty_like(src)
    for n in range(n_):
        for c in range(c_):
            c2, offset = c % t_c, c // t_c
            for h in range(h_):
                h2 = h * s + offset // s
                for w in range(w_):
                    w2 = w * s + offset % s
                    bottom_index = w + w_ * (h + h_ * (c + c_ * n))
                    top_index = w2 + t_w * (h2 + t_h * (c2 + t_c * n))
                    if reverse:
                        dst[top_index] = src[bottom_index]
                    else:
                        dst[bottom_index] = src[top_index]
    shape = (n_, t_c, t_h, t_w) if reverse else (n_, c_ * s * s, h_ // s, w_ // s)
    return dst.reshape(shape)


def region(x, classes, coords, boxes, softmax):
    """BirdeeChen/caffe_yolo_v2 RegionLayer::Forward_cpu: flatten(forward) to (N, H*W, C),
    then per row of size = coords + classes + 1: logistic at 4, softmax over [5, 5 + classes)."""
    n, c, h, w = x.shape
    size = coords + classes + 1
    out = x.reshape(n, c, h * w).transpose(0, 2, 1).astype(np.float64).copy()
    out = out.reshape(n, h * w * boxes, size)
    out[..., 4] = 1.0 / (1.0 + np.exp(-out[..., 4]))
    if softmax:
        cls = out[..., 5:5 + classes]
        e = np.exp(cls - cls.max(axis=-1, keepdims=True))
        out[..., 5:5 + classes] = e / e.sum(axis=-1, keepdims=True)
    return out.reshape(n, h * w, c).reshape(x.shape).astype(f32)
