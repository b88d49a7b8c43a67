"""``.caffemodel`` (``.caffemodel.h5``: Caffe's HDF5): the net's parameters back to Caffe.
"""
from __future__ import annotations

from pathlib import Path

from caffe2torch.build import CaffeNet
from caffe2torch.export.registry import PathLike, register_exporter


@register_exporter(".caffemodel")
def export_caffemodel(net: CaffeNet, path: PathLike, *, format: str = "V2") -> Path:
    """The net's current parameters as a caffemodel for Caffe and OpenCV (with the prototxt the
    net was built from): fine-tune in PyTorch, deploy where Caffe runs."""
    from caffe2torch.api import save_caffemodel

    path = Path(path)
    save_caffemodel(net, path, format=format)
    return path
