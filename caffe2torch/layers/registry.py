"""The converter registry: one converter per Caffe layer type string.

A converter owns everything about its type: the shape rule (Caffe's formulas), the
``nn.Module`` it builds, the shapes of the Caffe parameter blobs it expects, and how those blobs
move into and out of the module. Users register their own with :func:`register_converter`.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar, TypeVar

import numpy as np
import torch
from torch import nn

from caffe2torch.errors import ShapeError
from caffe2torch.io.caffemodel import release_pages
from caffe2torch.io.textblocks import close_field
from caffe2torch.proto import caffe_pb2

if TYPE_CHECKING:
    from caffe2torch.ir.graph import LayerNode

Shape = tuple[int, ...]
C = TypeVar("C", bound=type["Converter"])


class Converter:
    """Base class of a layer converter; subclasses set ``caffe_type`` and override what they need.

    Modules built by a converter take the layer's bottoms as positional tensors and return one
    tensor per top (a tuple when there are several). ``caffe_blobs`` on a module names its
    parameters/buffers in Caffe blob order, which the default load/dump use.
    """

    caffe_type: ClassVar[str] = ""
    #: Parameter values or forms this converter does not reproduce (shown in the support table).
    limits: ClassVar[str] = ""
    #: True where a top's size depends on input values (Filter): output_shapes gives Caffe's
    #: shape at net set-up, an upper bound along axis 0 of the run-time size.
    data_dependent: ClassVar[bool] = False
    #: False where the module's forward is data-dependent Python (NMS) that torch.jit.trace and
    #: torch.export cannot capture: ONNX / TorchScript / .pt2 exports refuse the net, naming it.
    traceable: ClassVar[bool] = True
    #: Why a converter is not traceable (shown in the export's error).
    trace_limit: ClassVar[str] = ""
    #: Where the layer type comes from: "" for BVLC Caffe, else the fork (and its repository),
    #: e.g. "SSD (weiliu89/caffe)"; shown in the support table.
    origin: ClassVar[str] = ""
    #: The LayerParameter field holding this type's parameters, where the support table cannot
    #: derive it from the type name ("" = derive; None = the type takes no parameters).
    param_field: ClassVar[str | None] = ""
    #: Fields the schema does not define that this converter reads from ``layer.extra``
    #: (a custom layer's ``mish_param``, or ``"convolution_param.my_field"``); any other such
    #: field on a layer of this type makes the build fail naming it.
    param_blocks: ClassVar[tuple[str, ...]] = ()
    #: Forks that compute another result from the same parameters, which a prototxt cannot tell
    #: apart: variant name -> what it is. The caller picks one per layer type or layer name
    #: (``build(..., variants={"PriorBox": "faceboxes"})``); the converter reads
    #: ``layer.variant``.
    variants: ClassVar[dict[str, str]] = {}

    def output_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        """Caffe's shape rule: the shape of every top, from the bottom shapes."""
        raise NotImplementedError

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> nn.Module:
        """The module computing the layer (parameters initialised, not yet loaded)."""
        raise NotImplementedError

    def blob_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        """Shapes of the parameter blobs Caffe stores for this layer, in order."""
        return []

    def blob_forms(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[list[Shape]]:
        """Every form the layer's stored blobs may take, preferred first (default: only
        ``blob_shapes``). Where forks store one layer type differently (BN), binding takes the
        first form the file's blobs fit and hands ``load_blobs`` the blobs in that form."""
        return [self.blob_shapes(layer, inputs)]

    def unsupported(self, layer: LayerNode) -> list[str]:
        """Parameter values this converter cannot reproduce exactly (each names field and value)."""
        return []

    def accepted(self, layer: LayerNode) -> list[str]:
        """What Caffe would refuse in this layer but the converter builds deliberately, each
        saying why (recorded in the graph's notes)."""
        return []

    def shares_data(self, layer: LayerNode) -> list[tuple[int, int]]:
        """``(top, bottom)`` index pairs where Caffe's top shares the bottom's memory
        (``Blob::ShareData``: Split, Reshape, Flatten...). The graph then treats them as one
        storage: an in-place write to either gives both a new version."""
        return []

    def load_blobs(self, module: nn.Module, blobs: Sequence[np.ndarray]) -> None:
        """Copy Caffe blobs (already checked against ``blob_shapes``) into the module."""
        with torch.no_grad():
            for tensor, blob in zip(caffe_tensors(module), blobs, strict=True):
                copy_blob(tensor, blob)

    def dump_blobs(self, module: nn.Module, layer: LayerNode,
                   inputs: Sequence[Shape]) -> list[np.ndarray]:
        """The module's parameters as Caffe blobs of ``blob_shapes`` (for writing a caffemodel)."""
        shapes = self.blob_shapes(layer, inputs)
        return [t.detach().to("cpu", torch.float32).numpy().astype(np.float32).reshape(shape)
                for t, shape in zip(caffe_tensors(module), shapes, strict=True)]

    def random_blobs(self, layer: LayerNode, inputs: Sequence[Shape],
                     rng: np.random.Generator) -> list[np.ndarray]:
        """Random but well-scaled blobs, for tests and random-weight models."""
        return [_scaled_normal(shape, rng) for shape in self.blob_shapes(layer, inputs)]

    def flops(self, layer: LayerNode, inputs: Sequence[Shape], outputs: Sequence[Shape]) -> int:
        """Multiply-accumulate count of one forward pass (0 where negligible)."""
        return 0


def _scaled_normal(shape: Shape, rng: np.random.Generator) -> np.ndarray:
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    std = 1.0 / np.sqrt(max(fan_in, 1)) if len(shape) > 1 else 0.1
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(std)


_COPY_STEP = 1 << 22  # values per step of copy_blob: 16 MiB of float32


def copy_blob(tensor: torch.Tensor, blob: np.ndarray) -> None:
    """Copy a checked blob into a parameter or buffer, in steps that each release the file pages
    they have copied (io.caffemodel.release_pages): loading a model from a mapped caffemodel then
    needs about its size in memory, not twice that."""
    array = np.asarray(blob)
    source = blob_tensor(array).reshape(-1)
    with torch.no_grad():
        if not tensor.is_contiguous() or source.numel() <= _COPY_STEP:
            tensor.copy_(source.reshape(tensor.shape))
            release_pages(array)
            return
        target, flat = tensor.view(-1), array.reshape(-1)
        for start in range(0, source.numel(), _COPY_STEP):
            stop = start + _COPY_STEP
            target[start:stop].copy_(source[start:stop])
            release_pages(flat[start:stop])


def blob_tensor(blob: np.ndarray) -> torch.Tensor:
    """A tensor viewing a (possibly read-only, memory-mapped) blob without copying it.

    The view is only ever read (copied into a parameter), so torch's warning about non-writable
    arrays does not apply.
    """
    array = np.ascontiguousarray(blob)
    if array.dtype not in (np.float32, np.float64, np.float16):
        array = array.astype(np.float32)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


def caffe_tensors(module: nn.Module) -> list[torch.Tensor]:
    """The module's parameters/buffers named by its ``caffe_blobs`` (dotted names reach into
    submodules), in Caffe order."""
    found = []
    for name in getattr(module, "caffe_blobs", ()):
        owner, _, attr = name.rpartition(".")
        found.append(getattr(module.get_submodule(owner) if owner else module, attr))
    return found


_REGISTRY: dict[str, Converter] = {}


def register_converter(cls: C | None = None, *, replace: bool = False):
    """Register a converter class (usable as a decorator) under its ``caffe_type``.

    A type registered twice is an error unless ``replace=True`` (to override a built-in).
    """
    def add(converter_cls: C) -> C:
        type_name = converter_cls.caffe_type
        if not type_name:
            raise ValueError(f"{converter_cls.__name__} has no caffe_type")
        if type_name in _REGISTRY and not replace:
            raise ValueError(f"a converter for Caffe type '{type_name}' is already registered "
                             f"({type(_REGISTRY[type_name]).__name__}); pass replace=True")
        _REGISTRY[type_name] = converter_cls()
        return converter_cls
    return add if cls is None else add(cls)


def unregister_converter(type_name: str) -> None:
    _REGISTRY.pop(type_name, None)


def get_converter(type_name: str) -> Converter:
    _ensure_builtins()
    return _REGISTRY[type_name]


def is_supported(type_name: str) -> bool:
    _ensure_builtins()
    return type_name in _REGISTRY


def shared_data(layer: LayerNode) -> list[tuple[int, int]]:
    """The layer's ``(top, bottom)`` pairs that share memory in Caffe (none when unregistered)."""
    return get_converter(layer.type).shares_data(layer) if is_supported(layer.type) else []


def registered_types() -> list[str]:
    _ensure_builtins()
    return sorted(_REGISTRY)


def registered_converters() -> dict[str, Converter]:
    _ensure_builtins()
    return dict(sorted(_REGISTRY.items()))


def _ensure_builtins() -> None:
    import caffe2torch.layers  # noqa: F401  (registers the built-in converters on import)


def parameter_problems(layer: LayerNode) -> list[str]:
    """What the layer's converter cannot reproduce: its ``unsupported`` values and every field
    the schema lacks that the converter does not declare in ``param_blocks``."""
    converter = get_converter(layer.type)
    problems = [f"layer '{layer.name}' ({layer.type}): {why}"
                for why in converter.unsupported(layer)]
    read = converter.param_blocks
    for entry in layer.param.unparsed:
        if not any(entry.path == name or entry.path.startswith(name + ".") for name in read):
            problems.append(f"layer '{layer.name}' ({layer.type}): parameter block "
                            f"'{entry.path}' (line {entry.line}) is in no schema here and the "
                            f"{layer.type} converter does not read it{_did_you_mean(entry.path)}")
    return problems


def _did_you_mean(path: str) -> str:
    close = close_field(path, caffe_pb2.LayerParameter.DESCRIPTOR)
    if close is None:
        return ""
    return f" (did you mean '{'.'.join(path.split('.')[:-1] + [close])}'?)"


def shape_error(layer: LayerNode, message: str) -> ShapeError:
    """A ShapeError that names the layer and its type."""
    return ShapeError(f"layer '{layer.name}' ({layer.type}): {message}")
