"""Exceptions raised by caffe2torch: every one names the file or layer, the value and what was expected."""
from __future__ import annotations


class Caffe2TorchError(Exception):
    """Base class of every error caffe2torch raises on bad input."""


class PrototxtError(Caffe2TorchError):
    """A network definition that cannot be read or upgraded."""


class GraphError(Caffe2TorchError):
    """A network whose layers do not form a valid graph (lists every problem)."""


class ShapeError(Caffe2TorchError):
    """A layer whose parameters do not fit the shapes of its inputs."""


class UnsupportedLayerError(GraphError):
    """Layer types or parameter values that have no converter."""


class CaffemodelError(Caffe2TorchError):
    """A weights file that is truncated, corrupt or not a caffemodel."""


class WeightsError(Caffe2TorchError):
    """Weights that do not fit the network (lists every missing, unexpected or mis-shaped blob)."""


class DeviceError(Caffe2TorchError):
    """A device that is not available here, or a dtype that device cannot run."""


class NetSizeError(Caffe2TorchError):
    """A net whose parameters (or a tensor its build makes) cannot fit in the memory available."""
