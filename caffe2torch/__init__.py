"""caffe2torch: Caffe networks (prototxt + caffemodel) as PyTorch modules, exactly, without Caffe.

    import caffe2torch
    net = caffe2torch.build("deploy.prototxt", weights="net.caffemodel")
    y = net(x)
    blobs = net(x, outputs=["fc7", "pool5"])

The names below are imported on first use (PEP 562), so ``import caffe2torch`` -- and the
command line's ``--help`` -- do not import torch.
"""
from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_HOMES = {
    "build": "caffe2torch.api", "load_definition": "caffe2torch.api",
    "load_graph": "caffe2torch.api", "load_weights": "caffe2torch.api",
    "save_caffemodel": "caffe2torch.api", "write_random_caffemodel": "caffe2torch.api",
    "CaffeNet": "caffe2torch.build",
    "Caffe2TorchError": "caffe2torch.errors", "CaffemodelError": "caffe2torch.errors",
    "DeviceError": "caffe2torch.errors", "GraphError": "caffe2torch.errors",
    "NetSizeError": "caffe2torch.errors", "PrototxtError": "caffe2torch.errors",
    "ShapeError": "caffe2torch.errors", "UnsupportedLayerError": "caffe2torch.errors",
    "WeightsError": "caffe2torch.errors",
    "read_caffemodel": "caffe2torch.io.caffemodel", "write_caffemodel": "caffe2torch.io.caffemodel",
    "Converter": "caffe2torch.layers.registry",
    "register_converter": "caffe2torch.layers.registry",
    "registered_types": "caffe2torch.layers.registry",
    "optimize": "caffe2torch.passes",
}

__all__ = [
    "Caffe2TorchError", "CaffeNet", "CaffemodelError", "Converter", "DeviceError", "GraphError",
    "NetSizeError", "PrototxtError", "ShapeError", "UnsupportedLayerError", "WeightsError",
    "build",
    "load_definition", "load_graph", "load_weights", "optimize", "read_caffemodel",
    "register_converter",
    "registered_types", "save_caffemodel", "write_caffemodel", "write_random_caffemodel",
]

if TYPE_CHECKING:
    from caffe2torch.api import (
        build,
        load_definition,
        load_graph,
        load_weights,
        save_caffemodel,
        write_random_caffemodel,
    )
    from caffe2torch.build import CaffeNet
    from caffe2torch.errors import (
        Caffe2TorchError,
        CaffemodelError,
        DeviceError,
        GraphError,
        NetSizeError,
        PrototxtError,
        ShapeError,
        UnsupportedLayerError,
        WeightsError,
    )
    from caffe2torch.io.caffemodel import read_caffemodel, write_caffemodel
    from caffe2torch.layers.registry import Converter, register_converter, registered_types
    from caffe2torch.passes import optimize


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'caffe2torch' has no attribute '{name}'")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))


class _Package(types.ModuleType):
    """``caffe2torch.build`` is the function even after the submodule of that name is imported
    (importing a submodule sets it as an attribute of its package)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _HOMES and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
