"""Devices and dtypes: build(..., device=, dtype=), half precision on the CPU, clear errors.

Half precision is checked against float32 on every golden net (each blob within a few 1e-3 of
real Caffe's), and on the real open_nsfw weights with real photographs (top-1 agrees). CUDA and
MPS are not available where CI runs: their errors are checked here, their runs by
bench/gpu_check.py on a GPU machine.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from oracle import OPEN_NSFW, max_rel_error, require_shared
from PIL import Image
from test_golden import GOLDEN, NETS, load_fixture

import caffe2torch
from caffe2torch.devices import Placement, placement_of, resolve_placement
from caffe2torch.errors import DeviceError

FLT_MAX = float(np.finfo(np.float32).max)
HALF = {"bfloat16": torch.bfloat16, "float16": torch.float16}
TOLERANCE = {"bfloat16": 2e-2, "float16": 5e-3}  # of each blob, relative to its largest value
DATA_DEPENDENT = {"rcnn_proposal", "ssd_detection"}  # rows kept by thresholds and NMS
# float32 corners that half precision cannot hold: LRN sums over channels scaled up to 1e4
# (past float16's range; bfloat16 keeps 3 digits of a running sum).
FLOAT32_ONLY = {"lrn_running_sum"}
MEAN_BGR = np.array([104.0, 117.0, 123.0], dtype=np.float32)


@pytest.mark.parametrize("dtype", sorted(HALF))
@pytest.mark.parametrize("path", NETS, ids=lambda p: p.stem)
def test_golden_nets_in_half_precision(path, dtype):
    if path.stem in FLOAT32_ONLY:
        pytest.skip("a float32 range corner, not a half-precision case")
    inputs, blobs = load_fixture(path.stem)
    phase = "TRAIN" if path.stem.startswith("train_") else "TEST"
    net = caffe2torch.build(path, GOLDEN / f"{path.stem}.caffemodel", dtype=dtype, phase=phase)
    names = [b for b in blobs if b in net.caffe.blob_nodes]
    with torch.no_grad():
        out = net(**{k: torch.from_numpy(v).to(HALF[dtype]) for k, v in inputs.items()},
                  outputs=names)
    for name in names:
        actual, expected = out[name].float().numpy(), blobs[name]
        if path.stem in DATA_DEPENDENT:
            assert actual.shape[1:] == expected.shape[1:] or actual.shape[-1] == expected.shape[-1]
            assert np.isfinite(actual).all(), name
            continue
        assert actual.shape == expected.shape, name
        ordinary = np.isfinite(expected) & (np.abs(expected) < FLT_MAX)
        assert np.isfinite(actual[ordinary]).all(), name
        if ordinary.any():
            error = max_rel_error(actual[ordinary], expected[ordinary])
            assert error <= TOLERANCE[dtype], f"{path.stem} blob '{name}': {error:.3g}"


def _photographs() -> list[np.ndarray]:
    """Real photographs (matplotlib's sample images) as open_nsfw inputs: the portrait, three
    crops of it and the photograph of a package."""
    from matplotlib import cbook
    hopper = Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
    pack = Image.open(cbook.get_sample_data("Minduka_Present_Blue_Pack.png",
                                            asfileobj=False)).convert("RGB")
    w, h = hopper.size
    views = [hopper, hopper.crop((0, 0, w // 2, h // 2)), hopper.crop((w // 4, h // 3, w, h)),
             hopper.crop((w // 3, 0, w, h * 2 // 3)),
             pack]
    arrays = []
    for view in views:
        bgr = np.asarray(view.resize((224, 224), Image.BILINEAR), dtype=np.float32)[:, :, ::-1]
        arrays.append((bgr - MEAN_BGR).transpose(2, 0, 1))
    return arrays


@pytest.fixture(scope="module")
def open_nsfw():
    require_shared(OPEN_NSFW)
    prototxt, weights = OPEN_NSFW / "deploy.prototxt", OPEN_NSFW / "resnet_50_1by2_nsfw.caffemodel"
    x = torch.from_numpy(np.stack(_photographs()))
    net = caffe2torch.build(prototxt, weights)
    with torch.no_grad():
        reference = net(x, outputs=["prob", "fc_nsfw"])
    return prototxt, weights, x, reference


@pytest.mark.parametrize("dtype", sorted(HALF))
def test_open_nsfw_half_precision_agrees_with_float32(open_nsfw, dtype):
    prototxt, weights, x, reference = open_nsfw
    net = caffe2torch.build(prototxt, weights, dtype=dtype)
    assert placement_of(net) == Placement(torch.device("cpu"), HALF[dtype])
    with torch.no_grad():
        out = net(x.to(HALF[dtype]), outputs=["prob", "fc_nsfw"])
    assert out["prob"].dtype == HALF[dtype]
    top1 = out["prob"].float().argmax(1)
    assert torch.equal(top1, reference["prob"].argmax(1))
    assert (out["prob"].float() - reference["prob"]).abs().max() < 1e-2
    assert max_rel_error(out["fc_nsfw"].float().numpy(),
                         reference["fc_nsfw"].numpy()) < TOLERANCE[dtype]


def test_half_net_keeps_statistics_in_float32(open_nsfw):
    prototxt, weights, _, _ = open_nsfw
    net = caffe2torch.build(prototxt, weights, dtype="bf16")
    assert {p.dtype for p in net.parameters()} == {torch.bfloat16}
    assert {b.dtype for b in net.buffers()} == {torch.float32}  # BatchNorm's statistics
    plain = caffe2torch.build(prototxt, dtype=torch.float16)  # no weights: moved after init
    assert {p.dtype for p in plain.parameters()} == {torch.float16}


def test_device_and_dtype_names():
    assert resolve_placement() == Placement(torch.device("cpu"), torch.float32)
    assert resolve_placement("cpu", "half").dtype == torch.float16
    assert resolve_placement(torch.device("cpu"), torch.bfloat16).dtype == torch.bfloat16
    with pytest.raises(DeviceError, match="dtype 'int8': expected one of float32, float16"):
        resolve_placement("cpu", "int8")
    with pytest.raises(DeviceError, match="device 'gpu0': expected one of cpu, cuda"):
        resolve_placement("gpu0")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_missing_cuda_is_a_clear_error_before_any_work(tmp_path):
    missing = tmp_path / "no such net.prototxt"
    for device in ("cuda", "cuda:1"):
        with pytest.raises(DeviceError, match=f"device '{device}': CUDA is not available"):
            caffe2torch.build(missing, device=device)


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="an Apple GPU is present")
def test_missing_mps_is_a_clear_error():
    with pytest.raises(DeviceError, match="MPS .* is not available.*expected one of: cpu"):
        resolve_placement("mps", "float16")
