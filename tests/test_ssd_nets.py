"""The SSD nets of ../shared/corpus end to end against REAL Caffe (tests/golden/ssd_nets/).

The random caffemodel is rebuilt here exactly as tests/golden/make_ssd_goldens.py wrote it for
the oracle (its sha256 is checked, so a drift in the weight generator shows up as such); the
heads, the priors and every output must match Caffe's within 1e-4 relative, and the
detection rows exactly in number and order (label and image columns equal).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from oracle import max_rel_error, require_shared

import caffe2torch

GOLDEN = Path(__file__).resolve().parent / "golden"
_spec = importlib.util.spec_from_file_location("make_ssd_goldens",
                                               GOLDEN / "make_ssd_goldens.py")
ssd = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ssd)


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ssd_weights")


@pytest.mark.parametrize("net", ssd.NETS)
def test_ssd_net_matches_caffe(net, weights_dir):
    prototxt = require_shared(ssd.CORPUS / f"{net}.prototxt")
    weights = weights_dir / f"{net}.caffemodel"
    assert ssd.write_weights(net, weights) == ssd.WEIGHTS_SHA256[net], \
        "the random weights differ from those the fixture was made with"
    with np.load(GOLDEN / "ssd_nets" / f"{net}.npz") as archive:
        expected = {k.removeprefix("blob:"): archive[k] for k in archive.files
                    if k.startswith("blob:")}
        summary = {k.removeprefix("input:"): archive[k] for k in archive.files
                   if k.startswith("input:")}
    model = caffe2torch.build(prototxt, weights=weights)
    inputs = {}
    for name in model.caffe.input_names:
        value = ssd.net_input(model.caffe.graph.blob(name).shape)
        assert value.sum(dtype=np.float64) == pytest.approx(summary[name][0], rel=1e-9)
        inputs[name] = torch.from_numpy(value)
    assert set(model.caffe.output_names) <= set(expected)
    with torch.no_grad():
        got = model(**inputs, outputs=list(expected))
    for name, want in expected.items():
        have = got[name].numpy()
        assert have.shape == want.shape, f"{net}: {name} {have.shape} != Caffe's {want.shape}"
        if name == "detection_out":
            np.testing.assert_array_equal(have[..., :2], want[..., :2], err_msg=net)
        assert max_rel_error(have, want) <= 1e-4, f"{net}: {name}"
    rows = expected["detection_out"][0, 0]
    assert len(rows) > 1 and (rows[:, 1] > 0).all(), "the fixture has no detections"


def test_ssd_fixtures_stay_small():
    total = sum(p.stat().st_size for p in (GOLDEN / "ssd_nets").glob("*.npz"))
    assert {p.stem for p in (GOLDEN / "ssd_nets").glob("*.npz")} == set(ssd.NETS)
    assert total < 1024 * 1024, f"SSD fixtures take {total} bytes"
