"""Commands as a user expects them (issue 11): a fast --help, zoo entries with other weights,
info's counts, export file modes and names, verify's option checks, did-you-mean for types."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from test_research import UNSUPPORTED as UNSUP  # the README's unsup.prototxt

from caffe2torch.cli import main

ROOT = Path(__file__).resolve().parents[1]
NET = """name: "tiny"
input: "data" input_shape { dim: 2 dim: 3 dim: 9 dim: 7 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "ip" type: "InnerProduct" bottom: "conv1" top: "ip"
  inner_product_param { num_output: 5 } }
"""


def _outcome(capsys) -> tuple[str, str]:
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return captured.out, captured.err


# --------------------------------------------------------------------------- --help, imports

def test_help_imports_neither_torch_nor_numpy():
    code = ("import sys, contextlib, io\n"
            "from caffe2torch.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    try:\n        main(['--help'])\n    except SystemExit:\n        pass\n"
            "    for command in ('build', 'classify', 'visualize', 'zoo'):\n"
            "        try:\n            main([command, '--help'])\n"
            "        except SystemExit:\n            pass\n"
            "print(sorted({'torch', 'numpy'} & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=False, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_lazy_package_names_resolve_to_the_api():
    code = ("import caffe2torch.research.figures, caffe2torch, caffe2torch.api as api\n"
            "assert caffe2torch.build is api.build, caffe2torch.build\n"
            "from caffe2torch import CaffeNet, ShapeError, export\n"
            "assert CaffeNet.__module__ == 'caffe2torch.build'\n"
            "assert set(caffe2torch.__all__) <= set(dir(caffe2torch))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=False, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------- zoo weights

def test_zoo_entry_takes_weights_that_are_not_the_published_file(tmp_path, capsys, caplog):
    from caffe2torch import write_random_caffemodel, zoo
    entry = zoo.get_entry("open_nsfw")
    finetuned = tmp_path / "finetuned.caffemodel"
    write_random_caffemodel(entry.prototxt, finetuned, seed=3)
    assert main(["build", "--zoo", "open_nsfw", "-w", str(finetuned)]) == 0
    assert "total:" in _outcome(capsys)[0]
    assert f"warning: {finetuned}: 23792066 bytes" in caplog.text
    assert "--zoo open_nsfw" in caplog.text and "fine-tuned" in caplog.text


# --------------------------------------------------------------------------- info counts




def _readme_block(after: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text[text.index(after):].split("```", 1)[0]
    return [line for line in block.splitlines()[1:] if line and line != "..."]


def test_info_marks_what_it_cannot_count_as_in_the_readme(write_net, capsys):
    assert main(["info", str(write_net(UNSUP, "unsup.prototxt"))]) == 0
    out = _outcome(capsys)[0].splitlines()
    for line in _readme_block("$ caffe2torch info unsup.prototxt"):
        assert line in out
    assert "total: 6 layers, at least 112 parameters, at least 21.95k multiply-accumulates " \
           "for the declared batch of 1 (3 layer(s) marked ? not counted)" in out


def test_info_json_has_macs_none_and_the_batch(write_net, capsys):
    import json
    assert main(["info", str(write_net(UNSUP.replace("dim: 1 ", "dim: 10 ", 1))), "--json"]) == 0
    info = json.loads(_outcome(capsys)[0])
    rows = {row["name"]: row for row in info["rows"]}
    assert "flops" not in rows["conv1"]
    assert rows["conv1"]["macs"] == 10 * 4 * 14 * 14 * 27 and rows["conv1"]["params"] == 112
    assert rows["fc"]["params"] is None and rows["py"]["macs"] is None
    assert rows["py"]["supported"] is False  # a Python layer no converter reproduces
    assert rows["pool"]["params"] == 0 and info["batch"] == 10


def test_summarize_counts_the_layers_it_can_in_a_graph_with_problems(write_net):
    from caffe2torch.api import load_graph
    from caffe2torch.research.netinfo import infer_known_shapes
    from caffe2torch.summary import summarize
    graph = load_graph(write_net(UNSUP), check=False)
    infer_known_shapes(graph)
    params = {row.name: row.params for row in summarize(graph)}
    assert params == {"data": 0, "conv1": 112, "prior": None, "py": None, "fc": None,
                      "pool": 0}


# --------------------------------------------------------------------------- did you mean

def test_a_misspelt_layer_type_gets_did_you_mean(write_net, capsys):
    net = write_net(NET.replace('type: "Convolution"', 'type: "Convolutoin"'))
    assert main(["build", str(net)]) == 1
    err = _outcome(capsys)[1]
    assert "layer 'conv1' has unsupported type 'Convolutoin' (did you mean 'Convolution'?)" in err
    assert str(net) in err
    assert main(["info", str(write_net(NET.replace('"InnerProduct"', '"innerproduct"')))]) == 0
    assert "(did you mean 'InnerProduct'?)" in _outcome(capsys)[0]


def test_an_unknown_type_far_from_every_name_gets_no_guess(write_net, capsys):
    assert main(["build", str(write_net(NET.replace('"Convolution"', '"AnchorGrid"')))]) == 1
    err = _outcome(capsys)[1]
    assert "unsupported type 'AnchorGrid'" in err and "did you mean" not in err


# --------------------------------------------------------------------------- export files

def test_safetensors_get_the_umask_mode(write_net, tmp_path, capsys):
    pytest.importorskip("safetensors")
    old = os.umask(0o027)
    try:
        out = tmp_path / "tiny.safetensors"
        assert main(["build", str(write_net(NET)), "-o", str(out)]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o640


def test_py_export_names_both_files_and_loads_from_a_dashed_name(write_net, tmp_path, capsys):
    out = tmp_path / "my-net.py"
    assert main(["build", str(write_net(NET)), "-o", str(out)]) == 0
    err = _outcome(capsys)[1]
    assert f"wrote {out}\n" in err and f"wrote {tmp_path / 'my-net.pt'} (its weights)" in err
    source = out.read_text()
    assert "from my-net import" not in source and "spec_from_file_location('my_net'" in source
    code = ("import importlib.util, torch\n"
            "spec = importlib.util.spec_from_file_location('my_net', 'my-net.py')\n"
            "module = importlib.util.module_from_spec(spec)\n"
            "spec.loader.exec_module(module)\n"
            "print(tuple(module.load()(torch.zeros(2, 3, 9, 7)).shape))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=False, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(2, 5)"


# --------------------------------------------------------------------------- verify options

@pytest.mark.parametrize("extra, expected", [
    (["--mean", "1,2"], "--mean: preprocessing applies to an image; give one with --image"),
    (["--size", "9x7", "--rgb"], "--size, --rgb: preprocessing applies to an image"),
    (["--tolerance", "-1"], "--tolerance -1: expected a relative error >= 0"),
    (["--tolerance", "nan"], "--tolerance nan: expected a relative error >= 0"),
])
def test_verify_refuses_options_that_mean_nothing(write_net, tmp_path, capsys, extra, expected):
    from caffe2torch import write_random_caffemodel
    net = write_net(NET)
    weights = tmp_path / "w.caffemodel"
    write_random_caffemodel(net, weights)
    assert main(["verify", str(net), "-w", str(weights), *extra]) == 1
    out, err = _outcome(capsys)
    assert out == "" and f"caffe2torch: error: {expected}" in err


# --------------------------------------------------------------------------- copies of zoo nets

def _prep_args(**given):
    import argparse
    values = {"mean": None, "scale": None, "raw_scale": None, "size": None, "crop": None,
              "rgb": False, "zoo": None}
    return argparse.Namespace(**{**values, **given})


def test_an_edited_copy_of_a_zoo_prototxt_is_told_the_entrys_options(tmp_path, caplog):
    from caffe2torch import zoo
    from caffe2torch.api import load_graph
    from caffe2torch.research._options import preprocessing_from_args
    edited = tmp_path / "deploy.prototxt"
    edited.write_text(zoo.get_entry("vgg_face").prototxt.read_text() + "# my edit\n")
    prep = preprocessing_from_args(_prep_args(), load_graph(edited))
    assert prep.source == "defaults" and prep.mean is None
    assert f"{edited} records no preprocessing" in caplog.text
    assert ("named 'VGG_FACE_16_layers' like model zoo entry 'vgg_face'; if it was trained as "
            "that one, pass its preprocessing: --size 224x224 --mean 93.594,104.7624,129.1863"
            in caplog.text)
    assert "--zoo" not in caplog.text  # --zoo would take the zoo's file, not the edited one


def test_an_unchanged_copy_of_a_zoo_prototxt_gets_the_entrys_preprocessing(tmp_path, caplog):
    from caffe2torch import zoo
    from caffe2torch.api import load_graph
    from caffe2torch.research._options import preprocessing_from_args
    copy = tmp_path / "vgg.prototxt"
    copy.write_bytes(zoo.get_entry("vgg_face").prototxt.read_bytes())
    assert zoo.entry_for_prototxt(copy).id == "vgg_face"
    prep = preprocessing_from_args(_prep_args(), load_graph(copy))
    assert prep.source == "model zoo entry 'vgg_face'" and "records no" not in caplog.text
    assert zoo.entries_named("") == [] and zoo.entry_for_prototxt(tmp_path / "absent") is None
