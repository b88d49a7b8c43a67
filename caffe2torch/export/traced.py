"""What the traced formats (ONNX, TorchScript, ``.pt2``) share: the plain fx module, example
inputs, eval mode, the refusal of untraceable layers and the ``torch.export`` program.
"""
from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import torch
from torch import fx, nn

from caffe2torch.build import CaffeNet
from caffe2torch.errors import Caffe2TorchError
from caffe2torch.export.registry import log


def plain_module(net: CaffeNet) -> fx.GraphModule:
    """A plain GraphModule with the net's forward, sharing its submodules (no ``outputs=``
    ``__call__``, no Caffe metadata): what tracers and exporters take."""
    graph = fx.Graph()
    graph.output(graph.graph_copy(net.graph, {}))
    return fx.GraphModule(net, graph, class_name=type(net).__name__)


def example_inputs(net: CaffeNet, batch: int | None = None, seed: int = 0
                   ) -> tuple[torch.Tensor, ...]:
    """Seeded random inputs of the net's input shapes; ``batch`` replaces the first input's batch
    size in every input that has that batch size."""
    graph = net.caffe.graph
    shapes = [tuple(graph.blobs[b].shape) for b in graph.inputs]
    first = shapes[0][0] if shapes and shapes[0] else None
    generator = torch.Generator().manual_seed(seed)
    result = []
    for shape in shapes:
        if batch is not None and shape and shape[0] == first:
            shape = (batch, *shape[1:])
        result.append(torch.randn(shape, generator=generator))
    return tuple(result)


@contextlib.contextmanager
def _eval_mode(net: nn.Module) -> Iterator[None]:
    """Eval mode for the duration, then every module's own training flag back."""
    flags = [(module, module.training) for module in net.modules()]
    net.eval()
    try:
        yield
    finally:
        for module, training in flags:
            module.training = training


def _batch_inputs(net: CaffeNet, dynamic_batch: bool) -> tuple[torch.Tensor, ...]:
    # batch 2 for a dynamic batch: torch.export specialises sizes 0 and 1
    return example_inputs(net, batch=2 if dynamic_batch else None)


def _dynamic_inputs(net: CaffeNet) -> list[bool]:
    """Which inputs share the first input's batch axis (those get a dynamic batch)."""
    graph = net.caffe.graph
    shapes = [tuple(graph.blobs[b].shape) for b in graph.inputs]
    return [bool(s) and bool(shapes[0]) and s[0] == shapes[0][0] for s in shapes]


def check_traceable(net: CaffeNet, what: str) -> None:
    """Refuse, in one error, a traced export (ONNX, TorchScript, .pt2) of a net holding layers
    whose converter is not ``traceable`` (its ``trace_limit`` says why: DetectionOutput's and
    the proposal layers' data-dependent NMS), naming each layer and how to export the rest."""
    from caffe2torch.layers.registry import get_converter

    graph = net.caffe.graph
    blocked = [(node, get_converter(node.type)) for node in graph.layers
               if node.role == "compute" and not get_converter(node.type).traceable]
    if not blocked:
        return
    lines = "\n".join(
        f"  - layer '{node.name}' ({node.type}): {conv.trace_limit or 'not traceable'}"
        f"; its bottoms are {', '.join(graph.blobs[b].name for b in node.bottoms)}"
        for node, conv in blocked)
    raise Caffe2TorchError(
        f"net '{graph.name}': {what} export is not possible for {len(blocked)} layer(s):\n"
        f"{lines}\nexport the net up to those layers' bottoms instead (a prototxt that ends "
        f"there, whose outputs are the bottoms) and run the rest with caffe2torch "
        f"(.pt / .safetensors / .py / .caffemodel exports hold the whole net)")


# Layers whose axis 0 is time, unrolled by a Python loop: their programs hold one sequence length.
TIME_MAJOR_TYPES = frozenset({"LSTM", "RNN"})


def _time_major(net: CaffeNet) -> bool:
    return any(node.type in TIME_MAJOR_TYPES for node in net.caffe.graph.layers)


def _exported_program(net: CaffeNet, dynamic_batch: bool
                      ) -> tuple[torch.export.ExportedProgram, bool]:
    """The net's program and whether its batch axis is dynamic."""
    if dynamic_batch and _time_major(net):
        log.warning("net '%s' has recurrent layers (axis 0 is time, unrolled): the export "
                    "keeps the declared input shapes", net.caffe.graph.name)
        dynamic_batch = False
    if dynamic_batch:
        batch = torch.export.Dim("batch", min=1)
        dynamic_shapes = tuple({0: batch} if dyn else None for dyn in _dynamic_inputs(net))
        try:
            with _eval_mode(net):
                return torch.export.export(plain_module(net), _batch_inputs(net, True),
                                           dynamic_shapes=dynamic_shapes), True
        except RuntimeError as exc:  # torch.export's errors, a forward failing at batch 2
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            log.warning("net '%s' does not export with a dynamic batch size (%s); the export "
                        "keeps the declared input shapes", net.caffe.graph.name, first)
    with _eval_mode(net):
        return torch.export.export(plain_module(net), example_inputs(net)), False


@contextlib.contextmanager
def _quiet_tracing() -> Iterator[None]:
    """Tracing warns for every Python number it records as a constant; that is intended here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", "You are using the legacy TorchScript-based ONNX",
                                DeprecationWarning)  # a deliberate choice: no onnxscript needed
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx\.")
        warnings.filterwarnings("ignore", "Constant folding - Only steps=1", UserWarning)
        yield
