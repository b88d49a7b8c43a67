"""caffe2torch: Caffe networks (prototxt + caffemodel) as PyTorch modules, exactly, without Caffe.

    import caffe2torch
    net = caffe2torch.build("deploy.prototxt", weights="net.caffemodel")
    y = net(x)
    blobs = net(x, outputs=["fc7", "pool5"])
"""
from __future__ import annotations

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
    GraphError,
    PrototxtError,
    ShapeError,
    UnsupportedLayerError,
    WeightsError,
)
from caffe2torch.io.caffemodel import read_caffemodel, write_caffemodel
from caffe2torch.layers.registry import Converter, register_converter, registered_types
from caffe2torch.passes import optimize

__version__ = "0.1.0"

__all__ = [
    "Caffe2TorchError", "CaffeNet", "CaffemodelError", "Converter", "GraphError",
    "PrototxtError", "ShapeError", "UnsupportedLayerError", "WeightsError", "build",
    "load_definition", "load_graph", "load_weights", "optimize", "read_caffemodel",
    "register_converter", "registered_types", "save_caffemodel", "write_caffemodel",
    "write_random_caffemodel",
]
