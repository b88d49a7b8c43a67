"""A real pretrained Caffe model: Yahoo's open_nsfw (ResNet-50-1by2) against OpenCV.

Real weights (../shared/models/open_nsfw), a real photograph (matplotlib's sample portrait of
Grace Hopper) and random inputs; ``prob`` within 1e-5, the pooled features and logits too.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import caffe2torch
from oracle import OPEN_NSFW, assert_close, opencv_layers, require_shared

MEAN_BGR = np.array([104.0, 117.0, 123.0], dtype=np.float32)


def _photograph() -> np.ndarray:
    from matplotlib import cbook
    path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    image = Image.open(path).convert("RGB").resize((224, 224), Image.BILINEAR)
    bgr = np.asarray(image, dtype=np.float32)[:, :, ::-1]
    return (bgr - MEAN_BGR).transpose(2, 0, 1)[None].copy()


@pytest.fixture(scope="module")
def model():
    require_shared(OPEN_NSFW)
    prototxt = OPEN_NSFW / "deploy.prototxt"
    weights = OPEN_NSFW / "resnet_50_1by2_nsfw.caffemodel"
    return prototxt, weights, caffe2torch.build(prototxt, weights=weights)


@pytest.mark.parametrize("source", ["photograph", "random"])
def test_prob_and_features_equal_opencv(model, source):
    prototxt, weights, net = model
    if source == "photograph":
        x = _photograph()
    else:
        x = (np.random.default_rng(42).standard_normal((2, 3, 224, 224)) * 50).astype(np.float32)
    with torch.no_grad():
        ours = net(torch.from_numpy(x), outputs=["prob", "fc_nsfw", "pool"])
    theirs = opencv_layers(prototxt, weights, {"data": x}, ["prob", "fc_nsfw", "pool"])
    assert_close(ours["prob"].numpy(), theirs["prob"].reshape(ours["prob"].shape), 1e-5, "prob")
    assert_close(ours["fc_nsfw"].numpy(), theirs["fc_nsfw"].reshape(ours["fc_nsfw"].shape),
                 1e-5, "fc_nsfw")
    assert_close(ours["pool"].numpy(), theirs["pool"], 1e-5, "pool")
    assert np.allclose(ours["prob"].sum(dim=1).numpy(), 1.0, atol=1e-6)


def test_every_layer_has_its_weights(model):
    _, weights, net = model
    report = net.caffe.weights_report
    assert report.ok and len(report.loaded) == 53 + 53 + 53 + 1
    in_torch = sum(p.numel() for p in net.state_dict().values() if p.dtype.is_floating_point)
    # Each BatchNorm's third blob (the scale factor) is its ``factor`` buffer.
    assert caffe2torch.read_caffemodel(weights).num_params == in_torch


def test_portrait_is_classified_safe(model):
    _, _, net = model
    with torch.no_grad():
        prob = net(torch.from_numpy(_photograph()))
    assert prob.shape == (1, 2) and float(prob[0, 0]) > 0.5  # [sfw, nsfw]
