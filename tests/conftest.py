"""Shared fixtures: seeded RNG, temporary nets."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
torch.set_num_threads(2)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def write_net(tmp_path):
    """Write prototxt text to a file in tmp_path and return its path."""
    def write(text: str, name: str = "net.prototxt") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path
    return write
