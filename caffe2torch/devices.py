"""Where a converted net runs: the device and dtype of ``build(..., device=, dtype=)``.

:func:`resolve_placement` checks, before any work, that the device exists and can run the dtype
(a tiny convolution, product, pooling and softmax in it), and raises :class:`DeviceError`
otherwise. :func:`allocate` gives a module built on the meta device its tensors directly on the
target device in the target dtype, so weight binding copies each caffemodel blob there once;
:func:`place` moves an already built module. Modules that compute in float32 inside
(:mod:`caffe2torch.modules.precision`) keep float32 tensors in a half-precision net.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from caffe2torch.errors import DeviceError
from caffe2torch.modules.precision import float_tensors, keeps_float32

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
          "float64": torch.float64}
_ALIASES = {"fp32": "float32", "float": "float32", "fp16": "float16", "half": "float16",
            "bf16": "bfloat16", "fp64": "float64", "double": "float64"}
DEVICE_CHOICES = "cpu, cuda, cuda:N, mps"


@dataclass(frozen=True)
class Placement:
    device: torch.device
    dtype: torch.dtype

    def __str__(self) -> str:
        return f"{self.device} {str(self.dtype).removeprefix('torch.')}"


CPU_FLOAT32 = Placement(torch.device("cpu"), torch.float32)


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """``"float32"`` / ``"float16"`` / ``"bfloat16"`` (or fp32, fp16, half, bf16) or a torch
    dtype; ``None`` is float32."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise DeviceError(f"dtype {dtype}: expected one of {', '.join(DTYPES)}")
        return dtype
    name = str(dtype).lower().removeprefix("torch.")
    name = _ALIASES.get(name, name)
    if name not in DTYPES:
        raise DeviceError(f"dtype '{dtype}': expected one of {', '.join(DTYPES)}")
    return DTYPES[name]


def parse_device(device: str | torch.device | int | None) -> torch.device:
    """A device that exists here: ``cpu``, ``cuda`` (the current GPU), ``cuda:N`` or ``mps``."""
    if device is None:
        return torch.device("cpu")
    try:
        found = torch.device(device)
    except (RuntimeError, TypeError):
        raise DeviceError(f"device '{device}': expected one of {DEVICE_CHOICES}") from None
    if found.type == "cuda":
        return _cuda_device(found)
    if found.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise DeviceError(f"device '{device}': MPS (Apple GPU) is not available with this "
                              f"torch {torch.__version__} on this machine; expected one of: "
                              f"{_available()}")
        return found
    if found.type != "cpu":
        try:
            torch.empty(1, device=found)
        except (RuntimeError, AssertionError) as err:
            raise DeviceError(f"device '{device}' cannot be used: {err}; expected one of: "
                              f"{_available()}") from None
    return found


def _cuda_device(found: torch.device) -> torch.device:
    if not torch.cuda.is_available():
        why = ("this torch is built without CUDA" if torch.version.cuda is None
               else f"this torch (CUDA {torch.version.cuda}) sees no GPU")
        raise DeviceError(f"device '{found}': CUDA is not available ({why}); expected one of: "
                          f"{_available()}")
    count = torch.cuda.device_count()
    index = torch.cuda.current_device() if found.index is None else found.index
    if not 0 <= index < count:
        raise DeviceError(f"device '{found}': no such GPU; expected cuda:0 .. cuda:{count - 1}")
    return torch.device("cuda", index)


def _available() -> str:
    found = ["cpu"]
    if torch.cuda.is_available():
        found += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if hasattr(torch.backends, "mps") and torch.backends.mps.is_available():
        found.append("mps")
    return ", ".join(found)


def resolve_placement(device: str | torch.device | int | None = None,
                      dtype: str | torch.dtype | None = None) -> Placement:
    """Check ``device`` and ``dtype`` (a device that exists and runs the dtype) and return
    them; raises :class:`DeviceError` naming what is missing."""
    placement = Placement(parse_device(device), parse_dtype(dtype))
    problem = _cannot_run(placement.device, placement.dtype)
    if problem:
        raise DeviceError(f"dtype {str(placement.dtype).removeprefix('torch.')} on "
                          f"{placement.device}: {problem}; use another --dtype (float32 runs "
                          "everywhere) or device")
    return placement


@functools.cache
def _cannot_run(device: torch.device, dtype: torch.dtype) -> str | None:
    """Why torch cannot run a net's basic ops in ``dtype`` on ``device`` (None when it can)."""
    if device.type == "mps" and dtype == torch.float64:
        return "MPS has no float64"
    if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        return f"GPU {torch.cuda.get_device_name(device)} has no bfloat16 support"
    try:
        x = torch.ones(1, 2, 4, 4, device=device, dtype=dtype)
        y = F.conv2d(x, torch.ones(3, 2, 3, 3, device=device, dtype=dtype), padding=1)
        y = F.max_pool2d(y, 2) + F.avg_pool2d(y, 2, divisor_override=1)
        y = F.linear(y.flatten(1), torch.ones(5, y[0].numel(), device=device, dtype=dtype))
        torch.softmax(y, 1).sum().item()
    except (RuntimeError, NotImplementedError, TypeError) as err:
        return f"this torch {torch.__version__} cannot run convolutions in it ({err})"
    return None


def allocate(module: nn.Module, placement: Placement) -> nn.Module:
    """Give a (meta) layer module uninitialised tensors on the target device and dtype."""
    dtype = float_tensors(module, placement.dtype)
    return module._apply(lambda t: torch.empty_like(
        t, device=placement.device, dtype=dtype if t.is_floating_point() else t.dtype))


def place(module: nn.Module, placement: Placement) -> nn.Module:
    """Move a built layer module's tensors to the target device and dtype."""
    dtype = float_tensors(module, placement.dtype)
    return module._apply(lambda t: t.to(
        placement.device, dtype if t.is_floating_point() else t.dtype))


def placement_of(net: nn.Module) -> Placement:
    """Where ``net`` runs: the device and dtype of its tensors (those of float32-inside modules
    only for the device), else what ``build`` recorded, else the CPU in float32."""
    device = None
    for module in net.modules():
        own = [*module.parameters(recurse=False), *module.buffers(recurse=False)]
        floating = [t for t in own if t.is_floating_point() and not t.is_meta]
        if floating and not keeps_float32(module):
            return Placement(floating[0].device, floating[0].dtype)
        device = device or (floating[0].device if floating else None)
    recorded = getattr(net, "meta", {}).get("caffe2torch.placement")
    if recorded is not None:
        return recorded
    return Placement(device, torch.float32) if device is not None else CPU_FLOAT32


def as_input(net: nn.Module, array) -> torch.Tensor:
    """An input array (numpy or tensor) on ``net``'s device, floating values in its dtype."""
    placement = placement_of(net)
    tensor = torch.as_tensor(array)
    dtype = placement.dtype if tensor.is_floating_point() else tensor.dtype
    return tensor.to(placement.device, dtype)


def as_numpy(tensor: torch.Tensor):
    """A result on the host as numpy: half precision widened to float32 (numpy has no
    bfloat16)."""
    tensor = tensor.detach()
    if tensor.dtype in (torch.float16, torch.bfloat16):
        tensor = tensor.to(torch.float32)
    return tensor.cpu().numpy()
