"""Prototxt text for small test nets: an Input layer and layers wired by name."""
from __future__ import annotations

from collections.abc import Sequence


def net_text(layers: str, shape: Sequence[int], inputs: Sequence[str] = ("data",),
             name: str = "net") -> str:
    """A V2 net: one Input layer giving every name in ``inputs`` the shape ``shape``, then
    ``layers``."""
    dims = " ".join(f"dim: {d}" for d in shape)
    tops = " ".join(f'top: "{top}"' for top in inputs)
    shapes = " ".join(f"shape {{ {dims} }}" for _ in inputs)
    return (f'name: "{name}"\nlayer {{ name: "input" type: "Input" {tops} '
            f"input_param {{ {shapes} }} }}\n{layers}\n")


def layer(name: str, kind: str, params: str = "", bottoms=("data",), tops=None) -> str:
    """One layer; its top is its own name unless ``tops`` says otherwise."""
    tops = (name,) if tops is None else tops
    wires = " ".join([f'bottom: "{b}"' for b in bottoms] + [f'top: "{t}"' for t in tops])
    return f'layer {{ name: "{name}" type: "{kind}" {wires} {params} }}'
