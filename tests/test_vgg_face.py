"""The flagship: VGG-Face from the zoo, its manifest, and a V1 caffemodel against OpenCV."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import caffe2torch
from caffe2torch.summary import summarize
from oracle import CORPUS, ROOT, assert_close, opencv_layers, require_shared

ZOO = ROOT / "model_zoo" / "vgg_face"
PROTOTXT = ZOO / "deploy.prototxt"


def _layer_signature(path: Path) -> list[tuple]:
    graph = caffe2torch.load_graph(path)
    return [(n.name, n.type, tuple(graph.blobs[b].name for b in n.bottoms),
             tuple(graph.blobs[t].name for t in n.tops),
             tuple(graph.blobs[t].shape for t in n.tops),
             n.param.convolution_param.SerializeToString(),
             n.param.pooling_param.SerializeToString(),
             n.param.inner_product_param.SerializeToString()) for n in graph.layers]


def test_manifest_num_params_recomputed_from_prototxt():
    manifest = json.loads((ZOO / "manifest.json").read_text())
    graph = caffe2torch.load_graph(PROTOTXT)
    assert sum(row.params for row in summarize(graph)) == manifest["num_params"] == 145_002_878
    assert manifest["preprocessing"]["mean"] == [93.5940, 104.7624, 129.1863]
    assert manifest["preprocessing"]["channel_order"] == "BGR"
    assert manifest["input"]["shape"] == [1, 3, 224, 224]


def test_zoo_prototxt_is_v1_and_builds_the_corpus_graph():
    assert caffe2torch.load_definition(PROTOTXT).format == "V1"
    original = require_shared(CORPUS / "vgg_face_deploy_v1.prototxt")
    assert _layer_signature(PROTOTXT) == _layer_signature(original)


@pytest.fixture(scope="module")
def vgg_face_v1(tmp_path_factory):
    """A random-weight VGG-Face caffemodel in the original V1 layout (legacy 4-D blob dims)."""
    path = tmp_path_factory.mktemp("vgg_face") / "VGG_FACE_random.caffemodel"
    caffe2torch.write_random_caffemodel(PROTOTXT, path, seed=7, format="V1")
    return path


def test_caffemodel_is_v1_with_legacy_dims(vgg_face_v1):
    model = caffe2torch.read_caffemodel(vgg_face_v1)
    assert model.format == "V1"
    fc8 = model["fc8"]
    assert all(b.legacy_dims for b in fc8.blobs)
    assert tuple(fc8.blobs[0].shape) == (1, 1, 2622, 4096)
    assert tuple(fc8.blobs[1].shape) == (1, 1, 1, 2622)


def test_fc7_and_prob_equal_opencv(vgg_face_v1):
    net = caffe2torch.build(PROTOTXT, weights=vgg_face_v1)
    x = (np.random.default_rng(3).standard_normal((1, 3, 224, 224)) * 60).astype(np.float32)
    with torch.no_grad():
        ours = net(torch.from_numpy(x), outputs=["fc7", "prob", "pool5"])
        prob = net(torch.from_numpy(x))
    # OpenCV names a layer's output by the layer: fc7 after its in-place ReLU is relu7's.
    theirs = opencv_layers(PROTOTXT, vgg_face_v1, {"data": x}, ["relu7", "prob", "pool5"])
    assert_close(ours["fc7"].numpy(), theirs["relu7"], 1e-4, "fc7")
    assert_close(ours["prob"].numpy(), theirs["prob"], 1e-4, "prob")
    assert_close(ours["pool5"].numpy(), theirs["pool5"], 1e-4, "pool5")
    assert torch.equal(prob, ours["prob"])
    assert float(ours["fc7"].min()) >= 0.0  # fc7 is reported after relu7, as Caffe does


def test_other_batch_size_works(vgg_face_v1):
    net = caffe2torch.build(PROTOTXT, weights=vgg_face_v1)
    x = torch.from_numpy(np.random.default_rng(4).standard_normal((3, 3, 224, 224)).astype(np.float32))
    with torch.no_grad():
        batch = net(x)
        single = net(x[1:2])
    assert batch.shape == (3, 2622)
    assert_close(batch[1:2].numpy(), single.numpy(), 1e-5, "batch row")
