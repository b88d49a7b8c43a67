"""Write a converted net to disk; the format follows the file extension."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from caffe2torch.build import CaffeNet
from caffe2torch.errors import Caffe2TorchError


def export(net: CaffeNet, path: str | os.PathLike[str], *, naming: str = "caffe") -> Path:
    path = Path(path)
    if path.suffix == ".pt":
        torch.save(net.state_dict(), path)
        return path
    raise Caffe2TorchError(f"{path}: unknown output format '{path.suffix}'; expected .pt")
