"""The wheel works outside the checkout: `pip wheel .` installed into a fresh venv has the model
zoo (shipped as package data from the top-level model_zoo/), so `caffe2torch zoo list` and
`caffe2torch build --zoo vgg_face` run from a folder that is not the checkout.

Cheap: the wheel is built with --no-deps and installed with --no-deps; the fresh venv reaches
torch, numpy... through a .pth line naming this interpreter's site-packages (whose own .pth
files, such as an editable install's, are not run from there)."""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(argv, cwd, timeout=600):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CAFFE2TORCH_ZOO")}
    result = subprocess.run([str(a) for a in argv], capture_output=True, text=True, check=False,
                            cwd=cwd, env=env, timeout=timeout)
    assert result.returncode == 0, f"{argv}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    base = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", ROOT, "--no-deps", "-q",
          "--disable-pip-version-check", "-w", base / "dist"], cwd=base)
    wheels = list((base / "dist").glob("caffe2torch-*.whl"))
    assert len(wheels) == 1
    env_dir = base / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    _run([python, "-m", "pip", "install", "--no-deps", "-q", "--disable-pip-version-check",
          wheels[0]], cwd=base)
    site = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                cwd=base).strip()
    (Path(site) / "_caffe2torch_test_deps.pth").write_text(sysconfig.get_paths()["purelib"]
                                                          + "\n")
    work = base / "elsewhere"
    work.mkdir()
    return env_dir, work


def test_the_installed_package_and_zoo_are_the_wheels(installed):
    env_dir, work = installed
    code = "import caffe2torch, caffe2torch.zoo as z; print(caffe2torch.__file__, z.ZOO_DIR)"
    out = _run([env_dir / "bin" / "python", "-c", code], cwd=work)
    package, zoo_dir = out.split()
    assert Path(package).is_relative_to(env_dir) and Path(zoo_dir).is_relative_to(env_dir)
    assert not Path(package).is_relative_to(ROOT)


def test_zoo_list_and_build_from_outside_the_checkout(installed):
    env_dir, work = installed
    command = env_dir / "bin" / "caffe2torch"
    listed = _run([command, "zoo", "list"], cwd=work)
    for entry in sorted(p.name for p in (ROOT / "model_zoo").iterdir() if p.is_dir()):
        assert entry in listed
    table = _run([command, "build", "--zoo", "vgg_face"], cwd=work)
    assert "total: 40 layers, 145,002,878 parameters" in table
    labels = _run([env_dir / "bin" / "python", "-c",
                   "from caffe2torch import zoo; print(len(zoo.get_entry('vgg16').labels))"],
                  cwd=work)
    assert labels.strip() == "1000"
