"""The exporter registry: one writer per file extension, as converters are one per layer type.

A format module registers its writer with ``@register_exporter(".ext", ...)``; :func:`export`
picks the writer from the output path and :func:`check_output` checks the path before any work.
Adding a format is one module in this package (imported by its ``__init__``) and one test.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from caffe2torch.errors import Caffe2TorchError

if TYPE_CHECKING:
    from caffe2torch.build import CaffeNet

NAMINGS = ("caffe", "torchvision")
PathLike = str | os.PathLike[str]
log = logging.getLogger("caffe2torch")
W = TypeVar("W", bound=Callable[..., Path])


@dataclass(frozen=True)
class Exporter:
    """A registered writer: ``writer(net, path, **options)``; ``takes_naming`` when it writes a
    state_dict and so accepts ``naming=``."""

    suffix: str
    writer: Callable[..., Path]
    takes_naming: bool = False


EXPORTERS: dict[str, Exporter] = {}


def register_exporter(*suffixes: str, takes_naming: bool = False, replace: bool = False):
    """Register the decorated writer for each file extension in ``suffixes`` (".onnx").
    An extension registered twice is an error unless ``replace=True``."""
    def add(writer: W) -> W:
        for suffix in suffixes:
            if not suffix.startswith(".") or suffix != suffix.lower():
                raise ValueError(f"exporter suffix '{suffix}'; expected a lower-case '.ext'")
            if suffix in EXPORTERS and not replace:
                raise ValueError(f"an exporter for '{suffix}' is already registered "
                                 f"({EXPORTERS[suffix].writer.__name__}); pass replace=True")
            EXPORTERS[suffix] = Exporter(suffix, writer, takes_naming)
        return writer
    return add


def export(net: CaffeNet, path: PathLike, *, naming: str = "caffe") -> Path:
    """Write ``net`` in the format of ``path``'s extension (see :mod:`caffe2torch.export`)."""
    path = Path(path)
    exporter = EXPORTERS[check_output(path, naming)]
    path.parent.mkdir(parents=True, exist_ok=True)
    if exporter.takes_naming:
        return exporter.writer(net, path, naming=naming)
    return exporter.writer(net, path)


def check_output(path: PathLike, naming: str = "caffe") -> str:
    """Check, before any work, that ``path`` names a known format that takes ``naming`` and can
    be written (its nearest existing parent is a folder); returns the format's suffix."""
    path = Path(path)
    suffix = format_suffix(path)
    if suffix not in EXPORTERS:
        known = ", ".join(sorted(EXPORTERS))
        raise Caffe2TorchError(f"{path}: unknown output format '{path.suffix}'; expected one of "
                               f"{known} (or .caffemodel.h5)")
    check_naming(naming)
    if naming != "caffe" and not EXPORTERS[suffix].takes_naming:
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


def format_suffix(path: Path) -> str:
    """The registry key of ``path``: its lower-case extension (``.caffemodel.h5`` is
    ``.caffemodel``, whose writer picks HDF5 from the name)."""
    name = path.name.lower()
    if name.endswith(".caffemodel.h5"):
        return ".caffemodel"
    return path.suffix.lower()


def check_naming(naming: str) -> None:
    if naming not in NAMINGS:
        raise Caffe2TorchError(f"naming '{naming}'; expected one of {', '.join(NAMINGS)}")
