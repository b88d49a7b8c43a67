"""Shape helpers shared by converters: Caffe's axis canonicalisation and blob counts."""
from __future__ import annotations

import math
from collections.abc import Sequence

from caffe2torch.ir.graph import LayerNode
from caffe2torch.layers.registry import shape_error

Shape = tuple[int, ...]


def canonical_axis(layer: LayerNode, axis: int, num_axes: int, what: str = "axis") -> int:
    """Caffe's Blob::CanonicalAxisIndex: -num_axes <= axis < num_axes, negatives from the end."""
    if not -num_axes <= axis < num_axes:
        raise shape_error(layer, f"{what} {axis} is out of range for a {num_axes}-D input; "
                                 f"expected {-num_axes} <= {what} < {num_axes}")
    return axis + num_axes if axis < 0 else axis


def count(shape: Sequence[int], start: int = 0, end: int | None = None) -> int:
    """Product of ``shape[start:end]`` (1 for an empty range), as Caffe's Blob::count."""
    return math.prod(shape[start:end])


def expect_bottoms(layer: LayerNode, inputs: Sequence[Shape], low: int,
                   high: int | None = None) -> None:
    high = low if high is None else high
    n = len(inputs)
    if n < low or (high >= 0 and n > high):
        want = f"{low}" if low == high else f"{low} to {high if high >= 0 else 'any'}"
        raise shape_error(layer, f"has {n} bottom(s); expected {want}")


def same_shapes(layer: LayerNode, inputs: Sequence[Shape]) -> Shape:
    first = tuple(inputs[0])
    for i, shape in enumerate(inputs[1:], 1):
        if tuple(shape) != first:
            raise shape_error(layer, f"bottom {i} has shape {tuple(shape)}; expected the shape "
                                     f"of bottom 0, {first}")
    return first
