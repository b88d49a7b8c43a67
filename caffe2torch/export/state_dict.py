"""State-dict files: ``.pt`` / ``.pth`` (``torch.save`` of plain tensors) and ``.safetensors``,
keyed by Caffe layer names or torchvision's VGG names.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch

from caffe2torch.build import CaffeNet
from caffe2torch.errors import Caffe2TorchError
from caffe2torch.export.registry import PathLike, check_naming, register_exporter
from caffe2torch.export.vgg_names import torchvision_vgg_names


def named_state_dict(net: CaffeNet, naming: str = "caffe") -> dict[str, torch.Tensor]:
    """The state_dict as plain, detached tensors, keyed by Caffe layer or torchvision names."""
    check_naming(naming)
    tensors = {key: value.detach() for key, value in net.state_dict().items()}
    if naming == "caffe":
        return tensors
    prefixes = torchvision_vgg_names(net)
    renamed = {}
    for key, value in tensors.items():
        module, _, attribute = key.rpartition(".")
        renamed[f"{prefixes[module]}.{attribute}"] = value
    return renamed


@register_exporter(".pt", ".pth", takes_naming=True)
def export_state_dict(net: CaffeNet, path: PathLike, *, naming: str = "caffe") -> Path:
    """A ``torch.save`` of the state_dict (a dict of tensors; no pickled classes)."""
    path = Path(path)
    tensors = {key: _compact(value) for key, value in named_state_dict(net, naming).items()}
    torch.save(tensors, path)
    return path


@register_exporter(".safetensors", takes_naming=True)
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
