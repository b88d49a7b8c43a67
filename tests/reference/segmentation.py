"""Numpy specs of the segmentation / upsampling fork layers, transcribed from their C++ loops.

Sources: hszhao/PSPNet src/caffe/layers/interp_layer.cpp + src/caffe/util/interp.cpp
(caffe_cpu_interp2, not packed); inisis/caffe src/caffe/layers/resize_layer.cpp +
src/caffe/util/util_img.cpp (BiLinearResizeMat_cpu), bilinear_interpolate_layer.cpp,
upsample_layer.cpp, pad_layer.cpp, pixelshuffle_layer.cpp, maxunpool_layer.cpp, bn_layer.cpp;
alexgkendall/caffe-segnet upsample_layer.cpp and bn_layer.cpp; hszhao/PSPNet bn_layer.cpp.
Arithmetic is float32 scalar by scalar where the C++ is float, so the specs are bit-exact
references; loops run over output positions, vectorised over N and C only.
"""
from __future__ import annotations

import numpy as np

f32 = np.float32


def interp(x, zoom=None, shrink=None, height=None, width=None, pad_beg=0, pad_end=0):
    """InterpLayer::Reshape + caffe_cpu_interp2<float, false>."""
    n, c, hh, ww = x.shape
    h1, w1 = hh + pad_beg + pad_end, ww + pad_beg + pad_end

    def size(s, fixed):
        if shrink is not None and zoom is None:
            return (s - 1) // shrink + 1
        if zoom is not None and shrink is None:
            return s + (s - 1) * (zoom - 1)
        if zoom is None and shrink is None:
            return fixed
        o = (s - 1) // shrink + 1
        return o + (o - 1) * (zoom - 1)

    h2, w2 = size(h1, height), size(w1, width)
    y0 = x0 = -pad_beg
    data = x.astype(f32)
    out = np.zeros((n, c, h2, w2), f32)
    if (h1, w1) == (h2, w2):
        return data[:, :, y0:y0 + h1, x0:x0 + w1].copy()
    rh = f32(h1 - 1) / f32(h2 - 1) if h2 > 1 else f32(0)
    rw = f32(w1 - 1) / f32(w2 - 1) if w2 > 1 else f32(0)
    for i in range(h2):
        hr = f32(rh * f32(i))
        hi = int(hr)
        hp = 1 if hi < h1 - 1 else 0
        l1 = f32(hr - f32(hi))
        l0 = f32(f32(1) - l1)
        for j in range(w2):
            wr = f32(rw * f32(j))
            wi = int(wr)
            wp = 1 if wi < w1 - 1 else 0
            m1 = f32(wr - f32(wi))
            m0 = f32(f32(1) - m1)
            top, bottom = data[:, :, y0 + hi], data[:, :, y0 + hi + hp]
            left, right = x0 + wi, x0 + wi + wp
            out[:, :, i, j] = l0 * (m0 * top[:, :, left] + m1 * top[:, :, right]) + \
                l1 * (m0 * bottom[:, :, left] + m1 * bottom[:, :, right])
    return out


def resize(x, h2, w2):
    """BiLinearResizeMat_cpu per (n, c) plane: src = dst * in / out, dropped edge weights."""
    n, c, h1, w1 = x.shape
    data = x.astype(f32)
    sw, sh = f32(w1) / f32(w2), f32(h1) / f32(h2)
    out = np.zeros((n, c, h2, w2), f32)
    for i in range(h2):
        fh = f32(f32(i) * sh)
        hi = int(np.floor(fh))
        fh = f32(fh - f32(hi))
        a0, a1 = abs(f32(1) - fh), abs(fh)
        for j in range(w2):
            fw = f32(f32(j) * sw)
            wi = int(np.floor(fw))
            fw = f32(fw - f32(wi))
            b0, b1 = abs(f32(1) - fw), abs(fw)
            v = np.zeros((n, c), f32) + f32(a0 * b0) * data[:, :, hi, wi]
            flag = 0
            if wi + 1 < w1:
                v = v + f32(a0 * b1) * data[:, :, hi, wi + 1]
                flag += 1
            if hi + 1 < h1:
                v = v + f32(a1 * b0) * data[:, :, hi + 1, wi]
                flag += 1
            if flag > 1:
                v = v + f32(a1 * b1) * data[:, :, hi + 1, wi + 1]
            out[:, :, i, j] = v
    return out


def bilinear_interpolate(x, h2, w2, align_corners=True):
    """BilinearInterpolateLayer::Forward_cpu (a 1-pixel axis: its only row, weight 0 before)."""
    n, c, h1, w1 = x.shape
    data = x.astype(f32)

    def positions(s_in, s_out):
        result = []
        for i in range(s_out):
            if align_corners:
                p = f32(f32(s_in - 1) / f32(s_out - 1)) * f32(i)
            else:
                p = f32(float(f32(f32(s_in) / f32(s_out))) * (i + 0.5) - 0.5)
            p = min(max(p, f32(0)), f32(s_in - 1))
            lo = min(max(int(np.floor(p)), 0), s_in - 2)
            result.append((f32(p), lo, lo + 1))
        return result

    out = np.zeros((n, c, h2, w2), f32)
    for i, (h, h0, hh1) in enumerate(positions(h1, h2)):
        for j, (w, w0, ww1) in enumerate(positions(w1, w2)):
            row0, row1 = data[:, :, max(h0, 0)], data[:, :, hh1]
            c0 = max(w0, 0)
            r0 = f32(f32(ww1) - w) * row0[:, :, c0] + f32(w - f32(w0)) * row0[:, :, ww1]
            r1 = f32(f32(ww1) - w) * row1[:, :, c0] + f32(w - f32(w0)) * row1[:, :, ww1]
            out[:, :, i, j] = f32(f32(hh1) - h) * r0 + f32(h - f32(h0)) * r1
    return out


def upsample_nearest(x, scales):
    """UpsampleLayer (nearest) over the last len(scales) axes: top[h][w] = bottom[h/s][w/s]."""
    out = np.asarray(x, f32)
    for k, s in enumerate(reversed(scales)):
        axis = out.ndim - 1 - k
        index = np.arange(out.shape[axis] * s) // s
        out = np.take(out, index, axis=axis)
    return out


def unpool(x, mask, h2, w2):
    """SegNet UpsampleLayer / inisis MaxUnPoolLayer: zeros, then top[idx] = data[i] in order."""
    n, c = x.shape[:2]
    out = np.zeros((n, c, h2 * w2), f32)
    flat, where = x.reshape(n, c, -1), mask.reshape(n, c, -1)
    for a in range(n):
        for b in range(c):
            for i in range(flat.shape[2]):
                idx = int(where[a, b, i])
                assert 0 <= idx < h2 * w2
                out[a, b, idx] = flat[a, b, i]
    return out.reshape(n, c, h2, w2)


def pad(x, up, down, left, right, mode="constant", value=0.0):
    """PadLayer: the body copied in, then left/right of each body row, then the rows above and
    below, each from what is already written (crop when all four are negative)."""
    n, c, h, w = x.shape
    if min(up, down, left, right) < 0:
        return x[:, :, -up:h + down, -left:w + right].copy()
    th, tw = h + up + down, w + left + right
    top = np.zeros((n, c, th, tw), f32)
    top[:, :, up:up + h, left:left + w] = x
    if mode == "constant":
        top[:, :, up:up + h, :left] = value
        top[:, :, up:up + h, tw - right:] = value
        top[:, :, :up] = value
        top[:, :, th - down:] = value
    elif mode == "replicate":
        for d in range(left):
            top[:, :, up:up + h, d] = top[:, :, up:up + h, left]
        for d in range(tw - right, tw):
            top[:, :, up:up + h, d] = top[:, :, up:up + h, tw - 1 - right]
        for d in range(up):
            top[:, :, d] = top[:, :, up]
        for d in range(th - down, th):
            top[:, :, d] = top[:, :, th - 1 - down]
    else:  # reflect
        for d, s in zip(range(left - 1, -1, -1), range(left + 1, tw)):
            top[:, :, up:up + h, d] = top[:, :, up:up + h, s]
        for d, s in zip(range(tw - right, tw), range(tw - right - 2, -1, -1)):
            top[:, :, up:up + h, d] = top[:, :, up:up + h, s]
        for d, s in zip(range(up - 1, -1, -1), range(up + 1, th)):
            top[:, :, d] = top[:, :, s]
        for d, s in zip(range(th - down, th), range(th - down - 2, -1, -1)):
            top[:, :, d] = top[:, :, s]
    return top


def pixel_shuffle(x, r):
    """PixelShuffleLayer::Forward_cpu's loops."""
    n, c, h, w = x.shape
    co = c // (r * r)
    out = np.zeros((n, co, h * r, w * r), f32)
    for p in range(co):
        for sh in range(r):
            for sw in range(r):
                q = p * r * r + sh * r + sw
                out[:, p, sh::r, sw::r] = x[:, q]
    return out


def bn_inisis(x, slope, bias, mean, inv_std):
    """inisis/caffe BNLayer, TEST phase or frozen: blob 3 multiplies directly (no eps)."""
    shape = (1, -1, 1, 1)
    y = x.astype(f32) - mean.reshape(shape).astype(f32)
    return (y * inv_std.reshape(shape)) * slope.reshape(shape) + bias.reshape(shape)


def bn_pspnet(x, slope, bias, mean, var, eps):
    """hszhao/PSPNet BNLayer, TEST phase or frozen: (x - mean) * (var + eps)^-1/2 * slope + bias."""
    shape = (1, -1, 1, 1)
    inv = (var.astype(f32) + f32(eps)) ** f32(-0.5)
    y = x.astype(f32) - mean.reshape(shape).astype(f32)
    return (y * inv.reshape(shape)) * slope.reshape(shape) + bias.reshape(shape)


def bn_batch(x, slope, bias, eps):
    """PSPNet / inisis BNLayer, TRAIN phase, not frozen: batch mean and biased variance."""
    xd = x.astype(np.float64)
    mean = xd.mean(axis=(0, 2, 3), keepdims=True)
    var = ((xd - mean) ** 2).mean(axis=(0, 2, 3), keepdims=True)
    shape = (1, -1, 1, 1)
    return (xd - mean) / np.sqrt(var + eps) * slope.reshape(shape) + bias.reshape(shape)


def bn_segnet(x, scale, shift, learn):
    """SegNet BNLayer: INFERENCE y = x * scale + shift; LEARN batch statistics with
    var = E(x^2) - E(x)^2 and eps 1e-9. Returns (y, batch mean, batch variance)."""
    shape = (1, -1, 1, 1)
    if not learn:
        return x.astype(f32) * scale.reshape(shape) + shift.reshape(shape), None, None
    xd = x.astype(np.float64)
    mean = xd.mean(axis=(2, 3)).mean(axis=0).reshape(shape)
    var = (xd ** 2).mean(axis=(2, 3)).mean(axis=0).reshape(shape) - mean ** 2
    y = (xd - mean) / np.sqrt(var + 1e-9) * scale.reshape(shape) + shift.reshape(shape)
    return y, mean, var
