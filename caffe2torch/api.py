"""The public entry points: prototxt (+ caffemodel) -> nn.Module."""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from caffe2torch.build import CaffeNet, build_module, materialize
from caffe2torch.devices import CPU_FLOAT32, place, resolve_placement
from caffe2torch.errors import ShapeError
from caffe2torch.io.caffemodel import CaffeModel, read_caffemodel, write_caffemodel
from caffe2torch.io.prototxt import read_prototxt
from caffe2torch.io.upgrade import NetDefinition, upgrade_net
from caffe2torch.ir.graph import NetGraph, build_graph, raise_problems
from caffe2torch.ir.shapes import infer_shapes
from caffe2torch.layers.registry import (get_converter, is_supported, parameter_problems,
                                         registered_types, shared_data)
from caffe2torch.proto import caffe_pb2
from caffe2torch.weights import WeightsReport, bind_weights, net_blobs, random_blobs

log = logging.getLogger("caffe2torch")
NetSource = str | os.PathLike[str] | caffe_pb2.NetParameter
InputShapes = Mapping[str, Sequence[int]]
Variants = Mapping[str, str]  # layer type or layer name -> variant (Converter.variants)


def load_definition(net: NetSource) -> NetDefinition:
    """Read a prototxt (path) or take a NetParameter, and upgrade it to V2."""
    if isinstance(net, caffe_pb2.NetParameter):
        return upgrade_net(net, source=f"<NetParameter {net.name!r}>")
    return upgrade_net(read_prototxt(net), source=str(Path(net)))


def load_graph(net: NetSource, input_shapes: InputShapes | None = None, *, phase: str = "TEST",
               stages: Sequence[str] = (), level: int = 0, variants: Variants | None = None,
               check: bool = True) -> NetGraph:
    """Parse, upgrade, select the phase and infer every blob's shape.

    As Caffe's ``Net(file, phase, level=0, stages)``: ``stages`` are added to the file's
    ``state``, and ``level`` replaces the file's level (0 unless given). ``variants`` picks a
    fork's variant of a layer type (or of one layer, by name) where the prototxt cannot say
    which fork it is for: ``{"PriorBox": "faceboxes"}`` (each converter's ``variants``).

    With ``check=False`` problems (unsupported layers, missing bottoms, a shape that cannot be
    inferred...) are recorded in ``graph.problems`` instead of raised; shapes are inferred only
    when the graph itself has no problem.
    """
    graph = collect_graph(load_definition(net), phase=phase, stages=stages, level=level,
                          variants=variants)
    if check:
        raise_problems(graph)
    if not graph.problems:
        try:
            infer_shapes(graph, input_shapes)
        except ShapeError as err:
            if check:
                raise
            graph.problems.append(str(err))
    return graph


def collect_graph(definition: NetDefinition, *, phase: str = "TEST", stages: Sequence[str] = (),
                  level: int = 0, variants: Variants | None = None) -> NetGraph:
    """The graph of the phase's layers with every problem the registered converters find
    (unsupported types and values, fields no schema knows, variants no converter offers) in
    ``graph.problems``, never raised, and the notes of what Caffe accepts but we flag; shapes
    not inferred yet."""
    graph = build_graph(definition, phase=phase, stages=tuple(stages), level=level,
                        supported=frozenset(registered_types()), check=False,
                        shares=shared_data)
    _choose_variants(graph, variants or {})
    found = parameter_value_problems(graph)
    graph.problems += found
    graph.unsupported += found
    graph.notes += [f"layer '{node.name}' ({node.type}): {why}" for node in graph.layers
                    if node.role == "compute" and is_supported(node.type)
                    for why in get_converter(node.type).accepted(node)]
    return graph


def _choose_variants(graph: NetGraph, variants: Variants) -> None:
    """Set ``layer.variant`` for every layer named by ``variants`` (a layer name or a type)."""
    for key, value in variants.items():
        nodes = [n for n in graph.layers if n.role == "compute" and key in (n.name, n.type)]
        if not nodes:
            graph.problems.append(f"variant {key}={value}: the net has no layer or layer type "
                                  f"'{key}'")
        for node in nodes:
            offered = get_converter(node.type).variants if is_supported(node.type) else {}
            if value not in offered:
                choices = ", ".join(sorted(offered)) or "none"
                graph.problems.append(f"layer '{node.name}' ({node.type}): variant '{value}'; "
                                      f"expected one of: {choices}")
                continue
            node.variant = value
            graph.notes.append(f"layer '{node.name}' ({node.type}): the {value} variant "
                               f"({offered[value]})")


def parameter_value_problems(graph: NetGraph) -> list[str]:
    """Every parameter value or unknown field the converters of a graph's supported layers
    cannot reproduce."""
    return [problem for node in graph.layers
            if node.role == "compute" and is_supported(node.type)
            for problem in parameter_problems(node)]


def build(net: NetSource, weights: str | os.PathLike[str] | CaffeModel | None = None, *,
          input_shapes: InputShapes | None = None, phase: str = "TEST",
          stages: Sequence[str] = (), level: int = 0, variants: Variants | None = None,
          strict: bool = True, device: str | torch.device | None = None,
          dtype: str | torch.dtype | None = None, optimize: bool = False) -> CaffeNet:
    """Build the PyTorch model of a Caffe net with the caffemodel's weights bound: in eval mode
    for ``phase="TEST"``, in train mode for ``"TRAIN"`` (BatchNorm without use_global_stats
    then normalises with the batch statistics and accumulates them, as Caffe's TRAIN phase).

    ``weights=None`` keeps the initialised parameters. ``input_shapes`` (blob name -> shape)
    gives inputs the file leaves open and overrides declared ones. ``stages`` and ``level``
    select layers as Caffe's ``Net(file, phase, level=0, stages)``: the level replaces the
    file's ``state { level }``. ``variants`` as for :func:`load_graph`. ``strict=False`` loads
    what fits and records the findings in ``net.caffe.weights_report`` instead of raising.
    ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``) and ``dtype`` (``"float32"``,
    ``"float16"``, ``"bfloat16"`` or a torch dtype) say where the net runs: they are checked
    first (:class:`DeviceError` when the device is missing or cannot run the dtype), and each
    caffemodel blob is copied once, straight into its parameter there. Softmax, BatchNorm, LRN,
    MVN and Normalize compute in float32 inside a half-precision net.
    ``optimize=True`` returns :func:`caffe2torch.optimize`'s inference model instead; its
    folding runs in float32 on the CPU, and the folded model then moves to ``device`` /
    ``dtype`` (one host copy of the weights on the way).
    """
    target = resolve_placement(device, dtype)
    placement = CPU_FLOAT32 if optimize else target
    graph = load_graph(net, input_shapes, phase=phase, stages=stages, level=level,
                       variants=variants)
    model = None
    if weights is not None:
        model = weights if isinstance(weights, CaffeModel) else read_caffemodel(weights)
    module = build_module(graph, deferred=model is not None)
    for note in graph.notes:
        log.info("%s", note)
    module.caffe.weights_report = None
    if model is not None:
        module.caffe.weights_report = bind_weights(module, model, strict=strict,
                                                   placement=placement)
        materialize(module, placement)
    elif placement != CPU_FLOAT32:
        for layer in module.children():
            place(layer, placement)
    module.meta["caffe2torch.placement"] = placement
    module.train(phase.upper() == "TRAIN")
    if not optimize:
        return module
    from caffe2torch.passes import optimize as optimize_net
    module = optimize_net(module, copy_modules=False)
    if target != CPU_FLOAT32:
        for layer in module.children():
            place(layer, target)
        module.meta["caffe2torch.placement"] = target
    return module


def load_weights(net: CaffeNet, weights: str | os.PathLike[str] | CaffeModel,
                 strict: bool = True) -> WeightsReport:
    """Bind a caffemodel to an already built net; returns the report (raises when strict)."""
    model = weights if isinstance(weights, CaffeModel) else read_caffemodel(weights)
    return bind_weights(net, model, strict=strict)


def save_caffemodel(net: CaffeNet, path: str | os.PathLike[str], *, format: str = "V2") -> None:
    """Write the net's current parameters as a caffemodel Caffe and OpenCV can load."""
    write_caffemodel(path, net_blobs(net), name=net.caffe.graph.name, format=format)


def write_random_caffemodel(net: NetSource, path: str | os.PathLike[str], *, seed: int = 0,
                            format: str = "V2", input_shapes: InputShapes | None = None,
                            variants: Variants | None = None) -> None:
    """Write a caffemodel of random, well-scaled weights for ``net`` (tests, benchmarks)."""
    graph = load_graph(net, input_shapes, variants=variants)
    write_caffemodel(path, random_blobs(graph, seed), name=graph.name, format=format)
