"""extract under torchrun on the CPU (gloo over the loopback), two processes: the same output
file as one process, value for value; a rank that dies midway leaves the finished shards, and
the same command run again finishes the job with the same result.

The photographs are crops of matplotlib's sample photographs (Grace Hopper's portrait, the
package), of different sizes, so decoding and resizing are real.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from oracle import ROOT
from PIL import Image

import caffe2torch
from caffe2torch.cli import main
from caffe2torch.research import read_features

NET = """name: "features"
layer { name: "data" type: "Input" top: "data"
  input_param { shape { dim: 1 dim: 3 dim: 40 dim: 36 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 8 kernel_size: 5 stride: 2 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "norm1" type: "LRN" bottom: "conv1" top: "norm1" lrn_param { local_size: 3 } }
layer { name: "pool1" type: "Pooling" bottom: "norm1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "fc7" type: "InnerProduct" bottom: "pool1" top: "fc7"
  inner_product_param { num_output: 16 } }
layer { name: "prob" type: "Softmax" bottom: "fc7" top: "prob" }
"""
COUNT = 14
#: a sitecustomize for the workers: rank 1 exits (as if killed) once its first shard is saved
DIES = """import os
if os.environ.get("RANK") == "1" and os.environ.get("CAFFE2TORCH_TEST_RANK_DIES"):
    import caffe2torch.research.extract as extract
    write = extract._write_atomic
    def dying_write(path, content):
        write(path, content)
        if path.name.startswith("shard-"):
            os._exit(17)
    extract._write_atomic = dying_write
"""


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """(folder of photographs, prototxt, caffemodel, hook folder)."""
    from matplotlib import cbook
    root = tmp_path_factory.mktemp("distributed")
    photos = root / "photos"
    (photos / "more").mkdir(parents=True)
    hopper = Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
    pack = Image.open(cbook.get_sample_data("Minduka_Present_Blue_Pack.png",
                                            asfileobj=False)).convert("RGB")
    for i in range(COUNT):
        source = pack if i % 5 == 4 else hopper
        w, h = source.size
        crop = source.crop((i * 17 % (w // 3), i * 11 % (h // 3), w - i * 7, h - i * 5))
        folder = photos / "more" if i % 3 == 0 else photos
        crop.resize((60 + i, 52 + 2 * i)).save(folder / f"photo{i:02d}.jpg", quality=90)
    proto = root / "features.prototxt"
    proto.write_text(NET)
    weights = root / "features.caffemodel"
    caffe2torch.write_random_caffemodel(proto, weights, seed=7)
    hooks = root / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(DIES)
    return photos, proto, weights, hooks


def _argv(job, output) -> list[str]:
    photos, proto, weights, _ = job
    return ["extract", str(proto), "-w", str(weights), "--images", str(photos), "--blobs",
            "fc7,pool1,prob", "-o", str(output), "--size", "40x36", "--mean", "104,117,123",
            "--scale", "0.017",
            "--batch-size", "2", "--checkpoint-every", "1", "--workers", "2"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(job, output, *, rank_dies: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(job[3]), str(ROOT)])}
    env.pop("CAFFE2TORCH_TEST_RANK_DIES", None)
    if rank_dies:
        env["CAFFE2TORCH_TEST_RANK_DIES"] = "1"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
               "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
               "-m", "caffe2torch", *_argv(job, output)]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=240, check=False)


@pytest.fixture(scope="module")
def single(job, tmp_path_factory):
    """The one-process run's features."""
    out = tmp_path_factory.mktemp("single") / "features.npz"
    assert main(_argv(job, out) + ["--no-progress"]) == 0
    return read_features(out)


def _assert_same(found, expected) -> None:
    assert found.files == expected.files and len(found) == COUNT
    assert found.files[0] == "more/photo00.jpg"
    assert found.failed == expected.failed == []
    for name in ("fc7", "pool1", "prob"):
        assert found.blobs[name].dtype == np.float32
        np.testing.assert_array_equal(found.blobs[name], expected.blobs[name])


def test_two_processes_write_what_one_process_writes(job, single, tmp_path):
    out = tmp_path / "features.npz"
    run = _torchrun(job, out)
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"{COUNT}/{COUNT}" in run.stderr  # rank 0's bar counts the whole job
    assert f"wrote {out}: {COUNT} image(s)" in run.stderr
    assert f"({COUNT} read in this run by 2 processes, 0 in an earlier one" in run.stderr
    assert not (tmp_path / "features.npz.partial").exists()
    _assert_same(read_features(out), single)


def test_a_rank_dies_and_the_job_is_finished_by_running_it_again(job, single, tmp_path):
    out = tmp_path / "features.safetensors"
    killed = _torchrun(job, out, rank_dies=True)
    assert killed.returncode != 0 and not out.exists(), killed.stderr[-3000:]
    partial = tmp_path / "features.safetensors.partial"
    shards = sorted(p.name for p in partial.glob("shard-*.npz"))
    assert "shard-000000-r1.npz" in shards and "shard-000001-r1.npz" not in shards
    assert not list(partial.glob("*.tmp"))

    again = _torchrun(job, out)
    assert again.returncode == 0, again.stderr[-3000:]
    saved = 2 * len(shards)  # every shard holds one batch of two photographs
    assert f"({COUNT - saved} read in this run by 2 processes, {saved} in an earlier one" \
        in again.stderr
    _assert_same(read_features(out), single)


def test_extract_in_bfloat16_on_the_cpu(job, single, tmp_path, capsys):
    out = tmp_path / "bf16.npz"
    assert main(_argv(job, out) + ["--no-progress", "--device", "cpu", "--dtype", "bfloat16"]) == 0
    found = read_features(out)
    assert found.files == single.files
    for name in ("fc7", "pool1", "prob"):
        assert found.blobs[name].dtype == np.float32
        error = np.abs(found.blobs[name] - single.blobs[name]).max()
        assert error <= 2e-2 * np.abs(single.blobs[name]).max(), name
    assert (found.blobs["prob"].argmax(1) == single.blobs["prob"].argmax(1)).mean() >= 0.9


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a GPU is present")
def test_extract_on_a_missing_gpu_fails_before_any_work(job, tmp_path, capsys):
    out = tmp_path / "gpu.npz"
    assert main(_argv(job, out) + ["--device", "cuda:1"]) == 1
    err = capsys.readouterr().err
    assert "caffe2torch: error: device 'cuda:1': CUDA is not available" in err
    assert "expected one of: cpu" in err and not (tmp_path / "gpu.npz.partial").exists()
