"""The one build step pyproject.toml cannot say: ship the model zoo inside the package.

``model_zoo/`` stays at the top of the checkout (its source, where tools/make_zoo.py writes);
a wheel (or a regular install) gets a copy as ``caffe2torch/model_zoo/``, where
``caffe2torch.zoo`` looks first. An editable install reads the checkout's folder directly.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ZOO = Path(__file__).resolve().parent / "model_zoo"


class BuildPyWithZoo(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "caffe2torch" / "model_zoo"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(ZOO, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


setup(cmdclass={"build_py": BuildPyWithZoo})
