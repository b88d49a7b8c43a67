"""Will a shaped net fit in memory? Checked before any module or weight is allocated.

A prototxt's sizes are untrusted input: ``num_output: 2147483647`` on a Convolution asks for
terabytes of weights. :func:`check_memory` sums every layer's Caffe parameter blobs (the
converters' ``blob_shapes``) and refuses a net that needs more than the memory this process can
still get, naming the largest layers, so the build fails with our error before torch asks the
allocator. :func:`allocation_guard` turns an allocation failure the estimate did not foresee
(a custom converter's buffer) into the same error, naming the layer.
"""
from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Iterator

import torch

from caffe2torch.errors import NetSizeError
from caffe2torch.ir.graph import LayerNode, NetGraph
from caffe2torch.layers.registry import get_converter

#: Messages of torch's and Python's failed allocations.
_ALLOCATION_FAILED = re.compile(r"can't allocate memory|not enough memory|out of memory|"
                                r"size calculation overflowed|integer multiplication overflow",
                                re.IGNORECASE)


def available_memory() -> int:
    """Bytes this process can still allocate: the system's available memory (MemAvailable, else
    free pages), capped by an address-space limit (``ulimit -v``) less what is mapped already."""
    available = _meminfo_available()
    if available is None:
        available = _sysconf("SC_AVPHYS_PAGES") * _sysconf("SC_PAGE_SIZE")
    limit = _address_space_room()
    if limit is not None:
        available = min(available, limit) if available > 0 else limit
    return max(available, 0)


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _sysconf(name: str) -> int:
    try:
        return int(os.sysconf(name))
    except (ValueError, OSError, AttributeError):
        return 0


def _address_space_room() -> int | None:
    try:
        import resource
    except ImportError:  # not on POSIX
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            mapped = int(handle.read().split()[0]) * _sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        mapped = 0
    return soft - mapped


def layer_parameter_counts(graph: NetGraph) -> list[tuple[LayerNode, int]]:
    """Every layer with parameter blobs and its number of values (from ``blob_shapes``)."""
    found = []
    for node in graph.layers:
        if node.role == "input" or not node.tops:
            continue
        inputs = [graph.blobs[b].shape for b in node.bottoms]
        shapes = get_converter(node.type).blob_shapes(node, inputs)
        count = sum(math.prod(int(d) for d in shape) for shape in shapes)
        if count:
            found.append((node, count))
    return found


def check_memory(graph: NetGraph, available: int | None = None) -> None:
    """Raise NetSizeError when the net's parameters cannot fit in ``available`` bytes (default:
    :func:`available_memory`), naming the largest layers, their counts and bytes."""
    counts = layer_parameter_counts(graph)
    itemsize = torch.get_default_dtype().itemsize
    total = sum(count for _, count in counts) * itemsize
    if available is None:
        if total < 1 << 26:  # 64 MiB fits anywhere this runs; spare reading /proc
            return
        available = available_memory()
    if total <= available:
        return
    largest = sorted(counts, key=lambda item: -item[1])[:3]
    layers = "; ".join(f"layer '{node.name}' ({node.type}) {count:,} parameters "
                       f"({format_bytes(count * itemsize)})" for node, count in largest)
    raise NetSizeError(
        f"{graph.definition.source}: the net needs {total // itemsize:,} parameters "
        f"({format_bytes(total)}) but {format_bytes(available)} of memory is available; "
        f"largest: {layers}")


@contextlib.contextmanager
def allocation_guard(graph: NetGraph, node: LayerNode) -> Iterator[None]:
    """Raise a failed allocation inside the block as NetSizeError naming the layer."""
    try:
        yield
    except MemoryError as err:
        raise _too_large(graph, node, err) from err
    except RuntimeError as err:
        if not _ALLOCATION_FAILED.search(str(err)):
            raise
        raise _too_large(graph, node, err) from err


def _too_large(graph: NetGraph, node: LayerNode, err: BaseException) -> NetSizeError:
    shapes = [graph.blobs[b].shape for b in node.bottoms]
    return NetSizeError(
        f"{graph.definition.source}: layer '{node.name}' ({node.type}) with bottoms {shapes} "
        f"could not allocate its tensors ({format_bytes(available_memory())} of memory is "
        f"available): {str(err).splitlines()[0] if str(err) else type(err).__name__}")


def format_bytes(count: int) -> str:
    """``2.4 TB`` style: decimal units, three significant digits."""
    value = float(count)
    for unit in ("B", "kB", "MB", "GB", "TB", "PB", "EB"):
        if value < 1000 or unit == "EB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.3g} {unit}"
        value /= 1000
    return f"{count} B"
