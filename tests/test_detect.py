"""`caffe2torch detect` and caffe2torch.research.detection: DetectionOutput rows -> boxes on the
photograph (thresholding, scaling, clipping, labels, JSON, drawing) and the error paths.

The DetectionOutput converter itself is tested elsewhere; here a stand-in registered through the
custom-converter API returns fixed rows, so every step after the net is checked exactly.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import caffe2torch
from caffe2torch import Converter, register_converter, write_random_caffemodel
from caffe2torch.cli import main
from caffe2torch.layers.registry import (
    is_supported,
    registered_converters,
    unregister_converter,
)
from caffe2torch.preprocess import Preprocessing
from caffe2torch.research import detection
from caffe2torch.research.detection import Detection, DetectionError

PHOTO_SIZE = (512, 600)  # grace_hopper.jpg, width x height
# [image_id, label, score, xmin, ymin, xmax, ymax], in the order a DetectionOutput writes them
ROWS = np.array([
    [0, 1, 0.62, 0.10, 0.20, 0.50, 0.60],
    [0, 1, 0.30, 0.00, 0.00, 1.00, 1.00],     # under the default threshold 0.5
    [0, 2, 0.91, -0.10, 0.50, 1.20, 1.10],    # outside the image: clipped
], dtype=np.float32)
NOTHING = np.array([[0, -1, -1, -1, -1, -1, -1]], dtype=np.float32)  # Caffe's "no detection" row
TINY_NET = """name: "tiny_ssd"
layer { name: "input" type: "Input" top: "data"
        input_param { shape { dim: 1 dim: 3 dim: 30 dim: 30 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "detection_out" type: "DetectionOutput" bottom: "conv" top: "detection_out"
        include { phase: TEST }
        detection_output_param { num_classes: 3 background_label_id: 0
                                 nms_param { nms_threshold: 0.45 top_k: 10 } keep_top_k: 10
                                 confidence_threshold: 0.01 } }
"""
NO_DETECTOR = """name: "classifier"
layer { name: "input" type: "Input" top: "data"
        input_param { shape { dim: 1 dim: 3 dim: 30 dim: 30 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 } }
"""


def photograph() -> Path:
    from matplotlib import cbook
    return Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


class _FixedRows(torch.nn.Module):
    def __init__(self, rows: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("rows", torch.from_numpy(rows.copy()))

    def forward(self, *bottoms: torch.Tensor) -> torch.Tensor:
        return self.rows.reshape(1, 1, -1, 7).clone()


class StandInDetectionOutput(Converter):
    """Writes ``ROWS`` (set by the fixture) whatever the bottoms hold."""

    caffe_type = "DetectionOutput"
    ROWS = NOTHING

    def output_shapes(self, layer, inputs):
        return [(1, 1, len(self.ROWS), 7)]

    def build(self, layer, inputs):
        return _FixedRows(self.ROWS)


@pytest.fixture
def fixed_rows():
    """Replace the DetectionOutput converter by the stand-in; returns a setter for its rows.
    The converter registered before (if any) is registered again afterwards."""
    previous = registered_converters().get("DetectionOutput")
    register_converter(StandInDetectionOutput, replace=True)

    def set_rows(rows: np.ndarray) -> None:
        StandInDetectionOutput.ROWS = np.asarray(rows, dtype=np.float32)

    set_rows(ROWS)
    yield set_rows
    StandInDetectionOutput.ROWS = NOTHING
    if previous is None:
        unregister_converter("DetectionOutput")
    else:
        register_converter(type(previous), replace=True)


@pytest.fixture
def tiny(tmp_path, fixed_rows):
    """The tiny detector's prototxt and random weights."""
    net = tmp_path / "tiny_ssd.prototxt"
    net.write_text(TINY_NET)
    weights = tmp_path / "tiny_ssd.caffemodel"
    write_random_caffemodel(net, weights, seed=0)
    return net, weights


@pytest.fixture
def labels_file(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("background\nperson\ndog\n")
    return path


def run(capsys, *argv):
    code = main(["detect", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def tiny_argv(tiny, *extra):
    net, weights = tiny
    return [net, "-w", weights, "--image", photograph(), "--size", "30x30",
            "--mean", "104,117,123", *extra]


# --------------------------------------------------------------------------- the library


def test_rows_are_thresholded_sorted_and_the_placeholder_dropped():
    rows = np.concatenate([ROWS, NOTHING])[None, None]
    kept = detection.parse_rows(rows, threshold=0.5)
    assert kept[:, 2].tolist() == pytest.approx([0.91, 0.62])
    assert detection.parse_rows(rows, threshold=0.0)[:, 2].tolist() == \
        pytest.approx([0.91, 0.62, 0.30])
    assert detection.parse_rows(NOTHING[None, None], threshold=0.0).shape == (0, 7)
    other_image = ROWS.copy()
    other_image[:, 0] = 1
    assert detection.parse_rows(other_image, threshold=0.0).shape == (0, 7)


def test_equal_scores_keep_the_nets_order():
    rows = np.array([[0, 2, 0.8, 0, 0, 1, 1], [0, 1, 0.8, 0, 0, 1, 1]], dtype=np.float32)
    assert detection.parse_rows(rows)[:, 1].tolist() == [2, 1]


@pytest.mark.parametrize("shape", [(1, 1, 3, 6), (2, 1, 3, 7), (7,)])
def test_a_blob_of_another_shape_is_refused(shape):
    with pytest.raises(DetectionError, match=r"blob 'det' has shape .* \(1, 1, N, 7\)"):
        detection.parse_rows(np.zeros(shape), blob="det")


def test_a_non_finite_row_is_refused():
    rows = ROWS.copy()
    rows[1, 4] = np.nan
    with pytest.raises(DetectionError, match="row 1 is not finite"):
        detection.parse_rows(rows)


def test_boxes_scale_to_the_image_and_clip():
    width, height = PHOTO_SIZE
    pixels = detection.to_pixels(ROWS[:, 3:7], PHOTO_SIZE)
    assert pixels[0] == pytest.approx([0.1 * width, 0.2 * height, 0.5 * width, 0.6 * height])
    assert pixels[2] == pytest.approx([0, 0.5 * height, width, height])


def test_boxes_map_through_a_center_crop():
    """Shorter side 300 (aspect kept) and a 300x300 center crop: the net saw the middle square
    of a 600x512 photograph, (0, 44) .. (512, 556) in its pixels."""
    prep = Preprocessing(size=300, crop=(300, 300))
    view = prep.view_box((600, 512))
    resized_h = round(600 * 300 / 512)  # 352
    top = (resized_h - 300) // 2
    assert view == pytest.approx((0, top * 600 / resized_h, 512, (top + 300) * 600 / resized_h))
    corners = np.array([[0.0, 0.0, 1.0, 1.0], [0.5, 0.5, 0.5, 0.5]])
    pixels = detection.to_pixels(corners, PHOTO_SIZE, view)
    assert pixels[0] == pytest.approx(view)
    assert pixels[1] == pytest.approx([256, 300, 256, 300], abs=0.5)
    assert Preprocessing(size=(300, 300)).view_box((600, 512)) == (0, 0, 512, 600)


def test_detections_are_named_by_label_id():
    found = detection.detections_from_rows(ROWS, PHOTO_SIZE, labels=["bg", "person", "dog"])
    assert [(d.label, d.name, d.title) for d in found] == [(2, "dog", "dog"),
                                                          (1, "person", "person")]
    unnamed = detection.detections_from_rows(ROWS, PHOTO_SIZE)
    assert [d.title for d in unnamed] == ["2", "1"]
    with pytest.raises(DetectionError, match="label 2, but the labels name only 2 class"):
        detection.detections_from_rows(ROWS, PHOTO_SIZE, labels=["bg", "person"])


def test_read_labels_text_file(tmp_path):
    path = tmp_path / "names.txt"
    path.write_text("background\r\n  aeroplane \nbicycle\n\n\n")
    assert detection.read_labels(path) == ["background", "aeroplane", "bicycle"]
    path.write_text("background\n\nbicycle\n")
    with pytest.raises(DetectionError, match=r"names.txt: blank line\(s\) \[2\]"):
        detection.read_labels(path)
    path.write_text("\n")
    with pytest.raises(DetectionError, match="names.txt: no names"):
        detection.read_labels(path)
    with pytest.raises(DetectionError, match="labels file .*missing.txt does not exist"):
        detection.read_labels(tmp_path / "missing.txt")


def test_read_labels_label_map_prototxt(tmp_path):
    path = tmp_path / "labelmap_voc.prototxt"
    path.write_text('item { name: "none_of_the_above" label: 0 display_name: "background" }\n'
                    'item { name: "cat" label: 2 display_name: "cat" }\n'
                    'item { name: "aeroplane" label: 1 }\n')
    assert detection.read_labels(path) == ["background", "aeroplane", "cat"]
    path.write_text('item { name: "cat" label: 2 }\n')
    with pytest.raises(DetectionError, match=r"no name for label\(s\) \[0, 1\]"):
        detection.read_labels(path)
    path.write_text("item { nme: 3 }")
    with pytest.raises(DetectionError, match="not a LabelMap prototxt"):
        detection.read_labels(path)


def test_labels_must_match_num_classes():
    detection.check_labels(["bg", "a", "b"], 3, "labels.txt")
    detection.check_labels(["a"], None, "labels.txt")
    with pytest.raises(DetectionError, match="one short: add a first line naming the background class"):
        detection.check_labels(["a", "b"], 3, "labels.txt")
    with pytest.raises(DetectionError, match="4 label name.* num_classes 3"):
        detection.check_labels(["bg", "a", "b", "c"], 3, "labels.txt")


def test_detect_on_the_photograph(tiny):
    net = caffe2torch.build(tiny[0], tiny[1])
    prep = Preprocessing(size=(30, 30), mean=[104, 117, 123])
    found = detection.detect(net, photograph(), preprocessing=prep, threshold=0.5,
                             labels=["bg", "person", "dog"])
    assert found.image_size == PHOTO_SIZE and found.blob == "detection_out" and found.rows == 3
    assert [d.to_dict() for d in found.detections] == [
        {"label": 2, "name": "dog", "score": pytest.approx(0.91), "box": [0, 300, 512, 600]},
        {"label": 1, "name": "person", "score": pytest.approx(0.62),
         "box": [51.2, 120, 256, 360]}]
    with pytest.raises(DetectionError, match="threshold 1.5: expected a score between 0 and 1"):
        detection.detect(net, photograph(), preprocessing=prep, threshold=1.5)


def test_the_blob_is_found_by_the_producing_layer_type(tiny, write_net):
    graph = caffe2torch.load_graph(tiny[0])
    assert detection.detection_blob(graph) == "detection_out"
    assert detection.detection_blob(graph, "conv") == "conv"
    with pytest.raises(DetectionError, match="no blob named 'nope'"):
        detection.detection_blob(graph, "nope")
    plain = caffe2torch.load_graph(write_net(NO_DETECTOR))
    with pytest.raises(DetectionError, match="has no DetectionOutput layer"):
        detection.detection_blob(plain)
    twice = TINY_NET + TINY_NET.split("\n", 5)[-1].replace('"detection_out"', '"second"')
    with pytest.raises(DetectionError, match="2 DetectionOutput layers .* --blob"):
        detection.detection_blob(caffe2torch.load_graph(write_net(twice, "twice.prototxt")))


def test_drawing_outlines_each_box_in_its_labels_colour():
    boxes = [Detection(label=1, score=0.62, box=(51.2, 120.0, 256.0, 360.0), name="person"),
             Detection(label=2, score=0.91, box=(0.0, 300.0, 512.0, 600.0), name="dog")]
    original = np.asarray(Image.open(photograph()).convert("RGB"))
    drawn = np.asarray(detection.draw_detections(photograph(), boxes))
    assert drawn.shape == original.shape
    edges = (((240, 51), 1), ((240, 52), 1),      # the person box's left edge, 2 pixels
             ((450, 510), 2), ((450, 511), 2),    # the dog box's right edge (the border)
             ((599, 300), 2), ((598, 300), 2))    # and its bottom edge
    for (row, col), label in edges:
        assert tuple(drawn[row, col]) == detection.PALETTE[label], (row, col)
    assert tuple(drawn[240, 53]) != detection.PALETTE[1]   # the line is 2 pixels wide
    assert (drawn[200:220, 100:200] == original[200:220, 100:200]).all()  # inside: untouched
    caption = drawn[100:120, 52:120]    # "person 0.62" above the person box
    assert (caption == detection.PALETTE[1]).all(axis=-1).mean() > 0.3
    assert (caption != detection.PALETTE[1]).any(axis=-1).sum() > 20  # the text itself


def test_table_layout():
    boxes = [Detection(label=15, score=0.9871, box=(1.0, 22.25, 333.0, 4444.0), name="person")]
    assert detection.format_detections(boxes).splitlines() == [
        "label   score   x1    y1     x2      y2",
        "------  -----  ---  ----  -----  ------",
        "person  0.987  1.0  22.2  333.0  4444.0"]


# --------------------------------------------------------------------------- the command


def test_cli_prints_the_table(tiny, labels_file, capsys):
    code, out, err = run(capsys, *tiny_argv(tiny, "--labels", labels_file))
    assert code == 0, err
    assert out.splitlines() == [
        "label   score    x1     y1     x2     y2",
        "------  -----  ----  -----  -----  -----",
        "dog     0.910   0.0  300.0  512.0  600.0",
        "person  0.620  51.2  120.0  256.0  360.0"]
    assert "2 detection(s) with score >= 0.5" in err and "512x600" in err
    assert "blob 'detection_out', 3 row(s)" in err


def test_cli_threshold_and_label_ids(tiny, capsys):
    code, out, _ = run(capsys, *tiny_argv(tiny, "--threshold", "0.3"))
    assert code == 0
    assert [line.split()[:2] for line in out.splitlines()[2:]] == \
        [["2", "0.910"], ["1", "0.620"], ["1", "0.300"]]


def test_cli_json(tiny, labels_file, capsys):
    code, out, _ = run(capsys, *tiny_argv(tiny, "--labels", labels_file, "--json"))
    assert code == 0
    report = json.loads(out)
    assert report["width"] == 512 and report["height"] == 600
    assert report["blob"] == "detection_out" and report["threshold"] == 0.5
    assert report["rows"] == 3
    assert report["preprocessing"]["size"] == [30, 30]
    assert report["preprocessing"]["mean"] == [104.0, 117.0, 123.0]
    assert report["detections"] == [
        {"label": 2, "name": "dog", "score": pytest.approx(0.91), "box": [0.0, 300.0, 512.0, 600.0]},
        {"label": 1, "name": "person", "score": pytest.approx(0.62),
         "box": [51.2, 120.0, 256.0, 360.0]}]


def test_cli_nothing_detected(tiny, fixed_rows, capsys):
    fixed_rows(NOTHING)
    code, out, err = run(capsys, *tiny_argv(tiny))
    assert code == 0 and out == ""
    assert "0 detection(s) with score >= 0.5" in err and "1 row(s)" in err
    code, out, _ = run(capsys, *tiny_argv(tiny, "--json"))
    assert code == 0 and json.loads(out)["detections"] == []


def test_cli_draws_the_boxes(tiny, labels_file, tmp_path, capsys):
    out_path = tmp_path / "boxes.png"
    code, _, err = run(capsys, *tiny_argv(tiny, "--labels", labels_file, "-o", out_path))
    assert code == 0 and f"wrote {out_path}" in err
    drawn = np.asarray(Image.open(out_path))
    expected = detection.draw_detections(photograph(), [
        Detection(2, 0.91, (0.0, 300.0, 512.0, 600.0), "dog"),
        Detection(1, 0.62, (51.2, 120.0, 256.0, 360.0), "person")])
    assert drawn.shape == (600, 512, 3)
    assert (drawn == np.asarray(expected)).all()


def test_cli_uses_the_model_zoo_preprocessing_and_labels(tiny, tmp_path, monkeypatch, capsys):
    """A net given by path that is a zoo entry's prototxt gets that entry's preprocessing and
    labels, as --zoo ID does."""
    from caffe2torch import zoo
    root = tmp_path / "zoo"
    (root / "tiny").mkdir(parents=True)
    (root / "tiny" / "deploy.prototxt").write_text(TINY_NET)
    (root / "tiny" / "manifest.json").write_text(json.dumps({
        "id": "tiny", "prototxt": "deploy.prototxt", "labels": ["background", "face", "hat"],
        "preprocessing": {"resize": [30, 30], "channel_order": "BGR", "mean": [104, 177, 123],
                          "scale": 1.0}}))
    monkeypatch.setattr(zoo, "ZOO_DIR", root)
    for argv in (["--zoo", "tiny"], [root / "tiny" / "deploy.prototxt"]):
        code, out, err = run(capsys, *argv, "-w", tiny[1], "--image", photograph(), "--json")
        assert code == 0, err
        report = json.loads(out)
        assert [d["name"] for d in report["detections"]] == ["hat", "face"]
        assert report["preprocessing"]["mean"] == [104.0, 177.0, 123.0]


# --------------------------------------------------------------------------- errors


def _error(capsys, *argv) -> str:
    code, out, err = run(capsys, *argv)
    assert code == 1 and out == ""
    assert err.startswith("caffe2torch: error: ") and "Traceback" not in err
    return err


def test_cli_a_net_without_detection_output(write_net, tmp_path, capsys):
    net = write_net(NO_DETECTOR)
    weights = tmp_path / "w.caffemodel"
    write_random_caffemodel(net, weights)
    err = _error(capsys, net, "-w", weights, "--image", photograph(), "--size", "30x30")
    assert f"{net}: the net has no DetectionOutput layer" in err


def test_cli_checks_the_output_before_any_work(tmp_path, capsys):
    """The output path and the labels are checked first: the net and weights here do not
    even exist."""
    missing = [tmp_path / "no.prototxt", "-w", tmp_path / "no.caffemodel", "--image",
               photograph()]
    err = _error(capsys, *missing, "-o", tmp_path / "boxes.xyz")
    assert "boxes.xyz: cannot write an image with extension '.xyz'" in err
    err = _error(capsys, *missing, "-o", tmp_path / "nowhere" / "boxes.png")
    assert "the folder" in err and "nowhere does not exist" in err
    err = _error(capsys, *missing, "-o", photograph())
    assert "is the input image" in err
    err = _error(capsys, *missing, "--labels", tmp_path / "labels.txt")
    assert "labels file" in err and "labels.txt does not exist" in err
    err = _error(capsys, *missing, "--threshold", "-0.1")
    assert "threshold -0.1: expected a score between 0 and 1" in err
    err = _error(capsys, *missing[:-1], tmp_path / "missing.jpg")
    assert "missing.jpg" in err


def test_cli_labels_that_do_not_fit_the_net(tiny, tmp_path, capsys):
    labels = tmp_path / "voc.txt"
    labels.write_text("person\ndog\n")
    err = _error(capsys, *tiny_argv(tiny, "--labels", labels))
    assert f"labels file {labels}: 2 label name(s), but the net's DetectionOutput has " \
           "num_classes 3" in err
    assert "add a first line naming the background class (label 0)" in err


def test_cli_verbose_shows_the_traceback(write_net, tmp_path, capsys):
    net = write_net(NO_DETECTOR)
    weights = tmp_path / "w.caffemodel"
    write_random_caffemodel(net, weights)
    code, _, err = run(capsys, "-v", net, "-w", weights, "--image", photograph(),
                       "--size", "30x30")
    assert code == 1 and "Traceback" in err and "DetectionError" in err


def test_stand_in_is_unregistered_afterwards():
    """The fixture leaves the registry as it found it (no stand-in outside these tests)."""
    converter = registered_converters().get("DetectionOutput")
    assert not isinstance(converter, StandInDetectionOutput)
    assert is_supported("DetectionOutput") == (converter is not None)


# --------------------------------------------------------------------------- the zoo's detectors

README = Path(__file__).resolve().parents[1] / "README.md"
# the README's rows: one face on Grace Hopper, one row under the threshold
README_ROWS = np.array([[0, 1, 0.9986, 0.3047, 0.1533, 0.7129, 0.5483],
                        [0, 1, 0.0312, 0.6000, 0.0100, 0.9900, 0.2000]], dtype=np.float32)


def _zoo_net_or_skip(entry_id: str, *, stand_in: bool) -> Path:
    """The zoo entry's prototxt; a skip naming the converters not merged yet."""
    from caffe2torch import zoo
    prototxt = zoo.get_entry(entry_id).prototxt
    layers = caffe2torch.load_definition(prototxt).net.layer
    missing = sorted({layer.type for layer in layers if layer.type != "Input"
                      and not (stand_in and layer.type == "DetectionOutput")
                      and not is_supported(layer.type)})
    if missing:
        pytest.skip(f"{entry_id}: no converter registered yet for {missing}")
    return prototxt


def _readme_transcript() -> tuple[list[str], list[str]]:
    """The command line and the output lines of the README's detect example."""
    text = README.read_text()
    block = text.split("## Detection", 1)[1].split("```console\n", 1)[1].split("```", 1)[0]
    lines = block.splitlines()
    assert lines[0].startswith("$ caffe2torch detect ")
    return lines[0][len("$ caffe2torch "):].split(), lines[1:]


def test_readme_transcript(fixed_rows, tmp_path, monkeypatch, capsys):
    """The README's example, run as written in a folder holding the photograph and weights:
    the zoo's res10 prototxt with random weights (their checksum check patched out: they are
    not the published file) and a DetectionOutput returning the README's rows."""
    from caffe2torch import zoo
    prototxt = _zoo_net_or_skip("res10_ssd_face", stand_in=True)
    fixed_rows(README_ROWS)
    argv, expected = _readme_transcript()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "grace_hopper.jpg").symlink_to(photograph())
    write_random_caffemodel(prototxt, tmp_path / argv[argv.index("-w") + 1], seed=0)
    monkeypatch.setattr(zoo.ZooEntry, "verify_weights", lambda self, path: False)
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    out = captured.out.splitlines()
    assert out == expected[:len(out)]
    assert captured.err.splitlines() == expected[len(out):]
    assert Image.open(tmp_path / "boxes.png").size == PHOTO_SIZE


@pytest.mark.parametrize("entry_id", ["res10_ssd_face", "mobilenet_ssd"])
def test_zoo_detector_end_to_end(entry_id, tmp_path, capsys):
    """The real net, converters and all, with random weights: the command runs, every box is
    inside the photograph and names one of the entry's labels."""
    from caffe2torch import zoo
    prototxt = _zoo_net_or_skip(entry_id, stand_in=False)
    weights = tmp_path / "random.caffemodel"
    write_random_caffemodel(prototxt, weights, seed=0)
    code, out, err = run(capsys, prototxt, "-w", weights, "--image", photograph(),
                         "--threshold", "0", "--json", "-o", tmp_path / "boxes.jpg")
    assert code == 0, err
    report = json.loads(out)
    labels = zoo.get_entry(entry_id).manifest["labels"]
    assert report["blob"] == "detection_out" and report["rows"] >= 1
    assert report["preprocessing"]["size"] == [300, 300]
    for found in report["detections"]:
        x1, y1, x2, y2 = found["box"]
        assert 0 <= x1 <= x2 <= 512 and 0 <= y1 <= y2 <= 600
        assert 1 <= found["label"] < len(labels) and found["name"] == labels[found["label"]]
        assert 0 <= found["score"] <= 1
    assert Image.open(tmp_path / "boxes.jpg").size == PHOTO_SIZE
