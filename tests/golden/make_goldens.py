"""Make the golden fixtures of tests/test_golden.py with REAL Caffe (run it with pycaffe's python).

For every ``tests/golden/nets/<net>.prototxt`` this writes, next to this script:

- ``<net>.caffemodel``: every parameter blob set from a seeded RNG (``net.save``, before the
  forward pass: a BatchNorm with ``use_global_stats: false`` updates its blobs while it runs);
- ``<net>.npz``: ``input:<blob>`` for every net input as fed, and ``blob:<name>`` for every blob
  of the net after ``net.forward()``, i.e. Caffe's final value of each blob name (after in-place
  layers). The tops of the Split layers Caffe inserts by itself (``<blob>_<layer>_<i>_split_<j>``)
  are copies of a named blob and are left out; explicit Split layers' tops are kept.
  Nets named ``train_*`` run in Caffe's TRAIN phase and also record ``param:<layer>:<i>``,
  every parameter blob after the forward pass (BatchNorm's accumulated statistics).

How to rerun (from the repository root)::

    bash ../shared/tools/build-caffe.sh        # once, ~4 min: CPU Caffe + pycaffe
    ~/.cache/caffe-oracle/venv/bin/caffe-python tests/golden/make_goldens.py          # all nets
    ~/.cache/caffe-oracle/venv/bin/caffe-python tests/golden/make_goldens.py lrn mvn  # some nets

Nets Caffe must refuse live in ``refused/<net>.prototxt``: each runs in its own process, and the
last glog FATAL/ERROR line (the failed CHECK; pointers shown as 0x?) or, for a crash, the signal
and last stderr line is recorded in ``refused.json``; a net that Caffe runs fails the script. Naming only refused nets on the command line rerecords just those.

The Caffe built there is the brocolli fork of BVLC Caffe (see the script's header): Pooling spells
floor rounding ``ceil_mode: false`` (BVLC: ``round_mode: FLOOR``), and Clip / Swish are missing, so
the nets here use neither. Each net runs in its own process, because a failed CHECK aborts Caffe.
The output is deterministic: the seed of a net is the CRC-32 of its name, and the ``.npz`` files
are written with fixed zip timestamps, so rerunning changes no file unless a net or this script
changed (up to the last bit of multi-threaded BLAS sums). Fixtures of removed nets are deleted.

Parameter values: weights ~ N(0, 1/fan_in), 1-D blobs ~ N(0, 0.5); Scale factors ~ N(1, 0.5);
PReLU slopes ~ U(-0.5, 1); BatchNorm blobs (mean * f, variance * f, f) with mean ~ N(0, 0.5),
variance ~ U(0.5, 2) and f from BN_SCALE_FACTORS (default 1.25); where f = 0 the stored mean and
variance are left unmultiplied (non-zero), so the fixture shows that Caffe ignores them.
Inputs are N(0, 1) unless INPUTS says otherwise (positive for Log, integers for Embed, tie-free
for ArgMax, 0/1 for sequence continuation and Filter selectors).
"""
from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
NETS = HERE / "nets"

# (net, layer) -> BatchNorm scale factor f (blob 2).
BN_SCALE_FACTORS = {
    ("train_batchnorm", "bn_half"): 3.0,
    ("train_batchnorm", "bn_fc"): 1.0,
    ("batchnorm", "bn_plain"): 0.7,
    ("batchnorm", "bn_f0"): 0.0,
    ("batchnorm", "bn_eps"): 3.5,
    ("batchnorm", "bn_2d"): 2.0,
    ("batchnorm", "bn_3d"): 1.5,
}
DEFAULT_BN_SCALE_FACTOR = 1.25

# net -> {input blob: (kind, *arguments)}; every other input is N(0, 1).
INPUTS = {
    "activations": {"pos": ("uniform", 0.1, 3.0)},
    "argmax": {"data": ("distinct",)},
    "batch_reindex": {"permutation": ("values", [1, 0, 1])},
    "embed": {"idx": ("integers", 0, 7)},
    "filter": {"selector": ("values", [[1], [0], [1], [1]])},
    "nonfinite": {"data": ("nonfinite",)},
    "lrn_running_sum": {"spiky": ("channel_scales", [1e4, 0.01, 0.01, 0.01, 300.0, 0.01, 0.01,
                                                     0.01, 1.0])},
    "mvn": {"data": ("normal", 3.0, 2.0)},
    "ssd_detection": {"conf": ("uniform", 0.0, 1.0), "loc": ("normal", 0.0, 1.0),
                      "loc_all": ("normal", 0.0, 1.0)},
    "mobile_activations": {"data": ("normal", 0.0, 5.0)},  # past the clips at +-6
    "rcnn_proposal": {
        "rpn_cls_prob": ("uniform", 0.0, 1.0),
        "rpn_bbox_pred": ("normal", 0.0, 0.3),
        "im_info": ("values", [[80.0, 112.0, 1.5]]),
        "cls_cut": ("uniform", 0.0, 1.0),
        "bbox_cut": ("normal", 0.0, 0.3),
    },
    "recurrent": {
        "cont": ("values", [[0, 0], [1, 1], [1, 0], [1, 1]]),
        "cont_unit": ("values", [[1, 0]]),
    },
}

_AUTO_SPLIT_LAYER = re.compile(r".+_\d+_split$")
# nets named train_* run in Caffe's TRAIN phase and also record param:<layer>:<i>, every
# parameter blob after the forward pass
TRAIN_PREFIX = "train_"


def seed_of(net: str) -> int:
    return zlib.crc32(net.encode())


def make_input(kind: tuple, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    name, *args = kind
    if name == "normal":
        value = rng.normal(args[0], args[1], shape)
    elif name == "uniform":
        value = rng.uniform(args[0], args[1], shape)
    elif name == "integers":
        value = rng.integers(args[0], args[1], shape)
    elif name == "distinct":  # a permutation of evenly spaced values: no ties anywhere
        size = int(np.prod(shape))
        value = (rng.permutation(size).reshape(shape) - size / 2) * (4.0 / size)
    elif name == "channel_scales":  # N(0, 1) times one scale per channel (axis 1)
        scales = np.array(args[0], dtype=np.float64).reshape(1, -1, *[1] * (len(shape) - 2))
        value = rng.normal(0.0, 1.0, shape) * scales
    elif name == "nonfinite":  # N(0, 1) with -inf, +inf and NaN at fixed places
        value = rng.normal(0.0, 1.0, shape)
        flat = value.reshape(-1)
        flat[0::5], flat[1::5], flat[2::7] = -np.inf, np.inf, np.nan
    elif name == "values":
        value = np.array(args[0])
        assert value.shape == shape, f"{value.shape} != {shape}"
    else:
        raise ValueError(f"unknown input kind {name!r}")
    return np.asarray(value, dtype=np.float32)


def fill_params(net, net_name: str, rng: np.random.Generator) -> None:
    types = dict(zip(net._layer_names, (layer.type for layer in net.layers)))
    for layer, blobs in net.params.items():
        kind = types[layer]
        if kind == "BatchNorm":
            f = BN_SCALE_FACTORS.get((net_name, layer), DEFAULT_BN_SCALE_FACTOR)
            shape = blobs[0].data.shape
            mean, var = rng.normal(0.0, 0.5, shape), rng.uniform(0.5, 2.0, shape)
            stored = 1.0 if f == 0 else f
            blobs[0].data[...] = mean * stored
            blobs[1].data[...] = var * stored
            blobs[2].data[...] = f
            continue
        for i, blob in enumerate(blobs):
            shape = blob.data.shape
            if kind == "PReLU":
                value = rng.uniform(-0.5, 1.0, shape)
            elif kind == "Scale" and i == 0:
                value = rng.normal(1.0, 0.5, shape)
            elif len(shape) >= 2:
                value = rng.normal(0.0, 1.0, shape) / np.sqrt(np.prod(shape[1:]))
            else:
                value = rng.normal(0.0, 0.5, shape)
            blob.data[...] = value


def auto_split_blobs(net) -> set[str]:
    """Tops of the Split layers Caffe inserted itself (one per extra consumer of a blob)."""
    found = set()
    for name, layer in zip(net._layer_names, net.layers):
        if layer.type == "Split" and _AUTO_SPLIT_LAYER.fullmatch(name):
            found.update(net.top_names[name])
    return found


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez with fixed timestamps (byte-identical output for identical arrays)."""
    tmp = path.with_suffix(".npz.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for key, value in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.array(value, order="C"), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, buffer.getvalue())
    os.replace(tmp, path)


def make_one(net_name: str) -> None:
    """Child process: build, fill, save, forward and record one net."""
    import caffe

    caffe.set_mode_cpu()
    train = net_name.startswith(TRAIN_PREFIX)
    net = caffe.Net(str(NETS / f"{net_name}.prototxt"), caffe.TRAIN if train else caffe.TEST)
    rng = np.random.default_rng(seed_of(net_name))
    fill_params(net, net_name, rng)
    specs = INPUTS.get(net_name, {})
    inputs = {}
    for name in net.inputs:
        shape = tuple(net.blobs[name].data.shape)
        inputs[name] = make_input(specs.get(name, ("normal", 0.0, 1.0)), shape, rng)
        net.blobs[name].data[...] = inputs[name]
    unknown = set(specs) - set(inputs)
    assert not unknown, f"INPUTS names blobs that are not inputs of {net_name}: {unknown}"
    net.save(str(HERE / f"{net_name}.caffemodel"))
    net.forward()
    skip = auto_split_blobs(net)
    arrays = {f"input:{name}": value for name, value in inputs.items()}
    for name, blob in net.blobs.items():
        if name not in skip:
            arrays[f"blob:{name}"] = np.array(blob.data, dtype=np.float32, copy=True)
    if train:  # the parameter blobs after the forward pass (BatchNorm's accumulated statistics)
        for layer, blobs in net.params.items():
            for i, blob in enumerate(blobs):
                arrays[f"param:{layer}:{i}"] = np.array(blob.data, dtype=np.float32, copy=True)
    write_npz(HERE / f"{net_name}.npz", arrays)


REFUSED = HERE / "refused"  # nets Caffe must refuse: refused/<net>.prototxt
_GLOG_PREFIX = re.compile(r"^[FE]\d{8} [\d:.]+ +\d+ ([\w.]+):\d+\] ")


def try_refused(net_name: str) -> None:
    """Child process: set up and run a net Caffe should refuse (a failed CHECK aborts here)."""
    import caffe

    caffe.set_mode_cpu()
    net = caffe.Net(str(REFUSED / f"{net_name}.prototxt"), caffe.TEST)
    net.forward()


def record_refusals(wanted: list[str] | None, env: dict[str, str]) -> list[str]:
    """Run every refused/ net in its own process; write refused.json {net: Caffe's message}.
    A net that Caffe runs is reported as failed (and left out of the file)."""
    import json

    path = HERE / "refused.json"
    found = json.loads(path.read_text()) if path.exists() else {}
    nets = sorted(p.stem for p in REFUSED.glob("*.prototxt"))
    found = {k: v for k, v in found.items() if k in nets}
    failed = []
    for name in nets if wanted is None else [n for n in wanted if n in nets]:
        result = subprocess.run([sys.executable, __file__, "--refused-one", name], env=env,
                                capture_output=True, text=True, check=False)
        lines = [re.sub(r"0x[0-9a-f]+", "0x?", _GLOG_PREFIX.sub(r"\1: ", line))
                 for line in result.stderr.splitlines() if _GLOG_PREFIX.match(line)]
        if result.returncode < 0 and not lines and result.stderr.strip():
            # a crash rather than a failed CHECK (e.g. glibc's "double free or corruption")
            lines = [f"crash (signal {-result.returncode}): {result.stderr.strip().splitlines()[-1]}"]
        if result.returncode == 0 or not lines:
            failed.append(name)
            print(f"FAILED {name}: Caffe did not refuse it (exit {result.returncode})",
                  file=sys.stderr)
            continue
        found[name] = lines[-1]
        print(f"refused {name}: {lines[-1]}")
    path.write_text(json.dumps(dict(sorted(found.items())), indent=1) + "\n")
    return failed


def main(argv: list[str]) -> int:
    if argv[:1] == ["--one"]:
        make_one(argv[1])
        return 0
    if argv[:1] == ["--refused-one"]:
        try_refused(argv[1])
        return 0
    refused = sorted(p.stem for p in REFUSED.glob("*.prototxt"))
    if argv and set(argv) <= set(refused):
        env = dict(os.environ, GLOG_minloglevel="0")
        return 1 if record_refusals(argv, env) else 0
    all_nets = sorted(p.stem for p in NETS.glob("*.prototxt"))
    wanted = argv or all_nets
    unknown = sorted(set(wanted) - set(all_nets))
    if unknown:
        print(f"make_goldens: no such net(s) {unknown}; nets: {all_nets}", file=sys.stderr)
        return 2
    if not argv:
        for stale in sorted(HERE.glob("*.npz")) + sorted(HERE.glob("*.caffemodel")):
            if stale.stem not in all_nets:
                stale.unlink()
                print(f"removed stale {stale.name}")
    env = dict(os.environ, GLOG_minloglevel=os.environ.get("GLOG_minloglevel", "2"))
    failed = []
    for name in wanted:
        result = subprocess.run([sys.executable, __file__, "--one", name], env=env,
                                capture_output=True, text=True)
        if result.returncode != 0:
            failed.append(name)
            print(f"FAILED {name} (exit {result.returncode}):\n{result.stderr[-3000:]}",
                  file=sys.stderr)
            continue
        sizes = sum((HERE / f"{name}{ext}").stat().st_size for ext in (".npz", ".caffemodel"))
        print(f"ok {name}: {sizes / 1024:.1f} KiB")
    total = sum(p.stat().st_size for p in HERE.glob("*") if p.suffix in (".npz", ".caffemodel"))
    print(f"fixtures: {total / 1024:.1f} KiB in all")
    if not argv:
        failed += record_refusals(None, dict(env, GLOG_minloglevel="0"))
    if failed:
        print(f"failed: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
