"""Draw a net's layer graph: layers as boxes, blobs as edges labelled with their shapes.

No graphviz binary is needed: :func:`layout` is a small layered (Sugiyama-style) layout --
ranks by longest path, dummy points on edges that skip ranks, barycentre ordering, and
x positions by isotonic regression -- drawn with matplotlib (SVG or PNG). ``.dot`` files are
written as text; ``engine="dot"`` renders with graphviz where it is installed.

In-place layers (ReLU, BatchNorm, Scale, Dropout on the blob they read) are folded into the box
of the layer that produced the blob by default, which keeps a 100+-layer ResNet readable.
"""
from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from caffe2torch.api import InputShapes, NetSource
from caffe2torch.errors import Caffe2TorchError
from caffe2torch.ir.graph import LayerNode, NetGraph
from caffe2torch.layers.registry import is_supported

Shape = tuple[int, ...]

_CATEGORIES = {
    "input": ("#e0e0e0", ("Input",)),
    "weights": ("#cfe2f3", ("Convolution", "Deconvolution", "InnerProduct", "Embed", "Bias",
                            "Scale", "PReLU")),
    "pooling": ("#d9ead3", ("Pooling", "SPP", "Reduction")),
    "routing": ("#fff2cc", ("Eltwise", "Concat", "Split", "Slice", "Crop", "Flatten", "Reshape",
                            "Tile", "Silence")),
    "normalize": ("#ead1dc", ("BatchNorm", "LRN", "MVN", "Normalize")),
    "output": ("#f4cccc", ("Softmax", "ArgMax", "Sigmoid")),
}
_OTHER_COLOR = "#f3f3f3"
_UNSUPPORTED_COLOR = "#ff9999"


class GraphDrawingError(Caffe2TorchError):
    """An output format or engine that cannot be used."""


@dataclass
class DisplayNode:
    """One box: a layer and the in-place layers folded into it."""

    key: int
    name: str
    type: str
    detail: str
    folded: list[str] = field(default_factory=list)
    role: str = "compute"
    supported: bool = True

    @property
    def lines(self) -> list[str]:
        second = f"{self.type} {self.detail}".strip()
        if self.folded:
            second += " + " + " + ".join(self.folded)
        return [self.name, second]

    @property
    def color(self) -> str:
        if not self.supported:
            return _UNSUPPORTED_COLOR
        if self.role == "input":
            return _CATEGORIES["input"][0]
        for color, types in _CATEGORIES.values():
            if self.type in types:
                return color
        return _OTHER_COLOR


@dataclass
class DisplayEdge:
    source: int
    target: int
    blob: str
    shape: Shape | None


@dataclass
class DisplayGraph:
    name: str
    nodes: dict[int, DisplayNode]
    edges: list[DisplayEdge]
    folded: bool = True


def display_graph(graph: NetGraph, fold_inplace: bool = True) -> DisplayGraph:
    """Boxes and labelled edges for ``graph`` (blob shapes where they are known)."""
    nodes: dict[int, DisplayNode] = {}
    box_of_blob: dict[str, int] = {}
    consumers: dict[str, int] = defaultdict(int)
    for node in graph.layers:
        for blob_id in node.bottoms:
            consumers[blob_id] += 1
    edges = []
    for index, layer in enumerate(graph.layers):
        if fold_inplace and _foldable(layer, graph, consumers, box_of_blob, nodes):
            box = box_of_blob[layer.bottoms[0]]
            nodes[box].folded.append(layer.type)
            box_of_blob[layer.tops[0]] = box
            continue
        nodes[index] = DisplayNode(
            key=index, name=layer.name, type=layer.type, detail=_detail(layer), role=layer.role,
            supported=layer.role == "input" or is_supported(layer.type))
        for blob_id in layer.bottoms:
            if blob_id in box_of_blob:
                blob = graph.blobs[blob_id]
                edges.append(DisplayEdge(box_of_blob[blob_id], index, blob.name, blob.shape))
        for blob_id in layer.tops:
            box_of_blob[blob_id] = index
    return DisplayGraph(name=graph.name, nodes=nodes, edges=edges, folded=fold_inplace)


def _foldable(layer: LayerNode, graph: NetGraph, consumers: dict[str, int],
              box_of_blob: dict[str, int], nodes: dict[int, DisplayNode]) -> bool:
    if layer.role != "compute" or len(layer.bottoms) != 1 or len(layer.tops) != 1:
        return False
    bottom, top = layer.bottoms[0], layer.tops[0]
    if graph.blobs[bottom].name != graph.blobs[top].name or consumers[bottom] != 1:
        return False
    box = box_of_blob.get(bottom)
    return box is not None and nodes[box].role == "compute"


def _detail(layer: LayerNode) -> str:
    p = layer.param
    if layer.type in ("Convolution", "Deconvolution"):
        c = p.convolution_param
        kernel = c.kernel_h or (c.kernel_size[0] if len(c.kernel_size) else 1)
        stride = c.stride_h or (c.stride[0] if len(c.stride) else 1)
        group = f" g{c.group}" if c.group > 1 else ""
        return f"{c.num_output} {kernel}x{kernel}" + (f"/{stride}" if stride > 1 else "") + group
    if layer.type == "Pooling":
        q = p.pooling_param
        kind = ("MAX", "AVE", "STOCHASTIC")[q.pool] if q.pool < 3 else str(q.pool)
        if q.global_pooling:
            return f"{kind} global"
        kernel = q.kernel_h or q.kernel_size
        stride = q.stride_h or q.stride
        return f"{kind} {kernel}x{kernel}" + (f"/{stride}" if stride > 1 else "")
    if layer.type == "InnerProduct":
        return str(p.inner_product_param.num_output)
    if layer.type == "Eltwise":
        return ("PROD", "SUM", "MAX")[p.eltwise_param.operation] \
            if p.eltwise_param.operation < 3 else ""
    return ""


# ---------------------------------------------------------------------- dot text


def graph_to_dot(graph: NetGraph, fold_inplace: bool = True) -> str:
    """The graph as graphviz DOT text (layers as boxes, blobs with shapes on the edges)."""
    shown = display_graph(graph, fold_inplace)
    lines = [f"digraph {_quote(shown.name or 'net')} {{", "  rankdir=TB;",
             '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];',
             '  edge [fontname="Helvetica", fontsize=8, color="#555555"];']
    for node in shown.nodes.values():
        label = "\\n".join(_escape(line) for line in node.lines)
        lines.append(f'  n{node.key} [label="{label}", fillcolor="{node.color}"];')
    for edge in shown.edges:
        label = f"{_escape(edge.blob)}\\n{_shape(edge.shape)}"
        lines.append(f'  n{edge.source} -> n{edge.target} [label="{label}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    return '"' + _escape(text) + '"'


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _shape(shape: Shape | None) -> str:
    return "?" if shape is None else "x".join(str(d) for d in shape)


# ---------------------------------------------------------------------- layout


@dataclass
class Layout:
    """Positions in inches: box centres, and each edge's points from source to target."""

    nodes: dict[int, tuple[float, float]]
    sizes: dict[int, tuple[float, float]]
    edges: list[list[tuple[float, float]]]
    width: float
    height: float


CHAR_WIDTH = 0.068  # inches per character at 8 pt
LABEL_CHAR_WIDTH = 0.056  # at 6.5 pt
BOX_HEIGHT = 0.40
RANK_GAP = 0.40
NODE_GAP = 0.30
DUMMY_WIDTH = 0.25


def layout(shown: DisplayGraph) -> Layout:
    """A layered layout of the boxes: one rank per longest-path depth, top to bottom."""
    rank = _ranks(shown)
    sizes = {k: (max(len(line) for line in n.lines) * CHAR_WIDTH + 0.3, BOX_HEIGHT)
             for k, n in shown.nodes.items()}
    chains, width_of = _chains_with_dummies(shown, rank, sizes)
    ranks: dict[int, list[object]] = defaultdict(list)
    for item in list(shown.nodes) + [d for chain in chains for d in chain[1:-1]]:
        ranks[rank[item] if item in rank else item[1]].append(item)  # type: ignore[index]
    up, down = _neighbours(chains)
    order = _order(ranks, up, down, shown)
    xs = _positions(order, up, down, width_of)
    step = BOX_HEIGHT + RANK_GAP
    depth = max(ranks) if ranks else 0

    def point(item) -> tuple[float, float]:
        r = rank[item] if item in rank else item[1]
        return xs[item], (depth - r) * step + BOX_HEIGHT

    left = min((xs[i] - width_of(i) / 2 for r in order.values() for i in r), default=0.0)
    right = max((xs[i] + width_of(i) / 2 for r in order.values() for i in r), default=1.0)
    shift = 0.3 - left
    nodes = {k: (point(k)[0] + shift, point(k)[1]) for k in shown.nodes}
    edges = [[(point(item)[0] + shift, point(item)[1]) for item in chain] for chain in chains]
    return Layout(nodes=nodes, sizes=sizes, edges=edges, width=right - left + 0.6,
                  height=depth * step + 2 * BOX_HEIGHT)


def _ranks(shown: DisplayGraph) -> dict[int, int]:
    rank = {k: 0 for k in shown.nodes}
    incoming = defaultdict(list)
    for edge in shown.edges:
        incoming[edge.target].append(edge.source)
    for key in sorted(shown.nodes):  # Caffe order is topological
        if incoming[key]:
            rank[key] = max(rank[s] for s in incoming[key]) + 1
    return rank


def _chains_with_dummies(shown: DisplayGraph, rank: dict[int, int], sizes):
    """Each edge as [source, dummies..., target]; a dummy is (edge index, rank)."""
    chains = []
    for index, edge in enumerate(shown.edges):
        chain: list[object] = [edge.source]
        chain += [(index, r) for r in range(rank[edge.source] + 1, rank[edge.target])]
        chain.append(edge.target)
        chains.append(chain)

    def width_of(item) -> float:
        return sizes[item][0] if item in sizes else DUMMY_WIDTH

    return chains, width_of


def _neighbours(chains):
    up: dict[object, list[object]] = defaultdict(list)
    down: dict[object, list[object]] = defaultdict(list)
    for chain in chains:
        for a, b in itertools.pairwise(chain):
            down[a].append(b)
            up[b].append(a)
    return up, down


def _order(ranks, up, down, shown) -> dict[int, list[object]]:
    """Barycentre ordering within each rank, a few sweeps down and up."""
    def caffe_key(item) -> float:
        return float(item) if item in shown.nodes else float(shown.edges[item[0]].source) + 0.5

    order = {r: sorted(items, key=caffe_key) for r, items in ranks.items()}
    for sweep in range(8):
        sequence = sorted(order) if sweep % 2 == 0 else sorted(order, reverse=True)
        for r in sequence:
            neighbours = up if sweep % 2 == 0 else down
            adjacent = r - 1 if sweep % 2 == 0 else r + 1
            if adjacent not in order:
                continue
            position = {item: i for i, item in enumerate(order[adjacent])}
            keyed = [(_barycentre(neighbours[item], position, i), i, item)
                     for i, item in enumerate(order[r])]
            order[r] = [item for _, _, item in sorted(keyed)]
    return order


def _barycentre(neighbours: list[object], position: dict[object, int], default: int) -> float:
    near = [position[n] for n in neighbours if n in position]
    return sum(near) / len(near) if near else default


def _positions(order, up, down, width_of) -> dict[object, float]:
    """x per item: near the mean of its neighbours, in order, boxes NODE_GAP apart."""
    xs: dict[object, float] = {}
    for items in order.values():
        x = 0.0
        for item in items:
            xs[item] = x + width_of(item) / 2
            x += width_of(item) + NODE_GAP
    for sweep in range(12):
        sequence = sorted(order) if sweep % 2 == 0 else sorted(order, reverse=True)
        for r in sequence:
            items = order[r]
            desired = []
            for item in items:
                near = [xs[n] for n in up[item] + down[item]]
                desired.append(sum(near) / len(near) if near else xs[item])
            gaps = [0.0] + [(width_of(a) + width_of(b)) / 2 + NODE_GAP
                            for a, b in itertools.pairwise(items)]
            for item, x in zip(items, _fit_in_order(desired, gaps), strict=True):
                xs[item] = x
    return xs


def _fit_in_order(desired: Sequence[float], gaps: Sequence[float]) -> list[float]:
    """Least-squares x closest to ``desired`` with x[i] >= x[i-1] + gaps[i] (pool adjacent
    violators on the gap-free coordinates)."""
    offsets, total = [], 0.0
    for gap in gaps:
        total += gap
        offsets.append(total)
    blocks: list[list[float]] = []  # [mean, count]
    for d, o in zip(desired, offsets, strict=True):
        blocks.append([d - o, 1.0])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            mean, count = blocks.pop()
            blocks[-1] = [(blocks[-1][0] * blocks[-1][1] + mean * count) / (blocks[-1][1] + count),
                          blocks[-1][1] + count]
    values = [mean for mean, count in blocks for _ in range(int(count))]
    return [v + o for v, o in zip(values, offsets, strict=True)]


# ---------------------------------------------------------------------- drawing


def draw_graph(net: NetSource | NetGraph, output: str | os.PathLike[str], *,
               input_shapes: InputShapes | None = None, fold_inplace: bool = True,
               engine: str = "matplotlib", dpi: int = 100) -> Path:
    """Draw the layer graph to ``output`` (.svg, .png, .pdf or .dot); returns the path written.

    Shapes come from shape inference; a net with unsupported layers is still drawn (those boxes
    red, the shapes after them ``?``). ``engine="dot"`` uses graphviz's ``dot`` from PATH.
    """
    graph = net if isinstance(net, NetGraph) else _graph_for_drawing(net, input_shapes)
    output = Path(output)
    suffix = output.suffix.lower()
    if suffix == ".dot" or suffix == ".gv":
        output.write_text(graph_to_dot(graph, fold_inplace))
        return output
    if suffix not in (".svg", ".png", ".pdf"):
        raise GraphDrawingError(f"{output}: unknown graph format '{suffix}'; expected .svg, "
                                ".png, .pdf or .dot")
    if engine == "dot":
        return _render_with_dot(graph_to_dot(graph, fold_inplace), output)
    if engine != "matplotlib":
        raise GraphDrawingError(f"engine {engine!r}: expected 'matplotlib' or 'dot'")
    figure = render_figure(display_graph(graph, fold_inplace))
    figure.savefig(output, dpi=_safe_dpi(figure, dpi))  # a bare Figure: nothing to close
    return output


def require_matplotlib(what: str) -> None:
    """A clear error instead of an ImportError when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise GraphDrawingError(f"{what} needs matplotlib: pip install matplotlib") from None


def _graph_for_drawing(net: NetSource, input_shapes: InputShapes | None) -> NetGraph:
    from caffe2torch.research.netinfo import describe_graph
    return describe_graph(net, input_shapes)


def _safe_dpi(figure, dpi: int) -> int:
    width, height = figure.get_size_inches()
    return max(20, min(dpi, int(32000 / max(width, height))))


def _render_with_dot(text: str, output: Path) -> Path:
    dot = shutil.which("dot")
    if dot is None:
        raise GraphDrawingError("engine 'dot' needs graphviz's dot on PATH; leave the engine "
                                "at 'matplotlib' or write a .dot file")
    subprocess.run([dot, f"-T{output.suffix[1:].lower()}", "-o", str(output)],
                   input=text.encode(), check=True)
    return output


def render_figure(shown: DisplayGraph):
    """A matplotlib Figure of the display graph (caller saves it)."""
    require_matplotlib("drawing a graph as .svg/.png/.pdf")
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch
    from matplotlib.path import Path as MPath

    placed = layout(shown)
    title_space = 1.3
    label_right = max((points[0][0] + 0.1 + len(f"{e.blob} {_shape(e.shape)}") * LABEL_CHAR_WIDTH
                       for e, points in zip(shown.edges, placed.edges, strict=True)), default=0.0)
    width, height = max(placed.width, label_right + 0.2, 6.0), placed.height + title_space
    figure = Figure(figsize=(width, height))
    axes = figure.add_axes((0, 0, 1, 1))
    axes.set_xlim(0, width)
    axes.set_ylim(0, height)
    axes.axis("off")
    labelled: set[tuple[int, str]] = set()
    for edge, points in zip(shown.edges, placed.edges, strict=True):
        start = (points[0][0], points[0][1] - BOX_HEIGHT / 2)
        end = (points[-1][0], points[-1][1] + BOX_HEIGHT / 2)
        path = _edge_path([start, *points[1:-1], end], MPath)
        axes.add_patch(FancyArrowPatch(path=path, arrowstyle="-|>", mutation_scale=9,
                                       color="#666666", linewidth=0.8, shrinkA=0, shrinkB=0))
        if (edge.source, edge.blob) not in labelled:
            labelled.add((edge.source, edge.blob))
            axes.text(start[0] + 0.06, start[1] - 0.05, f"{edge.blob} {_shape(edge.shape)}",
                      fontsize=6.5, color="#444444", va="top", ha="left")
    for key, node in shown.nodes.items():
        x, y = placed.nodes[key]
        w, h = placed.sizes[key]
        axes.add_patch(FancyBboxPatch(
            (x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0,rounding_size=0.06",
            facecolor=node.color, edgecolor="#cc0000" if not node.supported else "#555555",
            linewidth=1.5 if not node.supported else 0.7))
        axes.text(x, y + 0.07, node.lines[0], ha="center", va="center", fontsize=8,
                  fontweight="bold")
        axes.text(x, y - 0.09, node.lines[1], ha="center", va="center", fontsize=7)
    count = len(shown.nodes)
    folded = sum(len(n.folded) for n in shown.nodes.values())
    title = f"{shown.name or 'net'}: {count + folded} layers"
    if folded:
        title += f" in {count} boxes (in-place layers after '+')"
    axes.text(0.3, height - 0.3, title, fontsize=10, fontweight="bold", va="center")
    handles = [Patch(facecolor=color, edgecolor="#555555", label=name)
               for name, (color, _) in _CATEGORIES.items()]
    handles.append(Patch(facecolor=_UNSUPPORTED_COLOR, edgecolor="#cc0000", label="unsupported"))
    figure.legend(handles=handles, loc="upper left", ncol=4, fontsize=7, frameon=False,
                  bbox_to_anchor=(0.25 / width, 1.0 - 0.5 / height))
    return figure


def _edge_path(points: list[tuple[float, float]], MPath):
    """A smooth path through the points: vertical S-curves between consecutive ranks."""
    vertices = [points[0]]
    codes = [MPath.MOVETO]
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        middle = (y0 + y1) / 2
        vertices += [(x0, middle), (x1, middle), (x1, y1)]
        codes += [MPath.CURVE4] * 3
    return MPath(vertices, codes)
