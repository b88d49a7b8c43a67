"""Per-layer summaries of a net: the table ``caffe2torch build`` and ``info`` print."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from caffe2torch.errors import ShapeError
from caffe2torch.ir.graph import LayerNode, NetGraph
from caffe2torch.layers.registry import (
    Converter,
    get_converter,
    is_supported,
    parameter_problems,
)

Shape = tuple[int, ...]


@dataclass
class LayerRow:
    """One layer of the table (``supported``: its type and parameter values). ``params`` (elements of its Caffe parameter blobs) and ``macs``
    (multiply-accumulates of one forward pass at the declared batch) are ``None`` where they
    cannot be counted: an unsupported layer, or inputs whose shapes are unknown."""

    name: str
    type: str
    bottoms: list[str]
    tops: list[str]
    shapes: list[Shape | None]
    params: int | None
    macs: int | None
    supported: bool = True

    def as_dict(self) -> dict:
        return asdict(self)


def summarize(graph: NetGraph) -> list[LayerRow]:
    """One row per kept layer (inputs included), in Caffe order; counts what it can (a graph
    with problems gets ``None`` only for the layers it cannot count)."""
    rows = []
    for node in graph.layers:
        shapes = [graph.blobs[t].shape for t in node.tops]
        supported = node.role == "input" or (is_supported(node.type) and not (
            graph.problems and parameter_problems(node)))  # values the converter cannot take
        params, macs = _counts(graph, node, shapes) if supported else (None, None)
        rows.append(LayerRow(
            name=node.name, type=node.type, bottoms=[graph.blobs[b].name for b in node.bottoms],
            tops=[graph.blobs[t].name for t in node.tops], shapes=shapes,
            params=params, macs=macs, supported=supported))
    return rows


def _counts(graph: NetGraph, node: LayerNode,
            shapes: list[Shape | None]) -> tuple[int | None, int | None]:
    """Parameters and MACs of a supported layer (``None`` for what its shapes do not give)."""
    if node.role == "input":
        return 0, 0
    converter = get_converter(node.type)
    inputs = [graph.blobs[b].shape for b in node.bottoms]
    known = all(s is not None for s in inputs) and len(inputs) == len(node.param.bottom)
    params: int | None = 0
    if type(converter).blob_shapes is not Converter.blob_shapes:  # the layer may have blobs
        params = None
        if known:
            try:
                params = sum(math.prod(s) for s in converter.blob_shapes(node, inputs))
            except ShapeError:
                params = None
    macs = None
    if known and all(s is not None for s in shapes):
        macs = converter.flops(node, inputs, shapes)
    return params, macs


def batch_of(graph: NetGraph) -> int | None:
    """The batch size the net declares (its first 4-D input's N), for labelling totals."""
    for blob_id in graph.inputs:
        shape = graph.blobs[blob_id].shape
        if shape is not None and len(shape) >= 2:
            return int(shape[0])
    return None


def _shape_text(shape: Shape | None) -> str:
    return "?" if shape is None else "x".join(str(d) for d in shape)


def _human(n: int) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def _count(n: int | None, human: bool = False) -> str:
    if n is None:
        return "?"
    return _human(n) if human else f"{n:,}"


def _total(values: list[int | None], what: str, human: bool = False) -> str:
    known = [v for v in values if v is not None]
    prefix = "at least " if len(known) < len(values) else ""
    return f"{prefix}{_count(sum(known), human)} {what}"


def format_table(rows: list[LayerRow], flops: bool = False, batch: int | None = None) -> str:
    """A fixed-width table with a total line (``flops``: a MACs column; ``batch``: the batch
    the MACs were counted at, said in the total)."""
    header = ["layer", "type", "bottoms -> tops", "output shape", "params"]
    if flops:
        header.append("MACs")
    lines = []
    for row in rows:
        cells = [row.name, row.type if row.supported else f"{row.type} (unsupported)",
                 f"{', '.join(row.bottoms) or '-'} -> {', '.join(row.tops) or '-'}",
                 ", ".join(_shape_text(s) for s in row.shapes) or "-", _count(row.params)]
        if flops:
            cells.append(_count(row.macs, human=True))
        lines.append(cells)
    widths = [max(len(header[i]), *(len(c[i]) for c in lines)) if lines else len(header[i])
              for i in range(len(header))]
    numeric = {4, 5}

    def render(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in numeric else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    out = [render(header), render(["-" * w for w in widths])]
    out += [render(c) for c in lines]
    total_line = f"total: {len(rows)} layers, {_total([r.params for r in rows], 'parameters')}"
    if flops:
        at = f" for the declared batch of {batch}" if batch is not None else ""
        total_line += f", {_total([r.macs for r in rows], 'multiply-accumulates', True)}{at}"
    uncounted = sum(1 for r in rows if r.params is None or (flops and r.macs is None))
    if uncounted:
        total_line += f" ({uncounted} layer(s) marked ? not counted)"
    out += ["", total_line]
    return "\n".join(out)
