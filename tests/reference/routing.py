"""Numpy specs of Caffe's routing, shape and reduction layers, as their C++ computes them.

Each follows the layer's ``Reshape`` (the top shape) and ``Forward_cpu`` (flat offsets into the
row-major blob) in BVLC Caffe, deliberately loop-for-loop rather than through numpy's own
reshaping helpers, so the specs do not share their mistakes with the torch modules under test.
Bad parameters raise ``ValueError`` where Caffe's CHECKs fail.
"""
from __future__ import annotations

import math
from itertools import pairwise

import numpy as np


def _count(shape, start=0, end=None):
    return math.prod(shape[start:end])


def _axis(axis, ndim):
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} out of range for {ndim} axes")
    return axis + ndim if axis < 0 else axis


def concat(xs, axis=1):
    """ConcatLayer: copy each bottom's (n, axis-block) into the top at its running offset."""
    axis = _axis(axis, xs[0].ndim)
    shape = list(xs[0].shape)
    shape[axis] = sum(x.shape[axis] for x in xs)
    num, inner = _count(shape, 0, axis), _count(shape, axis + 1)
    top = np.empty(_count(shape), xs[0].dtype)
    offset = 0
    for x in xs:
        size, flat = x.shape[axis], x.reshape(-1)
        for n in range(num):
            dst = (n * shape[axis] + offset) * inner
            top[dst:dst + size * inner] = flat[n * size * inner:(n + 1) * size * inner]
        offset += size
    return top.reshape(shape)


def slice_(x, axis, points, tops):
    """SliceLayer: sizes from the points (or an equal split), then the mirror of Concat."""
    axis = _axis(axis, x.ndim)
    size = x.shape[axis]
    if points:
        if len(points) != tops - 1 or tops > size:
            raise ValueError("slice_point count / top count")
        bounds = [0, *points, size]
        sizes = [b - a for a, b in pairwise(bounds)]
        if any(s <= 0 for s in sizes):
            raise ValueError("slice points not increasing or out of range")
    else:
        if size % tops:
            raise ValueError("tops do not divide the axis")
        sizes = [size // tops] * tops
    num, inner, flat = _count(x.shape, 0, axis), _count(x.shape, axis + 1), x.reshape(-1)
    outs, offset = [], 0
    for s in sizes:
        top = np.empty(num * s * inner, x.dtype)
        for n in range(num):
            src = (n * size + offset) * inner
            top[n * s * inner:(n + 1) * s * inner] = flat[src:src + s * inner]
        outs.append(top.reshape(*x.shape[:axis], s, *x.shape[axis + 1:]))
        offset += s
    return outs


def flatten(x, axis=1, end_axis=-1):
    """FlattenLayer: shape[:a] + [count(a, e + 1)] + shape[e + 1:], sharing the data."""
    a, e = _axis(axis, x.ndim), _axis(end_axis, x.ndim)
    if e + 1 < a:
        raise ValueError("Blob::count(start, end) needs start <= end")
    shape = [*x.shape[:a], _count(x.shape, a, e + 1), *x.shape[e + 1:]]
    return x.reshape(-1).reshape(shape)


def reshape(x, dims, axis=0, num_axes=-1):
    """ReshapeLayer::Reshape: 0 copies bottom axis start + i, one -1 is inferred."""
    ndim = x.ndim
    start = axis if axis >= 0 else ndim + axis + 1
    end = ndim if num_axes == -1 else start + num_axes
    if not 0 <= start <= ndim or num_axes < -1 or end > ndim or list(dims).count(-1) > 1:
        raise ValueError("bad axis / num_axes / dims")
    top = [*x.shape[:start], *dims, *x.shape[end:]]
    for i, d in enumerate(dims):
        if d == 0:
            if start + i >= ndim:
                raise ValueError("0 with no bottom axis to copy")
            top[start + i] = x.shape[start + i]
    if -1 in dims:
        explicit = _count(x.shape, 0, start) * _count(x.shape, end)
        explicit *= math.prod(d for d in dims if d > 0)
        explicit *= math.prod(x.shape[start + i] for i, d in enumerate(dims) if d == 0)
        if x.size % explicit:
            raise ValueError("count not divisible")
        top[start + list(dims).index(-1)] = x.size // explicit
    if any(d < 0 for d in top) or _count(top) != x.size:
        raise ValueError("output count must match input count")
    return x.reshape(-1).reshape(top)


def crop(x, reference_shape, axis=2, offsets=()):
    """CropLayer: offsets per axis (0 before ``axis``), then crop_copy's row copies."""
    ndim = x.ndim
    start = _axis(axis, ndim)
    if len(offsets) > 1 and start + len(offsets) != ndim:
        raise ValueError("one offset or one per cropped axis")
    off, shape = [0] * ndim, list(x.shape)
    for i in range(start, ndim):
        off[i] = offsets[0] if len(offsets) == 1 else offsets[i - start] if offsets else 0
        if x.shape[i] - off[i] < reference_shape[i]:
            raise ValueError(f"crop of dimension {i} is out of bounds")
        shape[i] = reference_shape[i]
    top = np.empty(shape, x.dtype)
    for index in np.ndindex(*shape[:-1]):
        src = tuple(i + o for i, o in zip(index, off))
        top[index] = x[src][off[-1]:off[-1] + shape[-1]]
    return top


def tile(x, axis, tiles):
    """TileLayer: each outer block of count(axis) values written ``tiles`` times in a row."""
    axis = _axis(axis, x.ndim)
    if tiles <= 0:
        raise ValueError("tiles must be positive")
    outer, inner, flat = _count(x.shape, 0, axis), _count(x.shape, axis), x.reshape(-1)
    top = np.concatenate([flat[i * inner:(i + 1) * inner] for i in range(outer)
                          for _ in range(tiles)])
    return top.reshape(*x.shape[:axis], x.shape[axis] * tiles, *x.shape[axis + 1:])


def argmax(x, top_k=1, out_max_val=False, axis=None):
    """ArgMaxLayer: (value, index) pairs partially sorted by std::greater (ties: larger index
    first), written at Caffe's ``(i / axis_dist * k + j) * axis_dist + i % axis_dist``."""
    if axis is None:
        dim, dist = _count(x.shape, 1), 1
        shape = [1] * max(x.ndim, 3)
        shape[0], shape[1], shape[2] = x.shape[0], 2 if out_max_val else 1, top_k
    else:
        axis = _axis(axis, x.ndim)
        dim, dist = x.shape[axis], _count(x.shape, axis + 1)
        shape = [*x.shape[:axis], top_k, *x.shape[axis + 1:]]
    if not 1 <= top_k <= dim:
        raise ValueError("top_k out of range")
    flat, top = x.reshape(-1), np.empty(_count(shape), x.dtype)
    for i in range(x.size // dim):
        pairs = [(flat[(i // dist * dim + j) * dist + i % dist], j) for j in range(dim)]
        pairs = sorted(pairs, reverse=True)[:top_k]  # std::greater on (value, index) pairs
        for j, (value, index) in enumerate(pairs):
            if out_max_val and axis is None:
                top[2 * i * top_k + j] = index
                top[2 * i * top_k + top_k + j] = value
            else:
                top[(i // dist * top_k + j) * dist + i % dist] = value if out_max_val else index
    return top.reshape(shape)


def reduction(x, operation="SUM", axis=0, coeff=1.0):
    """ReductionLayer: one value per leading index over the count(axis) trailing values; MEAN
    scales by float(coeff) / dim; accumulated in float64 here."""
    axis = _axis(axis, x.ndim)
    num, dim = _count(x.shape, 0, axis), _count(x.shape, axis)
    rows = x.reshape(num, dim).astype(np.float64)
    op = {"SUM": lambda r: r.sum(), "MEAN": lambda r: r.sum(), "ASUM": lambda r: np.abs(r).sum(),
          "SUMSQ": lambda r: (r * r).sum()}[operation]
    c = np.float32(coeff) / np.float32(dim) if operation == "MEAN" else np.float32(coeff)
    top = np.array([op(rows[i]) for i in range(num)]) * np.float64(c)
    return top.astype(x.dtype).reshape(x.shape[:axis])


def embed(x, weight, bias=None):
    """EmbedLayer: index = static_cast<int>(value) (toward zero), copy row, add the bias."""
    flat = x.reshape(-1)
    top = np.empty((flat.size, weight.shape[1]), weight.dtype)
    for n in range(flat.size):
        index = int(flat[n])
        if not 0 <= index < weight.shape[0]:
            raise ValueError("index out of range")
        top[n] = weight[index]
    if bias is not None:
        top = top + bias
    return top.reshape(*x.shape, weight.shape[1])


def eltwise(xs, operation="SUM", coeffs=()):
    """EltwiseLayer: PROD chains, SUM = 0 + sum c_i x_i, MAX picks a > b ? a : b, then later
    bottoms only where strictly greater."""
    if operation == "PROD":
        top = xs[0] * xs[1]
        for x in xs[2:]:
            top = top * x
        return top
    if operation == "MAX":
        top = np.where(xs[0] > xs[1], xs[0], xs[1])
        for x in xs[2:]:
            top = np.where(x > top, x, top)
        return top
    coeffs = coeffs or [1.0] * len(xs)
    top = np.zeros_like(xs[0])
    for c, x in zip(coeffs, xs):
        top = top + np.float32(c) * x
    return top


def eltwise_in_place(xs, aliased, operation="SUM", coeffs=()):
    """EltwiseLayer::Forward_cpu with the top in the memory of the bottoms ``aliased`` (bottom 0
    of an in-place layer, and any bottom sharing its memory): the same buffer is read and
    written in Caffe's order (each step is element by element, so whole-array steps agree)."""
    top = np.array(xs[0], copy=True)
    bottoms = [top if i in aliased else np.asarray(x) for i, x in enumerate(xs)]
    if operation == "PROD":  # caffe_mul(bottom 0, bottom 1 -> top), then top *= bottom i
        top[...] = bottoms[0] * bottoms[1]
        for x in bottoms[2:]:
            top[...] = top * x
        return top
    if operation == "MAX":  # caffe_set(-FLT_MAX) first
        top[...] = -np.finfo(np.float32).max
        top[...] = np.where(bottoms[0] > bottoms[1], bottoms[0], bottoms[1])
        for x in bottoms[2:]:
            top[...] = np.where(x > top, x, top)
        return top
    top[...] = 0  # caffe_set(0), then caffe_axpy(coeff_i, bottom i, top)
    for c, x in zip(coeffs or [1.0] * len(xs), bottoms):
        top[...] = np.float32(c) * x + top
    return top


def softmax(x, axis=1):
    """SoftmaxLayer: subtract the max over ``axis``, exponentiate, divide by the sum."""
    axis = _axis(axis, x.ndim)
    shifted = x.astype(np.float64) - x.max(axis=axis, keepdims=True)
    e = np.exp(shifted)
    return (e / e.sum(axis=axis, keepdims=True)).astype(x.dtype)


def relu(x, negative_slope=0.0):
    """ReLULayer: max(x, 0) + negative_slope * min(x, 0)."""
    return np.maximum(x, 0) + np.float32(negative_slope) * np.minimum(x, 0)
