"""Numpy specs of Caffe's vision layers, transcribed from BVLC Caffe's C++ loops.

Sources: src/caffe/util/im2col.cpp (im2col_nd_cpu / col2im_nd_cpu), base_conv_layer.cpp,
conv_layer.cpp, deconv_layer.cpp, pooling_layer.cpp (+ BVLC master's pooling_layer.cu for
STOCHASTIC at test time), lrn_layer.cpp, spp_layer.cpp. Blobs are (N, C, *spatial); values are computed in float64.
Everything loops the way Caffe does, only vectorised over the batch and channel axes.
"""
from __future__ import annotations

import math

import numpy as np

FLT_MAX = float(np.finfo(np.float32).max)
FLT_MIN = float(np.finfo(np.float32).tiny)


def c_div(a: int, b: int) -> int:
    """C++ integer division (truncates toward zero), as in Caffe's output-size formulas."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def conv_out_size(size, kernel, pad, stride, dilation=1):
    return c_div(size + 2 * pad - (dilation * (kernel - 1) + 1), stride) + 1


def _taps(out, stride, pad, offset, size):
    """Input index of every output position for one kernel offset, and whether it is inside."""
    index = np.arange(out) * stride - pad + offset
    return np.clip(index, 0, size - 1), (index >= 0) & (index < size)


def im2col(x, kernel, stride, pad, dilation):
    """im2col_nd_cpu: (N, C, *S) -> (N, C * prod(kernel), *out), zero outside the image."""
    x = np.asarray(x, np.float64)
    n, c, *sizes = x.shape
    outs = [conv_out_size(s, k, p, st, d)
            for s, k, p, st, d in zip(sizes, kernel, pad, stride, dilation)]
    cols = np.zeros((n, c, *kernel, *outs))
    for koff in np.ndindex(*kernel):
        taps = [_taps(o, st, p, ko * d, s)
                for o, st, p, ko, d, s in zip(outs, stride, pad, koff, dilation, sizes)]
        gathered = x[(slice(None), slice(None), *np.ix_(*[t[0] for t in taps]))]
        inside = np.ones(outs, bool)
        for axis, (_, valid) in enumerate(taps):
            inside &= valid.reshape([-1 if a == axis else 1 for a in range(len(outs))])
        cols[(slice(None), slice(None), *koff)] = gathered * inside
    return cols.reshape(n, c * math.prod(kernel), *outs)


def col2im(cols, channels, sizes, kernel, stride, pad, dilation):
    """col2im_nd_cpu: the adjoint of im2col, accumulating every column into the image."""
    n = cols.shape[0]
    outs = cols.shape[2:]
    cols = cols.reshape(n, channels, *kernel, *outs)
    image = np.zeros((n, channels, *sizes))
    for koff in np.ndindex(*kernel):
        taps = [_taps(o, st, p, ko * d, s)
                for o, st, p, ko, d, s in zip(outs, stride, pad, koff, dilation, sizes)]
        for pos in np.ndindex(*outs):
            if all(t[1][i] for t, i in zip(taps, pos)):
                where = tuple(int(t[0][i]) for t, i in zip(taps, pos))
                image[(slice(None), slice(None), *where)] += \
                    cols[(slice(None), slice(None), *koff, *pos)]
    return image


def convolution(x, weight, bias, stride, pad, dilation, group):
    """ConvolutionLayer::Forward_cpu: per group, weight (O/g, C/g * prod k) @ columns, + bias."""
    kernel = weight.shape[2:]
    cols = im2col(x, kernel, stride, pad, dilation)
    n, _, *outs = cols.shape
    cols = cols.reshape(n, group, -1, math.prod(outs))
    w = np.asarray(weight, np.float64).reshape(group, weight.shape[0] // group, -1)
    y = np.einsum("gok,ngkp->ngop", w, cols).reshape(n, weight.shape[0], *outs)
    if bias is not None:
        y = y + np.asarray(bias, np.float64).reshape(1, -1, *[1] * len(outs))
    return y


def deconvolution(x, weight, bias, stride, pad, dilation, group):
    """DeconvolutionLayer::Forward_cpu: backward_cpu_gemm (weight^T @ x per group, col2im)."""
    x = np.asarray(x, np.float64)
    n, c, *sizes = x.shape
    kernel = weight.shape[2:]
    num_output = weight.shape[1] * group
    outs = [st * (s - 1) + d * (k - 1) + 1 - 2 * p
            for s, k, p, st, d in zip(sizes, kernel, pad, stride, dilation)]
    w = np.asarray(weight, np.float64).reshape(group, c // group, -1)
    cols = np.einsum("gck,ngcp->ngkp", w, x.reshape(n, group, c // group, -1))
    cols = cols.reshape(n, num_output * math.prod(kernel), *sizes)
    y = col2im(cols, num_output, outs, kernel, stride, pad, dilation)
    if bias is not None:
        y = y + np.asarray(bias, np.float64).reshape(1, -1, *[1] * len(outs))
    return y


def pooled_shape(h, w, kernel, stride, pad, ceil=True):
    """PoolingLayer::Reshape: float ceil/floor of each span; then ``if (pad_h_ || pad_w_)`` the
    clip rule on BOTH axes, each with its own pad (one axis's pad may be 0)."""
    def rounded(size, k, p, s):
        span = np.float32(size + 2 * p - k) / np.float32(s)
        return int(math.ceil(span) if ceil else math.floor(span)) + 1
    ph = rounded(h, kernel[0], pad[0], stride[0])
    pw = rounded(w, kernel[1], pad[1], stride[1])
    if pad[0] or pad[1]:
        if (ph - 1) * stride[0] >= h + pad[0]:
            ph -= 1
        if (pw - 1) * stride[1] >= w + pad[1]:
            pw -= 1
    return ph, pw


def pooling(x, method, kernel, stride, pad, ceil=True):
    """PoolingLayer::Forward_cpu (MAX with the mask top, AVE) and StoPoolForwardTest (GPU)."""
    x = np.asarray(x, np.float64)
    n, c, h, w = x.shape
    ph_n, pw_n = pooled_shape(h, w, kernel, stride, pad, ceil)
    top = np.zeros((n, c, ph_n, pw_n))
    mask = np.full((n, c, ph_n, pw_n), -1.0)
    for ph in range(ph_n):
        for pw in range(pw_n):
            hs, ws = ph * stride[0] - pad[0], pw * stride[1] - pad[1]
            if method == "MAX":
                m = np.full((n, c), -FLT_MAX)
                for i in range(max(hs, 0), min(hs + kernel[0], h)):
                    for j in range(max(ws, 0), min(ws + kernel[1], w)):
                        better = x[:, :, i, j] > m
                        m = np.where(better, x[:, :, i, j], m)
                        mask[:, :, ph, pw] = np.where(better, i * w + j, mask[:, :, ph, pw])
                top[:, :, ph, pw] = m
            elif method == "AVE":
                he, we = min(hs + kernel[0], h + pad[0]), min(ws + kernel[1], w + pad[1])
                size = (he - hs) * (we - ws)
                window = x[:, :, max(hs, 0):min(he, h), max(ws, 0):min(we, w)]
                with np.errstate(invalid="ignore", divide="ignore"):
                    top[:, :, ph, pw] = window.sum(axis=(2, 3)) / size
            else:  # STOCHASTIC, test time (BVLC master): no padding, 0 unless the sum is > 0
                window = x[:, :, hs:min(hs + kernel[0], h), ws:min(ws + kernel[1], w)]
                total = window.sum(axis=(2, 3))
                with np.errstate(invalid="ignore", divide="ignore"):
                    top[:, :, ph, pw] = np.where(total > 0, (window ** 2).sum(axis=(2, 3)) /
                                                 total, 0.0)
    return (top, mask) if method == "MAX" else top


def lrn(x, local_size, alpha, beta, k, region="ACROSS_CHANNELS"):
    """LRNLayer: CrossChannelForward_cpu, or WithinChannelForward (square, AVE pool, power)."""
    x = np.asarray(x, np.float64)
    half = (local_size - 1) // 2
    if region == "WITHIN_CHANNEL":
        pooled = pooling(x * x, "AVE", (local_size,) * 2, (1, 1), (half, half))
        return x * (1.0 + alpha * pooled) ** -beta
    # CrossChannelForward_cpu, in float32 as Caffe runs it: a running sum over the channels
    f32 = np.float32
    x32 = x.astype(f32)
    channels = x.shape[1]
    padded = np.zeros((x.shape[0], channels + local_size - 1, *x.shape[2:]), f32)
    padded[:, half:half + channels] = x32 * x32
    alpha_over_size = f32(alpha) / f32(local_size)
    scale = np.empty(x.shape, f32)
    scale[:, 0] = f32(k)
    for c in range(local_size):  # the first channel's scale
        scale[:, 0] += alpha_over_size * padded[:, c]
    for c in range(1, channels):  # copy the previous scale, add the head, subtract the tail
        scale[:, c] = scale[:, c - 1]
        scale[:, c] += alpha_over_size * padded[:, c + local_size - 1]
        scale[:, c] -= alpha_over_size * padded[:, c - 1]
    return x * scale.astype(np.float64) ** -beta


def spp(x, pyramid_height, method):
    """SPPLayer: per level, GetPoolingParam's kernel/pad (stride = kernel); flatten and concat,
    except pyramid_height 1, which is the pooling layer's own (N, C, 1, 1) top."""
    n, _, h, w = x.shape
    levels = []
    for level in range(pyramid_height):
        bins = 2 ** level
        kh, kw = math.ceil(h / bins), math.ceil(w / bins)
        pad = ((kh * bins - h + 1) // 2, (kw * bins - w + 1) // 2)
        out = pooling(x, method, (kh, kw), (kh, kw), pad)
        levels.append(out[0] if method == "MAX" else out)
    if pyramid_height == 1:
        return levels[0]
    return np.concatenate([o.reshape(n, -1) for o in levels], axis=1)
