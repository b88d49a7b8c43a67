"""visualize --class: Grad-CAM maps checked against the formula written out for a net whose
class score is linear in the layer's activations, the figure with its colour bar, --dpi, and
an output folder that is checked first and never left empty."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from test_research_figures import HOPPER, TINY

import caffe2torch
from caffe2torch.cli import main
from caffe2torch.preprocess import default_preprocessing
from caffe2torch.research import visualize
from caffe2torch.research.figures import VisualizeError, grad_cam

SOFTMAX = TINY + 'layer { name: "prob" type: "Softmax" bottom: "fc7" top: "prob" }\n'


@pytest.fixture(params=[TINY, SOFTMAX], ids=["scores", "softmax"])
def tiny(request, write_net, tmp_path):
    proto = write_net(request.param, "tiny.prototxt")
    weights = tmp_path / "tiny.caffemodel"
    caffe2torch.write_random_caffemodel(proto, weights, seed=3)
    return proto, weights


def _input(net) -> np.ndarray:
    return default_preprocessing(net.caffe.graph)(HOPPER)[None]


def test_grad_cam_is_the_formula_for_a_linear_score(tiny):
    proto, weights = tiny
    net = caffe2torch.build(proto, weights)
    array = _input(net)
    with torch.no_grad():
        blobs = net(torch.from_numpy(array), outputs=["pool2", "fc7"])
    activation, scores = blobs["pool2"][0].numpy(), blobs["fc7"][0].numpy()
    fc7 = caffe2torch.read_caffemodel(weights)["fc7"].blobs[0].data.reshape(6, *activation.shape)
    for index in range(6):
        alpha = fc7[index].mean(axis=(1, 2))  # d fc7[index] / d pool2, averaged per channel
        expected = np.maximum((alpha[:, None, None] * activation).sum(axis=0), 0)
        found = grad_cam(net, array, "pool2", index)
        np.testing.assert_allclose(found.cam, expected, rtol=1e-5, atol=1e-6)
        assert found.score_blob == "fc7"
        probabilities = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()
        assert found.probability == pytest.approx(float(probabilities[index]), rel=1e-5)
    assert grad_cam(net, array, "pool2", "top").class_index == int(scores.argmax())


def test_visualize_class_writes_the_gradcam_figure(tiny, tmp_path):
    proto, weights = tiny
    net = caffe2torch.build(proto, weights)
    labels = ["a", "b", "c", "d", "e", "f"]
    figures = visualize(net, HOPPER, tmp_path / "figs", class_index=4, labels=labels)
    assert figures.gradcam == tmp_path / "figs" / "gradcam_pool2_4.png"
    assert figures.class_index == 4 and figures.class_label == "e"
    plain = np.asarray(Image.open(figures.heatmap).convert("RGB"), dtype=np.float32)
    cam = np.asarray(Image.open(figures.gradcam).convert("RGB"), dtype=np.float32)
    assert cam.shape[0] == plain.shape[0] and cam.shape[1] > plain.shape[1] + 224
    # the colour bar: a column that runs from jet's red (top) to its dark blue (bottom)
    column = cam[60:-20, -90:].reshape(-1, 3)
    assert ((column[:, 0] > 120) & (column[:, 2] < 60)).any()
    assert ((column[:, 2] > 120) & (column[:, 0] < 60)).any()
    big = visualize(net, HOPPER, tmp_path / "big", dpi=200)
    shape = np.asarray(Image.open(big.heatmap)).shape
    assert shape[0] == 2 * plain.shape[0] and shape[1] == 2 * plain.shape[1]


def test_visualize_cli_class_and_bad_values(tiny, tmp_path, capsys):
    proto, weights = tiny
    argv = ["visualize", str(proto), "-w", str(weights), "--image", HOPPER]
    assert main([*argv, "-o", str(tmp_path / "out"), "--class", "top"]) == 0
    out, err = capsys.readouterr()
    assert out.split()[-1].startswith(str(tmp_path / "out" / "gradcam_pool2_"))
    assert "Grad-CAM of class" in err
    missing = tmp_path / "never"
    assert main([*argv, "-o", str(missing), "--class", "6"]) == 1
    err = capsys.readouterr().err
    assert "--class 6: expected 'top' or a class index 0..5" in err and "Traceback" not in err
    assert not missing.exists()  # nothing was made for a failed run
    assert main([*argv, "-o", str(missing), "--dpi", "0"]) == 1
    assert "--dpi 0: expected 10..1200" in capsys.readouterr().err and not missing.exists()
    with pytest.raises(SystemExit):
        main([*argv, "-o", str(missing), "--class", "cat"])
    assert "'cat': expected a class index or 'top'" in capsys.readouterr().err


def test_output_that_is_a_file_is_refused_before_any_work(tiny, tmp_path, capsys):
    proto, _ = tiny
    existing = tmp_path / "existing.pt"
    existing.write_bytes(b"keep")
    # the weights do not exist: the output is checked first
    assert main(["visualize", str(proto), "-w", str(tmp_path / "absent.caffemodel"), "--image",
                 HOPPER, "-o", str(existing)]) == 1
    err = capsys.readouterr().err
    assert f"{existing}: is a file; expected a folder for the figures (-o DIR)" in err
    assert "Errno" not in err and existing.read_bytes() == b"keep"


def test_a_failure_while_writing_removes_what_was_written(tiny, tmp_path, monkeypatch):
    proto, weights = tiny
    net = caffe2torch.build(proto, weights)
    from caffe2torch.research import figures as module
    real, calls = module._save_figure, []

    def failing(image, path, title, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real(image, path, title, **kwargs)

    monkeypatch.setattr(module, "_save_figure", failing)
    out = tmp_path / "new" / "figs"
    with pytest.raises(OSError):
        visualize(net, HOPPER, out)
    assert not out.exists() and calls[0].name == "filters_conv1.png"
    with pytest.raises(VisualizeError, match="no layer or blob named 'nope'"):
        visualize(net, HOPPER, out, layer="nope")
    assert not out.exists()


def test_the_readme_transcript_on_open_nsfw(tmp_path, capsys, monkeypatch):
    from pathlib import Path

    from oracle import OPEN_NSFW, require_shared
    require_shared(OPEN_NSFW)
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    command = "$ caffe2torch visualize --zoo open_nsfw"
    start = readme.index(command, readme.index("a Grad-CAM map shows"))
    transcript = readme[start:].split("```", 1)[0].splitlines()
    (tmp_path / "grace_hopper.jpg").write_bytes(Path(HOPPER).read_bytes())
    (tmp_path / "resnet_50_1by2_nsfw.caffemodel").symlink_to(
        OPEN_NSFW / "resnet_50_1by2_nsfw.caffemodel")
    monkeypatch.chdir(tmp_path)
    assert main(transcript[0].split()[2:]) == 0
    out, err = capsys.readouterr()
    assert (out + err).splitlines() == transcript[1:]


def test_grad_cam_needs_class_scores(write_net, tmp_path, capsys):
    proto = write_net(TINY.split('layer { name: "fc7"')[0], "spatial.prototxt")
    weights = tmp_path / "spatial.caffemodel"
    caffe2torch.write_random_caffemodel(proto, weights)
    assert main(["visualize", str(proto), "-w", str(weights), "--image", HOPPER, "-o",
                 str(tmp_path / "figs"), "--class", "top"]) == 1
    err = capsys.readouterr().err
    assert ("blob 'pool2' has shape 1x10x9x8; expected one row of class scores per image "
            "(N x K); Grad-CAM needs a net with one output of class scores (N x K)") in err
    assert "--blob" not in err and not (tmp_path / "figs").exists()
