"""Per-layer summaries of a net: the table ``caffe2torch build`` and ``info`` print."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from caffe2torch.ir.graph import NetGraph
from caffe2torch.layers.registry import get_converter, is_supported
from caffe2torch.weights import parameter_layers

Shape = tuple[int, ...]


@dataclass
class LayerRow:
    name: str
    type: str
    bottoms: list[str]
    tops: list[str]
    shapes: list[Shape | None]
    params: int
    flops: int
    supported: bool = True

    def as_dict(self) -> dict:
        return asdict(self)


def summarize(graph: NetGraph) -> list[LayerRow]:
    """One row per kept layer (inputs included), in Caffe order."""
    param_counts = {node.name: sum(math.prod(s) for s in shapes)
                    for node, shapes in parameter_layers(graph)} if not graph.problems else {}
    rows = []
    for node in graph.layers:
        shapes = [graph.blobs[t].shape for t in node.tops]
        supported = node.role == "input" or is_supported(node.type)
        flops = 0
        if supported and node.role == "compute" and all(s is not None for s in shapes):
            inputs = [graph.blobs[b].shape for b in node.bottoms]
            flops = get_converter(node.type).flops(node, inputs, shapes)
        rows.append(LayerRow(
            name=node.name, type=node.type, bottoms=[graph.blobs[b].name for b in node.bottoms],
            tops=[graph.blobs[t].name for t in node.tops], shapes=shapes,
            params=param_counts.get(node.name, 0), flops=flops, supported=supported))
    return rows


def _shape_text(shape: Shape | None) -> str:
    return "?" if shape is None else "x".join(str(d) for d in shape)


def _human(n: int) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def format_table(rows: list[LayerRow], flops: bool = False) -> str:
    """A fixed-width table with a total line."""
    header = ["layer", "type", "bottoms -> tops", "output shape", "params"]
    if flops:
        header.append("MACs")
    lines = []
    for row in rows:
        cells = [row.name, row.type if row.supported else f"{row.type} (unsupported)",
                 f"{', '.join(row.bottoms) or '-'} -> {', '.join(row.tops) or '-'}",
                 ", ".join(_shape_text(s) for s in row.shapes) or "-", f"{row.params:,}"]
        if flops:
            cells.append(_human(row.flops))
        lines.append(cells)
    widths = [max(len(header[i]), *(len(c[i]) for c in lines)) if lines else len(header[i])
              for i in range(len(header))]
    numeric = {4, 5}

    def render(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in numeric else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    out = [render(header), render(["-" * w for w in widths])]
    out += [render(c) for c in lines]
    total = sum(r.params for r in rows)
    total_line = f"total: {len(rows)} layers, {total:,} parameters"
    if flops:
        total_line += f", {_human(sum(r.flops for r in rows))} multiply-accumulates"
    out += ["", total_line]
    return "\n".join(out)
