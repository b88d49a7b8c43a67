"""LSTM, RNN, LSTMUnit, BatchReindex and Filter against numpy specs of Caffe's C++.

The specs below follow BVLC Caffe loop for loop: LSTMUnitLayer::Forward_cpu (its own
``tanh = 2 sigmoid(2x) - 1``), the unrolled nets of LSTMLayer / RNNLayer::FillUnrolledNet
(InnerProduct, Scale by ``cont``, Eltwise sum, Concat), BatchReindexLayer::Forward_cpu (float
indices through ``static_cast<int>``) and FilterLayer::Reshape / Forward_cpu (C++ truthiness of
the selector). Nets are built with ``caffe2torch.build`` over random caffemodels written by
``caffe2torch.write_random_caffemodel``, so the Caffe blob order is exercised too; the real-Caffe
fixtures in ``golden/`` pin the blob shapes and Filter's set-up shape. N, T, D, H all differ.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from oracle import max_rel_error

import caffe2torch
from caffe2torch.errors import ShapeError
from caffe2torch.layers.registry import get_converter

GOLDEN = Path(__file__).resolve().parent / "golden"
T, N, H = 4, 3, 7  # timesteps, streams, LSTM hidden size
X_SHAPE = (T, N, 2, 3)  # D = 6
STATIC = (N, 5)
REL = 1e-5


# --- numpy specs ---------------------------------------------------------------------------

def _sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def _unit_tanh(x):
    return 2.0 * _sigmoid(2.0 * x) - 1.0  # lstm_unit_layer.cpp's tanh


def ref_lstm_unit(c_prev, gates, cont):
    """LSTMUnitLayer::Forward_cpu: per stream n and channel d."""
    num, hidden = c_prev.shape[1], c_prev.shape[2]
    c_flat, x_flat, cont_flat = c_prev.reshape(-1), gates.reshape(-1), cont.reshape(-1)
    c_top, h_top = np.empty(num * hidden), np.empty(num * hidden)
    for n in range(num):
        x = x_flat[n * 4 * hidden:]
        for d in range(hidden):
            i = _sigmoid(x[d])
            f = 0.0 if cont_flat[n] == 0 else cont_flat[n] * _sigmoid(x[hidden + d])
            o = _sigmoid(x[2 * hidden + d])
            g = _unit_tanh(x[3 * hidden + d])
            c = f * c_flat[n * hidden + d] + i * g
            c_top[n * hidden + d] = c
            h_top[n * hidden + d] = o * _unit_tanh(c)
    return c_top.reshape(c_prev.shape), h_top.reshape(c_prev.shape)


def ref_inner_product(x, weight, bias, axis):
    """InnerProductLayer: (M = count(0, axis), K = count(axis)) x W^T (+ b)."""
    m = math.prod(x.shape[:axis])
    top = x.reshape(m, -1).astype(np.float64) @ weight.T.astype(np.float64)
    if bias is not None:
        top = top + bias
    return top.reshape(*x.shape[:axis], weight.shape[0])


def _unrolled_inputs(x, blobs, x_static, gate_size):
    """x_transform (W_x x + b, axis 2) and the static term (W_static x_static, axis 1, as one
    timestep), and the blobs left (the recurrent ones)."""
    x_term = ref_inner_product(x, blobs[0], blobs[1], axis=2)
    rest, static = list(blobs[2:]), None
    if x_static is not None:
        static = ref_inner_product(x_static, rest.pop(0), None, axis=1)
        static = static.reshape(1, -1, gate_size)
    return x_term, static, rest


def ref_lstm(x, cont, blobs, x_static=None, h0=None, c0=None):
    """LSTMLayer's unrolled net: h_conted = cont_t h_{t-1} (Scale, axis 0); gate_input =
    W_hc h_conted + W_xc_x_t (+ W_xc_x_static); LSTMUnit; h = Concat of the h_t."""
    hidden = blobs[-1].shape[1]
    x_term, static, (w_hc,) = _unrolled_inputs(x, blobs, x_static, 4 * hidden)
    zeros = np.zeros((1, x.shape[1], hidden))
    h = zeros if h0 is None else h0.astype(np.float64)
    c = zeros if c0 is None else c0.astype(np.float64)
    hs = []
    for t in range(x.shape[0]):
        cont_t = cont[t:t + 1].astype(np.float64)
        gate_input = ref_inner_product(h * cont_t[:, :, None], w_hc, None, axis=2) + x_term[t:t + 1]
        if static is not None:
            gate_input = gate_input + static
        c, h = ref_lstm_unit(c, gate_input, cont_t)
        hs.append(h)
    return np.concatenate(hs, 0), h, c


def ref_rnn(x, cont, blobs, x_static=None, h0=None):
    """RNNLayer's unrolled net: h_t = tanh(W_hh (cont_t h_{t-1}) + W_xh x_t + b_h
    (+ W_xh_static x_static)); o_t = tanh(W_ho h_t + b_o); o = Concat of the o_t."""
    hidden = blobs[-1].shape[0]
    x_term, static, (w_hh, w_ho, b_o) = _unrolled_inputs(x, blobs, x_static, hidden)
    h = np.zeros((1, x.shape[1], hidden)) if h0 is None else h0.astype(np.float64)
    os_ = []
    for t in range(x.shape[0]):
        cont_t = cont[t:t + 1].astype(np.float64)
        pre = ref_inner_product(h * cont_t[:, :, None], w_hh, None, axis=2) + x_term[t:t + 1]
        if static is not None:
            pre = pre + static
        h = np.tanh(pre)
        os_.append(np.tanh(ref_inner_product(h, w_ho, b_o, axis=2)))
    return np.concatenate(os_, 0), h


def ref_batch_reindex(x, permut):
    """BatchReindexLayer: check 0 <= index < N (as floats), then static_cast<int>."""
    for value in permut:
        if not (value >= 0 and value < x.shape[0]):
            raise IndexError(f"index {value}")
    inner = x.size // x.shape[0]
    flat, top = x.reshape(-1), np.empty(len(permut) * inner, x.dtype)
    for index in range(top.size):
        top[index] = flat[int(permut[index // inner]) * inner + index % inner]
    return top.reshape(len(permut), *x.shape[1:])


def ref_filter(blobs, selector):
    """FilterLayer: forward the items whose selector value is true in C++ (non-zero, NaN)."""
    flat = selector.reshape(-1)
    keep = [i for i in range(selector.shape[0]) if bool(flat[i])]
    return [np.stack([b[i] for i in keep]) if keep else b[:0] for b in blobs]


# --- nets ----------------------------------------------------------------------------------

def _input(name, shape):
    dims = " ".join(f"dim: {d}" for d in shape)
    return (f'layer {{ name: "{name}" type: "Input" top: "{name}" '
            f'input_param {{ shape {{ {dims} }} }} }}\n')


def _layer(name, type_, bottoms, tops, param=""):
    text = f'layer {{ name: "{name}" type: "{type_}" '
    text += "".join(f'bottom: "{b}" ' for b in bottoms) + "".join(f'top: "{t}" ' for t in tops)
    return text + param + " }\n"


def _recurrent(num_output, expose=False):
    extra = " expose_hidden: true" if expose else ""
    return f"recurrent_param {{ num_output: {num_output}{extra} }}"


RNN_H = 2
INPUTS = {"x": X_SHAPE, "cont": (T, N), "xs": STATIC, "h0": (1, N, H), "c0": (1, N, H),
          "rh0": (1, N, RNN_H), "c_prev": (1, N, 5), "gates": (1, N, 20), "cont_unit": (1, N)}
LAYERS = (
    _layer("lstm", "LSTM", ["x", "cont"], ["lstm"], _recurrent(H))
    + _layer("lstm_s", "LSTM", ["x", "cont", "xs"], ["lstm_s"], _recurrent(3))
    + _layer("lstm_e", "LSTM", ["x", "cont", "xs", "h0", "c0"], ["lstm_e", "lstm_hT", "lstm_cT"],
             _recurrent(H, expose=True))
    + _layer("rnn", "RNN", ["x", "cont"], ["rnn"], _recurrent(5))
    + _layer("rnn_e", "RNN", ["x", "cont", "xs", "rh0"], ["rnn_e", "rnn_hT"],
             _recurrent(RNN_H, expose=True))
    + _layer("unit", "LSTMUnit", ["c_prev", "gates", "cont_unit"], ["unit_c", "unit_h"])
)


def _expected(feeds, blobs):
    f, out = feeds, {}
    out["lstm"] = ref_lstm(f["x"], f["cont"], blobs["lstm"])[0]
    out["lstm_s"] = ref_lstm(f["x"], f["cont"], blobs["lstm_s"], f["xs"])[0]
    out["lstm_e"], out["lstm_hT"], out["lstm_cT"] = ref_lstm(
        f["x"], f["cont"], blobs["lstm_e"], f["xs"], f["h0"], f["c0"])
    out["rnn"] = ref_rnn(f["x"], f["cont"], blobs["rnn"])[0]
    out["rnn_e"], out["rnn_hT"] = ref_rnn(f["x"], f["cont"], blobs["rnn_e"], f["xs"], f["rh0"])
    out["unit_c"], out["unit_h"] = ref_lstm_unit(f["c_prev"], f["gates"], f["cont_unit"])
    return out


def _feeds(rng, n):
    feeds = {name: rng.standard_normal((shape[0], n, *shape[2:]) if name != "xs"
                                       else (n, *shape[1:])).astype(np.float32)
             for name, shape in INPUTS.items() if not name.startswith("cont")}
    # Sequence indicators: starts (0), continuations (1) and Caffe's general scaling (0.5, 2).
    cont = rng.choice(np.float32([0, 1, 1, 0.5, 2]), size=(T, n)).astype(np.float32)
    cont[0, 0], cont[2, n - 1] = 1, 0  # a carried start state and a mid-sequence reset
    feeds["cont"] = cont
    feeds["cont_unit"] = np.float32([[0, 1, 0.5, 1][:n] + [1] * max(0, n - 4)])
    return feeds


@pytest.fixture(scope="module")
def recurrent_net(tmp_path_factory):
    path = tmp_path_factory.mktemp("recurrent") / "recurrent.prototxt"
    path.write_text('name: "recurrent_test"\n'
                    + "".join(_input(n, s) for n, s in INPUTS.items()) + LAYERS)
    model = path.with_suffix(".caffemodel")
    caffe2torch.write_random_caffemodel(path, model, seed=7)
    blobs = {layer.name: [np.array(b.data).reshape(b.shape) for b in layer.blobs]
             for layer in caffe2torch.read_caffemodel(model).layers}
    return caffe2torch.build(path, weights=model), blobs


def _run(net, feeds, names):
    with torch.no_grad():
        got = net(**{k: torch.from_numpy(v) for k, v in feeds.items()}, outputs=list(names))
    return {k: v.numpy() for k, v in got.items()}


@pytest.mark.parametrize("streams", [N, 2], ids=["declared_batch", "other_batch"])
def test_recurrent_layers_match_the_caffe_spec(recurrent_net, streams):
    net, blobs = recurrent_net
    feeds = _feeds(np.random.default_rng(streams), streams)
    expected = _expected(feeds, blobs)
    got = _run(net, feeds, expected)
    for name, want in expected.items():
        assert got[name].shape == want.shape, name
        if streams == N:
            assert net.caffe.graph.blob(name).shape == want.shape, f"{name}: inferred shape"
        assert max_rel_error(got[name], want) <= REL, name


def test_blob_order_and_shapes(recurrent_net):
    net, blobs = recurrent_net
    d, h4 = 6, 4 * H
    assert [b.shape for b in blobs["lstm_e"]] == [(h4, d), (h4,), (h4, 5), (h4, H)]
    assert [b.shape for b in blobs["rnn_e"]] == [(RNN_H, d), (RNN_H,), (RNN_H, 5),
                                                 (RNN_H, RNN_H), (RNN_H, RNN_H), (RNN_H,)]
    assert "unit" not in blobs or not blobs["unit"]
    state = net.state_dict()
    np.testing.assert_array_equal(state["lstm_e.weight_static"].numpy(), blobs["lstm_e"][2])
    np.testing.assert_array_equal(state["rnn_e.bias_ho"].numpy(), blobs["rnn_e"][5])


def test_blobs_written_back_in_caffe_order(recurrent_net, tmp_path):
    net, blobs = recurrent_net
    caffe2torch.save_caffemodel(net, tmp_path / "back.caffemodel")
    back = {layer.name: [np.array(b.data).reshape(b.shape) for b in layer.blobs]
            for layer in caffe2torch.read_caffemodel(tmp_path / "back.caffemodel").layers}
    for name in ("lstm", "lstm_s", "lstm_e", "rnn", "rnn_e"):
        assert len(back[name]) == len(blobs[name]), name
        for got, want in zip(back[name], blobs[name], strict=True):
            np.testing.assert_array_equal(got, want)


def test_blob_shapes_match_real_caffe():
    """Caffe's own caffemodel (golden) lists the parameters in the order blob_shapes gives."""
    graph = caffe2torch.load_graph(GOLDEN / "nets" / "recurrent.prototxt")
    model = {layer.name: [tuple(b.shape) for b in layer.blobs]
             for layer in caffe2torch.read_caffemodel(GOLDEN / "recurrent.caffemodel").layers}
    for node in graph.layers:
        if node.type in ("LSTM", "RNN", "LSTMUnit"):
            inputs = [graph.blobs[b].shape for b in node.bottoms]
            assert get_converter(node.type).blob_shapes(node, inputs) == model[node.name]


def test_zero_initial_state_is_caffes_first_forward(recurrent_net):
    """Without expose_hidden the state starts at zero; exposing zeros gives the same output."""
    net, _ = recurrent_net
    feeds = _feeds(np.random.default_rng(3), N)
    feeds["h0"] = np.zeros_like(feeds["h0"])
    feeds["c0"] = np.zeros_like(feeds["c0"])
    lstm = net.get_submodule("lstm_e")
    x, cont, xs = (torch.from_numpy(feeds[k]) for k in ("x", "cont", "xs"))
    with torch.no_grad():
        exposed = lstm(x, cont, xs, torch.from_numpy(feeds["h0"]), torch.from_numpy(feeds["c0"]))
        lstm.expose_hidden = False
        try:
            hidden = lstm(x, cont, xs)
        finally:
            lstm.expose_hidden = True
    torch.testing.assert_close(hidden, exposed[0], rtol=0, atol=0)


def test_golden_lstm_unit_spec_agrees_with_real_caffe():
    """The spec itself reproduces Caffe's recorded LSTMUnit tops."""
    with np.load(GOLDEN / "recurrent.npz") as archive:
        blobs = {k.removeprefix("blob:"): archive[k] for k in archive.files}
    c, h = ref_lstm_unit(blobs["c_prev"], blobs["gates"], blobs["cont_unit"])
    assert max_rel_error(c, blobs["unit_c"]) <= 1e-6
    assert max_rel_error(h, blobs["unit_h"]) <= 1e-6


# --- BatchReindex and Filter ---------------------------------------------------------------

def _build(write_net, inputs, body):
    return caffe2torch.build(write_net('name: "n"\n' + "".join(_input(n, s) for n, s in
                                                             inputs.items()) + body))


def test_batch_reindex(write_net, rng):
    net = _build(write_net, {"x": (3, 4, 2, 5), "idx": (6,)},
                 _layer("r", "BatchReindex", ["x", "idx"], ["r"]))
    assert net.caffe.graph.blob("r").shape == (6, 4, 2, 5)
    x = rng.standard_normal((3, 4, 2, 5)).astype(np.float32)
    idx = np.float32([2.9, 0, 1.5, 0.2, 2, 2])  # truncated as static_cast<int>, repeats
    got = _run(net, {"x": x, "idx": idx}, ["r"])["r"]
    np.testing.assert_array_equal(got, ref_batch_reindex(x, idx))
    other = _run(net, {"x": x[:2], "idx": idx[2:4]}, ["r"])["r"]  # other batch and count
    np.testing.assert_array_equal(other, ref_batch_reindex(x[:2], idx[2:4]))


@pytest.mark.parametrize("bad", [-0.5, 3.0, float("nan")])
def test_batch_reindex_rejects_what_caffe_aborts_on(write_net, bad):
    net = _build(write_net, {"x": (3, 2), "idx": (2,)},
                 _layer("r", "BatchReindex", ["x", "idx"], ["r"]))
    with pytest.raises(IndexError, match="out of range for a batch of 3"):
        _run(net, {"x": np.zeros((3, 2), np.float32), "idx": np.float32([0, bad])}, ["r"])


def test_filter_keeps_selected_items_and_reports_the_set_up_shape(write_net, rng):
    inputs = {"a": (5, 3, 2), "b": (5, 4), "sel": (5, 1, 1)}
    net = _build(write_net, inputs, _layer("f", "Filter", ["a", "b", "sel"], ["fa", "fb"]))
    # Caffe's shape at set-up (before any forward) is the whole batch: an upper bound.
    assert net.caffe.graph.blob("fa").shape == (5, 3, 2)
    assert net.caffe.graph.blob("fb").shape == (5, 4)
    feeds = {n: rng.standard_normal(s).astype(np.float32) for n, s in inputs.items()}
    for selector in ([1, 0, np.nan, -0.0, 0.25], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]):
        feeds["sel"] = np.float32(selector).reshape(5, 1, 1)
        got = _run(net, feeds, ["fa", "fb"])
        for name, want in zip(("fa", "fb"), ref_filter([feeds["a"], feeds["b"]], feeds["sel"]),
                              strict=True):
            np.testing.assert_array_equal(got[name], want)


def test_filter_single_top_and_real_caffe_fixture(write_net):
    net = _build(write_net, {"a": (2, 3), "sel": (2,)}, _layer("f", "Filter", ["a", "sel"], ["fa"]))
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(_run(net, {"a": a, "sel": np.float32([0, 7])}, ["fa"])["fa"],
                                  a[1:])
    with np.load(GOLDEN / "filter.npz") as archive:
        blobs = {k.removeprefix("blob:"): archive[k] for k in archive.files}
    golden = caffe2torch.build(GOLDEN / "nets" / "filter.prototxt")
    got = _run(golden, {k: blobs[k] for k in ("data", "labels", "selector")},
               ["data_kept", "labels_kept"])
    for name in ("data_kept", "labels_kept"):
        np.testing.assert_array_equal(got[name], blobs[name])
        assert golden.caffe.graph.blob(name).shape[1:] == blobs[name].shape[1:]
        assert golden.caffe.graph.blob(name).shape[0] == blobs["selector"].shape[0]
    assert get_converter("Filter").data_dependent


# --- shape errors --------------------------------------------------------------------------

ERRORS = [
    ({"x": (4, 3, 2), "cont": (4, 2)}, _layer("l", "LSTM", ["x", "cont"], ["h"], _recurrent(5)),
     r"cont \(bottom 1\) has shape \(4, 2\); expected \(timesteps, streams\) = \(4, 3\)"),
    ({"x": (4, 3, 2), "cont": (4, 3)}, _layer("l", "RNN", ["x", "cont"], ["h"], _recurrent(0)),
     "num_output is 0"),
    ({"x": (4, 3), "cont": (4, 3)}, _layer("l", "RNN", ["x", "cont"], ["h"], _recurrent(2)),
     "expected at least 3 axes"),  # Caffe: "axis 2 out of range for 2-D Blob"
    ({"x": (4, 3, 2), "cont": (4, 3), "s": (2, 6)},
     _layer("l", "LSTM", ["x", "cont", "s"], ["h"], _recurrent(5)),
     r"x_static \(bottom 2\) has shape \(2, 6\); expected \(3, features...\)"),
    ({"x": (4, 3, 2), "cont": (4, 3), "s": (3,)},
     _layer("l", "LSTM", ["x", "cont", "s"], ["h"], _recurrent(5)), r"x_static \(bottom 2\)"),
    ({"x": (4, 3, 2), "cont": (4, 3), "h0": (1, 3, 4), "c0": (1, 3, 5)},
     _layer("l", "LSTM", ["x", "cont", "h0", "c0"], ["h", "hT", "cT"], _recurrent(5, True)),
     r"initial h state \(bottom 2\) has shape \(1, 3, 4\); expected \(1, 3, 5\)"),
    ({"x": (4, 3, 2), "cont": (4, 3), "h0": (1, 3, 5)},
     _layer("l", "RNN", ["x", "cont", "h0"], ["h"], _recurrent(5, True)),
     r"has 1 top\(s\); expected 2 \(expose_hidden is true\)"),
    ({"x": (4, 3, 2), "cont": (4, 3)},
     _layer("l", "LSTM", ["x", "cont"], ["h"], _recurrent(5, True)), r"expected 4 to 5"),
    ({"c": (1, 3, 5), "g": (1, 3, 16), "k": (1, 3)},
     _layer("u", "LSTMUnit", ["c", "g", "k"], ["c1", "h1"]), r"expected 4 x 5"),
    ({"c": (2, 3, 5), "g": (2, 3, 20), "k": (2, 3)},
     _layer("u", "LSTMUnit", ["c", "g", "k"], ["c1", "h1"]), r"bottom 0 has shape \(2, 3, 5\)"),
    ({"x": (3, 2), "i": (2, 1)}, _layer("r", "BatchReindex", ["x", "i"], ["r"]),
     "expected 1 axis"),
    ({"a": (4, 2), "s": (4, 2)}, _layer("f", "Filter", ["a", "s"], ["fa"]),
     "every axis but the first of size 1"),
    ({"a": (4, 2), "s": (3, 1)}, _layer("f", "Filter", ["a", "s"], ["fa"]),
     r"expected 3 items along axis 0"),
    ({"a": (4, 2), "s": (4, 1)}, _layer("f", "Filter", ["a", "s"], ["fa", "fb"]),
     r"expected 1 \(one per bottom but the selector\)"),
]


@pytest.mark.parametrize(("inputs", "body", "message"), ERRORS,
                         ids=[f"{i}" for i in range(len(ERRORS))])
def test_caffe_checks_become_shape_errors(write_net, inputs, body, message):
    with pytest.raises(ShapeError, match=message):
        _build(write_net, inputs, body)


def test_flops():
    graph = caffe2torch.load_graph(GOLDEN / "nets" / "recurrent.prototxt")
    lstm = graph.layer("lstm_static")
    inputs = [graph.blobs[b].shape for b in lstm.bottoms]
    # T N (4H D + 4H H) + N 4H D_static with T=4, N=2, D=3, H=3, D_static=6.
    assert get_converter("LSTM").flops(lstm, inputs, []) == 4 * 2 * (12 * 3 + 12 * 3) + 2 * 12 * 6
