"""Write a converted net to disk; the format follows the file extension.

    export(net, "vgg_face.safetensors")              # or .pt .py .onnx .ts .pt2 .caffemodel
    export(net, "vgg16.pt", naming="torchvision")    # torchvision's VGG keys: features.0.weight

=================  ======================  ===================================================
extension          function                what is written
=================  ======================  ===================================================
.pt, .pth          export_state_dict       the state_dict, plain tensors only
                                           (``torch.load(path, weights_only=True)`` reads it)
.safetensors       export_safetensors      contiguous tensors; metadata: net name, version
.py                export_python           a standalone module source (needs only torch) and
                                           its weights beside it (same stem, .pt/.safetensors)
.onnx              export_onnx             torch.onnx's TorchScript-based exporter on the
                                           torch.export program; batch axis dynamic
.ts, .torchscript  export_torchscript      ``torch.jit.trace`` of the plain fx forward
.pt2               export_program          ``torch.export.export`` + ``torch.export.save``,
                                           batch axis dynamic
.caffemodel        export_caffemodel       back to Caffe (``.caffemodel.h5``: Caffe's HDF5)
=================  ======================  ===================================================

``naming="torchvision"`` (state_dict formats only) renames a VGG-like net's parameters to the keys
of torchvision's VGG (``features.N`` / ``classifier.N``); see :func:`torchvision_vgg_names`.
"""
from __future__ import annotations

import ast
import builtins
import contextlib
import importlib
import inspect
import itertools
import keyword
import logging
import math
import os
import re
import sys
import textwrap
import types
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import fx, nn

from caffe2torch.build import CaffeNet
from caffe2torch.errors import Caffe2TorchError

__all__ = [
    "NAMINGS", "check_output", "example_inputs", "export", "export_caffemodel", "export_onnx", "export_program",
    "export_python", "export_safetensors", "export_state_dict", "export_torchscript",
    "inlined_source", "named_state_dict", "plain_module", "python_source", "torchvision_vgg_names",
]

NAMINGS = ("caffe", "torchvision")
PathLike = str | os.PathLike[str]
log = logging.getLogger("caffe2torch")


# ----------------------------------------------------------------------------- dispatch


def export(net: CaffeNet, path: PathLike, *, naming: str = "caffe") -> Path:
    """Write ``net`` in the format of ``path``'s extension (see the module docstring)."""
    path = Path(path)
    writer, takes_naming = _FORMATS[check_output(path, naming)]
    path.parent.mkdir(parents=True, exist_ok=True)
    if takes_naming:
        return writer(net, path, naming=naming)
    return writer(net, path)


def check_output(path: PathLike, naming: str = "caffe") -> str:
    """Check, before any work, that ``path`` names a known format that takes ``naming`` and can
    be written (its nearest existing parent is a folder); returns the format's suffix."""
    path = Path(path)
    suffix = _format_suffix(path)
    if suffix not in _FORMATS:
        known = ", ".join(sorted(_FORMATS))
        raise Caffe2TorchError(f"{path}: unknown output format '{path.suffix}'; expected one of "
                               f"{known} (or .caffemodel.h5)")
    _check_naming(naming)
    if naming != "caffe" and not _FORMATS[suffix][1]:
        raise Caffe2TorchError(f"{path}: naming='{naming}' applies to state_dict files (.pt, .pth, "
                               f".safetensors); a {suffix} file keeps the net's own structure")
    if path.is_dir():
        raise Caffe2TorchError(f"{path}: is a folder; expected a file name ending in {suffix}")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise Caffe2TorchError(f"{path}: cannot be written: '{parent}' is a file, not a folder")
    return suffix


def _format_suffix(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".caffemodel.h5"):
        return ".caffemodel"
    return path.suffix.lower()


def _check_naming(naming: str) -> None:
    if naming not in NAMINGS:
        raise Caffe2TorchError(f"naming '{naming}'; expected one of {', '.join(NAMINGS)}")


# ----------------------------------------------------------------------------- state dicts


def named_state_dict(net: CaffeNet, naming: str = "caffe") -> dict[str, torch.Tensor]:
    """The state_dict as plain, detached tensors, keyed by Caffe layer or torchvision names."""
    _check_naming(naming)
    tensors = {key: value.detach() for key, value in net.state_dict().items()}
    if naming == "caffe":
        return tensors
    prefixes = torchvision_vgg_names(net)
    renamed = {}
    for key, value in tensors.items():
        module, _, attribute = key.rpartition(".")
        renamed[f"{prefixes[module]}.{attribute}"] = value
    return renamed


def export_state_dict(net: CaffeNet, path: PathLike, *, naming: str = "caffe") -> Path:
    """A ``torch.save`` of the state_dict (a dict of tensors; no pickled classes)."""
    path = Path(path)
    tensors = {key: _compact(value) for key, value in named_state_dict(net, naming).items()}
    torch.save(tensors, path)
    return path


def export_safetensors(net: CaffeNet, path: PathLike, *, naming: str = "caffe") -> Path:
    """A safetensors file; its metadata names the net, the naming and the caffe2torch version."""
    path = Path(path)
    save_file = _import_safetensors(path)
    from caffe2torch import __version__

    tensors, seen = {}, set()
    for key, value in named_state_dict(net, naming).items():
        value = _compact(value).contiguous()
        pointer = value.untyped_storage().data_ptr()
        if pointer in seen and value.numel():  # safetensors refuses tensors sharing memory
            value = value.clone()
        seen.add(pointer)
        tensors[key] = value
    metadata = {"format": "pt", "net": net.caffe.graph.name, "naming": naming,
                "caffe2torch_version": __version__}
    save_file(tensors, str(path), metadata=metadata)
    os.chmod(path, _new_file_mode())  # safetensors writes 0600; give it the mode open() would
    return path


def _new_file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file under the current umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _compact(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor, cloned when it views a larger storage (so the file holds only its values)."""
    if tensor.untyped_storage().nbytes() != tensor.numel() * tensor.element_size():
        return tensor.clone()
    return tensor


def _import_safetensors(path: Path) -> Callable:
    try:
        from safetensors.torch import save_file
    except ImportError as exc:
        raise Caffe2TorchError(f"{path}: writing .safetensors needs the safetensors package, "
                               f"which is not installed; expected 'pip install safetensors'"
                               ) from exc
    return save_file


# ----------------------------------------------------------------------------- torchvision names

_FEATURE_CODES = {"Convolution": "C", "ReLU": "R", "Pooling": "P"}
_CLASSIFIER_CODES = {"InnerProduct": "L", "ReLU": "R", "Dropout": "D"}
_VGG_SHAPE = ("features: (Convolution 3x3 pad 1 + ReLU | Pooling MAX 2x2 stride 2)... ending "
              "with a Pooling; classifier: InnerProduct ReLU [Dropout] InnerProduct ReLU "
              "[Dropout] InnerProduct, the first taking channels*7*7 inputs; then an optional "
              "Softmax")


def torchvision_vgg_names(net: CaffeNet) -> dict[str, str]:
    """Module name -> torchvision VGG prefix (``conv1_1`` -> ``features.0``, ``fc6`` ->
    ``classifier.0``) for a plain VGG chain; a Caffe2TorchError lists everything that differs.

    Indices count positions exactly as torchvision's ``vgg16`` does: each Convolution and its
    ReLU take one index each, a Pooling one; the three InnerProducts are ``classifier.0/3/6``.
    """
    graph = net.caffe.graph
    layers = [node for node in graph.layers if node.role == "compute"]
    problems = _vgg_chain_problems(graph, layers)
    while layers and layers[-1].type == "Softmax":
        layers = layers[:-1]
    split = next((i for i, node in enumerate(layers) if node.type == "InnerProduct"), len(layers))
    features, classifier = layers[:split], layers[split:]
    problems += _vgg_feature_problems(features) + _vgg_classifier_problems(net, features,
                                                                           classifier)
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise Caffe2TorchError(f"net '{graph.name}' is not VGG-like, so it has no torchvision "
                               f"names ({len(problems)} problem(s)):\n{lines}\nexpected "
                               f"{_VGG_SHAPE}")
    names = {node.module_name: f"features.{i}" for i, node in enumerate(features)}
    linear = [node for node in classifier if node.type == "InnerProduct"]
    names.update({node.module_name: f"classifier.{3 * i}" for i, node in enumerate(linear)})
    return names


def _vgg_chain_problems(graph, layers) -> list[str]:
    problems = []
    if len(graph.inputs) != 1:
        problems.append(f"{len(graph.inputs)} inputs; expected one")
    previous = graph.inputs[0] if graph.inputs else None
    for node in layers:
        if node.bottoms != [previous] or len(node.tops) != 1:
            problems.append(f"layer '{node.name}' ({node.type}) reads "
                            f"{[graph.blobs[b].name for b in node.bottoms]} and writes "
                            f"{len(node.tops)} top(s); expected a chain (one bottom: the previous "
                            f"layer's top, one top)")
        previous = node.tops[0] if node.tops else None
    return problems


def _vgg_feature_problems(features) -> list[str]:
    problems = []
    codes = "".join(_FEATURE_CODES.get(node.type, "?") for node in features)
    for node, code in zip(features, codes):
        if code == "?":
            problems.append(f"layer '{node.name}' ({node.type}) in the features; torchvision's "
                            f"VGG features hold only Convolution, ReLU and Pooling")
        elif code == "C":
            p = node.param.convolution_param
            geometry = (list(p.kernel_size), list(p.pad), list(p.stride) or [1],
                        list(p.dilation) or [1], p.group, p.bias_term, p.axis)
            if geometry != ([3], [1], [1], [1], 1, True, 1) or p.HasField("kernel_h") \
                    or p.HasField("pad_h") or p.HasField("stride_h"):
                problems.append(f"layer '{node.name}' (Convolution): kernel {list(p.kernel_size)}"
                                f", pad {list(p.pad)}, stride {list(p.stride)}, dilation "
                                f"{list(p.dilation)}, group {p.group}, bias_term {p.bias_term}; "
                                f"expected 3x3, pad 1, stride 1, with bias")
        elif code == "P":
            p = node.param.pooling_param
            if (p.pool, p.kernel_size, p.stride, p.pad, p.global_pooling) != (0, 2, 2, 0, False) \
                    or p.HasField("kernel_h") or p.HasField("stride_h") or p.HasField("pad_h"):
                problems.append(f"layer '{node.name}' (Pooling): expected MAX, kernel 2, "
                                f"stride 2, no padding")
    if "?" not in codes and not re.fullmatch(r"(CR|P)*P", codes):
        problems.append(f"features {_coded(features, codes)}: expected each Convolution followed "
                        f"by its ReLU, Poolings between blocks, and a Pooling last")
    return problems


def _vgg_classifier_problems(net: CaffeNet, features, classifier) -> list[str]:
    problems = []
    codes = "".join(_CLASSIFIER_CODES.get(node.type, "?") for node in classifier)
    for node, code in zip(classifier, codes):
        p = node.param.inner_product_param
        if code == "?":
            problems.append(f"layer '{node.name}' ({node.type}) in the classifier; torchvision's "
                            f"VGG classifier holds only InnerProduct, ReLU and Dropout")
        elif code == "L" and (p.axis != 1 or p.transpose or not p.bias_term):
            problems.append(f"layer '{node.name}' (InnerProduct): axis {p.axis}, transpose "
                            f"{p.transpose}, bias_term {p.bias_term}; expected axis 1, no "
                            f"transpose, with bias")
    if "?" not in codes and not re.fullmatch(r"LRD?LRD?L", codes):
        problems.append(f"classifier {_coded(classifier, codes)}: expected InnerProduct ReLU "
                        f"[Dropout] InnerProduct ReLU [Dropout] InnerProduct")
    convs = [node for node in features if node.type == "Convolution"]
    if convs and classifier and classifier[0].type == "InnerProduct":
        channels = convs[-1].param.convolution_param.num_output
        weight = net.get_submodule(classifier[0].module_name).weight
        if weight.shape[-1] != channels * 7 * 7:
            problems.append(f"layer '{classifier[0].name}' takes {weight.shape[-1]} inputs; "
                            f"expected {channels}*7*7 = {channels * 49} (torchvision's VGG pools "
                            f"the features to 7x7)")
    return problems


def _coded(layers, codes: str) -> str:
    return " ".join(f"{node.name}:{code}" for node, code in zip(layers, codes)) or "(none)"


# ----------------------------------------------------------------------------- traced formats


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


def export_onnx(net: CaffeNet, path: PathLike, *, opset: int = 17,
                dynamic_batch: bool = True) -> Path:
    """ONNX by torch.onnx's TorchScript-based exporter (offline, no onnxscript needed), run on
    the net's ``torch.export`` program, in which sizes that modules compute from input shapes
    (global pooling kernels...) are constants. Inputs and outputs keep their Caffe blob names;
    the batch axis is dynamic when the net allows it (see :func:`export_program`)."""
    path = Path(path)
    info = net.caffe
    check_traceable(net, "ONNX")
    program, dynamic = _exported_program(net, dynamic_batch)
    dynamic_axes = None
    if dynamic:
        dynamic_axes = {name: {0: "N"} for name, dyn in
                        zip(info.input_names, _dynamic_inputs(net)) if dyn}
        dynamic_axes.update({name: {0: "N"} for name in info.output_names})
    module = program.module()
    module.train = lambda mode=True: module  # torch.onnx sets eval mode; programs refuse train()
    with _quiet_tracing(), torch.no_grad(), _onnx_avg_pool_divisor(opset):
        torch.onnx.export(module, _batch_inputs(net, dynamic), str(path), dynamo=False,
                          opset_version=opset, input_names=info.input_names,
                          output_names=info.output_names, dynamic_axes=dynamic_axes)
    return path


@contextlib.contextmanager
def _onnx_avg_pool_divisor(opset: int) -> Iterator[None]:
    """torch.onnx's TorchScript exporter drops ``avg_pool*d``'s ``divisor_override`` without a
    word (torch 2.x), which CaffePool2d uses to sum windows; during our export these symbolics
    keep it: AveragePool (padding counted) times ``prod(kernel) / divisor``."""
    names = [f"aten::avg_pool{dims}d" for dims in (1, 2, 3)]
    for dims, name in enumerate(names, 1):
        torch.onnx.register_custom_op_symbolic(name, _avg_pool_symbolic(dims), opset)
    try:
        yield
    finally:
        for name in names:
            torch.onnx.unregister_custom_op_symbolic(name, opset)


def _avg_pool_symbolic(dims: int) -> Callable:
    from torch.onnx import symbolic_helper as helper

    def each(values: Sequence[int], default: Sequence[int]) -> list[int]:
        values = list(values) or list(default)
        return values * dims if len(values) == 1 else values

    @helper.parse_args("v", "is", "is", "is", "i", "i", "none")
    def symbolic(g, x, kernel, stride, padding, ceil_mode, count_include_pad, divisor=None):
        kernel = each(kernel, [])
        stride, padding = each(stride, kernel), each(padding, [0])
        if divisor is not None and not helper._is_none(divisor):
            divisor = helper._maybe_get_const(divisor, "i")
            if helper._is_value(divisor) or ceil_mode:
                raise Caffe2TorchError(f"avg_pool{dims}d with a divisor_override and "
                                       f"ceil_mode, or a divisor that is not constant, has no "
                                       f"exact ONNX form here")
            count_include_pad = 1
        else:
            divisor = None
        out = g.op("AveragePool", x, ceil_mode_i=ceil_mode, count_include_pad_i=count_include_pad,
                   kernel_shape_i=kernel, pads_i=padding * 2, strides_i=stride)
        if divisor is None or math.prod(kernel) == divisor:
            return out
        scale = torch.tensor(math.prod(kernel) / divisor, dtype=torch.float32)
        return g.op("Mul", out, g.op("Constant", value_t=scale))

    return symbolic


def export_torchscript(net: CaffeNet, path: PathLike) -> Path:
    """``torch.jit.trace`` of the plain forward at the net's input shapes, saved with
    ``torch.jit.save``. The trace keeps size computations, so other batch sizes work wherever
    the modules compute from ``x.shape`` (as they do); recurrent layers (LSTM, RNN) are unrolled
    over the declared sequence length."""
    path = Path(path)
    check_traceable(net, "TorchScript")
    with _eval_mode(net), _quiet_tracing(), torch.no_grad():
        traced = torch.jit.trace(plain_module(net), example_inputs(net))
    torch.jit.save(traced, str(path))
    return path


def export_program(net: CaffeNet, path: PathLike, *, dynamic_batch: bool = True) -> Path:
    """``torch.export.export`` of the plain forward, saved with ``torch.export.save``;
    ``torch.export.load(path).module()`` runs it. The batch axis is dynamic unless the net ties
    it to a constant (a Reshape with an explicit batch size...): then the program keeps the
    declared input shapes, and a warning on the ``caffe2torch`` logger says why."""
    path = Path(path)
    check_traceable(net, ".pt2")
    torch.export.save(_exported_program(net, dynamic_batch)[0], str(path))
    return path


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


def export_caffemodel(net: CaffeNet, path: PathLike, *, format: str = "V2") -> Path:
    """The net's current parameters as a caffemodel for Caffe and OpenCV (with the prototxt the
    net was built from): fine-tune in PyTorch, deploy where Caffe runs."""
    from caffe2torch.api import save_caffemodel

    path = Path(path)
    save_caffemodel(net, path, format=format)
    return path


# ----------------------------------------------------------------------------- standalone .py

_ALLOWED_PACKAGES = frozenset({"torch", "typing_extensions", "__future__"})
_MODULE_INTERNALS = frozenset(vars(nn.Module()))
_IGNORED_ATTRIBUTES = frozenset({"caffe_blobs"})  # caffe2torch's blob binding, not computation
_HELPER_NAMES = frozenset({"WEIGHTS", "load", "_restore"})


def export_python(net: CaffeNet, path: PathLike, *, weights: str = "pt") -> Path:
    """A standalone module source file plus its weights beside it (``<stem>.pt``, or
    ``<stem>.safetensors`` with ``weights="safetensors"``).

    The file needs only torch: the source of the caffe2torch module classes the net uses (their
    files, inlined), a class whose ``__init__`` builds the layers and whose ``forward`` is the fx
    code (Caffe layer names), and ``load()``, which returns the model with its weights.
    """
    path = Path(path)
    if weights not in ("pt", "safetensors"):
        raise Caffe2TorchError(f"weights='{weights}'; expected 'pt' or 'safetensors'")
    weights_path = path.with_name(f"{path.stem}.{weights}")
    source, class_name = _python_file(net, weights_path.name)
    _check_python_source(net, source, class_name, path)
    if weights == "pt":
        export_state_dict(net, weights_path)
    else:
        export_safetensors(net, weights_path)
    path.write_text(source, encoding="utf-8")
    return path


def python_source(net: CaffeNet, weights_name: str = "weights.pt") -> str:
    """The text of :func:`export_python`'s file (raises when something cannot be standalone)."""
    return _python_file(net, weights_name)[0]


def inlined_source(classes: Iterable[type]) -> str:
    """Standalone source (imports, then the needed parts of the files) defining ``classes``:
    what :func:`export_python` writes for the caffe2torch module classes a net uses."""
    sources = _SourceSet()
    for cls in classes:
        sources.require_class(cls)
    sources.prune()
    sources.check_names()
    return "\n\n\n".join([sources.imports_text(), *sources.file_texts()]) + "\n"


def _python_file(net: CaffeNet, weights_name: str) -> tuple[str, str]:
    sources = _SourceSet()
    for module in net.modules():
        if module is not net:
            sources.require_class(type(module))
    forward, global_lines = _forward_source(net, sources)
    init = _init_source(net, sources)
    sources.prune()
    sources.check_names()
    class_name = _free_name(_identifier(type(net).__name__), sources.bound_names())
    graph = net.caffe.graph
    parts = [_file_header(net, class_name, weights_name) + "\n\n" + sources.imports_text(),
             *sources.file_texts()]
    if sources.needs_restore:
        parts.append(_RESTORE_SOURCE)
    if global_lines:
        parts.append("# -- generated: names the forward uses\n" + "\n".join(global_lines))
    parts.append(f"# -- generated: the net\nclass {class_name}(nn.Module):\n"
                 f'    """Caffe net {graph.name!r}: inputs {net.caffe.input_names}, outputs '
                 f'{net.caffe.output_names}."""\n\n{init}\n\n{forward}')
    parts.append(_LOADER_SOURCE.format(cls=class_name, weights=weights_name))
    return "\n\n\n".join(p.strip("\n") for p in parts if p.strip()) + "\n", class_name


def _file_header(net: CaffeNet, class_name: str, weights_name: str) -> str:
    from caffe2torch import __version__

    stem = Path(weights_name).stem
    inputs = ", ".join(_identifier(n) for n in net.caffe.input_names)
    if stem.isidentifier() and not keyword.iskeyword(stem):
        importing = f"    from {stem} import load\n"
    else:  # a file name no import statement can name: load it by its path
        importing = (f"    import importlib.util  # {stem}.py is not an importable module name\n"
                     f"    spec = importlib.util.spec_from_file_location("
                     f"{_identifier(stem)!r}, {stem + '.py'!r})\n"
                     "    module = importlib.util.module_from_spec(spec)\n"
                     "    spec.loader.exec_module(module)\n"
                     "    load = module.load\n")
    return (f'"""Caffe net {net.caffe.graph.name!r} as a standalone PyTorch module '
            f"(written by caffe2torch {__version__}).\n\n"
            f"Needs only torch; the weights are in {weights_name} beside this file:\n\n"
            f"{importing}"
            f"    model = load()  # a {class_name} with its weights, in eval mode\n"
            f"    y = model({inputs})\n"
            f'"""\nfrom __future__ import annotations')


_RESTORE_SOURCE = '''\
# -- generated: modules that no constructor call rebuilds, made from their attributes
def _restore(cls, attributes, parameters=None, buffers=None, children=None):
    """A ``cls`` with these attributes, zero tensors of these shapes and these submodules."""
    module = cls.__new__(cls)
    nn.Module.__init__(module)
    module.__dict__.update(attributes)
    for name, spec in (parameters or {}).items():
        tensor = None if spec is None else nn.Parameter(torch.zeros(spec[0], dtype=spec[1]),
                                                        requires_grad=spec[2])
        module.register_parameter(name, tensor)
    for name, spec in (buffers or {}).items():
        module.register_buffer(name, None if spec is None else torch.zeros(spec[0], dtype=spec[1]))
    for name, child in (children or {}).items():
        module.add_module(name, child)
    return module'''

_LOADER_SOURCE = '''\
# -- generated: loading the weights
WEIGHTS = Path(__file__).with_name({weights!r})


def load(weights: str | os.PathLike[str] | None = None, map_location="cpu") -> {cls}:
    """A {cls} with the weights (default: the file beside this one), in eval mode."""
    path = Path(WEIGHTS if weights is None else weights)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        state = load_file(str(path), device=str(map_location))
    else:
        state = torch.load(path, map_location=map_location, weights_only=True)
    with torch.device("meta"):  # no initialisation: every tensor comes from the file
        model = {cls}()
    model.load_state_dict(state, assign=True)
    if any(t.is_meta for t in [*model.parameters(), *model.buffers()]):
        model = {cls}()  # tensors the file does not hold: build them for real
        model.load_state_dict(state)
    return model.eval()'''


def _identifier(name: str) -> str:
    cleaned = re.sub(r"\W", "_", name)
    return cleaned if cleaned and not cleaned[0].isdigit() else f"Net_{cleaned}"


def _free_name(name: str, taken: set[str]) -> str:
    while name in taken or name in _HELPER_NAMES or name in vars(builtins):
        name += "_"
    return name


# -- the inlined files


@dataclass(frozen=True)
class _Import:
    """An import of the output file: the name it binds, what that name means, the statement."""

    bound: str
    meaning: str
    line: str


def _import_module(module: str, alias: str | None = None) -> _Import:
    if alias:
        return _Import(alias, f"module {module}", f"import {module} as {alias}")
    return _Import(_top_package(module), f"module {_top_package(module)}", f"import {module}")


def _import_name(module: str, name: str, alias: str | None = None) -> _Import:
    meaning = f"{module}.{name}"
    with contextlib.suppress(ImportError, AttributeError):
        value = getattr(importlib.import_module(module), name)
        if isinstance(value, types.ModuleType):  # `from torch import nn` == `import torch.nn as nn`
            meaning = f"module {value.__name__}"
    line = f"from {module} import {name}" + (f" as {alias}" if alias and alias != name else "")
    return _Import(alias or name, meaning, line)


def _base_imports() -> list[_Import]:
    """What the generated class and loader use."""
    return [_import_module("os"), _import_name("pathlib", "Path"), _import_module("torch"),
            _import_name("torch", "nn")]


@dataclass(eq=False)
class _Statement:
    """A top-level statement of an inlined file: its lines (with the comments just above it),
    the names it binds and the names it uses; ``text`` for a generated ``alias = name``."""

    lines: range
    defines: set[str]
    uses: set[str]
    text: str = ""


@dataclass
class _SourceFile:
    """One file to inline: its lines, statements, hoisted imports and caffe2torch dependencies."""

    module: str
    path: str
    header: list[str]
    lines: list[str]
    statements: list[_Statement] = field(default_factory=list)
    dropped: set[int] = field(default_factory=set)  # imports, docstring, TYPE_CHECKING, __all__
    imports: list[_Import] = field(default_factory=list)
    inlined: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (module, name)
    aliases: dict[str, _Statement] = field(default_factory=dict)  # `y = x` for `import x as y`
    deps: list[str] = field(default_factory=list)

    def text(self, kept: set[_Statement]) -> str:
        """The file without the dropped lines and the statements not ``kept``."""
        drop = set(self.dropped)
        for statement in self.statements:
            if statement not in kept:
                drop.update(statement.lines)
        body = "\n".join(line for i, line in enumerate(self.lines) if i not in drop)
        aliases = [a.text for a in self.aliases.values() if a in kept]
        body = "\n".join(aliases + [re.sub(r"\n{4,}", "\n\n\n", body).strip("\n")])
        head = [f"# -- inlined from {self.path}"] + [f"# {line}".rstrip() for line in self.header]
        return "\n".join(head) + "\n\n" + body.strip("\n")


class _SourceSet:
    """The files to inline (dependencies first), pruned to what the net uses, and the imports."""

    def __init__(self) -> None:
        self.files: dict[str, _SourceFile] = {}
        self.imports: list[_Import] = _base_imports()
        self.roots: set[tuple[str, str]] = set()  # (module, name) the output must define
        self.kept: set[_Statement] = set()
        self.used_imports: set[tuple[str, str]] = set()
        self.needs_restore = False

    def require_class(self, cls: type) -> None:
        if _is_torch(cls):
            if not _torch_reference(cls).startswith("nn."):
                self.imports.append(_import_module(cls.__module__))
            return
        if cls.__qualname__ != cls.__name__:
            raise Caffe2TorchError(f"module class {cls.__module__}.{cls.__qualname__} is not "
                                   f"defined at the top level of its file; the .py export "
                                   f"inlines top-level classes only")
        self.require_name(cls.__module__, cls.__name__)

    def require_name(self, module: str, name: str) -> None:
        self.require_module(module)
        self.roots.add((module, name))

    def require_module(self, name: str, chain: tuple[str, ...] = ()) -> None:
        if name in self.files:
            return
        if name in chain:
            raise Caffe2TorchError(f"circular imports {' -> '.join(chain + (name,))}; the .py "
                                   f"export cannot order the inlined files")
        source = _read_source_file(name)
        for dep in source.deps:
            self.require_module(dep, chain + (name,))
        self.files[name] = source  # after its dependencies: dicts keep insertion order

    def prune(self) -> None:
        """Keep the statements defining what the roots need, resolving each name in the file
        that uses it (its own definitions, then what it imports), and the statements that
        define nothing (they may act on import)."""
        work = list(self.roots)
        for source in self.files.values():
            for statement in source.statements:
                if not statement.defines:
                    self.kept.add(statement)
                    work += [(source.module, n) for n in statement.uses]
        seen: set[tuple[str, str]] = set()
        while work:
            module, name = work.pop()
            if (module, name) in seen:
                continue
            seen.add((module, name))
            source = self.files[module]
            found = [s for s in source.statements if name in s.defines]
            if not found and name in source.inlined:
                work.append(source.inlined[name])
                found = [source.aliases[name]] if name in source.aliases else []
            elif not found:
                self.used_imports.add((module, name))  # an import, a builtin or a local name
            for statement in found:
                self.kept.add(statement)
                work += [(module, n) for n in statement.uses]

    def kept_imports(self) -> list[_Import]:
        return self.imports + [i for f in self.files.values() for i in f.imports
                               if (f.module, i.bound) in self.used_imports]

    def defined(self) -> dict[str, list[str]]:
        """Each name the kept statements bind -> the files binding it."""
        owners: dict[str, list[str]] = {}
        for source in self.files.values():
            for statement in [*source.aliases.values(), *source.statements]:
                if statement in self.kept:
                    for name in statement.defines:
                        if source.path not in owners.setdefault(name, []):
                            owners[name].append(source.path)
        return owners

    def bound_names(self) -> set[str]:
        return set(self.defined()) | {i.bound for i in self.kept_imports()}

    def check_names(self) -> None:
        """Every name bound once across the inlined files (one namespace in the output)."""
        owners = self.defined()
        meanings: dict[str, set[str]] = {}
        for item in self.kept_imports():
            meanings.setdefault(item.bound, set()).add(item.meaning)
        problems = [f"'{n}' is defined in {' and '.join(p)}" for n, p in owners.items()
                    if len(p) > 1]
        problems += [f"'{n}' is imported as {' and '.join(sorted(m))}"
                     for n, m in meanings.items() if len(m) > 1]
        problems += [f"'{n}' is imported and also defined in {owners[n][0]}"
                     for n in owners if n in meanings]
        problems += [f"'{n}' (defined in {owners[n][0]}) is a name the export itself writes"
                     for n in owners if n in _HELPER_NAMES]
        if problems:
            lines = "\n".join(f"  - {p}" for p in sorted(problems))
            raise Caffe2TorchError(f"the .py export puts the inlined files in one namespace, "
                                   f"where these names clash:\n{lines}")

    def imports_text(self) -> str:
        groups: list[set[str]] = [set(), set()]
        for item in self.kept_imports():
            groups[_top_package(item.line.split()[1]) in _ALLOWED_PACKAGES].add(item.line)
        return "\n\n".join("\n".join(sorted(g, key=lambda s: (s.startswith("from"),
                                                               s.split()[1], s)))
                           for g in groups if g)

    def file_texts(self) -> list[str]:
        return [source.text(self.kept) for source in self.files.values()
                if any(s in self.kept for s in [*source.statements, *source.aliases.values()])]


def _is_torch(cls: type) -> bool:
    return _top_package(cls.__module__) == "torch"


def _torch_reference(cls: type) -> str:
    if getattr(nn, cls.__name__, None) is cls:
        return f"nn.{cls.__name__}"
    return f"{cls.__module__}.{cls.__qualname__}"


def _top_package(module: str) -> str:
    return module.split(".")[0]


def _read_source_file(name: str) -> _SourceFile:
    """A module's file, ready to inline: imports hoisted, caffe2torch imports become deps."""
    module = sys.modules.get(name) or importlib.import_module(name)
    try:
        path = inspect.getsourcefile(module) or name
        text = inspect.getsource(module)
    except (OSError, TypeError) as exc:
        raise Caffe2TorchError(f"module '{name}' has no Python source to inline: {exc}") from exc
    source = _SourceFile(module=name, path=_shown_path(path), header=[], lines=text.splitlines())
    for index, stmt in enumerate(ast.parse(text).body):
        span = range(_first_line(stmt, source.lines), stmt.end_lineno)
        if index == 0 and _is_docstring(stmt):
            source.header = inspect.cleandoc(stmt.value.value).splitlines()
        elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
            _hoist_import(stmt, module, source)
        elif not (_is_type_checking_block(stmt) or _assigns_all(stmt)):
            _check_nested_imports(stmt, source.path)
            uses = {n.id for n in ast.walk(stmt) if isinstance(n, ast.Name)}
            source.statements.append(_Statement(span, _bound_names(stmt), uses))
            continue
        source.dropped.update(span)
    return source


def _shown_path(path: str) -> str:
    import caffe2torch

    root = Path(caffe2torch.__file__).resolve().parent.parent
    with contextlib.suppress(ValueError):
        return Path(path).resolve().relative_to(root).as_posix()
    return Path(path).name


def _first_line(stmt: ast.stmt, lines: list[str]) -> int:
    """0-based first line of a statement: its decorators and the comment lines right above."""
    first = min([stmt.lineno] + [d.lineno for d in getattr(stmt, "decorator_list", [])]) - 1
    while first > 0 and lines[first - 1].lstrip().startswith("#"):
        first -= 1
    return first


def _is_docstring(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) \
        and isinstance(stmt.value.value, str)


def _is_type_checking_block(stmt: ast.stmt) -> bool:
    """``if TYPE_CHECKING:`` (annotations are strings in the output, so it is never needed)."""
    test = getattr(stmt, "test", None)
    return isinstance(stmt, ast.If) and not stmt.orelse and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _assigns_all(stmt: ast.stmt) -> bool:
    targets = stmt.targets if isinstance(stmt, ast.Assign) else \
        [stmt.target] if isinstance(stmt, (ast.AnnAssign, ast.AugAssign)) else []
    return any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets)


def _bound_names(stmt: ast.stmt) -> set[str]:
    """The module-level names a top-level statement binds (not those inside functions)."""
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {stmt.name}
    if isinstance(stmt, (ast.Import, ast.ImportFrom)):
        return {(a.asname or a.name).split(".")[0] for a in stmt.names}
    names: set[str] = set()
    for child in ast.iter_child_nodes(stmt):
        if isinstance(child, ast.stmt):
            names |= _bound_names(child)
        else:
            names |= {n.id for n in ast.walk(child)
                      if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    return names


def _hoist_import(stmt: ast.Import | ast.ImportFrom, module: types.ModuleType,
                  source: _SourceFile) -> None:
    where = f"{source.path} line {stmt.lineno}"
    if isinstance(stmt, ast.Import):
        for alias in stmt.names:
            _check_package(alias.name, where)
            source.imports.append(_import_module(alias.name, alias.asname))
        return
    target = stmt.module or ""
    if stmt.level:
        package = module.__package__ or module.__name__.rpartition(".")[0]
        target = importlib.util.resolve_name("." * stmt.level + target, package)
    if target == "__future__":
        return
    for alias in stmt.names:
        if alias.name == "*":
            raise Caffe2TorchError(f"{where}: 'from {target} import *'; the .py export needs "
                                   f"the names a file imports")
        if _top_package(target) == "caffe2torch":
            _inline_import(target, alias, where, source)
        else:
            _check_package(target, where)
            source.imports.append(_import_name(target, alias.name, alias.asname))


def _inline_import(target: str, alias: ast.alias, where: str, source: _SourceFile) -> None:
    """``from caffe2torch.x import y``: inline the file that defines ``y`` before this one."""
    where = f"{where}: 'from {target} import {alias.name}'"
    owner = importlib.import_module(target)
    if not hasattr(owner, alias.name):
        raise Caffe2TorchError(f"{where}: {target} has no '{alias.name}'")
    value = getattr(owner, alias.name)
    if isinstance(value, types.ModuleType):
        raise Caffe2TorchError(f"{where} imports a module; the .py export inlines the names a "
                               f"file imports from caffe2torch, so import those names")
    defining, real = target, alias.name
    if inspect.isclass(value) or inspect.isfunction(value):
        defining, real = value.__module__, value.__name__
        if _top_package(defining) != "caffe2torch":
            raise Caffe2TorchError(f"{where}: '{alias.name}' comes from {defining}; import it "
                                   f"from there")
    if defining != source.module and defining not in source.deps:
        source.deps.append(defining)
    bound = alias.asname or alias.name
    source.inlined[bound] = (defining, real)
    if bound != real:
        source.aliases[bound] = _Statement(range(0), {bound}, set(), f"{bound} = {real}")


def _check_package(module: str, where: str) -> None:
    top = _top_package(module)
    if top == "caffe2torch":
        raise Caffe2TorchError(f"{where}: 'import {module}'; the .py export inlines only "
                               f"top-level 'from caffe2torch... import name' statements")
    if top not in _ALLOWED_PACKAGES and top not in sys.stdlib_module_names:
        raise Caffe2TorchError(f"{where} imports {module}; the standalone .py file may import "
                               f"only torch and the standard library")


def _check_nested_imports(stmt: ast.stmt, path: str) -> None:
    """Imports inside functions or blocks run later: they must not need caffe2torch either."""
    for node in ast.walk(stmt):
        where = f"{path} line {getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            for alias in node.names:
                _check_package(alias.name, where)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                raise Caffe2TorchError(f"{where}: a relative import inside a block; the .py "
                                       f"export cannot inline it")
            _check_package(node.module or "", where)


# -- the class: __init__ and forward


def _forward_source(net: CaffeNet, sources: _SourceSet) -> tuple[str, list[str]]:
    """The fx forward as a method, and the lines binding the globals it uses."""
    code = net.graph.python_code(root_module="self")
    src = "\n".join(line.rstrip() for line in code.src.strip("\n").splitlines())
    used = {node.id for node in ast.walk(ast.parse(src)) if isinstance(node, ast.Name)}
    lines = [line for name in sorted(used & set(code.globals))
             if (line := _global_binding(name, code.globals[name], sources))]
    return textwrap.indent(src, "    "), lines


def _global_binding(name: str, value: object, sources: _SourceSet) -> str:
    """How the output binds a global of the fx code: an import (returns ''), or a line."""
    if isinstance(value, types.ModuleType):
        _check_package(value.__name__, "the fx forward")
        alias = None if name == _top_package(value.__name__) else name
        sources.imports.append(_import_module(value.__name__, alias))
        return ""
    if isinstance(value, float):
        return f"{name} = float({str(value)!r})"
    if value is type(None):
        return f"{name} = type(None)"
    module, qualname = getattr(value, "__module__", None), getattr(value, "__qualname__", "")
    if not module or not qualname or "." in qualname:
        raise Caffe2TorchError(f"the forward uses '{name}' ({value!r}), which the .py export "
                               f"cannot import")
    if _top_package(module) == "caffe2torch":
        sources.require_name(module, qualname)
        return "" if name == qualname else f"{name} = {qualname}"
    _check_package(module, "the fx forward")
    sources.imports.append(_import_name(module, qualname, name))
    return ""


def _init_source(net: CaffeNet, sources: _SourceSet) -> str:
    lines = ["    def __init__(self) -> None:", "        super().__init__()"]
    for name, tensor in net.named_parameters(recurse=False):
        lines.append(f"        self.{name} = nn.Parameter(torch.zeros({tuple(tensor.shape)}, "
                     f"dtype={tensor.dtype}), requires_grad={tensor.requires_grad})")
    for name, tensor in net.named_buffers(recurse=False):
        if name in net._non_persistent_buffers_set:
            raise Caffe2TorchError(f"the net's buffer '{name}' is not in its state_dict; the "
                                   f".py export loads every tensor from the weights file")
        lines.append(f"        self.register_buffer({name!r}, torch.zeros("
                     f"{tuple(tensor.shape)}, dtype={tensor.dtype}))")
    for name, child in net.named_children():
        lines.append(f"        self.{name} = {_module_expression(child, sources, name)}")
    return "\n".join(lines)


_MAX_GUESSES = 64


def _module_expression(module: nn.Module, sources: _SourceSet, where: str) -> str:
    """Source building ``module``'s structure: a verified constructor call, else ``_restore``."""
    for expression in _constructor_calls(module, sources, where):
        if _builds_same(expression, module):
            return expression
    sources.needs_restore = True
    return _restore_call(module, sources, where)


def _class_reference(cls: type) -> str:
    return _torch_reference(cls) if _is_torch(cls) else cls.__name__


def _constructor_calls(module: nn.Module, sources: _SourceSet, where: str) -> Iterator[str]:
    """Candidate constructor calls, most readable first; each is verified before use."""
    cls = type(module)
    text = repr(module)  # torch.nn's layers print as their call: Conv2d(3, 64, kernel_size=...)
    if _is_torch(cls) and not list(module.children()) and "\n" not in text \
            and text.startswith(cls.__name__ + "("):
        yield _class_reference(cls) + text[len(cls.__name__):]
    yield from _signature_calls(module, sources, where)


def _signature_calls(module: nn.Module, sources: _SourceSet, where: str) -> Iterator[str]:
    """``Cls(a, b=...)`` with ``__init__``'s arguments taken from the attributes, submodules or
    parameters of their names (a parameter's argument: a bool, whether it exists); a required
    argument found nowhere is guessed among the tensor shapes and sizes (``InnerProduct(240, 5)``,
    ``Scale(1, (64,))``), since the verification catches wrong guesses."""
    cls = type(module)
    try:
        parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
    except (TypeError, ValueError):
        return
    attributes, children = vars(module), dict(module.named_children())
    choices: list[tuple[inspect.Parameter, list[str]]] = []
    for parameter in parameters:
        name, default = parameter.name, parameter.default
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if name in children:
            choices.append((parameter, [_module_expression(children[name], sources,
                                                           f"{where}.{name}")]))
        elif name in attributes or (name in module._parameters and isinstance(default, bool)):
            actual = attributes[name] if name in attributes else \
                module._parameters[name] is not None
            value = _literal(actual)
            if value is None:
                return
            if default is parameter.empty or not _same_value(actual, default):
                choices.append((parameter, [value]))
        elif default is parameter.empty:
            choices.append((parameter, _size_guesses(module)))
    for values in itertools.islice(itertools.product(*(c for _, c in choices)), _MAX_GUESSES):
        args = []
        for (parameter, _), value in zip(choices, values):
            positional = not args and parameter.default is parameter.empty and \
                parameter.kind is not parameter.KEYWORD_ONLY
            args.append(value if positional else f"{parameter.name}={value}")
        yield f"{_class_reference(cls)}({', '.join(args)})"


def _size_guesses(module: nn.Module) -> list[str]:
    """The shapes of the module's own tensors, then their sizes, as literals."""
    shapes = [tuple(t.shape) for t in [*module._parameters.values(), *module._buffers.values()]
              if t is not None]
    sizes = [d for shape in shapes for d in shape]
    return list(dict.fromkeys([_literal(s) for s in shapes] + [repr(d) for d in sizes]))


def _same_value(a: object, b: object) -> bool:
    return type(a) is type(b) and _literal(a) == _literal(b)


def _builds_same(expression: str, module: nn.Module) -> bool:
    """Does ``expression`` (with the real classes, on the meta device) build a module of the same
    type, attributes, tensor shapes, submodules and values of tensors outside the state_dict?"""
    namespace: dict[str, object] = {"nn": nn, "torch": torch}
    for sub in module.modules():
        namespace.setdefault(type(sub).__name__, type(sub))
    loose = _loose_buffers(module)  # not in the state_dict: their values must match too
    try:
        with torch.device("cpu" if loose else "meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            built = eval(expression, namespace)
    except Exception:  # noqa: BLE001 - any failure only rules this candidate out
        return False
    if not isinstance(built, nn.Module) or _structure(built) != _structure(module):
        return False
    rebuilt = _loose_buffers(built)
    return all(torch.equal(rebuilt[k].cpu(), v.cpu()) for k, v in loose.items())


def _loose_buffers(module: nn.Module) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{name}": buffer for prefix, sub in module.named_modules()
            for name, buffer in sub._buffers.items()
            if buffer is not None and name in sub._non_persistent_buffers_set}


def _structure(module: nn.Module) -> tuple:
    """What must match for a rebuilt module to compute the same from the same state_dict."""
    attributes = tuple(sorted((k, type(v).__name__, _literal(v) or f"<{v!r}>")
                              for k, v in _plain_attributes(module).items()))
    parameters = tuple((n, None if p is None else (tuple(p.shape), p.dtype, p.requires_grad))
                       for n, p in module._parameters.items())
    buffers = tuple((n, None if b is None else (tuple(b.shape), b.dtype),
                     n in module._non_persistent_buffers_set) for n, b in module._buffers.items())
    children = tuple((n, _structure(c)) for n, c in module.named_children())
    return type(module).__qualname__, attributes, parameters, buffers, children


def _plain_attributes(module: nn.Module) -> dict[str, object]:
    return {k: v for k, v in vars(module).items()
            if k not in _MODULE_INTERNALS and k not in _IGNORED_ATTRIBUTES}


def _restore_call(module: nn.Module, sources: _SourceSet, where: str) -> str:
    what = f"module '{where}' ({type(module).__name__})"
    attributes = []
    for name, value in _plain_attributes(module).items():
        literal = _literal(value)
        if literal is None:
            raise Caffe2TorchError(f"{what}: attribute '{name}' = {value!r} is no Python "
                                   f"literal, and no constructor call rebuilds the module; the "
                                   f".py export cannot write it")
        attributes.append(f"{name!r}: {literal}")
    parameters = [f"{n!r}: " + ("None" if p is None else
                                f"({tuple(p.shape)}, {p.dtype}, {p.requires_grad})")
                  for n, p in module._parameters.items()]
    buffers = []
    for n, b in module._buffers.items():
        if n in module._non_persistent_buffers_set:
            raise Caffe2TorchError(f"{what}: buffer '{n}' is not in the state_dict, and no "
                                   f"constructor call rebuilds the module")
        buffers.append(f"{n!r}: " + ("None" if b is None else f"({tuple(b.shape)}, {b.dtype})"))
    children = [f"{n!r}: {_module_expression(c, sources, f'{where}.{n}')}"
                for n, c in module.named_children()]
    head = f"{_class_reference(type(module))}, {{{', '.join(attributes)}}}"
    rest = [f"{keyword}={{{', '.join(items)}}}" for keyword, items in
            (("parameters", parameters), ("buffers", buffers), ("children", children)) if items]
    if len(head) + sum(len(r) + 2 for r in rest) <= 70:
        return f"_restore({', '.join([head, *rest])})"
    return "_restore(\n" + ",\n".join(" " * 12 + arg for arg in [head, *rest]) + ")"


def _literal(value: object) -> str | None:
    """Python source that evaluates to ``value`` (with torch imported), or None."""
    if value is None or type(value) in (bool, int, str, bytes):
        return repr(value)
    if type(value) is float:
        return repr(value) if math.isfinite(value) else f"float({str(value)!r})"
    if isinstance(value, torch.dtype):
        return str(value)
    if isinstance(value, torch.device):
        return f"torch.device({str(value)!r})"
    if type(value) in (tuple, list, set, frozenset):
        items = [_literal(v) for v in value]  # type: ignore[attr-defined]
        if any(i is None for i in items):
            return None
        if type(value) is tuple:
            return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
        if type(value) is list:
            return "[" + ", ".join(items) + "]"
        return f"{type(value).__name__}([{', '.join(items)}])"
    if type(value) is dict:
        pairs = [(_literal(k), _literal(v)) for k, v in value.items()]  # type: ignore[union-attr]
        if any(k is None or v is None for k, v in pairs):
            return None
        return "{" + ", ".join(f"{k}: {v}" for k, v in pairs) + "}"
    return None


def _check_python_source(net: CaffeNet, source: str, class_name: str, path: Path) -> None:
    """Run the generated source as a module and build its class on the meta device: its
    state_dict must have the net's keys, shapes and dtypes."""
    name = f"_caffe2torch_export_check_{id(source)}"
    module = types.ModuleType(name)
    module.__file__ = str(path)
    sys.modules[name] = module  # dataclasses and pickling look classes up there
    try:
        exec(compile(source, str(path), "exec"), module.__dict__)  # noqa: S102 - our own output
        with torch.device("meta"):
            built = getattr(module, class_name)()
    except Exception as exc:
        raise Caffe2TorchError(f"{path}: the generated module does not build: "
                               f"{type(exc).__name__}: {exc}") from exc
    finally:
        del sys.modules[name]
    want = {k: (tuple(v.shape), v.dtype) for k, v in net.state_dict().items()}
    got = {k: (tuple(v.shape), v.dtype) for k, v in built.state_dict().items()}
    if want != got:
        diff = sorted(set(want.items()) ^ set(got.items()))[:10]
        raise Caffe2TorchError(f"{path}: the generated module's state_dict differs from the "
                               f"net's (first differences: {diff})")


_FORMATS: dict[str, tuple[Callable[..., Path], bool]] = {
    ".pt": (export_state_dict, True),
    ".pth": (export_state_dict, True),
    ".safetensors": (export_safetensors, True),
    ".py": (export_python, False),
    ".onnx": (export_onnx, False),
    ".ts": (export_torchscript, False),
    ".torchscript": (export_torchscript, False),
    ".pt2": (export_program, False),
    ".caffemodel": (export_caffemodel, False),
}
