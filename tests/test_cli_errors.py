"""Bad input on the command line and at call time: our own errors, naming file, layer or option,
checked before any work, with nothing written on failure."""
from __future__ import annotations

import pytest
import torch

import caffe2torch
from caffe2torch.cli import main
from caffe2torch.errors import ShapeError, WeightsError

NET = """name: "tiny"
input: "data" input_shape { dim: 1 dim: 3 dim: 9 dim: 7 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "ip" type: "InnerProduct" bottom: "conv1" top: "ip"
  inner_product_param { num_output: 5 } }
"""
OTHER = NET.replace('"conv1"', '"convA"').replace('"ip"', '"ipA"')


def _error(capsys) -> tuple[str, str]:
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return captured.out, captured.err


def test_missing_weights_file_is_named_without_errno(write_net, tmp_path, capsys):
    absent = tmp_path / "nope.caffemodel"
    assert main(["build", str(write_net(NET)), "-w", str(absent)]) == 1
    _, err = _error(capsys)
    assert f"{absent}: cannot read weights: No such file or directory" in err
    assert "Errno" not in err
    assert main(["build", str(write_net(NET)), "-w", str(tmp_path)]) == 1
    assert "cannot read weights" in _error(capsys)[1]


@pytest.mark.parametrize("output, expected", [
    ("out.xyz", "unknown output format '.xyz'"),
    ("file.txt/out.pt", "is a file, not a folder"),
    ("folder", "unknown output format"),
])
def test_output_path_is_checked_before_any_work(write_net, tmp_path, capsys, output, expected):
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "folder.pt").mkdir()
    assert main(["build", str(write_net(NET)), "-o", str(tmp_path / output)]) == 1
    out, err = _error(capsys)
    assert out == "" and expected in err  # refused before the table is printed
    assert main(["build", str(write_net(NET)), "-o", str(tmp_path / "folder.pt")]) == 1
    assert "is a folder" in _error(capsys)[1]


def test_output_parent_folders_are_created(write_net, tmp_path, capsys):
    out = tmp_path / "new" / "sub" / "tiny.pt"
    assert main(["build", str(write_net(NET)), "-o", str(out)]) == 0
    assert set(torch.load(out, weights_only=True)) == {"conv1.weight", "conv1.bias",
                                                       "ip.weight", "ip.bias"}


def test_lenient_binding_nothing_is_an_error(write_net, tmp_path, capsys):
    weights = tmp_path / "other.caffemodel"
    caffe2torch.write_random_caffemodel(write_net(OTHER, "other.prototxt"), weights)
    net = write_net(NET)
    assert main(["build", str(net), "-w", str(weights), "--lenient"]) == 1
    _, err = _error(capsys)
    assert "none of the net's 2 layer(s) with parameters binds" in err and str(weights) in err
    with pytest.raises(WeightsError, match="none of the net's 2"):
        caffe2torch.build(net, weights, strict=False)


def test_lenient_partial_binding_says_so(write_net, tmp_path, capsys):
    weights = tmp_path / "half.caffemodel"
    half = NET.replace('"ip"', '"ipA"')
    caffe2torch.write_random_caffemodel(write_net(half, "half.prototxt"), weights)
    assert main(["build", str(write_net(NET)), "-w", str(weights), "--lenient"]) == 0
    _, err = _error(capsys)
    assert "--lenient bound 1 of the 2 layer(s) with parameters" in err
    assert main(["build", str(write_net(NET)), "-w", str(weights)]) == 1
    assert "--lenient on the command line" in _error(capsys)[1]


def test_lenient_without_weights_is_refused(write_net, capsys):
    assert main(["build", str(write_net(NET)), "--lenient"]) == 1
    assert "--lenient applies to loading weights" in _error(capsys)[1]


def test_an_empty_net_is_refused(write_net, capsys):
    assert main(["build", str(write_net('name: "empty"\n'))]) == 1
    assert "the net has no layer to compute" in _error(capsys)[1]


def test_input_shape_hint_names_the_flag(write_net, capsys):
    net = write_net('input: "data"\nlayer { name: "r" type: "ReLU" bottom: "data" top: "r" }\n')
    assert main(["build", str(net)]) == 1
    assert "--input-shape data=N,C,H,W" in _error(capsys)[1]


@pytest.mark.parametrize("outputs", [None, ["ip"]])
def test_a_wrong_input_names_the_layer_and_its_shapes(write_net, outputs):
    net = caffe2torch.build(write_net(NET))
    x = torch.zeros(2, 3, 11, 7)
    with pytest.raises(ShapeError) as err:
        net(x) if outputs is None else net(x, outputs=outputs)
    message = str(err.value)
    assert "layer 'ip' (InnerProduct) cannot take bottoms of shapes [(2, 4, 9, 5)]" in message
    assert "built for [(1, 4, 7, 5)]" in message and "'data' (2, 3, 11, 7)" in message
    assert net(torch.zeros(3, 3, 9, 7)).shape == (3, 5)  # other batch sizes still work
