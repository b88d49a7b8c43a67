"""Every real-world prototxt in ../shared/corpus: builds, infers Caffe's shapes, matches OpenCV.

One test per file. Nets of BVLC layers get random weights from our writer and must equal OpenCV's
Caffe importer within 1e-4 relative max error on every output; the SSD-family nets (CAFFE_CHECKED)
build and run here and match real Caffe in their own tests; nets with other layers outside BVLC
must fail once, naming every unsupported layer.
"""
from __future__ import annotations

import csv
import math
import re

import numpy as np
import pytest
import torch
from oracle import CORPUS, SHARED, assert_close, opencv_blobs, require_shared

import caffe2torch
from caffe2torch.errors import ShapeError, UnsupportedLayerError
from caffe2torch.ir.deploy import deploy_prototxt

MANIFEST = SHARED / "corpus" / "manifest.tsv"

# Inputs the files leave open (data layers, placeholder dims), and smaller sizes that keep the
# heavy fully-convolutional nets fast; every other input runs at its declared shape with batch 1.
INPUTS = {
    "alexnet_places365_train_val": {"data": (1, 3, 227, 227)},
    "bvlc_caffenet_imagenet_val_v0_legacy": {"data": (1, 3, 227, 227)},
    "bvlc_cifar10_full_sigmoid_bn_train_test": {"data": (2, 3, 32, 32)},
    "bvlc_lenet_mnist_train_test": {"data": (3, 1, 28, 28)},
    "bvlc_reference_caffenet_train_val": {"data": (1, 3, 227, 227)},
    "nin_imagenet_train_val_v1": {"data": (1, 3, 224, 224)},
    "squeezenet_v1.1_train_val": {"data": (1, 3, 227, 227)},
    "fcn32s_nyud_color_d_test": {"color": (1, 3, 70, 90), "depth": (1, 1, 70, 90)},
    "fcn32s_voc_val": {"data": (1, 3, 70, 90)},
    "fcn_alexnet_voc_val": {"data": (1, 3, 70, 90)},
    "fcn8s_voc_deploy": {"data": (1, 3, 70, 90)},
    "opencv_test_reshape_and_slice_routines": {"input": (2, 3, 4, 5)},
    "openpose_coco_pose_deploy_linevec": {"image": (1, 3, 80, 96)},
    "openpose_face_pose_deploy": {"image": (1, 3, 80, 72)},
    "openpose_hand_pose_deploy": {"image": (1, 3, 72, 80)},
    "openpose_mpi_faster_4_stages_deploy": {"image": (1, 3, 80, 96)},
    "colorization_deploy_v2": {"data_l": (1, 1, 96, 80)},
    "bvlc_mnist_siamese_deploy": {"data": (3, 1, 28, 28)},
}
# Fork nets that convert and are checked against real Caffe elsewhere (OpenCV's DetectionOutput
# is not Caffe's): here they build, infer Caffe's shapes and run; file -> where they are checked.
CAFFE_CHECKED = {
    "mobilenet_ssd_voc_deploy": "tests/test_ssd_nets.py",
    "mobilenet_ssd_deploy_bn": "tests/test_ssd_nets.py",
    "opencv_res10_ssd_face_detector_deploy": "tests/test_ssd_nets.py",
    "faceboxes_deploy": "tests/test_layers_ssd.py (with variants={'PriorBox': 'faceboxes'})",
}
# Files only an estimate in the manifest describes (placeholder input dims).
ASSUMED_SHAPES = re.compile(r"ASSUMED")


def _manifest() -> dict[str, dict[str, str]]:
    if not MANIFEST.exists():
        return {}
    with MANIFEST.open(newline="") as handle:
        return {row["file_name"]: row for row in csv.DictReader(handle, delimiter="\t")}


ROWS = _manifest()
FILES = sorted(ROWS) or ["<corpus missing>"]


def _custom_types(row: dict[str, str]) -> list[str]:
    kind = row["standard_or_custom"]
    return kind.split(":", 1)[1].strip().split(",") if kind.startswith("CUSTOM") else []


def _expected_outputs(row: dict[str, str]) -> dict[str, tuple[int, ...]]:
    found = {}
    for part in row["inferred_output_shape(best-effort)"].split(","):
        name, _, dims = part.partition("=")
        if dims and "?" not in dims:
            found[name.strip()] = tuple(int(d) for d in dims.split("x"))
    return found


def _run_inputs(graph, stem: str) -> dict[str, tuple[int, ...]]:
    """Declared shapes, with batch 1 where a batch of large inputs would only cost time."""
    shapes = dict(INPUTS.get(stem, {}))
    for blob_id in graph.inputs:
        blob = graph.blobs[blob_id]
        large = math.prod(blob.shape) > 1_000_000
        shapes.setdefault(blob.name, (1, *blob.shape[1:]) if large else blob.shape)
    return shapes


@pytest.mark.parametrize("file_name", FILES)
def test_corpus_file(file_name, tmp_path):
    require_shared(MANIFEST)
    row, path, stem = ROWS[file_name], CORPUS / file_name, file_name.removesuffix(".prototxt")
    if stem in CAFFE_CHECKED:
        _check_fork_net(path, stem, tmp_path)
        return
    custom = _custom_types(row)
    if custom:
        with pytest.raises(UnsupportedLayerError) as err:
            caffe2torch.build(path)
        for type_name in custom:
            assert f"'{type_name}'" in str(err.value)
        return
    _check_declared_shapes(path, row, stem)
    graph = caffe2torch.load_graph(path, input_shapes=INPUTS.get(stem))
    shapes = _run_inputs(graph, stem)
    deploy = tmp_path / f"{stem}.deploy.prototxt"
    run_graph = caffe2torch.load_graph(path, input_shapes=shapes)
    deploy.write_text(deploy_prototxt(run_graph))
    weights = tmp_path / f"{stem}.caffemodel"
    caffe2torch.write_random_caffemodel(deploy, weights, seed=11)
    net = caffe2torch.build(deploy, weights=weights)
    rng = np.random.default_rng(5)
    inputs = {name: rng.standard_normal(shape, dtype=np.float32)
              for name, shape in shapes.items()}
    outputs = net.caffe.output_names
    with torch.no_grad():
        ours = net(**{k: torch.from_numpy(v) for k, v in inputs.items()}, outputs=outputs)
    producers = {name: _producer(run_graph, name) for name in outputs}
    source = path if not _needs_deploy_file(graph) else deploy
    theirs = opencv_blobs(source, weights, inputs, producers)
    for name in outputs:
        expected = theirs[name]
        if expected.size == ours[name].numel():  # OpenCV drops trailing 1-sized axes
            expected = expected.reshape(ours[name].shape)
        assert_close(ours[name].numpy(), expected, 1e-4, f"{file_name}: {name}")
    for name, value in ours.items():
        assert tuple(value.shape) == run_graph.blob(name).shape, name


def _check_fork_net(path, stem: str, tmp_path) -> None:
    """An SSD-family net: builds (FaceBoxes with its PriorBox variant, and fails without it)
    and gives rows of 7 values for random weights."""
    variants = {}
    if stem == "faceboxes_deploy":
        with pytest.raises(ShapeError, match="--variant PriorBox=faceboxes"):
            caffe2torch.load_graph(path)
        variants = {"PriorBox": "faceboxes"}
    graph = caffe2torch.load_graph(path, variants=variants)
    assert graph.blob("detection_out").shape == (1, 1, 1, 7)  # Caffe's set-up shape
    weights = tmp_path / f"{stem}.caffemodel"
    caffe2torch.write_random_caffemodel(path, weights, seed=11, variants=variants)
    net = caffe2torch.build(path, weights=weights, variants=variants)
    shape = graph.blobs[graph.inputs[0]].shape
    with torch.no_grad():
        rows = net(torch.from_numpy(np.random.default_rng(5).standard_normal(
            shape, dtype=np.float32)))
    assert rows.shape[:2] == (1, 1) and rows.shape[3] == 7 and rows.shape[2] >= 1


def _needs_deploy_file(graph) -> bool:
    """OpenCV reads deploy files; train/val nets with data layers go through our deploy form."""
    return any(n.role == "input" and n.type != "Input" for n in graph.layers)


def _producer(graph, blob_name: str) -> tuple[str, int]:
    blob = graph.blob(blob_name)
    node = graph.layers[blob.producer]
    return node.name, node.tops.index(blob.id)


def _check_declared_shapes(path, row, stem: str) -> None:
    """At the file's own input shape the outputs have the shapes Caffe infers (manifest)."""
    if ASSUMED_SHAPES.search(row["features/edge_cases"]) or stem in INPUTS:
        return
    graph = caffe2torch.load_graph(path)
    for name, shape in _expected_outputs(row).items():
        assert graph.blob(name).shape == shape, f"{name}: {graph.blob(name).shape} != {shape}"
    assert all(math.prod(graph.blobs[b].shape) > 0 for b in graph.outputs)

