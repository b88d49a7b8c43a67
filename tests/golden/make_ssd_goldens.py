"""Real-Caffe fixtures of the SSD nets in ../shared/corpus (tests/test_ssd_nets.py), end to end.

These nets are too big to commit with their weights, so only Caffe's outputs are committed:

1. in the project's venv, ``write_weights`` writes each net's random caffemodel
   (``caffe2torch.weights.random_blobs`` with the net's seed, the ``*_mbox_conf`` heads scaled
   by ``CONF_SCALE`` so that scores pass the net's confidence_threshold and detections come
   out); the test rebuilds it the same way and checks its sha256 (``WEIGHTS_SHA256``);
2. the oracle Caffe runs each net on ``net_input`` (a smooth deterministic image, no RNG) and
   ``ssd_nets/<net>.npz`` records ``input:<blob>`` as a checksum-sized summary and
   ``blob:<name>`` for the heads, the priors and every output.

How to rerun (from the repository root; the oracle from ../shared/tools/build-caffe.sh)::

    PYTHONPATH=$PWD .venv/bin/python tests/golden/make_ssd_goldens.py          # all nets
    PYTHONPATH=$PWD .venv/bin/python tests/golden/make_ssd_goldens.py NET ...

It prints each caffemodel's sha256 (copy changes into WEIGHTS_SHA256). ``CAFFE_PYTHON``
overrides the oracle's python (default ~/.cache/caffe-oracle/venv/bin/caffe-python). The
PriorBox layers of these nets set ``clip`` and their DetectionOutput an ``nms_param``, where the
oracle fork's defaults differ from weiliu89/caffe's.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "ssd_nets"
CORPUS = (HERE.parents[1] / ".." / "shared" / "corpus" / "prototxt").resolve()
NETS = ("mobilenet_ssd_voc_deploy", "mobilenet_ssd_deploy_bn",
        "opencv_res10_ssd_face_detector_deploy")
#: net -> factor on its ``*_mbox_conf`` weights and biases (random heads score ~1/classes).
CONF_SCALE = {"mobilenet_ssd_voc_deploy": 7.0, "mobilenet_ssd_deploy_bn": 3.0,
              "opencv_res10_ssd_face_detector_deploy": 1.0}
#: the blobs recorded besides the net's outputs.
BLOBS = ("mbox_loc", "mbox_conf_flatten", "mbox_priorbox", "detection_out")
WEIGHTS_SHA256 = {
    "mobilenet_ssd_voc_deploy":
        "a3dce8303a3b495077034a25bd74b95763ea6e8841c9262a24bcafc5d49485ce",
    "mobilenet_ssd_deploy_bn":
        "e53e6d51f72fe9ffbf4e296c5cb6fbc456bfe6f1ef35fa05d734ef42a86c56b0",
    "opencv_res10_ssd_face_detector_deploy":
        "eb59ba1f968828694597ca5a7354c04d3846d6c38e7d703ed7adad237501041c",
}


def seed_of(net: str) -> int:
    return zlib.crc32(net.encode())


def net_input(shape: tuple[int, ...]) -> np.ndarray:
    """A smooth image-like input in [-1, 1] computed from its indices (reproducible anywhere)."""
    n, c, h, w = shape
    ih = np.arange(h, dtype=np.float64)[:, None]
    iw = np.arange(w, dtype=np.float64)[None, :]
    planes = [np.sin(ih * 0.05 * (k % c + 1) + iw * 0.03 + 0.4 * i) * np.cos(iw * 0.07 - k % c)
              for i in range(n) for k in range(c)]
    return np.stack(planes).reshape(shape).astype(np.float32)


def write_weights(net: str, path: Path) -> str:
    """Write the net's random caffemodel; returns its sha256 (needs caffe2torch)."""
    import caffe2torch
    from caffe2torch.io.caffemodel import write_caffemodel
    from caffe2torch.weights import random_blobs

    graph = caffe2torch.load_graph(CORPUS / f"{net}.prototxt")
    scale = np.float32(CONF_SCALE[net])
    layers = [(name, kind, [b * scale for b in blobs] if name.endswith("_mbox_conf") else blobs)
              for name, kind, blobs in random_blobs(graph, seed=seed_of(net))]
    write_caffemodel(path, layers, name=graph.name)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_caffe(net: str, weights: str) -> None:
    """Child process under the oracle's python: forward one net, write its npz."""
    import caffe

    sys.path.insert(0, str(HERE))
    from make_goldens import write_npz

    caffe.set_mode_cpu()
    model = caffe.Net(str(CORPUS / f"{net}.prototxt"), weights, caffe.TEST)
    arrays = {}
    for name in model.inputs:
        value = net_input(tuple(model.blobs[name].data.shape))
        model.blobs[name].data[...] = value
        arrays[f"input:{name}"] = np.array([value.sum(dtype=np.float64), value.size])
    model.forward()
    for name in (*BLOBS, *model.outputs):
        arrays[f"blob:{name}"] = np.array(model.blobs[name].data, dtype=np.float32, copy=True)
    write_npz(OUT / f"{net}.npz", arrays)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--caffe"]:
        run_caffe(argv[1], argv[2])
        return 0
    wanted = argv or list(NETS)
    python = os.environ.get("CAFFE_PYTHON",
                            str(Path.home() / ".cache/caffe-oracle/venv/bin/caffe-python"))
    env = dict(os.environ, GLOG_minloglevel=os.environ.get("GLOG_minloglevel", "2"))
    OUT.mkdir(exist_ok=True)
    failed = []
    with tempfile.TemporaryDirectory() as tmp:
        for net in wanted:
            weights = Path(tmp) / f"{net}.caffemodel"
            digest = write_weights(net, weights)
            result = subprocess.run([python, __file__, "--caffe", net, str(weights)], env=env,
                                    capture_output=True, text=True, check=False)
            if result.returncode != 0:
                failed.append(net)
                print(f"FAILED {net}:\n{result.stderr[-3000:]}", file=sys.stderr)
                continue
            size = (OUT / f"{net}.npz").stat().st_size
            print(f'ok {net}: {size / 1024:.1f} KiB; weights sha256 "{digest}"')
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
