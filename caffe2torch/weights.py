"""Bind a caffemodel's blobs to a converted net by layer name, and take them back out."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from caffe2torch.devices import CPU_FLOAT32, Placement, allocate, place
from caffe2torch.errors import WeightsError
from caffe2torch.ir.graph import LayerNode, NetGraph
from caffe2torch.ir.memory import check_memory
from caffe2torch.layers.registry import get_converter

if TYPE_CHECKING:
    from caffe2torch.build import CaffeNet
    from caffe2torch.io.caffemodel import CaffeBlob, CaffeModel

Shape = tuple[int, ...]


@dataclass
class WeightsReport:
    """What binding found: each entry names layer, blob index, value and expectation."""

    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        parts = [f"{self.source}: loaded {len(self.loaded)} layer(s)"]
        for title, items in (("missing", self.missing), ("unexpected", self.unexpected),
                             ("mis-shaped", self.mismatched)):
            if items:
                parts.append(f"{len(items)} {title}:\n" + "\n".join(f"  - {i}" for i in items))
        return "\n".join(parts)


def parameter_layers(graph: NetGraph) -> list[tuple[LayerNode, list[Shape]]]:
    """Every kept layer that has parameter blobs, with the blob shapes Caffe expects."""
    found = []
    for node in graph.layers:
        if node.role == "input":
            continue
        inputs = [graph.blobs[b].shape for b in node.bottoms]
        shapes = get_converter(node.type).blob_shapes(node, inputs)
        if shapes:
            found.append((node, [tuple(s) for s in shapes]))
    return found


def legacy_shape_matches(expected: Shape, blob: CaffeBlob) -> bool:
    """Caffe's ShapeEquals: legacy num/channels/height/width compare with the last four axes."""
    if not blob.legacy_dims:
        return tuple(blob.shape) == tuple(expected)
    if len(expected) > 4:
        return False
    return tuple(blob.shape) == (1,) * (4 - len(expected)) + tuple(expected)


def bind_weights(net: CaffeNet, model: CaffeModel, strict: bool = True,
                 placement: Placement | None = None) -> WeightsReport:
    """Copy ``model``'s blobs into ``net``; strict raises one WeightsError listing every problem.

    A deferred (meta) module is allocated on ``placement``'s device and dtype (default the CPU
    in float32) and each blob copied there once."""
    graph = net.caffe.graph
    report = WeightsReport(source=str(model.path))
    by_name: dict[str, list] = defaultdict(list)
    for layer in model.layers:
        if layer.blobs:
            by_name[layer.name].append(layer)
    seen: dict[str, int] = defaultdict(int)
    used: set[str] = set()
    for node, shapes in parameter_layers(graph):
        candidates = by_name.get(node.name, [])
        occurrence = seen[node.name]
        seen[node.name] += 1
        if not candidates:
            report.missing.append(f"layer '{node.name}' ({node.type}): no blobs in the file; "
                                  f"expected {len(shapes)} blob(s) of shapes {shapes}")
            continue
        # i-th layer of a name takes the i-th stored layer of that name; one stored layer is shared
        source = candidates[occurrence] if occurrence < len(candidates) else candidates[0]
        used.add(node.name)
        shapes = _fitting_form(graph, node, shapes, source.blobs)
        if _check_blobs(node, shapes, source.blobs, report):
            module = _loadable(net, node, placement or CPU_FLOAT32)
            arrays = [b.data.reshape(s) for b, s in zip(source.blobs, shapes, strict=True)]
            get_converter(node.type).load_blobs(module, arrays)
            report.loaded.append(node.name)
    for name, layers in by_name.items():
        if name not in used:
            shapes = [tuple(b.shape) for b in layers[0].blobs]
            report.unexpected.append(f"layer '{name}' ({layers[0].type}) in the file has blobs "
                                     f"{shapes} but no layer of the net is named so")
    wanted = len(report.loaded) + len(report.missing) + len(report.mismatched)
    if wanted and not report.loaded:
        raise WeightsError(f"{report}\nnone of the net's {wanted} layer(s) with parameters "
                           "binds: expected the caffemodel of this net (layer names and blob "
                           "shapes as in the prototxt)")
    if strict and not report.ok:
        raise WeightsError(str(report) + "\n(strict=False, --lenient on the command line, "
                           "loads what fits)")
    return report


def _loadable(net: CaffeNet, node: LayerNode, placement: Placement):
    """The layer's module: a deferred module that loading fills completely is only allocated
    (on the placement's device and dtype); any other deferred module is built (initialised)
    first, on the CPU, then moved there."""
    from caffe2torch.build import is_deferred, only_caffe_blobs, rebuild_layer
    module = net.get_submodule(node.module_name)
    if not is_deferred(module):
        return module
    if only_caffe_blobs(module):
        return allocate(module, placement)
    return place(rebuild_layer(net, node.name), placement)


def _fitting_form(graph: NetGraph, node: LayerNode, shapes: list[Shape], blobs) -> list[Shape]:
    """The first of the converter's blob forms that the stored blobs fit (else ``shapes``, so
    the mismatch is reported against the preferred form)."""
    inputs = [graph.blobs[b].shape for b in node.bottoms]
    for form in get_converter(node.type).blob_forms(node, inputs):
        form = [tuple(s) for s in form]
        if len(form) == len(blobs) and all(legacy_shape_matches(s, b)
                                           for s, b in zip(form, blobs, strict=True)):
            return form
    return shapes


def _check_blobs(node: LayerNode, shapes: list[Shape], blobs, report: WeightsReport) -> bool:
    if len(blobs) != len(shapes):
        report.mismatched.append(
            f"layer '{node.name}' ({node.type}): the file has {len(blobs)} blob(s) "
            f"{[tuple(b.shape) for b in blobs]}; expected {len(shapes)} of shapes {shapes}")
        return False
    good = True
    for i, (blob, shape) in enumerate(zip(blobs, shapes, strict=True)):
        if not legacy_shape_matches(shape, blob):
            kind = " (legacy num/channels/height/width)" if blob.legacy_dims else ""
            report.mismatched.append(f"layer '{node.name}' ({node.type}) blob {i}: the file has "
                                     f"shape {tuple(blob.shape)}{kind}; expected {shape}")
            good = False
    return good


def _every_layer(graph: NetGraph, blobs_of) -> list[tuple[str, str, list[np.ndarray]]]:
    """``(name, type, blobs)`` for every kept layer, as Caffe saves a net: ``blobs_of(node,
    inputs)`` for the layers with parameters, no blobs for the others."""
    with_blobs = {node.name for node, _ in parameter_layers(graph)}
    result = []
    for node in graph.layers:
        inputs = [graph.blobs[b].shape for b in node.bottoms]
        blobs = blobs_of(node, inputs) if node.name in with_blobs else []
        result.append((node.name, node.type, blobs))
    return result


def net_blobs(net: CaffeNet) -> list[tuple[str, str, list[np.ndarray]]]:
    """The net's parameters as Caffe blobs, layer by layer, for a caffemodel writer."""
    return _every_layer(net.caffe.graph, lambda node, inputs: get_converter(node.type).dump_blobs(
        net.get_submodule(node.module_name), node, inputs))


def random_blobs(graph: NetGraph, seed: int = 0) -> list[tuple[str, str, list[np.ndarray]]]:
    """Random, well-scaled blobs for every layer with parameters (test models, benchmarks)."""
    check_memory(graph)
    rng = np.random.default_rng(seed)
    return _every_layer(graph, lambda node, inputs: get_converter(node.type).random_blobs(
        node, inputs, rng))
