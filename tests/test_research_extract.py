"""extract: 1,000 images, batched and threaded, interrupted (a hook and a real SIGINT), resumed
without recomputing, written as .npz and .safetensors keyed by file name."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from oracle import ROOT
from PIL import Image

import caffe2torch
import caffe2torch.research.extract as extract_module
from caffe2torch.cli import main
from caffe2torch.preprocess import Preprocessing
from caffe2torch.research import extract_features, read_features
from caffe2torch.research.extract import ExtractError, ExtractInterrupted

COUNT = 1000

NET = """name: "feat"
layer { name: "data" type: "Input" top: "data"
  input_param { shape { dim: 1 dim: 3 dim: 8 dim: 10 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "fc7" type: "InnerProduct" bottom: "pool1" top: "fc7"
  inner_product_param { num_output: 5 } }
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """1,000 small PNGs of different sizes (a third in a subfolder) and one unreadable file."""
    root = tmp_path_factory.mktemp("images")
    (root / "sub").mkdir()
    rng = np.random.default_rng(0)
    for i in range(COUNT):
        pixels = rng.integers(0, 256, size=(9 + i % 5, 11 + i % 3, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / ("sub" if i % 3 == 0 else ".") / f"img{i:04d}.png")
    (root / "broken.jpg").write_bytes(b"not a jpeg")
    return root


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    directory = tmp_path_factory.mktemp("net")
    proto = directory / "feat.prototxt"
    proto.write_text(NET)
    weights = directory / "feat.caffemodel"
    caffe2torch.write_random_caffemodel(proto, weights, seed=4)
    return proto, weights


PREP = Preprocessing(size=(8, 10), mean=[100.0, 110.0, 120.0], scale=0.02)


def _stop_after(batches: int):
    def hook(done: int, images: int) -> None:
        if done == batches:
            raise KeyboardInterrupt
    return hook


@pytest.fixture
def counted(monkeypatch):
    """How many images each run reads (patched loader)."""
    seen: list[str] = []
    original = extract_module._load_batch

    def load(names, prep, root):
        seen.extend(names)
        return original(names, prep, root)
    monkeypatch.setattr(extract_module, "_load_batch", load)
    return seen


def test_interrupted_run_resumes_without_recomputing(folder, model, tmp_path, counted, capsys):
    proto, weights = model
    net = caffe2torch.build(proto, weights)
    out = tmp_path / "feats.npz"
    kwargs = {"preprocessing": PREP, "batch_size": 32, "workers": 2, "checkpoint_every": 3,
              "progress": True}
    with pytest.raises(ExtractInterrupted) as stopped:
        extract_features(net, folder, ["fc7", "pool1"], out, on_batch=_stop_after(5), **kwargs)
    first = stopped.value.result
    assert first.interrupted and first.processed == 5 * 32 and first.total == COUNT + 1
    shards = sorted(p.name for p in (tmp_path / "feats.npz.partial").iterdir())
    assert shards == ["manifest.json", "shard-000000.npz", "shard-000001.npz"]  # 96 + 64
    assert not out.exists()
    assert f"160/{COUNT + 1}" in capsys.readouterr().err  # the progress bar, on stderr
    saved = set()
    for shard in (tmp_path / "feats.npz.partial").glob("shard-*.npz"):
        with np.load(shard) as data:
            saved.update(data["files"].tolist() + data["failed"][:, 0].tolist())
    assert len(saved) == 160 and "broken.jpg" in saved  # recorded as failed, not retried

    counted.clear()
    result = extract_features(net, folder, ["fc7", "pool1"], out, **kwargs)
    assert (result.resumed, result.processed) == (160, COUNT + 1 - 160)
    assert len(counted) == COUNT + 1 - 160 and not saved & set(counted)  # none read twice
    assert f"{COUNT + 1}/{COUNT + 1}" in capsys.readouterr().err
    assert not (tmp_path / "feats.npz.partial").exists()

    features = read_features(out)
    assert len(features) == COUNT and features.failed[0][0] == "broken.jpg"
    assert features.files == sorted(features.files) and "sub/img0003.png" in features.files
    assert features.blobs["fc7"].shape == (COUNT, 5)
    assert features.blobs["pool1"].shape == (COUNT, 4, 3, 4)
    for name in ("img0001.png", "sub/img0999.png", "img0500.png"):
        x = torch.from_numpy(PREP(folder / name)[None])
        with torch.no_grad():
            expected = net(x, outputs=["fc7"])["fc7"][0].numpy()
        np.testing.assert_allclose(features[name]["fc7"], expected, rtol=1e-5, atol=1e-6)
    raw = np.load(out)  # plain numpy reads it too
    assert raw["files"][0] == features.files[0] and raw["fc7"].dtype == np.float32


def test_resume_refuses_a_partial_run_made_with_other_settings(folder, model, tmp_path):
    proto, weights = model
    net = caffe2torch.build(proto, weights)
    out = tmp_path / "feats.safetensors"
    with pytest.raises(ExtractInterrupted):
        extract_features(net, folder, ["fc7"], out, preprocessing=PREP, batch_size=64,
                         on_batch=_stop_after(1))
    with pytest.raises(ExtractError, match="different blobs"):
        extract_features(net, folder, ["pool1"], out, preprocessing=PREP)
    other = PREP.replace(scale=1.0)
    with pytest.raises(ExtractError, match="different preprocessing"):
        extract_features(net, folder, ["fc7"], out, preprocessing=other)
    files = [f"img{i:04d}.png" for i in range(1, 300, 3)]
    result = extract_features(net, folder, ["fc7"], out, preprocessing=other, resume=False,
                              files=files)
    assert result.resumed == 0 and result.processed == 100
    from safetensors.numpy import load_file, safe_open
    assert load_file(str(out))["fc7"].shape == (100, 5)
    with safe_open(str(out), framework="np") as handle:
        assert handle.metadata()["format"] == "caffe2torch-features"
    assert read_features(out).files == files


def test_bad_requests_are_clear_errors(model, tmp_path, folder):
    proto, weights = model
    net = caffe2torch.build(proto, weights)
    with pytest.raises(ExtractError, match="no blob named \\['fc9'\\]"):
        extract_features(net, folder, ["fc9"], tmp_path / "x.npz")
    with pytest.raises(ExtractError, match="unknown output format"):
        extract_features(net, folder, ["fc7"], tmp_path / "x.h5")


def test_cli_ctrl_c_then_rerun_continues(folder, model, tmp_path, capsys):
    """A real SIGINT to the command line, then the same command again in-process."""
    proto, weights = model
    out = tmp_path / "cli.npz"
    argv = ["extract", str(proto), "-w", str(weights), "--images", str(folder), "--blobs",
            "fc7", "-o", str(out), "--batch-size", "1", "--checkpoint-every", "1",
            "--workers", "1", "--size", "8x10", "--mean", "100,110,120", "--scale", "0.02"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-m", "caffe2torch", *argv], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    partial = tmp_path / "cli.npz.partial"
    deadline = time.monotonic() + 120
    while not list(partial.glob("shard-00000[3-9].npz")) and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "interrupted;" in err and "run the same command again to continue" in err
    assert "Traceback" not in err and not out.exists()
    done = len(list(partial.glob("shard-*.npz")))  # one image per shard
    assert 4 <= done < COUNT

    rerun = argv + ["--no-progress", "--batch-size", "50", "--checkpoint-every", "100"]
    assert main(rerun) == 0  # batching may change between runs
    err = capsys.readouterr().err
    assert f"{COUNT - done + 1} read in this run, {done} in an earlier one, 1 unreadable" in err
    assert len(read_features(out)) == COUNT
