"""Golden fixtures from REAL Caffe for corpus nets where OpenCV is known to be wrong.

The prototxt files stay in ../shared/corpus (they are read, not copied); for each stem listed in
CORPUS_GOLDENS this writes ``corpus/<stem>.caffemodel`` (seeded random parameters, set with the
same rules as make_goldens.py) and ``corpus/<stem>.npz`` (``input:<blob>``, ``blob:<name>``).

    ~/.cache/caffe-oracle/venv/bin/caffe-python tests/golden/make_corpus_goldens.py
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from make_goldens import auto_split_blobs, fill_params, make_input, seed_of, write_npz

HERE = Path(__file__).resolve().parent
CORPUS = HERE.parents[2] / "shared" / "corpus" / "prototxt"
OUT = HERE / "corpus"
# stem -> why OpenCV cannot serve as the oracle for it.
CORPUS_GOLDENS = {
    "opencv_test_conv_2_inps": "OpenCV computes the second bottom of a shared-filter "
                               "Convolution wrongly (out_0 ~95% off real Caffe)",
}
# Smaller inputs than the file declares, to keep fixtures small (Caffe reshapes the net).
INPUT_SHAPES: dict[str, dict[str, tuple[int, ...]]] = {}


def make_one(stem: str) -> None:
    import caffe

    caffe.set_mode_cpu()
    net = caffe.Net(str(CORPUS / f"{stem}.prototxt"), caffe.TEST)
    rng = np.random.default_rng(seed_of(stem))
    fill_params(net, stem, rng)
    for name, shape in INPUT_SHAPES.get(stem, {}).items():
        net.blobs[name].reshape(*shape)
    net.reshape()
    inputs = {}
    for name in net.inputs:
        inputs[name] = make_input(("normal", 0.0, 1.0), tuple(net.blobs[name].data.shape), rng)
        net.blobs[name].data[...] = inputs[name]
    net.save(str(OUT / f"{stem}.caffemodel"))
    net.forward()
    skip = auto_split_blobs(net)
    arrays = {f"input:{name}": value for name, value in inputs.items()}
    arrays.update({f"blob:{name}": np.array(blob.data, dtype=np.float32)
                   for name, blob in net.blobs.items() if name not in skip})
    write_npz(OUT / f"{stem}.npz", arrays)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--one"]:
        make_one(argv[1])
        return 0
    OUT.mkdir(exist_ok=True)
    failed = 0
    for stem in argv or sorted(CORPUS_GOLDENS):
        done = subprocess.run([sys.executable, __file__, "--one", stem])
        failed += done.returncode != 0
        print(f"{stem}: {'ok' if done.returncode == 0 else 'FAILED'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
