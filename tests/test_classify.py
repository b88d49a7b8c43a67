"""caffe2torch classify: top-k classes with labels and probabilities, checked against the net
run directly; labels from a file or the zoo; every bad input one of our errors naming it."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from caffe2torch import build, write_random_caffemodel, zoo
from caffe2torch.cli import main
from caffe2torch.preprocess import default_preprocessing
from caffe2torch.research.classification import ClassifyError, classify, read_class_labels

PIL = pytest.importorskip("PIL.Image")

NET = """name: "tinycls"
input: "data" input_shape { dim: 1 dim: 3 dim: 10 dim: 8 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 5 kernel_size: 3 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "fc" type: "InnerProduct" bottom: "conv1" top: "fc"
  inner_product_param { num_output: 4 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""
LABELS = ["cat", "dog", "owl", "eel"]


@pytest.fixture
def files(tmp_path, write_net):
    rng = np.random.default_rng(7)
    net = write_net(NET)
    weights = tmp_path / "tiny.caffemodel"
    write_random_caffemodel(net, weights, seed=5)
    images = []
    for i, (h, w) in enumerate([(30, 22), (17, 41)]):
        path = tmp_path / f"img{i}.png"
        PIL.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        images.append(path)
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(LABELS) + "\n\n")
    return net, weights, images, labels


def _expected(net_path, weights, image, blob="prob", softmax=False):
    net = build(net_path, weights)
    prep = default_preprocessing(net.caffe.graph)
    with torch.no_grad():
        scores = net(torch.from_numpy(prep(image)[None]), outputs=[blob])[blob][0]
    return torch.softmax(scores, 0) if softmax else scores


def _outcome(capsys):
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return captured.out, captured.err


def test_top_classes_with_labels_match_the_net(files, capsys):
    net, weights, images, labels = files
    assert main(["classify", str(net), "-w", str(weights), "--image", *map(str, images),
                 "--top", "2", "--labels", str(labels)]) == 0
    out, err = _outcome(capsys)
    for image in images:
        probabilities = _expected(net, weights, image)
        order = torch.argsort(probabilities, descending=True)[:2].tolist()
        block = out.split(str(image), 1)[1].splitlines()
        assert block[1].split() == ["rank", "class", "probability", "label"]
        for rank, index in enumerate(order, 1):
            assert block[1 + rank].split() == [str(rank), str(index),
                                               f"{float(probabilities[index]):.4f}",
                                               LABELS[index]]
    assert "2 image(s); blob 'prob': 4 classes, its Softmax probabilities" in err


def test_json_and_scores_without_a_softmax(files, write_net, capsys):
    _, weights, images, _ = files
    logits_net = write_net(NET.split('layer { name: "prob"')[0], "logits.prototxt")
    assert main(["classify", str(logits_net), "-w", str(weights), "--image", str(images[0]),
                 "--top", "9", "--json"]) == 0
    out, err = _outcome(capsys)
    report = json.loads(out)
    assert report["blob"] == "fc" and report["classes"] == 4 and report["softmax_applied"]
    assert report["labels"] is None and report["preprocessing"]["size"] == [10, 8]
    expected = _expected(logits_net, weights, images[0], "fc", softmax=True)
    got = {p["index"]: p["probability"] for p in report["images"][0]["predictions"]}
    assert len(got) == 4  # --top larger than the classes shows them all
    assert got == pytest.approx({i: float(v) for i, v in enumerate(expected)}, rel=1e-6)
    assert "a softmax of its scores" in err
    assert "no label names (none known for this net); showing class indices" in err


def test_zoo_entry_labels_are_the_imagenet_synsets(tmp_path, capsys):
    entry = zoo.get_entry("squeezenet_v1.1")
    weights = tmp_path / "squeezenet.caffemodel"
    write_random_caffemodel(entry.prototxt, weights, seed=2)
    image = tmp_path / "x.jpg"
    PIL.fromarray(np.random.default_rng(3).integers(0, 256, (240, 250, 3), np.uint8)).save(image)
    assert main(["classify", "--zoo", entry.id, "-w", str(weights), "--image", str(image),
                 "--top", "3", "--json"]) == 0
    report = json.loads(_outcome(capsys)[0])
    synsets = (zoo.ZOO_DIR / "ilsvrc12_synset_words.txt").read_text().splitlines()
    assert len(synsets) == 1000 and synsets[281] == "n02123045 tabby, tabby cat"
    assert report["labels"] == "model zoo entry 'squeezenet_v1.1'"
    for prediction in report["images"][0]["predictions"]:
        assert prediction["label"] == synsets[prediction["index"]]
    for entry_id in ("bvlc_alexnet", "bvlc_googlenet", "resnet50", "vgg16"):
        assert zoo.get_entry(entry_id).labels == synsets
    assert zoo.get_entry("vgg_face").labels is None
    assert "identity names are not bundled" in zoo.get_entry("vgg_face").manifest["labels_note"]


@pytest.mark.parametrize("extra, expected", [
    (["--top", "0"], "--top 0: expected at least 1 class"),
    (["--labels", "LABELS3"],
     "labels file LABELS3: 3 label name(s), but the net's output has 4 classes"),
    (["--labels", "MISSING"], "labels file MISSING does not exist"),
    (["--blob", "conv1"],
     ("blob 'conv1' has shape 1x5x8x6; expected one row of class scores per image "
      "(N x K); choose the class scores with --blob")),
    (["--blob", "nope"], "no blob named 'nope' in net 'tinycls'"),
])
def test_bad_options_are_named(files, tmp_path, capsys, extra, expected):
    net, weights, images, _ = files
    (tmp_path / "three.txt").write_text("a\nb\nc\n")
    names = {"LABELS3": str(tmp_path / "three.txt"), "MISSING": str(tmp_path / "missing.txt")}
    extra = [names.get(e, e) for e in extra]
    expected = expected.replace("LABELS3", names["LABELS3"]).replace("MISSING", names["MISSING"])
    assert main(["classify", str(net), "-w", str(weights), "--image", str(images[0]),
                 *extra]) == 1
    out, err = _outcome(capsys)
    assert out == "" and f"caffe2torch: error: {expected}" in err


def test_an_unreadable_image_is_named_before_the_build(files, tmp_path, capsys):
    net, _, images, _ = files
    missing = tmp_path / "nope.jpg"
    # no weights file exists either: the image is checked first
    assert main(["classify", str(net), "-w", str(tmp_path / "absent.caffemodel"), "--image",
                 str(images[0]), str(missing)]) == 1
    assert str(missing) in _outcome(capsys)[1]


def test_library_call_and_label_files(files, tmp_path):
    net_path, weights, images, labels = files
    net = build(net_path, weights)
    result = classify(net, images, top=1, labels=LABELS)
    assert [len(i.predictions) for i in result.images] == [1, 1]
    assert result.images[0].predictions[0].label in LABELS
    assert read_class_labels(labels) == LABELS
    blank = tmp_path / "blank.txt"
    blank.write_text("a\n\nb\n")
    with pytest.raises(ClassifyError, match=r"blank.txt: blank line\(s\) \[2\]"):
        read_class_labels(blank)
    with pytest.raises(ClassifyError, match="no images"):
        classify(net, [])


def test_the_readme_transcript_on_open_nsfw(tmp_path, capsys, monkeypatch):
    from pathlib import Path

    from matplotlib import cbook
    from oracle import OPEN_NSFW, require_shared
    require_shared(OPEN_NSFW)
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    command = "$ caffe2torch classify --zoo open_nsfw"
    transcript = readme[readme.index(command):].split("```", 1)[0].splitlines()
    photo = tmp_path / "grace_hopper.jpg"
    photo.write_bytes(Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
                      .read_bytes())
    (tmp_path / "resnet_50_1by2_nsfw.caffemodel").symlink_to(
        OPEN_NSFW / "resnet_50_1by2_nsfw.caffemodel")
    monkeypatch.chdir(tmp_path)
    assert main(transcript[0].split()[2:]) == 0
    out, err = _outcome(capsys)
    assert (out + err).splitlines() == transcript[1:]
