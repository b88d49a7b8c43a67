"""The research commands: info, graph and verify (library functions and CLI), and --help."""
from __future__ import annotations

import itertools
import json

import matplotlib.cbook
import numpy as np
import pytest
from oracle import CORPUS, OPEN_NSFW, ROOT, require_converters, require_shared
from PIL import Image

import caffe2torch
from caffe2torch.cli import main
from caffe2torch.research import describe_net, draw_graph, graph_to_dot, verify
from caffe2torch.research.graphing import display_graph, layout
from caffe2torch.research.netinfo import describe_graph
from caffe2torch.weights import parameter_layers

HOPPER = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)

SMALL = """name: "small"
input: "data"
input_shape { dim: 2 dim: 3 dim: 20 dim: 18 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 5 kernel_size: 3 pad: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "split1" type: "Split" bottom: "conv1" top: "a" top: "b" }
layer { name: "pool1" type: "Pooling" bottom: "a" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "b" top: "conv2"
  convolution_param { num_output: 5 kernel_size: 3 pad: 1 stride: 2 } }
layer { name: "sum" type: "Eltwise" bottom: "pool1" bottom: "conv2" top: "sum" }
layer { name: "fc" type: "InnerProduct" bottom: "sum" top: "fc"
  inner_product_param { num_output: 7 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""

UNSUPPORTED = """name: "unsup"
layer { name: "data" type: "Input" top: "data"
  input_param { shape { dim: 1 dim: 3 dim: 16 dim: 16 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "prior" type: "AnchorGrid" bottom: "conv1" bottom: "data" top: "prior" }
layer { name: "py" type: "Python" bottom: "conv1" top: "py"
  python_param { module: "m" layer: "L" } }
layer { name: "fc" type: "InnerProduct" bottom: "py" top: "fc"
  inner_product_param { num_output: 3 } }
layer { name: "pool" type: "Pooling" bottom: "conv1" top: "pool"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
"""


@pytest.fixture
def small(write_net, tmp_path):
    proto = write_net(SMALL, "small.prototxt")
    weights = tmp_path / "small.caffemodel"
    caffe2torch.write_random_caffemodel(proto, weights, seed=1)
    return proto, weights


# ----------------------------------------------------------------------------- info


def test_info_table_inputs_outputs_and_weights(small, capsys):
    proto, weights = small
    assert main(["info", str(proto), "-w", str(weights)]) == 0
    out = capsys.readouterr().out
    assert "inputs:  data 2x3x20x18" in out and "outputs: prob 2x7" in out
    assert "split1  Split         conv1 -> a, b        2x5x20x18, 2x5x20x18" in out
    assert "MACs" in out and "total: 9 layers, 3,527 parameters" in out
    assert "3 of 3 bind" in out
    assert "fc     InnerProduct  7x450, 7  -> binds" in out


def test_info_lists_every_unsupported_layer_and_keeps_the_shapes_it_can(write_net, capsys):
    proto = write_net(UNSUPPORTED)
    assert main(["info", str(proto)]) == 0
    out = capsys.readouterr().out
    assert "2 problem(s)" in out
    assert "layer 'prior' has unsupported type 'AnchorGrid'" in out
    assert "layer 'py' (Python): python_param module 'm' layer 'L': no converter" in out
    info = describe_net(proto)
    shapes = {row.name: row.shapes[0] for row in info.rows}
    assert shapes == {"data": (1, 3, 16, 16), "conv1": (1, 4, 14, 14), "prior": None,
                      "py": None, "fc": None, "pool": (1, 4, 7, 7)}
    assert {r.name: r.params for r in info.rows}["conv1"] == 4 * 3 * 9 + 4
    assert main(["info", str(proto), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert len(document["unsupported"]) == 2 and document["rows"][1]["name"] == "conv1"


def test_info_reports_weights_that_do_not_bind(small, write_net):
    _, weights = small
    other = write_net(SMALL.replace("num_output: 7", "num_output: 4")
                      .replace('name: "conv2"', 'name: "conv9"'), "other.prototxt")
    summary = describe_net(other, weights).weights
    status = {layer.name: layer.status for layer in summary.layers}
    assert status["conv1"] == "binds"
    assert status["conv2"] == "not in the net"
    assert status["fc"] == "mismatch: blob 0 is (7, 450), expected (4, 450)"
    assert summary.missing == ["layer 'conv9' expects 2 blob(s) of shapes [(5, 5, 3, 3), (5,)]"]


def test_info_on_a_train_val_net_without_input_shape_is_not_an_error(capsys):
    path = require_shared(CORPUS / "bvlc_reference_caffenet_train_val.prototxt")
    assert main(["info", str(path)]) == 0
    assert "pass its full shape" in capsys.readouterr().out
    info = describe_net(path, input_shapes={"data": (1, 3, 227, 227)})
    assert info.ok and info.outputs == [("fc8", (1, 1000))]


# ----------------------------------------------------------------------------- graph


def test_graph_dot_has_every_layer_and_shapes_on_edges(small, tmp_path):
    proto, _ = small
    text = graph_to_dot(caffe2torch.load_graph(proto))
    assert text.startswith('digraph "small" {')
    assert 'label="conv1\\nConvolution 5 3x3 + ReLU"' in text  # relu1 folded in
    assert 'label="sum\\n2x5x10x9"' in text
    assert text.count("->") == 8  # data, conv1->pool1/conv2 (a, b), sum (2), fc, prob
    unfolded = graph_to_dot(caffe2torch.load_graph(proto), fold_inplace=False)
    assert 'label="relu1\\nReLU"' in unfolded and unfolded.count("->") == 9


def test_graph_cli_writes_dot_svg_png(small, tmp_path, capsys):
    proto, _ = small
    for suffix in ("dot", "svg", "png"):
        assert main(["graph", str(proto), "-o", str(tmp_path / f"net.{suffix}")]) == 0
    assert "2x5x10x9" in (tmp_path / "net.svg").read_text()
    assert main(["graph", str(proto), "-o", str(tmp_path / "net.gif")]) == 1
    assert "unknown graph format" in capsys.readouterr().err


def test_resnet101_layout_is_readable():
    """A 450-layer ResNet folds to ~140 boxes in a narrow column; boxes never overlap."""
    path = require_shared(CORPUS / "resnet101_deploy.prototxt")
    graph = describe_graph(path)
    shown = display_graph(graph)
    assert len(graph.layers) == 450 and 130 < len(shown.nodes) < 160
    placed = layout(shown)
    rows: dict[float, list[tuple[float, float]]] = {}
    for key, (x, y) in placed.nodes.items():
        rows.setdefault(round(y, 3), []).append((x - placed.sizes[key][0] / 2,
                                                 x + placed.sizes[key][0] / 2))
    for boxes in rows.values():
        boxes.sort()
        assert all(a[1] < b[0] for a, b in itertools.pairwise(boxes)), "boxes overlap"
    assert max(len(boxes) for boxes in rows.values()) == 2  # branch1 beside branch2a
    assert placed.width < 12 and placed.height > 10 * placed.width  # scrolls down, not across
    # per block 5 edges (2a, 2b, 2c, sum from 2c and the shortcut), 4 with a projection, 5 more
    assert len(shown.edges) == 33 * 5 + 4 + 5


def test_graph_png_is_drawn_with_boxes_text_and_edges(small, tmp_path):
    proto, _ = small
    out = draw_graph(proto, tmp_path / "small.png")
    gray = np.asarray(Image.open(out).convert("L"), dtype=np.float32)
    assert gray.shape[0] > 500 and gray.shape[1] >= 600
    assert gray.std() > 25 and (gray < 100).mean() > 0.005  # text and lines, not blank
    rgb = np.asarray(Image.open(out).convert("RGB")).astype(int)
    conv_blue = (abs(rgb[..., 0] - 0xCF) < 4) & (abs(rgb[..., 1] - 0xE2) < 4)
    assert conv_blue.sum() > 2000  # the two convolution boxes are filled


def test_graph_of_a_net_with_unsupported_layers_marks_them_red(write_net, tmp_path):
    proto = write_net(UNSUPPORTED)
    out = draw_graph(proto, tmp_path / "unsup.png")
    rgb = np.asarray(Image.open(out).convert("RGB")).astype(int)
    red = (rgb[..., 0] > 240) & (rgb[..., 1] < 170) & (rgb[..., 2] < 170)
    assert red.sum() > 500
    assert "py\\n?" in graph_to_dot(describe_graph(proto))


# ----------------------------------------------------------------------------- verify


def test_verify_cli_passes_with_a_table_per_layer(small, capsys):
    proto, weights = small
    assert main(["verify", str(proto), "-w", str(weights)]) == 0
    out = capsys.readouterr().out
    assert "random standard normal (seed 0): data 2x3x20x18" in out
    for layer in ("conv1", "relu1", "split1", "pool1", "conv2", "sum", "fc", "prob"):
        assert any(line.startswith(layer + " ") for line in out.splitlines()), layer
    assert "PASS: 8 layers agree with OpenCV" in out
    # OpenCV may reuse the memory of a layer's later tops: those are checked through readers
    assert "split1  Split         b      2x5x20x18         -" in out


def test_verify_fails_over_tolerance_and_names_the_first_layer(small, monkeypatch, capsys):
    proto, weights = small
    import caffe2torch.research.verification as module
    original = module._our_layer_outputs

    def perturbed(model, inputs):
        outputs = original(model, inputs)
        outputs["conv2"] = [outputs["conv2"][0] * 1.01]
        return outputs
    monkeypatch.setattr(module, "_our_layer_outputs", perturbed)
    report = verify(proto, weights)
    assert not report.passed and [r.layer for r in report.failures] == ["conv2"]
    assert 9e-3 < report.failures[0].max_rel < 1.1e-2
    assert main(["verify", str(proto), "-w", str(weights), "--tolerance", "0.05"]) == 0
    assert main(["verify", str(proto), "-w", str(weights)]) == 1
    assert "FAIL: 1 of 8 layers over relative 0.0001; the first is 'conv2'" in \
        capsys.readouterr().out


def test_verify_notes_where_opencv_differs_from_caffe(write_net, tmp_path, capsys):
    proto = write_net("""name: "lrn"
layer { name: "data" type: "Input" top: "data"
  input_param { shape { dim: 1 dim: 3 dim: 9 dim: 7 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 3 kernel_size: 1 } }
layer { name: "norm1" type: "LRN" bottom: "conv1" top: "norm1"
  lrn_param { local_size: 5 alpha: 0.5 beta: 0.75 k: 2 } }
""")
    weights = tmp_path / "lrn.caffemodel"
    caffe2torch.write_random_caffemodel(proto, weights)
    assert main(["verify", str(proto), "-w", str(weights)]) == 1
    out = capsys.readouterr().out
    assert "over tolerance (see note)" in out
    assert "note: LRN: OpenCV ignores k (uses 1, Caffe 2)" in out
    assert "where OpenCV is known to differ from Caffe" in out


def test_verify_without_opencv_is_a_clear_error(small, monkeypatch, capsys):
    proto, weights = small
    monkeypatch.setitem(__import__("sys").modules, "cv2", None)
    assert main(["verify", str(proto), "-w", str(weights)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("caffe2torch: error: verify compares against OpenCV")
    assert "opencv-python-headless<5" in err and "Traceback" not in err


@pytest.fixture(scope="module")
def vgg_face_random(tmp_path_factory):
    """Random VGG-Face weights (580 MB), drawn as float32 for speed."""
    path = tmp_path_factory.mktemp("vgg") / "vgg_face_random.caffemodel"
    graph = caffe2torch.load_graph(ROOT / "model_zoo" / "vgg_face" / "deploy.prototxt")
    rng = np.random.default_rng(5)
    layers = []
    for node, shapes in parameter_layers(graph):
        weight, bias = shapes
        std = np.float32(1.0 / np.sqrt(np.prod(weight[1:])))
        layers.append((node.name, node.type, [rng.standard_normal(weight, np.float32) * std,
                                              rng.standard_normal(bias, np.float32) * 0.1]))
    caffe2torch.write_caffemodel(path, layers, name=graph.name)
    return path


def test_verify_vgg_face_on_a_photograph(vgg_face_random):
    report = verify(ROOT / "model_zoo" / "vgg_face" / "deploy.prototxt", vgg_face_random,
                    image=HOPPER)
    assert report.passed, report.verdict
    assert "mean (93.594, 104.762, 129.186)" in report.input
    compared = [row.layer for row in report.rows if row.compared]
    assert len(compared) == 39 and compared[0] == "conv1_1" and compared[-1] == "prob"


def test_verify_open_nsfw_real_weights():
    prototxt = require_shared(OPEN_NSFW / "deploy.prototxt")
    require_converters(["BatchNorm", "Scale"])
    from caffe2torch.preprocess import Preprocessing
    from caffe2torch.zoo import get_entry
    report = verify(prototxt, OPEN_NSFW / "resnet_50_1by2_nsfw.caffemodel", image=HOPPER,
                    preprocessing=Preprocessing.from_manifest(get_entry("open_nsfw")))
    assert report.passed, report.verdict
    assert sum(row.compared for row in report.rows) > 200


# ----------------------------------------------------------------------------- help


@pytest.mark.parametrize("command", ["info", "verify", "graph", "visualize", "extract"])
def test_every_research_command_has_help_with_an_example(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"caffe2torch {command} " in out
