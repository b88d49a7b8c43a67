"""The command line: the build table, -o, errors without tracebacks."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from caffe2torch.cli import main
from oracle import ROOT

NET = """name: "tiny"
input: "data" input_shape { dim: 1 dim: 3 dim: 9 dim: 7 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
"""


def test_build_prints_the_table(write_net, capsys):
    assert main(["build", str(write_net(NET))]) == 0
    out = capsys.readouterr().out
    assert "conv1" in out and "Convolution" in out and "data -> conv1" in out
    assert "1x4x7x5" in out and "1x4x4x3" in out
    assert "total: 4 layers, 112 parameters" in out


def test_build_writes_a_weights_only_state_dict(write_net, tmp_path, capsys):
    out = tmp_path / "tiny.pt"
    assert main(["build", str(write_net(NET)), "-o", str(out)]) == 0
    state = torch.load(out, weights_only=True)
    assert set(state) == {"conv1.weight", "conv1.bias"}


def test_errors_are_one_line_without_traceback(write_net, capsys):
    bad = write_net('layer { name: "x" type: "Nope" }')
    assert main(["build", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("caffe2torch: error: ") and "Traceback" not in err
    assert main(["build", str(bad), "-v"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_zoo_vgg_face_table_from_a_subprocess():
    result = subprocess.run([sys.executable, "-m", "caffe2torch", "build", "--zoo", "vgg_face"],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "total: 40 layers, 145,002,878 parameters" in result.stdout


@pytest.mark.parametrize("argv", [["build"], ["build", "--zoo", "no_such_net"]])
def test_usage_errors(argv, capsys):
    assert main(argv) == 1
    assert "caffe2torch: error:" in capsys.readouterr().err
