"""Oracles shared by the tests: OpenCV's Caffe importer, comparison helpers, shared/ paths."""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CORPUS = SHARED / "corpus" / "prototxt"
OPEN_NSFW = SHARED / "models" / "open_nsfw"


def require_converters(types, what: str = "") -> None:
    """Skip (elsewhere) or fail (under CI=true) when a converter the test needs is not
    registered: on CI every converter the suite names must exist."""
    from caffe2torch.layers.registry import is_supported
    missing = sorted({t for t in types if not is_supported(t)})
    if not missing:
        return
    message = f"{what + ': ' if what else ''}no converter registered for {missing}"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def require_shared(path: Path = SHARED) -> Path:
    """The shared test data; a failure under CI (CI=true), a skip elsewhere, when it is missing."""
    if path.exists():
        return path
    message = f"shared test data {path} is missing"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def opencv_layers(prototxt: Path, caffemodel: Path, inputs: Mapping[str, np.ndarray],
                  layers: Sequence[str],
                  aliases: Mapping[str, str] | None = None) -> dict[str, np.ndarray]:
    """Outputs of the named layers (first top each) from OpenCV's Caffe importer, fusion off."""
    tops = opencv_layer_tops(prototxt, caffemodel, inputs, layers, aliases)
    return {name: outs[0] for name, outs in tops.items()}


def opencv_layer_tops(prototxt: Path, caffemodel: Path, inputs: Mapping[str, np.ndarray],
                      layers: Sequence[str],
                      aliases: Mapping[str, str] | None = None) -> dict[str, list[np.ndarray]]:
    """Every top of each named layer from OpenCV's Caffe importer, fusion off.

    OpenCV renames some layers after their top blob; ``aliases`` maps a layer name to the name
    to ask OpenCV for when the layer name is unknown to it.
    """
    cv2 = pytest.importorskip("cv2")
    net = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    known = set(net.getLayerNames())
    asked = [name if name in known else (aliases or {}).get(name, name) for name in layers]
    net.enableFusion(False)
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    for name, value in inputs.items():
        net.setInput(np.ascontiguousarray(value, dtype=np.float32), name)
    outs = net.forwardAndRetrieve(asked)
    return {name: [np.asarray(top) for top in tops] for name, tops in zip(layers, outs)}


def max_rel_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |a - e| / max(max |e|, tiny): the relative max error used across the tests."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"shape {actual.shape} != expected {expected.shape}"
    scale = max(float(np.abs(expected).max(initial=0.0)), 1e-30)
    return float(np.abs(actual - expected).max(initial=0.0)) / scale


def assert_close(actual, expected, rel: float = 1e-4, what: str = "") -> None:
    error = max_rel_error(np.asarray(actual), np.asarray(expected))
    assert error <= rel, f"{what}: relative max error {error:.3g} > {rel:g}"


