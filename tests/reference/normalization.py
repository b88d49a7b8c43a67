"""Numpy specs of BatchNorm, Scale, Bias and MVN, step by step as Caffe's Forward_cpu."""
from __future__ import annotations

import numpy as np


def _broadcast(operand: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    axis = 0 if operand.ndim == 0 else axis % ndim
    return operand.reshape(operand.shape + (1,) * (ndim - axis - operand.ndim))


def batch_norm(x, mean_f, var_f, f, eps=1e-5):
    """Global statistics: blobs divided by f (0 when f == 0), y = (x - mean) / sqrt(var + eps)."""
    f = np.float32(np.asarray(f).reshape(-1)[0])
    scale = np.float32(0) if f == 0 else np.float32(1) / f
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mean = (np.asarray(mean_f, np.float32) * scale).reshape(shape)
    var = (np.asarray(var_f, np.float32) * scale).reshape(shape)
    return (x - mean) / np.sqrt(var + np.float32(eps))


def batch_norm_batch_stats(x, eps=1e-5):
    """Batch statistics (TRAIN phase or use_global_stats: false): biased variance per channel."""
    dims = (0, *range(2, x.ndim))
    centred = x - x.mean(dims, keepdims=True)
    return centred / np.sqrt((centred ** 2).mean(dims, keepdims=True) + eps)


def scale(x, s, axis=1, bias=None):
    """outer x scale_dim x inner loop: y = x * s (+ b), s covering axes axis.. (axis 0 if 0-D)."""
    y = x * _broadcast(np.asarray(s), x.ndim, axis)
    return y if bias is None else y + _broadcast(np.asarray(bias), x.ndim, axis)


def bias(x, b, axis=1):
    return x + _broadcast(np.asarray(b), x.ndim, axis)


def mvn(x, normalize_variance=True, across_channels=False, eps=1e-9):
    """Legacy 4-D (num, channels, height, width); mean over dim = count / num; eps on the std."""
    x = x.reshape(x.shape + (1,) * (4 - x.ndim))
    num = x.shape[0] if across_channels else x.shape[0] * x.shape[1]
    rows = x.reshape(num, -1)
    top = rows - rows.mean(axis=1, keepdims=True)
    if normalize_variance:
        std = np.sqrt((top ** 2).mean(axis=1, keepdims=True))
        top = top / (std + eps)
    return top.reshape(x.shape)
