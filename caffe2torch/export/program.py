"""``.pt2``: ``torch.export.export`` + ``torch.export.save``, batch axis dynamic.
"""
from __future__ import annotations

from pathlib import Path

import torch

from caffe2torch.build import CaffeNet
from caffe2torch.export.registry import PathLike, register_exporter
from caffe2torch.export.traced import _exported_program, check_traceable


@register_exporter(".pt2")
def export_program(net: CaffeNet, path: PathLike, *, dynamic_batch: bool = True) -> Path:
    """``torch.export.export`` of the plain forward, saved with ``torch.export.save``;
    ``torch.export.load(path).module()`` runs it. The batch axis is dynamic unless the net ties
    it to a constant (a Reshape with an explicit batch size...): then the program keeps the
    declared input shapes, and a warning on the ``caffe2torch`` logger says why."""
    path = Path(path)
    check_traceable(net, ".pt2")
    torch.export.save(_exported_program(net, dynamic_batch)[0], str(path))
    return path
