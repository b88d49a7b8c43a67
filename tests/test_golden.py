"""Exactness against REAL Caffe: every blob of the golden nets, without Caffe at test time.

Each ``tests/golden/nets/<net>.prototxt`` has a ``<net>.caffemodel`` (seeded random parameters)
and a ``<net>.npz`` (``input:<blob>`` fed to Caffe, ``blob:<name>`` every blob after Caffe's
forward pass), made by ``tests/golden/make_goldens.py`` with the Caffe built by
``../shared/tools/build-caffe.sh`` (its docstring says how to rerun it).

Every blob Caffe reported is requested from the converted net by name and must match within a
relative max error of 1e-4, and its inferred shape must equal Caffe's. Values that are not
ordinary numbers in Caffe's output (NaN, +-FLT_MAX from degenerate pooling windows; see
nets/pool_degenerate.prototxt) must be reproduced exactly, position by position.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from oracle import max_rel_error

import caffe2torch
from caffe2torch.layers.registry import get_converter

GOLDEN = Path(__file__).resolve().parent / "golden"
NETS = sorted((GOLDEN / "nets").glob("*.prototxt"))
REL = 1e-4
FLT_MAX = float(np.finfo(np.float32).max)


def load_params(net: str) -> dict[str, list[np.ndarray]]:
    """Parameter blobs after Caffe's forward pass (recorded for train_* nets only)."""
    params: dict[str, list[np.ndarray]] = {}
    with np.load(GOLDEN / f"{net}.npz") as archive:
        for key in archive.files:
            if key.startswith("param:"):
                _, layer, index = key.split(":")
                params.setdefault(layer, []).append((int(index), archive[key]))
    return {layer: [v for _, v in sorted(blobs, key=lambda t: t[0])]
            for layer, blobs in params.items()}


def load_fixture(net: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(inputs, expected blobs) of a golden net, in the order Caffe listed them."""
    with np.load(GOLDEN / f"{net}.npz") as archive:
        inputs = {k.removeprefix("input:"): archive[k] for k in archive.files
                  if k.startswith("input:")}
        blobs = {k.removeprefix("blob:"): archive[k] for k in archive.files
                 if k.startswith("blob:")}
    return inputs, blobs


def blob_mismatch(actual: np.ndarray, expected: np.ndarray) -> str | None:
    """Why ``actual`` is not Caffe's ``expected`` blob, or None when it is."""
    if actual.shape != expected.shape:
        return f"shape {actual.shape} != Caffe's {expected.shape}"
    special = np.isnan(expected) | (np.abs(expected) >= FLT_MAX)
    if special.any():
        if not np.array_equal(actual[special], expected[special], equal_nan=True):
            where = np.argwhere(special & ~((actual == expected) |
                                            (np.isnan(actual) & np.isnan(expected))))
            index = tuple(int(i) for i in where[0])
            return (f"{len(where)} of {int(special.sum())} NaN/FLT_MAX value(s) differ, "
                    f"first at {index}: got {actual[index]!r}, Caffe {expected[index]!r}")
        actual, expected = actual[~special], expected[~special]
    if not np.isfinite(actual).all():
        return f"{int((~np.isfinite(actual)).sum())} non-finite value(s) where Caffe has numbers"
    error = max_rel_error(actual, expected)
    if error > REL:
        diff = np.abs(actual.astype(np.float64) - expected)
        worst = int(np.argmax(diff))
        return (f"relative max error {error:.3g} > {REL:g} (worst: got {actual.flat[worst]:.6g}, "
                f"Caffe {expected.flat[worst]:.6g}; max |Caffe| "
                f"{float(np.abs(expected).max(initial=0.0)):.3g})")
    return None


def data_dependent_blobs(graph) -> set[str]:
    """Blobs whose size depends on input values: the tops of a ``data_dependent`` layer
    (Filter, DetectionOutput) and every blob computed from them. Their inferred shape is
    Caffe's at net set-up (Filter: an upper bound along axis 0; DetectionOutput: one row of
    the run-time rows), and the run-time blob is compared in full."""
    dependent: set[str] = set()
    for node in graph.layers:
        if node.role != "input" and (get_converter(node.type).data_dependent
                                     or dependent.intersection(node.bottoms)):
            dependent.update(node.tops)
    return {graph.blobs[b].name for b in dependent}


def shape_agrees(inferred, actual, bounded: bool) -> bool:
    """Equal shapes; for a data-dependent blob, equal but along one axis (the run-time size)."""
    if not bounded:
        return inferred == actual
    return len(inferred) == len(actual) and sum(a != b for a, b in zip(inferred, actual)) <= 1


@pytest.mark.parametrize("prototxt", NETS, ids=[p.stem for p in NETS])
def test_golden(prototxt: Path) -> None:
    inputs, expected = load_fixture(prototxt.stem)
    phase = "TRAIN" if prototxt.stem.startswith("train_") else "TEST"
    net = caffe2torch.build(prototxt, weights=GOLDEN / f"{prototxt.stem}.caffemodel",
                            phase=phase)
    assert net.training == (phase == "TRAIN")
    assert sorted(net.caffe.input_names) == sorted(inputs), "inputs differ from Caffe's"

    problems = []
    graph = net.caffe.graph
    missing = [name for name in expected if name not in net.caffe.blob_nodes]
    problems += [f"blob '{name}': not exposed by the converted net" for name in missing]
    extra = sorted(set(graph.latest) - set(expected))  # e.g. a layer Caffe's phase/level drops
    problems += [f"blob '{name}': the converted net has it, Caffe's has not" for name in extra]
    bounded = data_dependent_blobs(graph)
    for name, value in expected.items():
        if name in graph.latest and not shape_agrees(graph.blob(name).shape, value.shape,
                                                     name in bounded):
            problems.append(f"blob '{name}': inferred shape {graph.blob(name).shape} "
                            f"!= Caffe's {value.shape}")

    wanted = [name for name in expected if name not in missing]
    with torch.no_grad():
        got = net(**{k: torch.from_numpy(v) for k, v in inputs.items()}, outputs=wanted)
    for name in wanted:
        why = blob_mismatch(got[name].detach().cpu().numpy(), expected[name])
        if why:
            problems.append(f"blob '{name}': {why}")
    if phase == "TRAIN":  # one forward pass ran; the parameter blobs as Caffe left them
        params = load_params(prototxt.stem)
        assert params, f"{prototxt.stem}: no param: blobs recorded"
        for layer, _, blobs in caffe2torch.weights.net_blobs(net):
            for i, (ours, caffes) in enumerate(zip(blobs, params.get(layer, []), strict=True)):
                why = blob_mismatch(np.asarray(ours).reshape(caffes.shape), caffes)
                if why:
                    problems.append(f"param '{layer}' blob {i} after the pass: {why}")
    assert not problems, f"{prototxt.stem}: {len(problems)} blob(s) differ from Caffe:\n" + \
        "\n".join(f"  - {p}" for p in problems)


def test_every_net_has_its_fixture() -> None:
    """Each net has a caffemodel and an npz with inputs and blobs; no fixture lacks its net."""
    nets = {p.stem for p in NETS}
    assert len(nets) >= 15
    for net in sorted(nets):
        inputs, blobs = load_fixture(net)
        assert (GOLDEN / f"{net}.caffemodel").is_file(), net
        assert inputs and blobs, net
        assert set(inputs) <= set(blobs), f"{net}: inputs missing from the blobs"
    fixtures = {p.stem for pattern in ("*.npz", "*.caffemodel") for p in GOLDEN.glob(pattern)}
    assert fixtures == nets, f"fixtures without a net: {sorted(fixtures - nets)}"
    total = sum(p.stat().st_size for p in GOLDEN.iterdir() if p.is_file())
    assert total < 2 * 1024 * 1024, f"golden fixtures take {total} bytes"


def test_degenerate_pooling_fixture_shows_caffe_quirks() -> None:
    """The fixture really holds Caffe's degenerate values (guards against regenerating it away)."""
    _, blobs = load_fixture("pool_degenerate")
    assert (blobs["max_outside"][:, :, 3, :] == -FLT_MAX).all()      # window wholly outside
    assert (blobs["ave_outside"][:, :, 3, :] == 0).all()             # empty sum / negative size
    assert (blobs["max_zero_size"][:, :, 1, :] == -FLT_MAX).all()    # empty window at h = H
    assert np.isnan(blobs["ave_zero_size"][:, :, 1, :]).all()        # 0 / 0
    assert np.isfinite(blobs["ave_zero_size"][:, :, 0, :]).all()


REFUSED = sorted((GOLDEN / "refused").glob("*.prototxt"))


def _ours_pattern(prototxt: Path) -> str:
    first = prototxt.read_text().splitlines()[0]
    assert first.startswith("# ours: "), f"{prototxt.name}: first line must be '# ours: <regex>'"
    return first.removeprefix("# ours: ")


@pytest.mark.parametrize("prototxt", REFUSED, ids=[p.stem for p in REFUSED])
def test_caffe_refuses(prototxt: Path) -> None:
    """Nets real Caffe refuses (its failed CHECK is recorded in refused.json by make_goldens.py)
    are refused by us too, with our own error naming the layer and Caffe's rule."""
    import json
    import re

    recorded = json.loads((GOLDEN / "refused.json").read_text())
    assert prototxt.stem in recorded, f"{prototxt.stem}: no Caffe refusal recorded; rerun " \
        "make_goldens.py"
    with pytest.raises(caffe2torch.Caffe2TorchError) as info:
        caffe2torch.build(prototxt)
    assert re.search(_ours_pattern(prototxt), str(info.value), re.DOTALL), \
        f"our message:\n{info.value}\nCaffe's: {recorded[prototxt.stem]}"


def test_every_refused_net_is_recorded() -> None:
    import json

    recorded = json.loads((GOLDEN / "refused.json").read_text())
    assert sorted(recorded) == sorted(p.stem for p in REFUSED)
