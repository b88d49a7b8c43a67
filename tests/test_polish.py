"""Commands as a user expects them (issue 11): a fast --help, zoo entries with other weights,
info's counts, export file modes and names, verify's option checks, did-you-mean for types."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
