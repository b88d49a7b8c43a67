"""The public entry points: prototxt (+ caffemodel) -> nn.Module."""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from caffe2torch.build import CaffeNet, build_module, materialize
from caffe2torch.errors import ShapeError
from caffe2torch.io.caffemodel import CaffeModel, read_caffemodel, write_caffemodel
from caffe2torch.io.prototxt import read_prototxt
from caffe2torch.io.upgrade import NetDefinition, upgrade_net
from caffe2torch.ir.graph import NetGraph, build_graph, raise_problems
from caffe2torch.ir.shapes import infer_shapes
from caffe2torch.layers.registry import is_supported, parameter_problems
from caffe2torch.proto import caffe_pb2
from caffe2torch.weights import WeightsReport, bind_weights, net_blobs, random_blobs

log = logging.getLogger("caffe2torch")
NetSource = str | os.PathLike[str] | caffe_pb2.NetParameter
InputShapes = Mapping[str, Sequence[int]]


def load_definition(net: NetSource) -> NetDefinition:
    """Read a prototxt (path) or take a NetParameter, and upgrade it to V2."""
    if isinstance(net, caffe_pb2.NetParameter):
        return upgrade_net(net, source=f"<NetParameter {net.name!r}>")
    return upgrade_net(read_prototxt(net), source=str(Path(net)))


def load_graph(net: NetSource, input_shapes: InputShapes | None = None, *, phase: str = "TEST",
               stages: Sequence[str] = (), level: int | None = None,
               check: bool = True) -> NetGraph:
    """Parse, upgrade, select the phase and infer every blob's shape.

    With ``check=False`` problems (unsupported layers, missing bottoms, a shape that cannot be
    inferred...) are recorded in ``graph.problems`` instead of raised; shapes are inferred only
    when the graph itself has no problem.
    """
    definition = load_definition(net)
    graph = build_graph(definition, phase=phase, stages=tuple(stages), level=level,
                        supported=is_supported, check=False)
    found = parameter_value_problems(graph)
    graph.problems += found
    graph.unsupported += found
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


def parameter_value_problems(graph: NetGraph) -> list[str]:
    """Every parameter value or unknown field the converters of a graph's supported layers
    cannot reproduce."""
    return [problem for node in graph.layers
            if node.role == "compute" and is_supported(node.type)
            for problem in parameter_problems(node)]


def build(net: NetSource, weights: str | os.PathLike[str] | CaffeModel | None = None, *,
          input_shapes: InputShapes | None = None, phase: str = "TEST",
          stages: Sequence[str] = (), strict: bool = True, optimize: bool = False) -> CaffeNet:
    """Build the PyTorch model of a Caffe net, in eval mode, with the caffemodel's weights bound.

    ``weights=None`` keeps the initialised parameters. ``input_shapes`` (blob name -> shape)
    gives inputs the file leaves open and overrides declared ones. ``strict=False`` loads what
    fits and records the findings in ``net.caffe.weights_report`` instead of raising.
    ``optimize=True`` returns :func:`caffe2torch.optimize`'s inference model instead.
    """
    graph = load_graph(net, input_shapes, phase=phase, stages=stages)
    model = None
    if weights is not None:
        model = weights if isinstance(weights, CaffeModel) else read_caffemodel(weights)
    module = build_module(graph, deferred=model is not None)
    for note in graph.notes:
        log.info("%s", note)
    module.caffe.weights_report = None
    if model is not None:
        module.caffe.weights_report = bind_weights(module, model, strict=strict)
        materialize(module)
    if optimize:
        from caffe2torch.passes import optimize as optimize_net
        return optimize_net(module, copy_modules=False)
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
                            format: str = "V2", input_shapes: InputShapes | None = None) -> None:
    """Write a caffemodel of random, well-scaled weights for ``net`` (tests, benchmarks)."""
    graph = load_graph(net, input_shapes)
    write_caffemodel(path, random_blobs(graph, seed), name=graph.name, format=format)
