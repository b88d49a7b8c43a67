"""Inspect a net without converting it: the layer table, inputs, outputs, every problem, weights.

Unlike :func:`caffe2torch.build`, :func:`describe_net` never stops at the first unsupported layer:
it lists all of them and infers the shapes it can (every blob whose producing layer is supported
and whose inputs are known).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from caffe2torch.api import InputShapes, NetSource, Variants, collect_graph, load_definition
from caffe2torch.errors import ShapeError
from caffe2torch.io.caffemodel import CaffeModel, read_caffemodel
from caffe2torch.ir.graph import NetGraph
from caffe2torch.ir.shapes import declared_input_shapes, infer_shapes
from caffe2torch.layers.registry import (
    get_converter,
    is_supported,
    parameter_problems,
)
from caffe2torch.summary import LayerRow, batch_of, format_table, summarize
from caffe2torch.weights import legacy_shape_matches

Shape = tuple[int, ...]


@dataclass
class WeightsLayer:
    """One layer of a caffemodel and whether it binds to the net."""

    name: str
    type: str
    shapes: list[Shape]
    status: str  # "binds", "no blobs", "not in the net", "no parameters in the net", "mismatch..."


@dataclass
class WeightsSummary:
    path: str
    name: str
    format: str
    num_params: int
    nbytes: int
    layers: list[WeightsLayer]
    missing: list[str] = field(default_factory=list)  # net layers with parameters, not in the file

    @property
    def binding(self) -> int:
        return sum(1 for layer in self.layers if layer.shapes and layer.status == "binds")


@dataclass
class NetInfo:
    """What :func:`describe_net` finds; ``as_dict()`` is the ``info --json`` document."""

    name: str
    source: str
    format: str
    rows: list[LayerRow]
    inputs: list[tuple[str, Shape | None]]
    outputs: list[tuple[str, Shape | None]]
    problems: list[str]
    unsupported: list[str]
    notes: list[str]
    weights: WeightsSummary | None = None
    batch: int | None = None  # the declared batch the MACs are counted at

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict:
        return asdict(self)


def describe_net(net: NetSource, weights: str | os.PathLike[str] | CaffeModel | None = None, *,
                 input_shapes: InputShapes | None = None, phase: str = "TEST",
                 variants: Variants | None = None) -> NetInfo:
    """Everything ``caffe2torch info`` shows, as data.

    Problems (unsupported layer types or parameter values, missing bottoms, shape errors) are
    collected in ``problems``, never raised; shapes that cannot be inferred are ``None``.
    """
    graph = describe_graph(net, input_shapes, phase=phase, variants=variants)
    rows = summarize(graph)
    summary = None
    if weights is not None:
        model = weights if isinstance(weights, CaffeModel) else read_caffemodel(weights)
        summary = summarize_weights(graph, model)
    return NetInfo(
        name=graph.name, source=graph.definition.source, format=graph.definition.format,
        rows=rows, inputs=[(graph.blobs[b].name, graph.blobs[b].shape) for b in graph.inputs],
        outputs=[(graph.blobs[b].name, graph.blobs[b].shape) for b in graph.outputs],
        problems=list(graph.problems), unsupported=list(graph.unsupported),
        notes=list(graph.notes), weights=summary, batch=batch_of(graph))


def describe_graph(net: NetSource, input_shapes: InputShapes | None = None, *,
                   phase: str = "TEST", variants: Variants | None = None) -> NetGraph:
    """The net's graph with every problem in ``graph.problems`` (never raised) and the shapes
    that can be inferred filled in (the others ``None``)."""
    graph = collect_graph(load_definition(net), phase=phase, variants=variants)
    if graph.problems:
        graph.problems += infer_known_shapes(graph, input_shapes)
        return graph
    try:
        infer_shapes(graph, input_shapes)
    except ShapeError as err:
        graph.problems.append(str(err))
        infer_known_shapes(graph, input_shapes)
    return graph


def infer_known_shapes(graph: NetGraph,
                       input_shapes: InputShapes | None = None) -> list[str]:
    """Infer the shapes reachable through supported layers; returns the shape errors met."""
    overrides = {k: tuple(int(d) for d in v) for k, v in (input_shapes or {}).items()}
    errors: list[str] = []
    for node in graph.layers:
        if node.role == "input":
            for top, declared in zip(node.tops, declared_input_shapes(node), strict=False):
                name = graph.blobs[top].name
                shape = overrides.get(name, declared)
                if shape and all(d is not None and d > 0 for d in shape):
                    graph.blobs[top].shape = tuple(int(d) for d in shape)
            continue
        inputs = [graph.blobs[b].shape for b in node.bottoms]
        if (not is_supported(node.type) or len(node.bottoms) != len(node.param.bottom)
                or any(s is None for s in inputs) or parameter_problems(node)):
            continue
        try:
            tops = get_converter(node.type).output_shapes(node, inputs)
        except ShapeError as err:
            errors.append(str(err))
            continue
        for top, shape in zip(node.tops, tops, strict=False):
            graph.blobs[top].shape = tuple(int(d) for d in shape)
    return errors


def summarize_weights(graph: NetGraph, model: CaffeModel) -> WeightsSummary:
    """Each layer of the file with its blob shapes and whether (and why not) it binds."""
    expected = _expected_blob_shapes(graph)
    net_layers = {node.name: node for node in graph.layers}
    layers = []
    for layer in model.layers:
        shapes = [tuple(b.shape) for b in layer.blobs]
        if not layer.blobs:
            status = "no blobs"
        elif layer.name not in net_layers:
            status = "not in the net"
        elif layer.name not in expected:
            status = "no parameters in the net"
        else:
            status = _binding_status(expected[layer.name], layer.blobs)
        layers.append(WeightsLayer(layer.name, layer.type, shapes, status))
    with_blobs = {layer.name for layer in model.layers if layer.blobs}
    missing = [f"layer '{name}' expects {len(shapes) if shapes is not None else '?'} blob(s)"
               + (f" of shapes {shapes}" if shapes else "")
               for name, shapes in expected.items() if name not in with_blobs]
    return WeightsSummary(path=str(model.path), name=model.name, format=model.format,
                          num_params=model.num_params, nbytes=model.nbytes, layers=layers,
                          missing=missing)


def _expected_blob_shapes(graph: NetGraph) -> dict[str, list[Shape] | None]:
    """Layer name -> Caffe blob shapes (``None`` where unknown: unsupported or unshaped inputs)."""
    expected: dict[str, list[Shape] | None] = {}
    for node in graph.layers:
        if node.role != "compute":
            continue
        if not is_supported(node.type):
            expected[node.name] = None
            continue
        inputs = [graph.blobs[b].shape for b in node.bottoms]
        if any(s is None for s in inputs):
            continue
        try:
            shapes = get_converter(node.type).blob_shapes(node, inputs)
        except ShapeError:
            continue
        if shapes:
            expected[node.name] = [tuple(int(d) for d in s) for s in shapes]
    return expected


def _binding_status(expected: list[Shape] | None, blobs: Sequence) -> str:
    if expected is None:
        return "unknown (unsupported layer)"
    if len(blobs) != len(expected):
        return f"mismatch: {len(blobs)} blob(s), expected {len(expected)}"
    for i, (blob, shape) in enumerate(zip(blobs, expected, strict=True)):
        if not legacy_shape_matches(shape, blob):
            return f"mismatch: blob {i} is {tuple(blob.shape)}, expected {shape}"
    return "binds"


# ---------------------------------------------------------------------- text


def _shape(shape: Shape | None) -> str:
    return "?" if shape is None else "x".join(str(d) for d in shape)


def format_info(info: NetInfo, all_weights: bool = False) -> str:
    """The text ``caffe2torch info`` prints (``all_weights``: every caffemodel layer, not only
    those that do not bind, when there are more than 20)."""
    lines = [f"net '{info.name}' ({info.source}, {info.format} prototxt)",
             "inputs:  " + ", ".join(f"{n} {_shape(s)}" for n, s in info.inputs),
             "outputs: " + ", ".join(f"{n} {_shape(s)}" for n, s in info.outputs), "",
             format_table(info.rows, flops=True, batch=info.batch)]
    if info.problems:
        lines += ["", f"{len(info.problems)} problem(s) (the net cannot be converted as is):"]
        lines += [f"  - {p}" for p in info.problems]
        if any(s is None for row in info.rows for s in row.shapes):
            lines.append("  shapes marked ? could not be inferred past these layers")
    if info.weights is not None:
        lines += ["", format_weights(info.weights, all_weights)]
    return "\n".join(lines)


def format_weights(summary: WeightsSummary, all_layers: bool = False) -> str:
    with_blobs = [layer for layer in summary.layers if layer.shapes]
    shown = with_blobs if all_layers or len(with_blobs) <= 20 else [
        layer for layer in with_blobs if layer.status != "binds"]
    head = (f"weights {summary.path}: {summary.format} caffemodel '{summary.name}', "
            f"{len(summary.layers)} layers ({len(with_blobs)} with blobs), "
            f"{sum(len(layer.shapes) for layer in summary.layers)} blobs, "
            f"{summary.num_params:,} values ({summary.nbytes / 2**20:.1f} MiB); "
            f"{summary.binding} of {len(with_blobs)} bind")
    lines = [head]
    width = max((len(layer.name) for layer in shown), default=5)
    type_width = max((len(layer.type) for layer in shown), default=4)
    if len(shown) < len(with_blobs):
        head += f" (the {len(with_blobs) - len(shown)} that bind are listed with -v)"
        lines = [head]
    for layer in shown:
        shapes = ", ".join(_shape(s) for s in layer.shapes)
        lines.append(f"  {layer.name.ljust(width)}  {layer.type.ljust(type_width)}  "
                     f"{shapes}  -> {layer.status}")
    if summary.missing:
        lines.append(f"missing from the file ({len(summary.missing)}):")
        lines += [f"  - {m}" for m in summary.missing]
    return "\n".join(lines)
