"""The README's research transcripts are what the code prints today.

The ``extract`` command, the ``read_features`` session and the preprocessing session of the
README's "Research workflow" section run as written, in a folder laid out as the README says
(open_nsfw's real weights from ../shared/models, ``photos/`` made from matplotlib's sample
images), and their output is compared with the README's: text exactly, numbers to the digits
the README prints (the last digit of a float32 may differ between CPUs).
"""
from __future__ import annotations

import contextlib
import doctest
import io
import re
import shutil
from pathlib import Path

import pytest
from oracle import OPEN_NSFW, require_shared

from caffe2torch.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FACE_BOX = (112, 40, 400, 328)  # the README's crop of the face
_NUMBER = re.compile(r"-?\d+\.\d+(?:e[-+]\d+)?|-?\d+e[-+]\d+")


def _section(title: str) -> str:
    text = README.read_text()
    return text.split(title, 1)[1].split("\n### ", 1)[0]


def _blocks(section: str, language: str) -> list[str]:
    return [b.split("```", 1)[0] for b in section.split(f"```{language}\n")[1:]]


def assert_same_transcript(got: str, want: str, where: str) -> None:
    """Equal text; numbers equal to the precision ``want`` writes them with (one unit in the
    last digit shown)."""
    got_numbers, want_numbers = _NUMBER.findall(got), _NUMBER.findall(want)
    assert _NUMBER.sub("#", got) == _NUMBER.sub("#", want), f"{where}:\n{got}\n!=\n{want}"
    for g, w in zip(got_numbers, want_numbers, strict=True):
        mantissa = w.split("e")[0]
        decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
        exponent = int(w.split("e")[1]) if "e" in w else 0
        assert abs(float(g) - float(w)) <= 1.01 * 10.0 ** (exponent - decimals), \
            f"{where}: {g} != {w}\n{got}"


def run_session(block: str, where: str) -> None:
    """Run a ``>>>`` session as written; each example's output must match the README's."""
    namespace: dict = {}
    for example in doctest.DocTestParser().get_examples(block):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(example.source, where, "single"), namespace)  # noqa: S102
        assert_same_transcript(out.getvalue().strip(), example.want.strip(),
                               f"{where}: {example.source.strip()}")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """The folder the README's examples run in: weights, photograph, photos/, model_zoo/."""
    require_shared(OPEN_NSFW)
    from matplotlib import cbook
    from PIL import Image, ImageOps
    here = tmp_path_factory.mktemp("readme")
    (here / "resnet_50_1by2_nsfw.caffemodel").symlink_to(
        OPEN_NSFW / "resnet_50_1by2_nsfw.caffemodel")
    (here / "model_zoo").symlink_to(ROOT / "model_zoo")
    hopper = Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    (here / "grace_hopper.jpg").symlink_to(hopper)
    photos = here / "photos"
    photos.mkdir()
    shutil.copy(hopper, photos / "hopper.jpg")
    with Image.open(hopper) as image:
        ImageOps.mirror(image).save(photos / "hopper_mirrored.jpg", quality=95)
        image.crop(FACE_BOX).save(photos / "hopper_face.jpg", quality=95)
    for sample, name in (("logo2.png", "matplotlib_logo.png"),
                         ("Minduka_Present_Blue_Pack.png", "present.png")):
        shutil.copy(cbook.get_sample_data(sample, asfileobj=False), photos / name)
    return here


def test_extract_and_read_features(folder, monkeypatch, capsys):
    section = _section("### 5. Extract features: `extract`")
    transcript = _blocks(section, "console")[0].splitlines()
    command = transcript[0]
    assert command.startswith("$ caffe2torch extract ")
    monkeypatch.chdir(folder)
    code = main(command[len("$ caffe2torch "):].split())
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out == ""  # the progress bar and the summary go to stderr
    assert re.match(r"extract: 100%\|█+\| 5/5 \[", transcript[1])
    assert "extract: 100%|██████████| 5/5 [" in captured.err
    assert captured.err.splitlines()[-1] == transcript[2]
    run_session(_blocks(section, "python")[0], "README read_features")


def test_preprocessing_session(folder, monkeypatch):
    section = _section("### Preprocessing, the Caffe way")
    monkeypatch.chdir(folder)
    run_session(_blocks(section, "python")[0], "README preprocessing")


def test_transcript_comparison_catches_a_changed_number():
    assert_same_transcript("array([9.9985e-01])", "array([9.9986e-01])", "one unit")
    with pytest.raises(AssertionError):
        assert_same_transcript("array([9.9987e-01])", "array([9.9985e-01])", "two units")
    with pytest.raises(AssertionError):
        assert_same_transcript("{'a': 1.0}", "{'b': 1.0}", "text")
