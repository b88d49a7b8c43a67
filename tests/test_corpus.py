"""Every real-world prototxt in ../shared/corpus: builds, infers Caffe's shapes, matches OpenCV.

One test per file. Nets of BVLC layers get random weights from our writer and must equal OpenCV's
Caffe importer within 1e-4 relative max error on every top of every layer OpenCV returns (the
outputs included), with exactly our shapes (OPENCV_LAYOUT lists the blobs where OpenCV's layout
differs). We build the file itself, train/val nets too (TEST phase, data tops given as inputs);
OpenCV reads the file itself, or, for a net with data layers, its text with those layers and the
loss/accuracy layers cut by a plain protobuf text edit (``opencv_deploy_file``), never our own
deploy rewrite, so a mistake there cannot be shared by both sides. The SSD-family nets (CAFFE_CHECKED)
build and run here and match real Caffe in their own tests; nets with other layers outside BVLC
must fail once, naming every unsupported layer.
"""
from __future__ import annotations

import csv
import math
import re
from collections import Counter

import numpy as np
import pytest
import torch
from google.protobuf import text_format
from oracle import CORPUS, SHARED, assert_close, opencv_layer_tops, require_shared

import caffe2torch
from caffe2torch.errors import ShapeError, UnsupportedLayerError
from caffe2torch.proto import caffe_pb2

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
# Files OpenCV's Caffe importer cannot read at all (file -> why); checked to still fail.
OPENCV_UNREADABLE: dict[str, str] = {}
# Blobs whose layout OpenCV reports otherwise than Caffe ((file, layer) -> why): there the
# element counts must agree and the values are compared in Caffe's shape; everywhere else
# OpenCV's shape must equal ours exactly.
OPENCV_LAYOUT: dict[tuple[str, str], str] = {}
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
    shapes = _run_inputs(caffe2torch.load_graph(path, input_shapes=INPUTS.get(stem)), stem)
    weights = tmp_path / f"{stem}.caffemodel"
    caffe2torch.write_random_caffemodel(path, weights, seed=11, input_shapes=shapes)
    # Ours: the original file (train/val nets too), its TEST phase, data tops given as inputs.
    net = caffe2torch.build(path, weights=weights, input_shapes=shapes, phase="TEST")
    graph = net.caffe.graph
    rng = np.random.default_rng(5)
    inputs = {name: rng.standard_normal(shape, dtype=np.float32)
              for name, shape in shapes.items()}
    with torch.no_grad():
        ours = net.layer_outputs(**{k: torch.from_numpy(v) for k, v in inputs.items()})
    # OpenCV's: the original file, or its text with data and loss layers cut (not our rewrite).
    source = opencv_deploy_file(path, shapes, tmp_path)
    if stem in OPENCV_UNREADABLE:
        cv2 = pytest.importorskip("cv2")
        with pytest.raises(cv2.error):
            cv2.dnn.readNetFromCaffe(str(source), str(weights))
        return
    theirs = opencv_every_layer(source, weights, inputs, graph)
    compared = {graph.layers[layer].tops[index] for layer, index in theirs}
    assert {graph.latest[name] for name in net.caffe.output_names} <= compared, file_name
    for (layer, index), expected in theirs.items():
        node = graph.layers[layer]
        blob = graph.blobs[node.tops[index]]
        what = f"{file_name}: layer '{node.name}' top {index} ('{blob.name}')"
        actual = ours[node.name][index].numpy()
        assert actual.shape == blob.shape, what
        if (stem, node.name) in OPENCV_LAYOUT:
            assert expected.size == actual.size, f"{what}: {expected.shape} vs {actual.shape}"
            expected = expected.reshape(actual.shape)
        else:
            assert expected.shape == actual.shape, f"{what}: OpenCV {expected.shape}"
        assert_close(actual, expected, 1e-4, what)


def opencv_every_layer(source, weights, inputs, graph) -> dict[tuple[int, int], np.ndarray]:
    """Every top OpenCV returns of the layers of ``graph``, by (position in ``graph.layers``,
    top index).

    OpenCV names a layer after its top when it splits it (a Convolution with several
    bottom/top pairs) or when the layer name is unknown to it; a layer whose name the file uses
    twice (shared weights) is renamed by OpenCV's own rules and is not compared by itself, nor
    a layer OpenCV knows by neither name. OpenCV keeps only a layer's first top when a later
    layer is asked for too (the other tops' memory is reused), so each layer with several tops
    is asked for in a forward pass of its own, which ends at it.
    """
    cv2 = pytest.importorskip("cv2")
    known = set(cv2.dnn.readNetFromCaffe(str(source), str(weights)).getLayerNames())
    names = Counter(node.name for node in graph.layers)
    asked: dict[tuple[int, int], tuple[str, int]] = {}
    for position, node in enumerate(graph.layers):
        if node.role == "input" or names[node.name] > 1:
            continue
        for index, top in enumerate(node.tops):
            if node.name in known:
                asked[position, index] = (node.name, index)
            elif graph.blobs[top].name in known:
                asked[position, index] = (graph.blobs[top].name, 0)
    multi = {name for name, index in asked.values() if index > 0}
    single = sorted({name for name, _ in asked.values()} - multi)
    tops = opencv_layer_tops(source, weights, inputs, single) if single else {}
    for name in sorted(multi):
        tops.update(opencv_layer_tops(source, weights, inputs, [name]))
    return {key: tops[name][index] for key, (name, index) in asked.items()}


# Layer types (V2 names; V1 enum and V0 names compared case- and underscore-free) that a deploy
# file has no place for: the data layers (their tops become declared inputs) and the TEST
# phase's loss and accuracy layers.
_DATA_TYPES = {"data", "imagedata", "images", "hdf5data", "memorydata", "windowdata",
               "dummydata", "annotateddata", "videodata", "input"}


def _is_data(kind: str, bottoms) -> bool:
    kind = kind.lower().replace("_", "")
    return kind in _DATA_TYPES or (kind == "python" and not bottoms)


def _is_loss(kind: str) -> bool:
    kind = kind.lower().replace("_", "")
    return kind.endswith("loss") or kind == "accuracy"


def _test_phase(layer) -> bool:
    """The layer's include/exclude rules, read for the TEST phase by phase alone."""
    if any(rule.HasField("phase") and rule.phase == caffe_pb2.TEST for rule in layer.exclude):
        return False
    return not layer.include or any(not rule.HasField("phase") or rule.phase == caffe_pb2.TEST
                                    for rule in layer.include)


def opencv_deploy_file(path, shapes: dict[str, tuple[int, ...]], tmp_path):
    """The file itself when it has no data layer, else its text with the data, loss and
    accuracy layers and the TRAIN-only layers cut and an ``input:`` header for the data tops:
    a plain text edit of the raw NetParameter (protobuf's text_format), independent of
    caffe2torch's graph and its deploy rewrite."""
    net = text_format.Parse(path.read_text(), caffe_pb2.NetParameter())
    if net.layer:
        entries, field_name = net.layer, "layer"
        kinds = [(layer.type, layer) for layer in entries]
    else:
        entries, field_name = net.layers, "layers"
        kinds = [(layer.layer.type if layer.HasField("layer")
                  else caffe_pb2.V1LayerParameter.LayerType.Name(layer.type), layer)
                 for layer in entries]
    if not any(_is_data(kind, layer.bottom) and kind != "Input" for kind, layer in kinds):
        return path
    kept, data_tops = [], []
    for kind, layer in kinds:
        if not _test_phase(layer):
            continue
        if _is_data(kind, layer.bottom):
            data_tops += [t for t in layer.top if t not in data_tops]
        if _is_data(kind, layer.bottom) or _is_loss(kind):
            continue
        kept.append(layer)
    used = {b for layer in kept for b in layer.bottom}
    deploy = caffe_pb2.NetParameter()
    deploy.CopyFrom(net)
    deploy.ClearField(field_name)
    getattr(deploy, field_name).extend(kept)
    for top in data_tops:
        if top not in used:
            continue
        deploy.input.append(top)
        if field_name == "layers" and kept and kept[0].HasField("layer"):  # V0 takes input_dim
            deploy.input_dim.extend(shapes[top])
        else:
            deploy.input_shape.add(dim=shapes[top])
    out = tmp_path / f"{path.stem}.opencv.prototxt"
    out.write_text(text_format.MessageToString(deploy))
    return out


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


def _check_declared_shapes(path, row, stem: str) -> None:
    """At the file's own input shape the outputs have the shapes Caffe infers (manifest)."""
    if ASSUMED_SHAPES.search(row["features/edge_cases"]) or stem in INPUTS:
        return
    graph = caffe2torch.load_graph(path)
    for name, shape in _expected_outputs(row).items():
        assert graph.blob(name).shape == shape, f"{name}: {graph.blob(name).shape} != {shape}"
    assert all(math.prod(graph.blobs[b].shape) > 0 for b in graph.outputs)

