"""Property: every prototxt, generated or mutated, ends in a build or a Caffe2TorchError.

Two sources of inputs: small nets drawn layer by layer (types, bottoms, tops and parameters
from small values and extremes: 0, -1, 2**31 - 1, nan...), and mutants of the golden nets (the
mutations of ``bench/fuzz_prototxt.py``: numbers set to extremes, lines deleted, duplicated or
swapped, types, bottoms and tops changed, truncation, unknown blocks). Both ``build`` and
``load_graph(check=False)`` must end in a result or one of our errors, never another exception.
The address space is limited while the test runs (``ulimit -v`` a few GB above what the process
maps), so a size the code does not check before allocating fails here as an allocation error
instead of filling the machine; the build's own check sees the same limit and refuses such nets
with NetSizeError first.
"""
from __future__ import annotations

import contextlib
import os
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import caffe2torch
from caffe2torch.errors import Caffe2TorchError

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from fuzz_prototxt import mutate

GOLDEN_NETS = sorted((ROOT / "tests" / "golden" / "nets").glob("*.prototxt"))
_HEADROOM = 3 << 30  # bytes of address space a case may add

_SMALL = st.integers(1, 3)
_VALUE = st.one_of(*[_SMALL] * 6, st.sampled_from([0, 2147483647, 65536, -1]))
_COUNT = st.one_of(_SMALL, st.sampled_from([0, 2147483647, 100000, 65536]))
_FLOAT = st.one_of(st.sampled_from([0.5, 1.0, 2.0]),
                   st.sampled_from(["0", "-1", "1e38", "nan", "inf", "1e-38"]))

#: A layer type and the parameter text it takes ({n} an output count, {v} a size, {f} a float,
#: {a} an axis).
_TEMPLATES = {
    "Convolution": "convolution_param {{ num_output: {n} kernel_size: {v} stride: {v} pad: {v} "
                   "group: {v} }}",
    "Deconvolution": "convolution_param {{ num_output: {n} kernel_size: {v} stride: {v} }}",
    "InnerProduct": "inner_product_param {{ num_output: {n} axis: {a} }}",
    "Pooling": "pooling_param {{ pool: {pool} kernel_size: {v} stride: {v} pad: {v} }}",
    "Embed": "embed_param {{ input_dim: {n} num_output: {n} }}",
    "Reshape": "reshape_param {{ shape {{ dim: {a} dim: {v} }} axis: {a} }}",
    "Tile": "tile_param {{ axis: {a} tiles: {n} }}",
    "Flatten": "flatten_param {{ axis: {a} }}",
    "Softmax": "softmax_param {{ axis: {a} }}",
    "Concat": "concat_param {{ axis: {a} }}",
    "Slice": "slice_param {{ axis: {a} slice_point: {v} }}",
    "Crop": "crop_param {{ axis: {a} offset: {v} }}",
    "LRN": "lrn_param {{ local_size: {v} alpha: {f} beta: {f} }}",
    "Scale": "scale_param {{ axis: {a} num_axes: {a} bias_term: true }}",
    "Bias": "bias_param {{ axis: {a} }}",
    "BatchNorm": "batch_norm_param {{ eps: {f} }}",
    "PReLU": "",
    "ReLU": "relu_param {{ negative_slope: {f} }}",
    "Power": "power_param {{ power: {f} scale: {f} }}",
    "Eltwise": "eltwise_param {{ operation: {op} }}",
    "ArgMax": "argmax_param {{ top_k: {v} axis: {a} }}",
    "Reduction": "reduction_param {{ axis: {a} }}",
    "Permute": "permute_param {{ order: {a} order: {a} }}",
    "Normalize": "norm_param {{ eps: {f} }}",
    "PriorBox": "prior_box_param {{ min_size: {f} aspect_ratio: {f} }}",
    "Dropout": "dropout_param {{ dropout_ratio: {f} }}",
    "Split": "",
    "Silence": "",
    "MVN": "",
    "Threshold": "threshold_param {{ threshold: {f} }}",
    "NoSuchLayer": "",
}
_TWO_BOTTOMS = frozenset({"Eltwise", "Concat", "Crop", "Scale", "Bias", "PriorBox"})


@st.composite
def _generated_net(draw) -> str:
    dims = draw(st.lists(st.one_of(*[st.integers(1, 8)] * 6, _VALUE), min_size=1, max_size=4))
    text = ('layer { name: "data" type: "Input" top: "data" input_param { shape { '
            + " ".join(f"dim: {d}" for d in dims) + " } } }\n")
    blobs = ["data"]
    for index in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(sorted(_TEMPLATES)))
        param = _TEMPLATES[kind]
        while "{" in param.replace("{{", "").replace("}}", ""):
            param = param.replace("{n}", str(draw(_COUNT)), 1)
            param = param.replace("{v}", str(draw(_VALUE)), 1)
            param = param.replace("{a}", str(draw(st.integers(-4, 4))), 1)
            param = param.replace("{f}", str(draw(_FLOAT)), 1)
            param = param.replace("{pool}", draw(st.sampled_from(["MAX", "AVE"])), 1)
            param = param.replace("{op}", draw(st.sampled_from(["SUM", "PROD", "MAX"])), 1)
        param = param.replace("{{", "{").replace("}}", "}")
        # hypothesis favours 0 and the first choices: the rare forms come last
        bottoms = [blobs[-1] if draw(st.integers(0, 2)) < 2 else draw(st.sampled_from(blobs))]
        if kind in _TWO_BOTTOMS and draw(st.integers(0, 2)) < 2 or draw(st.integers(0, 9)) == 9:
            bottoms.append(draw(st.sampled_from(blobs)))
        in_place = len(bottoms) == 1 and draw(st.integers(0, 4)) == 4
        tops = [bottoms[0]] if in_place else [f"b{index}_{i}" for i in range(
            1 + (draw(st.integers(0, 4)) == 4))]
        if draw(st.integers(0, 19)) == 19:
            tops.append(tops[0])  # a top listed twice
        text += (f'layer {{ name: "l{index}" type: "{kind}" '
                 + "".join(f'bottom: "{b}" ' for b in bottoms)
                 + "".join(f'top: "{t}" ' for t in tops) + f"{param} }}\n")
        blobs += [t for t in tops if t not in blobs]
    return text


@st.composite
def _mutated_net(draw) -> str:
    text = GOLDEN_NETS[draw(st.integers(0, len(GOLDEN_NETS) - 1))].read_text()
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    for _ in range(draw(st.integers(1, 3))):
        text, _ = mutate(text, rng)
    return text


@contextlib.contextmanager
def _address_space_limit(headroom: int):
    """Limit the address space to what the process maps now plus ``headroom``, then restore."""
    resource = pytest.importorskip("resource")
    with open("/proc/self/statm", encoding="ascii") as handle:
        mapped = int(handle.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = mapped + headroom
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _outcome(path: Path) -> str:
    """'built' or the class of our error; any other exception propagates (the failure)."""
    try:
        caffe2torch.build(path)
        result = "built"
    except Caffe2TorchError as err:
        result = type(err).__name__
    with contextlib.suppress(Caffe2TorchError):
        caffe2torch.load_graph(path, check=False)
    return result


def test_every_prototxt_builds_or_raises_our_error(tmp_path):
    seen: Counter[str] = Counter()
    path = tmp_path / "case.prototxt"

    @settings(max_examples=600, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.one_of(_generated_net().map(lambda t: ("generated", t)),
                     _mutated_net().map(lambda t: ("mutated", t))))
    def check(case):
        source, text = case
        path.write_text(text)
        outcome = _outcome(path)
        event(f"{source}: {outcome}")
        seen[outcome] += 1
        seen[f"{source}: {outcome}"] += 1

    with _address_space_limit(_HEADROOM):
        check()
    # the inputs reach every stage: some build, some fail in the graph, the shapes, the size check
    assert seen["built"] >= 40 and seen["ShapeError"] >= 40 and seen["GraphError"] >= 20, seen
    assert seen["NetSizeError"] >= 1, seen
