"""A Caffe net as a graph of layers joined by blobs (networkx), with Caffe's blob rules.

Blobs are versioned: an in-place layer (top == bottom at the same index) produces a new version
of the blob, so ``fc7`` names the value after ``relu7`` as in Caffe, while the graph stays acyclic.
Train-only layers are dropped with a note; data layers become declared inputs.

Shared memory: Caffe's Split, Reshape, Flatten, a one-top Slice and a one-bottom Concat make
their top share the bottom's data (``Blob::ShareData``; each converter declares it with
``shares_data``). Blob names so joined form one storage (``NetGraph.storage``, name -> the
storage's first name). An in-place write to one member is a write to all: every other member
gets a new version too (``Blob.alias_of``: the written version it mirrors, reshaped to the
member's own shape), so later readers of any member and the reported blob values see the write,
as in Caffe.
"""
from __future__ import annotations

import difflib
import keyword
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Literal

import networkx as nx
import torch

from caffe2torch.errors import GraphError, UnsupportedLayerError
from caffe2torch.io.textblocks import ParamBlock, unparsed_block
from caffe2torch.io.upgrade import NetDefinition
from caffe2torch.proto import caffe_pb2

Shape = tuple[int, ...]
Role = Literal["input", "compute"]
#: The layer types a build supports: their names (then an unknown type gets a "did you mean"),
#: or a predicate on a type name.
Supported = Collection[str] | Callable[[str], bool]

DATA_LAYER_TYPES = frozenset({
    "Data", "ImageData", "HDF5Data", "MemoryData", "WindowData", "DummyData", "Python",
    "AnnotatedData", "VideoData",
})
TRAIN_ONLY_TYPES = frozenset({"Accuracy", "HDF5Output"})


@dataclass
class LayerNode:
    """One kept layer: its Caffe definition and the blob versions it reads and writes."""

    index: int
    name: str
    type: str
    param: caffe_pb2.LayerParameter
    bottoms: list[str]
    tops: list[str]
    module_name: str
    role: Role = "compute"
    #: The fork variant the caller chose for this layer (``build(..., variants=...)``), "" if none.
    variant: str = ""
    #: New versions of blobs that share storage with an in-place top (see ``Blob.alias_of``).
    alias_tops: list[str] = field(default_factory=list)
    #: Indices of the bottoms whose storage an in-place top of this layer overwrites (the
    #: in-place bottom itself and any bottom sharing memory with it).
    aliased_bottoms: list[int] = field(default_factory=list)

    @property
    def extra(self) -> ParamBlock:
        """The layer's fields that the schema does not know (a fork's ``interp_param { ... }``,
        a field a fork added inside a known message), as a :class:`ParamBlock` tree: empty for
        most layers. Custom converters read their own blocks here."""
        return unparsed_block(self.param.unparsed, f"layer '{self.name}'")

    def unparsed_paths(self) -> list[str]:
        """Dotted paths of the fields the schema lacks, with their lines."""
        return [f"'{entry.path}' (line {entry.line})" for entry in self.param.unparsed]


@dataclass
class Blob:
    """One version of a Caffe blob."""

    id: str
    name: str
    producer: int
    shape: Shape | None = None
    #: For a version made by an in-place write to another blob of the same storage:
    #: (the written version, this blob's previous version). Its value is the written one in
    #: this blob's shape.
    alias_of: tuple[str, str] | None = None


@dataclass
class NetGraph:
    """The kept layers in Caffe order, their blobs, inputs and outputs."""

    definition: NetDefinition
    layers: list[LayerNode]
    blobs: dict[str, Blob]
    latest: dict[str, str]
    inputs: list[str]
    outputs: list[str]
    graph: nx.MultiDiGraph
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)
    #: blob name -> the first name of its shared storage (itself unless ShareData joined it)
    storage: dict[str, str] = field(default_factory=dict)

    def shared_with(self, name: str) -> list[str]:
        """The blob names sharing ``name``'s memory in Caffe, ``name`` included."""
        root = self.storage.get(name, name)
        return [n for n, r in self.storage.items() if r == root]

    @property
    def name(self) -> str:
        return self.definition.net.name

    def layer(self, name: str) -> LayerNode:
        for node in self.layers:
            if node.name == name:
                return node
        raise KeyError(name)

    def blob(self, name: str) -> Blob:
        """The final version of Caffe blob ``name`` (what Caffe reports after a forward pass)."""
        return self.blobs[self.latest[name]]


def is_train_only(layer_type: str) -> bool:
    return layer_type in TRAIN_ONLY_TYPES or layer_type.endswith("Loss")


def is_data_layer(param: caffe_pb2.LayerParameter) -> bool:
    if param.type == "Python":
        return len(param.bottom) == 0
    return param.type in DATA_LAYER_TYPES or param.type == "Input"


def build_graph(definition: NetDefinition, phase: str = "TEST", stages: tuple[str, ...] = (),
                level: int | None = None, supported: Supported | None = None,
                check: bool = True, shares=None) -> NetGraph:
    """Select the phase's layers and join them into a graph.

    ``supported``: the supported layer type names (an unknown type is reported with the closest
    of them) or a predicate on a type name; every problem found (unknown bottoms, duplicate tops,
    unsupported types, layers out of order) is reported together. ``shares`` gives a
    LayerNode's ``(top, bottom)`` index pairs that share memory in Caffe.
    """
    state = _net_state(definition.net, phase, stages, level)
    builder = _GraphBuilder(definition, supported, shares)
    for index, param in enumerate(definition.net.layer):
        if not _state_includes(state, param, definition.source, builder.problems):
            continue
        builder.add(index, param)
    graph = builder.finish()
    if check:
        raise_problems(graph)
    return graph


def raise_problems(graph: NetGraph) -> None:
    """Raise one error listing every problem of the graph (if it has any):
    UnsupportedLayerError when all of them are unsupported layers or values, else GraphError."""
    if graph.problems:
        cls = UnsupportedLayerError if len(graph.unsupported) == len(graph.problems) else GraphError
        raise cls(_problem_report(graph.definition.source, graph.problems))


def _problem_report(source: str, problems: list[str]) -> str:
    lines = "\n".join(f"  - {p}" for p in problems)
    return f"{source}: {len(problems)} problem(s) in the network:\n{lines}"


def _net_state(net: caffe_pb2.NetParameter, phase: str, stages, level) -> caffe_pb2.NetState:
    state = caffe_pb2.NetState()
    state.CopyFrom(net.state)
    state.phase = caffe_pb2.Phase.Value(phase.upper())
    state.stage.extend(stages)
    # Caffe's Net(file, phase, level = 0, stages): the level always replaces the file's
    state.level = 0 if level is None else level
    return state


def _rule_met(state: caffe_pb2.NetState, rule: caffe_pb2.NetStateRule) -> bool:
    if rule.HasField("phase") and rule.phase != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    if any(stage not in state.stage for stage in rule.stage):
        return False
    return not any(stage in state.stage for stage in rule.not_stage)


def _state_includes(state, param, source: str, problems: list[str]) -> bool:
    """Caffe's FilterNet: include rules win; otherwise kept unless an exclude rule matches."""
    if len(param.include) and len(param.exclude):
        problems.append(f"layer '{param.name}' ({param.type}) has both include and exclude "
                        "rules; Caffe expects one kind only")
    included = len(param.include) == 0
    if any(_rule_met(state, rule) for rule in param.exclude):
        included = False
    if any(_rule_met(state, rule) for rule in param.include):
        included = True
    return included


_RESERVED = frozenset(dir(torch.fx.GraphModule)) | {"caffe"}


def module_name_for(layer_name: str, taken: set[str]) -> str:
    """A Python identifier for a Caffe layer name, unique within ``taken``."""
    name = re.sub(r"\W", "_", layer_name) or "layer"
    if name[0].isdigit():
        name = "l_" + name
    if keyword.iskeyword(name) or name in _RESERVED:
        name += "_"
    candidate, n = name, 1
    while candidate in taken:
        candidate = f"{name}_{n}"
        n += 1
    taken.add(candidate)
    return candidate


class _GraphBuilder:
    def __init__(self, definition: NetDefinition, supported: Supported | None,
                 shares=None) -> None:
        self.definition = definition
        self.supported = supported
        self.shares = shares
        self.storage: dict[str, str] = {}
        self.written: dict[str, str] = {}  # name -> its last version a layer wrote (no alias)
        self.layers: list[LayerNode] = []
        self.blobs: dict[str, Blob] = {}
        self.latest: dict[str, str] = {}
        self.consumed: set[str] = set()
        self.readers: dict[str, list[str]] = {}
        self.consumed_by_compute: set[str] = set()
        self.dropped_tops: dict[str, str] = {}
        self.notes: list[str] = list(definition.notes)
        self.problems: list[str] = [
            f"net field '{e.path}' (line {e.line}) is in no schema here; expected layers and "
            "Caffe's NetParameter fields" for e in definition.net.unparsed]
        self.unsupported: list[str] = []
        self.module_names: set[str] = set()
        self.all_tops: dict[str, str] = {
            top: p.name for p in definition.net.layer for top in p.top}

    def _supports(self, type_name: str) -> bool:
        if callable(self.supported):
            return self.supported(type_name)
        return type_name in self.supported

    def _did_you_mean(self, type_name: str) -> str:
        if callable(self.supported) or self.supported is None:
            return ""
        by_lower = {name.lower(): name for name in self.supported}
        close = difflib.get_close_matches(type_name.lower(), by_lower, n=1, cutoff=0.8)
        return f" (did you mean '{by_lower[close[0]]}'?)" if close else ""

    def add(self, index: int, param: caffe_pb2.LayerParameter) -> None:
        if is_train_only(param.type):
            self.notes.append(f"layer '{param.name}' ({param.type}) is train-time only and is "
                              "left out of the deploy build")
            for top in param.top:
                self.dropped_tops[top] = param.name
            return
        role: Role = "input" if is_data_layer(param) else "compute"
        if role == "compute" and self.supported is not None and not self._supports(param.type):
            message = (f"layer '{param.name}' has unsupported type '{param.type}'"
                       f"{self._did_you_mean(param.type)}")
            if len(param.unparsed):
                blocks = ", ".join(f"'{e.path}' (line {e.line})" for e in param.unparsed)
                message += f" and parameter block(s) {blocks} that no schema here defines"
            self.problems.append(message)
            self.unsupported.append(message)
        elif role == "input" and len(param.unparsed):
            blocks = ", ".join(f"'{e.path}' (line {e.line})" for e in param.unparsed)
            self.notes.append(f"data layer '{param.name}' ({param.type}) has field(s) {blocks} "
                              "that no schema here defines; the layer becomes a declared input, "
                              "so they are not used")
        bottoms = [self._resolve(param, slot, blob) for slot, blob in enumerate(param.bottom)]
        if param.type != "Silence":
            self.consumed_by_compute.update(b for b in bottoms if b is not None)
        if role == "input" and param.type != "Input":
            self.notes.append(f"layer '{param.name}' ({param.type}) becomes declared input(s) "
                              f"{list(param.top)}")
        node = LayerNode(index=index, name=param.name, type=param.type, param=param,
                         bottoms=[b for b in bottoms if b is not None], tops=[], role=role,
                         module_name=module_name_for(param.name, self.module_names))
        node.tops = [self._produce(node, slot, top) for slot, top in enumerate(param.top)]
        self._share_storage(node)
        self.layers.append(node)

    def _share_storage(self, node: LayerNode) -> None:
        """Join ShareData tops to their bottom's storage; give every other member of an
        in-place top's storage a new version (the same memory, written by this layer)."""
        pairs = self.shares(node) if self.shares is not None and len(node.bottoms) == \
            len(node.param.bottom) else []
        tops, bottoms = list(node.param.top), list(node.param.bottom)
        for top_slot, bottom_slot in pairs:
            if top_slot >= len(tops) or bottom_slot >= len(bottoms):
                continue  # a wrong top or bottom count: the layer's shape rule reports it
            top, bottom = tops[top_slot], bottoms[bottom_slot]
            if top != bottom and bottom in self.storage:
                self.storage[top] = self.storage[bottom]
        for slot, top in enumerate(tops):
            if not (slot < len(bottoms) and bottoms[slot] == top) or top not in self.storage:
                continue
            root = self.storage[top]
            node.aliased_bottoms += [j for j, b in enumerate(bottoms)
                                     if self.storage.get(b) == root and j not in
                                     node.aliased_bottoms]
            for name in [n for n, r in self.storage.items() if r == root and n != top]:
                previous = self.latest[name]
                blob_id = self._new_version(name, len(self.layers))
                self.blobs[blob_id].alias_of = (node.tops[slot], previous)
                node.alias_tops.append(blob_id)

    def _new_version(self, name: str, producer: int) -> str:
        version = sum(1 for b in self.blobs.values() if b.name == name)
        blob_id = name if version == 0 else f"{name}#{version}"
        self.blobs[blob_id] = Blob(id=blob_id, name=name, producer=producer)
        self.latest[name] = blob_id
        return blob_id

    def _resolve(self, param, slot: int, blob: str) -> str | None:
        if blob in self.latest:
            blob_id = self.latest[blob]
            # Caffe consumes the name: reading a shared blob's newer version consumes the top
            # the name's last writer produced; InsertSplits counts that writer's readers
            self.consumed.update((blob_id, self.written[blob]))
            self.readers.setdefault(self.written[blob], []).append(param.name)
            return blob_id
        if blob in self.dropped_tops:
            why = f"which only the dropped train-time layer '{self.dropped_tops[blob]}' produces"
        elif blob in self.all_tops:
            why = (f"which layer '{self.all_tops[blob]}' produces only later (Caffe needs layers "
                   "in order; a forward reference forms a cycle)")
        else:
            why = "which no layer produces"
        self.problems.append(f"layer '{param.name}' ({param.type}) reads bottom '{blob}' "
                             f"(bottom {slot}), {why}")
        return None

    def _produce(self, node: LayerNode, slot: int, top: str) -> str:
        in_place = slot < len(node.param.bottom) and node.param.bottom[slot] == top
        if top in self.latest and not in_place:
            producer = self.blobs[self.latest[top]].producer
            if producer == len(self.layers):  # an earlier top of this very layer
                first = list(node.param.top).index(top)
                self.problems.append(
                    f"layer '{node.name}' ({node.type}) lists top '{top}' twice (tops {first} "
                    f"and {slot}); Caffe rejects this ('produced by multiple sources'): each top "
                    "must be a distinct blob, or the bottom at the same index (in place)")
            else:
                self.problems.append(
                    f"layer '{node.name}' ({node.type}) writes top '{top}', which layer "
                    f"'{self.layers[producer].name}' already produces (a top may be reused only "
                    "in place, as the bottom at the same index)")
        if in_place and top in self.latest:
            earlier = self.readers.get(self.written[top], [])[:-1]
            if earlier:
                self.problems.append(
                    f"layer '{node.name}' ({node.type}) rewrites blob '{top}' in place after "
                    f"layer(s) {earlier} read it; Caffe rejects this (its Split insertion makes "
                    "the in-place top a second producer)")
        blob_id = self._new_version(top, len(self.layers))
        self.written[top] = blob_id
        self.storage.setdefault(top, top)
        return blob_id

    def finish(self) -> NetGraph:
        if not any(node.role == "compute" for node in self.layers):
            self.problems.append(
                f"the net has no layer to compute ({len(self.layers)} input layer(s) and "
                f"{len(self.definition.net.layer)} layer(s) in the file, after the phase rules); "
                "expected at least one")
        inputs, outputs = self._inputs_and_outputs()
        graph = nx.MultiDiGraph()
        for position, node in enumerate(self.layers):
            graph.add_node(position, name=node.name, type=node.type)
            for blob_id in node.bottoms:
                graph.add_edge(self.blobs[blob_id].producer, position, key=blob_id, blob=blob_id)
        if not nx.is_directed_acyclic_graph(graph):
            self.problems.append("the layer graph has a cycle")
        return NetGraph(definition=self.definition, layers=self.layers, blobs=self.blobs,
                        latest=self.latest, inputs=inputs, outputs=outputs, graph=graph,
                        notes=self.notes, problems=self.problems, unsupported=self.unsupported,
                        storage=self.storage)

    def _inputs_and_outputs(self) -> tuple[list[str], list[str]]:
        inputs: list[str] = []
        for node in self.layers:
            if node.role != "input":
                continue
            used = [t for t in node.tops if t in self.consumed]
            unused = [self.blobs[t].name for t in node.tops if t not in self.consumed]
            if node.type != "Input" and unused:
                self.notes.append(f"input blob(s) {unused} of data layer '{node.name}' are used "
                                  "only by train-time layers and are left out")
                node.tops = used
            inputs.extend(node.tops)
        produced = [b for n in self.layers if n.role == "compute" for b in n.tops]
        outputs = [b for b in produced if b not in self.consumed]
        outputs += [b for b in inputs if b not in self.consumed]
        if not outputs:
            outputs = [b for b in produced if b not in self.consumed_by_compute]
            if outputs:
                names = [self.blobs[b].name for b in outputs]
                self.notes.append(f"every blob is consumed; the blobs only Silence layers read, "
                                  f"{names}, are the outputs")
        return inputs, outputs
