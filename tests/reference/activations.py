"""Numpy specs of Caffe's element-wise activations, as their Forward_cpu loops compute them."""
from __future__ import annotations

import numpy as np


def prelu(x, slope, channel_shared=False):
    """c = (i / dim) % channels / div_factor; max(x, 0) + slope[c] * min(x, 0)."""
    slope = np.asarray(slope).reshape(-1)
    s = slope[0] if channel_shared else slope.reshape((1, -1) + (1,) * (x.ndim - 2))
    return np.maximum(x, 0) + s * np.minimum(x, 0)


def elu(x, alpha=1.0):
    return np.maximum(x, 0) + alpha * (np.exp(np.minimum(x, 0)) - 1)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def tanh(x):
    return np.tanh(x)


def absval(x):
    return np.abs(x)


def bnll(x):
    return np.where(x > 0, x + np.log1p(np.exp(-np.abs(x))), np.log1p(np.exp(np.minimum(x, 0))))


def power(x, power=1.0, scale=1.0, shift=0.0):
    """diff_scale = power * scale == 0: the constant 1 (power 0) or shift ^ power."""
    if power * scale == 0:
        return np.full_like(x, 1.0 if power == 0 else np.power(shift, power))
    return np.power(shift + scale * x, power)


def exp(x, base=-1.0, scale=1.0, shift=0.0):
    """base ^ (shift + scale * x); base -1 is e."""
    log_base = 1.0 if base == -1 else np.log(base)
    return np.exp(log_base * (shift + scale * x))


def log(x, base=-1.0, scale=1.0, shift=0.0):
    log_base = 1.0 if base == -1 else np.log(base)
    return np.log(shift + scale * x) / log_base


def threshold(x, threshold=0.0):
    return (x > threshold).astype(x.dtype)


def clip(x, min, max):
    """std::max(min, std::min(x, max)): min wins when min > max."""
    return np.maximum(min, np.minimum(x, max))


def swish(x, beta=1.0):
    return x * sigmoid(beta * x)
