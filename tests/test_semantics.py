"""Caffe's corner semantics (issue 12): shared memory, in-place writes, what Caffe refuses.

Each rule here is also locked by a real-Caffe golden (tests/golden/nets/shared_memory,
inplace_eltwise, pool_clip_rule, ...; refusals in tests/golden/refused/); these tests check the
graph's bookkeeping and the modules against numpy specs written from Caffe's source.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from reference import routing as ref

import caffe2torch

INPUT = ('layer {{ name: "in" type: "Input" top: "x" top: "b" top: "c" '
         'input_param {{ shape {{ dim: {n} dim: 3 dim: 4 dim: 5 }} }} }}\n')


def _net(write_net, body: str, n: int = 2):
    return caffe2torch.build(write_net(INPUT.format(n=n) + body))


def _inputs(seed: int, n: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal((n, 3, 4, 5)).astype(np.float32) for k in "xbc"}


def _run(net, inputs, names):
    with torch.no_grad():
        out = net(**{k: torch.from_numpy(v) for k, v in inputs.items()}, outputs=names)
    return {k: v.numpy() for k, v in out.items()}


def test_split_tops_share_the_bottom_storage(write_net):
    """Split x -> a, b; ReLU a in place; TanH b: Caffe gives tanh(relu(x)), and x, a, b all
    read relu(x) afterwards."""
    net = _net(write_net, 'layer { name: "s" type: "Split" bottom: "x" top: "a" top: "q" }\n'
                          'layer { name: "r" type: "ReLU" bottom: "a" top: "a" }\n'
                          'layer { name: "t" type: "TanH" bottom: "q" top: "y" }\n'
                          'layer { name: "z" type: "Eltwise" bottom: "b" bottom: "c" top: "z" }')
    graph = net.caffe.graph
    assert sorted(graph.shared_with("a")) == ["a", "q", "x"]
    assert graph.shared_with("y") == ["y"]
    relu = graph.layer("r")
    assert relu.alias_tops == ["x#1", "q#1"] and relu.aliased_bottoms == [0]
    assert graph.blobs["q#1"].alias_of == ("a#1", "q")
    assert graph.layer("t").bottoms == ["q#1"]
    assert sorted(net.caffe.output_names) == ["a", "y", "z"]
    inputs = _inputs(0)
    out = _run(net, inputs, ["x", "a", "q", "y"])
    relu_x = np.maximum(inputs["x"], 0)
    for name in ("x", "a", "q"):
        np.testing.assert_array_equal(out[name], relu_x)
    np.testing.assert_allclose(out["y"], np.tanh(relu_x), rtol=1e-6)


def test_reshape_alias_keeps_each_blob_shape_and_runs_at_other_batch_sizes(write_net):
    net = _net(write_net,
               'layer { name: "rs" type: "Reshape" bottom: "x" top: "r" '
               'reshape_param { shape { dim: 0 dim: -1 } } }\n'
               'layer { name: "early" type: "Sigmoid" bottom: "x" top: "early" }\n'
               'layer { name: "relu" type: "ReLU" bottom: "r" top: "r" }\n'
               'layer { name: "late" type: "Sigmoid" bottom: "x" top: "late" }')
    graph = net.caffe.graph
    assert graph.blob("x").shape == (2, 3, 4, 5) and graph.blob("r").shape == (2, 60)
    for n in (2, 5):
        inputs = _inputs(1, n)
        out = _run(net, inputs, ["x", "r", "early", "late"])
        x = inputs["x"]
        np.testing.assert_array_equal(out["x"], np.maximum(x, 0))
        np.testing.assert_array_equal(out["r"], np.maximum(x, 0).reshape(n, 60))
        np.testing.assert_allclose(out["early"], 1 / (1 + np.exp(-x)), rtol=1e-6)
        np.testing.assert_allclose(out["late"], 1 / (1 + np.exp(-np.maximum(x, 0))), rtol=1e-6)


@pytest.mark.parametrize("body, shared", [
    ('layer { name: "s" type: "Slice" bottom: "x" top: "s" slice_param { axis: 1 } }', True),
    (('layer { name: "s" type: "Slice" bottom: "x" top: "s" top: "s2" '
      'slice_param { slice_point: 1 } }'), False),
    ('layer { name: "s" type: "Concat" bottom: "x" top: "s" }', True),
    ('layer { name: "s" type: "Concat" bottom: "x" bottom: "b" top: "s" }', False),
    ('layer { name: "s" type: "Flatten" bottom: "x" top: "s" }', True),
    ('layer { name: "s" type: "Power" bottom: "x" top: "s" }', False),
])
def test_which_layers_share_memory(write_net, body, shared):
    """ShareData: one-top Slice, one-bottom Concat, Flatten, Reshape, Split; not the others."""
    net = _net(write_net, body + '\nlayer { name: "w" type: "ReLU" bottom: "s" top: "s" }\n'
                                 'layer { name: "y" type: "TanH" bottom: "x" top: "y" }')
    inputs = _inputs(2)
    out = _run(net, inputs, ["y"])["y"]
    x = np.maximum(inputs["x"], 0) if shared else inputs["x"]
    np.testing.assert_allclose(out, np.tanh(x), rtol=1e-6)
    assert (len(net.caffe.graph.shared_with("x")) > 1) == shared


def test_in_place_write_after_another_reader_is_still_refused(write_net):
    """Caffe's InsertSplits counts the readers of the name's last writer: an in-place write on
    x after Reshape read x is a second producer of x, whatever shares its memory."""
    with pytest.raises(caffe2torch.GraphError, match="rewrites blob 'x' in place after"):
        _net(write_net, 'layer { name: "rs" type: "Reshape" bottom: "x" top: "r" '
                        'reshape_param { shape { dim: 0 dim: -1 } } }\n'
                        'layer { name: "relu" type: "ReLU" bottom: "r" top: "r" }\n'
                        'layer { name: "sig" type: "Sigmoid" bottom: "x" top: "y" }\n'
                        'layer { name: "w" type: "TanH" bottom: "x" top: "x" }')


IN_PLACE_ELTWISE = [
    # bottoms (names), aliased bottom indices, operation, coeffs
    (("x", "b"), (0,), "SUM", ()),
    (("x", "b", "c"), (0,), "SUM", (2.0, -1.0, 0.5)),
    (("x", "b", "c"), (0,), "MAX", ()),
    (("x", "b"), (0,), "MAX", ()),
    (("x", "b", "c"), (0,), "PROD", ()),
    (("x", "b", "x2"), (0, 2), "SUM", ()),
    (("x", "b", "x2"), (0, 2), "SUM", (1.0, 2.0, -3.0)),
    (("x", "x2", "c"), (0, 1), "MAX", ()),
    (("x", "c", "x2"), (0, 2), "PROD", ()),
    (("x", "x2", "b"), (0, 1), "PROD", ()),
]


@pytest.mark.parametrize("bottoms, aliased, operation, coeffs", IN_PLACE_ELTWISE)
def test_in_place_eltwise(write_net, bottoms, aliased, operation, coeffs):
    """Top = bottom 0 (x, a copy of the input x0; x2 is a Split of x0 sharing x's memory): the
    module follows the memory-level spec of EltwiseLayer::Forward_cpu."""
    param = f"operation: {operation} " + " ".join(f"coeff: {c}" for c in coeffs)
    wires = " ".join(f'bottom: "{b}"' for b in bottoms)
    if "x2" in bottoms:
        source = 'layer { name: "sp" type: "Split" bottom: "x0" top: "x" top: "x2" }\n'
    else:
        source = 'layer { name: "cp" type: "Power" bottom: "x0" top: "x" }\n'
    text = INPUT.format(n=2).replace('top: "x"', 'top: "x0"', 1) + source + \
        f'layer {{ name: "e" type: "Eltwise" {wires} top: "x" eltwise_param {{ {param} }} }}'
    net = caffe2torch.build(write_net(text))
    assert net.caffe.graph.layer("e").aliased_bottoms == list(aliased)
    inputs = _inputs(3)
    values = {"x": inputs["x"], "x2": inputs["x"], "b": inputs["b"], "c": inputs["c"]}
    expected = ref.eltwise_in_place([values[b] for b in bottoms], aliased, operation, coeffs)
    feed = {"x0": inputs["x"], "b": inputs["b"], "c": inputs["c"]}
    out = _run(net, feed, ["x"])["x"]
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    if aliased == (0,) and operation == "SUM":  # bottom 0 does not count
        weights = coeffs or (1.0,) * len(bottoms)
        rest = sum(np.float32(c) * values[b] for c, b in zip(weights[1:], bottoms[1:]))
        np.testing.assert_allclose(out, rest, rtol=1e-5, atol=1e-6)
    if aliased == (0,) and operation == "MAX":
        np.testing.assert_array_equal(out, np.maximum.reduce([values[b] for b in bottoms[1:]]))


def test_lrn_across_channels_keeps_caffes_running_sum():
    """Channel 0 = 1e4, the others 0.01, alpha 1: Caffe's running sum (add the head, subtract
    the tail, in float32) loses the small terms to 1 + 2e7's rounding and then cancels to 0 and
    below: real Caffe (brocolli 9.0.2, CPU) gives 3.3437017e-02, 3.3437015e-08 (twice), inf,
    NaN, NaN along the channels, where the exact window sums would give finite values."""
    from reference import vision as vref

    from caffe2torch.modules.lrn import CaffeLRN
    x = np.full((2, 6, 3, 4), 0.01, np.float32)
    x[:, 0] = 1e4
    with torch.no_grad():
        out = CaffeLRN(5, 1.0, 0.75, 1.0)(torch.from_numpy(x)).numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = vref.lrn(x, 5, 1.0, 0.75, 1.0)
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    np.testing.assert_allclose(out[0, :3, 0, 0], [3.3437017e-02, 3.3437015e-08, 3.3437015e-08],
                               rtol=1e-6)
    assert np.isposinf(out[:, 3]).all() and np.isnan(out[:, 4:]).all()


@pytest.mark.parametrize("kind", ["Convolution", "Deconvolution"])
def test_dilation_zero_builds_with_a_note_and_follows_the_spec(write_net, kind):
    """Caffe runs dilation 0 (every tap of the axis reads one pixel); golden conv_dilation_zero."""
    from reference import vision as vref
    text = ('layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 4 '
            'dim: 7 dim: 6 } } }\n'
            f'layer {{ name: "c" type: "{kind}" bottom: "x" top: "c" convolution_param {{ '
            'num_output: 4 kernel_h: 3 kernel_w: 2 pad: 1 stride: 2 dilation: 0 dilation: 2 '
            'group: 2 } }')
    path = write_net(text)
    model = path.with_suffix(".caffemodel")
    caffe2torch.write_random_caffemodel(path, model, seed=3)
    net = caffe2torch.build(path, weights=model)
    assert any("dilation 0" in note for note in net.caffe.notes)
    weight, bias = (np.array(b.data) for b in caffe2torch.read_caffemodel(model)["c"].blobs)
    x = np.random.default_rng(4).standard_normal((2, 4, 7, 6)).astype(np.float32)
    fn = vref.convolution if kind == "Convolution" else vref.deconvolution
    expected = fn(x, weight, bias, (2, 2), (1, 1), (0, 2), 2)
    with torch.no_grad():
        out = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
