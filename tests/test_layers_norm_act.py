"""BatchNorm, Scale, Bias, MVN and the activations: numpy specs, OpenCV, shapes, bad parameters."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from oracle import assert_close, opencv_layers
from reference import activations as act
from reference import normalization as norm

import caffe2torch
from caffe2torch import ShapeError
from caffe2torch.layers.registry import get_converter
from caffe2torch.weights import random_blobs

DATA = (2, 5, 7, 9)  # N, C, H, W all different
Ref = Callable[[dict, list], np.ndarray]


@dataclass(frozen=True)
class Case:
    id: str
    layer: str  # type and parameters of the layer 'l' under test (top 'out')
    ref: Ref  # (inputs by name, parameter blobs) -> expected top
    inputs: dict = field(default_factory=lambda: {"data": DATA})
    data: str = "normal"  # "positive" (Log, fractional powers) or "wide" (x 20)
    batched: tuple[str, ...] = ("data",)  # inputs whose axis 0 follows the batch size


def _x(inputs: dict) -> np.ndarray:
    return inputs["data"]


def _case(id: str, layer: str, ref: Ref, **kw) -> Case:
    return Case(id, layer, ref, **kw)


BATCH_NORM = [
    _case("bn", 'type: "BatchNorm"', lambda i, b: norm.batch_norm(_x(i), *b)),
    _case("bn-eps", 'type: "BatchNorm" batch_norm_param { eps: 0.01 }',
          lambda i, b: norm.batch_norm(_x(i), *b, eps=0.01)),
    _case("bn-global", 'type: "BatchNorm" batch_norm_param { use_global_stats: true }',
          lambda i, b: norm.batch_norm(_x(i), *b)),
    _case("bn-2d", 'type: "BatchNorm"', lambda i, b: norm.batch_norm(_x(i), *b),
          inputs={"data": (2, 5)}),
    _case("bn-3d", 'type: "BatchNorm"', lambda i, b: norm.batch_norm(_x(i), *b),
          inputs={"data": (2, 5, 7)}),
    _case("bn-5d", 'type: "BatchNorm"', lambda i, b: norm.batch_norm(_x(i), *b),
          inputs={"data": (2, 5, 3, 4, 6)}),
]


def _scale(axis: int = 1, bias: bool = False) -> Ref:
    def ref(i, b):
        scale = b[0] if "s" not in i else i["s"]
        return norm.scale(_x(i), scale, axis, b[-1] if bias else None)
    return ref


def _bias(axis: int = 1) -> Ref:
    return lambda i, b: norm.bias(_x(i), b[0] if "s" not in i else i["s"], axis)


SECOND = {"data": DATA, "s": (5, 7)}
SCALE_BIAS = [
    _case("scale", 'type: "Scale"', _scale()),
    _case("scale-bias", 'type: "Scale" scale_param { bias_term: true }', _scale(bias=True)),
    _case("scale-axis0", 'type: "Scale" scale_param { axis: 0 }', _scale(0), batched=()),
    _case("scale-axis2-2", 'type: "Scale" scale_param { axis: 2 num_axes: 2 bias_term: true }',
          _scale(2, bias=True)),
    _case("scale-axis-1", 'type: "Scale" scale_param { axis: -1 }', _scale(-1)),
    _case("scale-to-end", 'type: "Scale" scale_param { num_axes: -1 }', _scale()),
    _case("scale-scalar", 'type: "Scale" scale_param { num_axes: 0 bias_term: true axis: -1 }',
          _scale(0, bias=True)),
    _case("scale-bottom", 'type: "Scale" bottom: "s"', _scale(), inputs=SECOND),
    _case("scale-bottom-bias", 'type: "Scale" bottom: "s" scale_param { bias_term: true }',
          _scale(bias=True), inputs=SECOND),
    _case("scale-bottom-axis0", 'type: "Scale" bottom: "s" scale_param { axis: 0 }', _scale(0),
          inputs={"data": DATA, "s": (2, 5)}, batched=("data", "s")),
    _case("bias", 'type: "Bias"', _bias()),
    _case("bias-axis2-2", 'type: "Bias" bias_param { axis: 2 num_axes: 2 }', _bias(2)),
    _case("bias-scalar", 'type: "Bias" bias_param { num_axes: 0 }', _bias(0)),
    _case("bias-to-end", 'type: "Bias" bias_param { axis: 2 num_axes: -1 }', _bias(2)),
    _case("bias-bottom", 'type: "Bias" bottom: "s"', _bias(), inputs=SECOND),
    _case("bias-bottom-axis-2", 'type: "Bias" bottom: "s" bias_param { axis: -2 }', _bias(-2),
          inputs={"data": DATA, "s": (7, 9)}),
]


def _mvn(**kw) -> Ref:
    return lambda i, b: norm.mvn(_x(i), **kw)


MVN = [
    _case("mvn", 'type: "MVN"', _mvn()),
    _case("mvn-mean-only", 'type: "MVN" mvn_param { normalize_variance: false }',
          _mvn(normalize_variance=False)),
    _case("mvn-across", 'type: "MVN" mvn_param { across_channels: true }',
          _mvn(across_channels=True)),
    _case("mvn-across-mean-only",
          'type: "MVN" mvn_param { across_channels: true normalize_variance: false }',
          _mvn(across_channels=True, normalize_variance=False)),
    _case("mvn-eps", 'type: "MVN" mvn_param { eps: 0.5 }', _mvn(eps=0.5)),
    # Caffe's top is 4-D whatever the input (legacy accessors): (2, 5) -> (2, 5, 1, 1)
    _case("mvn-2d-across", 'type: "MVN" mvn_param { across_channels: true }',
          _mvn(across_channels=True), inputs={"data": (2, 5)}),
    _case("mvn-3d", 'type: "MVN"', _mvn(), inputs={"data": (2, 5, 7)}),
]


def _prelu(shared: bool = False) -> Ref:
    return lambda i, b: act.prelu(_x(i), b[0], shared)


def _unary(fn: Callable, **kw) -> Ref:
    return lambda i, b: fn(_x(i), **kw)


ACTIVATIONS = [
    _case("prelu", 'type: "PReLU"', _prelu()),
    _case("prelu-shared", 'type: "PReLU" prelu_param { channel_shared: true }', _prelu(True)),
    _case("prelu-2d", 'type: "PReLU"', _prelu(), inputs={"data": (2, 5)}),
    _case("prelu-3d-shared", 'type: "PReLU" prelu_param { channel_shared: true }', _prelu(True),
          inputs={"data": (2, 5, 7)}),
    _case("elu", 'type: "ELU"', _unary(act.elu)),
    _case("elu-alpha", 'type: "ELU" elu_param { alpha: 0.3 }', _unary(act.elu, alpha=0.3)),
    _case("sigmoid", 'type: "Sigmoid"', _unary(act.sigmoid), data="wide"),
    _case("tanh", 'type: "TanH"', _unary(act.tanh), data="wide"),
    _case("absval", 'type: "AbsVal"', _unary(act.absval)),
    _case("bnll", 'type: "BNLL"', _unary(act.bnll), data="wide"),
    _case("power-identity", 'type: "Power"', _unary(act.power)),
    _case("power-square", 'type: "Power" power_param { power: 2 scale: 0.5 shift: 1 }',
          _unary(act.power, power=2, scale=0.5, shift=1)),
    _case("power-sqrt", 'type: "Power" power_param { power: 0.5 scale: 3 }',
          _unary(act.power, power=0.5, scale=3), data="positive"),
    _case("power-cube-shift", 'type: "Power" power_param { power: 3 shift: -1 }',
          _unary(act.power, power=3, shift=-1)),
    _case("power-inverse", 'type: "Power" power_param { power: -1 scale: 2 }',
          _unary(act.power, power=-1, scale=2), data="positive"),
    _case("power-0", 'type: "Power" power_param { power: 0 scale: 2 shift: -1 }',
          _unary(act.power, power=0, scale=2, shift=-1)),
    _case("power-scale-0", 'type: "Power" power_param { power: 3 scale: 0 shift: 2 }',
          _unary(act.power, power=3, scale=0, shift=2)),
    _case("exp", 'type: "Exp"', _unary(act.exp)),
    _case("exp-base2", 'type: "Exp" exp_param { base: 2 scale: 0.5 shift: 1 }',
          _unary(act.exp, base=2, scale=0.5, shift=1)),
    _case("exp-base10", 'type: "Exp" exp_param { base: 10 scale: -1 }',
          _unary(act.exp, base=10, scale=-1)),
    _case("exp-shift", 'type: "Exp" exp_param { shift: 0.5 }', _unary(act.exp, shift=0.5)),
    _case("log", 'type: "Log"', _unary(act.log), data="positive"),
    _case("log-base2", 'type: "Log" log_param { base: 2 scale: 2 shift: 1 }',
          _unary(act.log, base=2, scale=2, shift=1), data="positive"),
    _case("log-base10", 'type: "Log" log_param { base: 10 }', _unary(act.log, base=10),
          data="positive"),
    _case("threshold", 'type: "Threshold"', _unary(act.threshold)),
    _case("threshold-0.3", 'type: "Threshold" threshold_param { threshold: 0.3 }',
          _unary(act.threshold, threshold=0.3)),
    _case("clip", 'type: "Clip" clip_param { min: -0.5 max: 0.7 }',
          _unary(act.clip, min=-0.5, max=0.7)),
    # min > max: Caffe's max(min, min(x, max)) gives min everywhere (torch.clamp gives max)
    _case("clip-crossed", 'type: "Clip" clip_param { min: 0.5 max: -0.5 }',
          _unary(act.clip, min=0.5, max=-0.5)),
    _case("swish", 'type: "Swish"', _unary(act.swish)),
    _case("swish-beta", 'type: "Swish" swish_param { beta: 2 }', _unary(act.swish, beta=2)),
]

CASES = BATCH_NORM + SCALE_BIAS + MVN + ACTIVATIONS


def _input_layers(inputs: dict) -> list[str]:
    lines = ['name: "t"']
    for name, shape in inputs.items():
        dims = " ".join(f"dim: {d}" for d in shape)
        lines.append(f'layer {{ name: "{name}" type: "Input" top: "{name}" '
                     f'input_param {{ shape {{ {dims} }} }} }}')
    return lines


def _prototxt(inputs: dict, layer: str, top: str = "out") -> str:
    """Input layers, then layer 'l' reading 'data' (and any bottoms ``layer`` adds)."""
    lines = _input_layers(inputs)
    lines.append(f'layer {{ name: "l" bottom: "data" top: "{top}" {layer} }}')
    return "\n".join(lines) + "\n"


def _data(shapes: dict, seed: int, kind: str = "normal") -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in shapes.items():
        if kind == "positive":
            out[name] = rng.uniform(0.5, 2.0, shape).astype(np.float32)
        else:
            scale = 20.0 if kind == "wide" else 1.0
            out[name] = (rng.standard_normal(shape) * scale).astype(np.float32)
    return out


def _setup(case: Case, tmp_path: Path, seed: int = 0) -> tuple[Path, Path, list[np.ndarray]]:
    """prototxt, caffemodel of random weights (an empty one when the layer has no blobs), blobs."""
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(_prototxt(case.inputs, case.layer))
    caffemodel = tmp_path / "net.caffemodel"
    layers = random_blobs(caffe2torch.load_graph(prototxt), seed)
    caffe2torch.write_caffemodel(caffemodel, layers, name="t")
    return prototxt, caffemodel, [blob for _, _, blobs in layers for blob in blobs]


def _build(prototxt: Path, caffemodel: Path, blobs: list[np.ndarray]) -> caffe2torch.CaffeNet:
    return caffe2torch.build(prototxt, weights=caffemodel if blobs else None)


def _run(net, inputs: dict[str, np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        return net(**{k: torch.from_numpy(v) for k, v in inputs.items()}).numpy()


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_reference_and_inferred_shape(case: Case, seed: int, tmp_path: Path) -> None:
    prototxt, caffemodel, blobs = _setup(case, tmp_path, seed)
    net = _build(prototxt, caffemodel, blobs)
    inputs = _data(case.inputs, seed, case.data)
    out = _run(net, inputs)
    assert out.shape == net.caffe.graph.blob("out").shape
    assert_close(out, case.ref(inputs, blobs), rel=1e-5, what=case.id)


@pytest.mark.parametrize("case", [c for c in CASES if c.batched], ids=lambda c: c.id)
def test_other_batch_size(case: Case, tmp_path: Path) -> None:
    prototxt, caffemodel, blobs = _setup(case, tmp_path)
    net = _build(prototxt, caffemodel, blobs)
    shapes = {k: (3, *s[1:]) if k in case.batched else s for k, s in case.inputs.items()}
    inputs = _data(shapes, 5, case.data)
    assert_close(_run(net, inputs), case.ref(inputs, blobs), rel=1e-5, what=case.id)


# Where OpenCV 4.x differs from Caffe; a strict xfail, so a fixed OpenCV shows up here. The numpy
# specs follow Caffe's source; every case but Clip/Swish (absent from that fork) was also checked
# against real Caffe (brocolli-caffe 9.0.2, ../shared/tools/build-caffe.sh) to <= 3e-7.
_NO_BIAS = "OpenCV 4.x has no Bias layer"
OPENCV_DIFFERS: dict[str, str] = {
    "scale-axis-1": "OpenCV's Scale rejects a negative axis",
    "scale-bottom-bias": "OpenCV's Scale with a second bottom and bias_term computes x + bias, "
                         "ignoring the scale bottom",
    "bias": _NO_BIAS, "bias-axis2-2": _NO_BIAS, "bias-scalar": _NO_BIAS, "bias-to-end": _NO_BIAS,
    "bias-bottom": _NO_BIAS, "bias-bottom-axis-2": _NO_BIAS,
    "mvn-eps": "OpenCV's MVN adds eps to the variance; Caffe adds it to the standard deviation "
               "(the two agree only while eps is negligible, as the default 1e-9)",
    "mvn-2d-across": "OpenCV's MVN keeps the input rank; Caffe's top is 4-D (N, C, 1, 1)",
    "mvn-3d": "OpenCV's MVN keeps the input rank; Caffe's top is 4-D (N, C, H, 1)",
    "log-base2": "OpenCV's Log ignores base, scale and shift (computes ln x)",
    "log-base10": "OpenCV's Log ignores base, scale and shift (computes ln x)",
    "threshold": "OpenCV 4.x has no Threshold layer",
    "threshold-0.3": "OpenCV 4.x has no Threshold layer",
    "clip": "OpenCV 4.x has no Clip layer", "clip-crossed": "OpenCV 4.x has no Clip layer",
    "swish-beta": "OpenCV's Swish ignores beta (computes x * sigmoid(x))",
}


def _opencv_failure(case_id: str) -> type[BaseException]:
    """What a strict xfail expects: OpenCV refusing a layer or value (cv2.error), or a value
    that differs from Caffe's (the comparison's AssertionError)."""
    if "has no" in OPENCV_DIFFERS[case_id] or "rejects" in OPENCV_DIFFERS[case_id]:
        try:
            import cv2
        except ImportError:
            return ImportError
        return cv2.error
    return AssertionError


def _opencv_params() -> list:
    return [pytest.param(case, id=case.id, marks=[pytest.mark.xfail(
        reason=OPENCV_DIFFERS[case.id], strict=True, raises=_opencv_failure(case.id))]
        if case.id in OPENCV_DIFFERS else []) for case in CASES]


@pytest.mark.parametrize("case", _opencv_params())
def test_matches_opencv(case: Case, tmp_path: Path) -> None:
    prototxt, caffemodel, blobs = _setup(case, tmp_path, seed=3)
    net = _build(prototxt, caffemodel, blobs)
    inputs = _data(case.inputs, 3, case.data)
    expected = opencv_layers(prototxt, caffemodel, inputs, ["l"])["l"]
    assert_close(_run(net, inputs), expected, rel=1e-4, what=case.id)


# ----------------------------------------------------------------------------- bad parameters

BAD = [
    ("bn-1d", {"data": (5,)}, 'type: "BatchNorm"', "at least 2 axes"),
    ("scale-axis", {"data": DATA}, 'type: "Scale" scale_param { axis: 4 }',
     "axis 4 is out of range"),
    ("scale-num-axes", {"data": DATA}, 'type: "Scale" scale_param { num_axes: -2 }',
     "num_axes is -2"),
    ("scale-past-end", {"data": DATA}, 'type: "Scale" scale_param { axis: 2 num_axes: 3 }',
     "extends past"),
    ("scale-bottom-mismatch", {"data": DATA, "s": (5, 8)}, 'type: "Scale" bottom: "s"',
     r"bottom 1 has shape \(5, 8\)"),
    ("scale-bottom-past-end", {"data": DATA, "s": (7, 9, 2)},
     'type: "Scale" bottom: "s" scale_param { axis: 2 }', r"bottom 1 has shape \(7, 9, 2\)"),
    ("scale-3-bottoms", {"data": DATA, "s": (5,), "t": (5,)},
     'type: "Scale" bottom: "s" bottom: "t"', "3 bottom"),
    ("bias-axis", {"data": DATA}, 'type: "Bias" bias_param { axis: -5 }',
     "axis -5 is out of range"),
    ("bias-num-axes", {"data": DATA}, 'type: "Bias" bias_param { num_axes: -3 }',
     "num_axes is -3"),
    ("bias-bottom-mismatch", {"data": DATA, "s": (7,)}, 'type: "Bias" bottom: "s"',
     r"bottom 1 has shape \(7,\)"),
    ("mvn-5d", {"data": (2, 5, 3, 4, 6)}, 'type: "MVN"', "1 to 4"),
    ("prelu-1d", {"data": (5,)}, 'type: "PReLU"', "2 to 4"),
    ("prelu-5d", {"data": (2, 5, 3, 4, 6)}, 'type: "PReLU"', "2 to 4"),
    ("exp-base-0", {"data": DATA}, 'type: "Exp" exp_param { base: 0 }', "base is 0"),
    ("exp-base-negative", {"data": DATA}, 'type: "Exp" exp_param { base: -2 }', "base is -2"),
    ("log-base-1", {"data": DATA}, 'type: "Log" log_param { base: 1 }', "other than 1"),
    ("log-base-negative", {"data": DATA}, 'type: "Log" log_param { base: -3 }', "base is -3"),
]


@pytest.mark.parametrize(("inputs", "layer", "match"), [b[1:] for b in BAD],
                         ids=[b[0] for b in BAD])
def test_bad_parameters_raise_shape_error(inputs: dict, layer: str, match: str,
                                          tmp_path: Path) -> None:
    prototxt = tmp_path / "bad.prototxt"
    prototxt.write_text(_prototxt(inputs, layer))
    with pytest.raises(ShapeError, match=rf"layer 'l' \(\w+\): .*{match}"):
        caffe2torch.build(prototxt)


def test_absval_in_place_is_rejected_as_caffe_does(tmp_path: Path) -> None:
    prototxt = tmp_path / "absval.prototxt"
    prototxt.write_text(_prototxt({"data": DATA}, 'type: "AbsVal"', top="data"))
    with pytest.raises(ShapeError, match=r"layer 'l' \(AbsVal\): computes in place"):
        caffe2torch.build(prototxt)


# ----------------------------------------------------------------------------- BatchNorm


def _bn_net(tmp_path: Path, blobs: list[np.ndarray], param: str = "") -> tuple[Path, Path]:
    prototxt = tmp_path / "bn.prototxt"
    prototxt.write_text(_prototxt({"data": DATA}, f'type: "BatchNorm" {param}'))
    caffemodel = tmp_path / "bn.caffemodel"
    caffe2torch.write_caffemodel(caffemodel, [("l", "BatchNorm", blobs)])
    return prototxt, caffemodel


def _bn_blobs(f: float, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    mean = rng.normal(0.0, 0.5, DATA[1]) * f
    var = rng.uniform(0.5, 2.0, DATA[1]) * f
    return [mean.astype(np.float32), var.astype(np.float32), np.array([f], np.float32)]


def test_batch_norm_zero_scale_factor_guard(tmp_path: Path) -> None:
    """f == 0: Caffe's scale factor is 0, so mean = var = 0 and y = x / sqrt(eps)."""
    blobs = _bn_blobs(3.0)
    blobs[2][0] = 0.0
    prototxt, caffemodel = _bn_net(tmp_path, blobs)
    net = caffe2torch.build(prototxt, weights=caffemodel)
    assert not net.l.running_mean.any() and not net.l.running_var.any()
    x = _data({"data": DATA}, 2)
    out = _run(net, x)
    assert np.isfinite(out).all()
    assert_close(out, x["data"] / np.sqrt(np.float32(1e-5)), rel=1e-5, what="f == 0")
    assert_close(out, norm.batch_norm(x["data"], *blobs), rel=1e-5, what="f == 0 spec")
    assert_close(out, opencv_layers(prototxt, caffemodel, x, ["l"])["l"], what="f == 0 OpenCV")


def test_batch_norm_state_dict_reads_like_torch_and_keeps_the_factor(tmp_path: Path) -> None:
    blobs = _bn_blobs(4.0, seed=1)
    prototxt, caffemodel = _bn_net(tmp_path, blobs)
    net = caffe2torch.build(prototxt, weights=caffemodel)
    state = net.state_dict()
    np.testing.assert_allclose(state["l.running_mean"].numpy(), blobs[0] / 4, rtol=1e-6)
    np.testing.assert_allclose(state["l.running_var"].numpy(), blobs[1] / 4, rtol=1e-6)
    assert state["l.factor"].tolist() == [4.0]
    saved = tmp_path / "saved.caffemodel"
    caffe2torch.save_caffemodel(net, saved)
    mean, var, f = (np.array(b.data) for b in caffe2torch.read_caffemodel(saved)["l"].blobs)
    assert f.tolist() == [4.0]
    np.testing.assert_allclose(mean, blobs[0], rtol=1e-6)
    np.testing.assert_allclose(var, blobs[1], rtol=1e-6)
    x = _data({"data": DATA}, 3)
    again = caffe2torch.build(prototxt, weights=saved)
    assert_close(_run(again, x), _run(net, x), rel=1e-6, what="reloaded")


@pytest.mark.parametrize("f", [1.0, 2.5, 0.0])
def test_batch_norm_train_mode_accumulates_as_caffe(tmp_path: Path, f: float) -> None:
    """Unset use_global_stats: train mode (phase TRAIN) normalises with the batch and updates
    the blobs by BatchNormLayer::Forward_cpu (golden train_batchnorm): f = lambda * f + 1,
    blob0 = lambda * blob0 + mean, blob1 = lambda * blob1 + m / (m - 1) * biased variance."""
    lam = 0.75
    blobs = _bn_blobs(f if f else 1.0, seed=4)
    if f == 0:  # nothing accumulated yet: Caffe's stored sums are 0
        blobs = [np.zeros_like(blobs[0]), np.zeros_like(blobs[1]), np.zeros(1, np.float32)]
    prototxt, caffemodel = _bn_net(tmp_path, blobs,
                                   f"batch_norm_param {{ moving_average_fraction: {lam} }}")
    net = caffe2torch.build(prototxt, weights=caffemodel, phase="TRAIN")
    assert net.training
    x = _data({"data": DATA}, 4)["data"]
    assert_close(_run(net, {"data": x}), norm.batch_norm_batch_stats(x), rel=1e-5, what="train")
    dims = (0, 2, 3)
    m = x.size // DATA[1]
    expected = [lam * blobs[0] + x.mean(dims), lam * blobs[1] + x.var(dims) * m / (m - 1),
                lam * blobs[2] + 1]
    saved = tmp_path / "after.caffemodel"
    caffe2torch.save_caffemodel(net, saved)
    got = [np.array(b.data) for b in caffe2torch.read_caffemodel(saved)["l"].blobs]
    for i, (a, b) in enumerate(zip(got, expected, strict=True)):
        np.testing.assert_allclose(a.reshape(b.shape), b, rtol=1e-5, atol=1e-6, err_msg=f"{i}")
    net.eval()
    expected_eval = norm.batch_norm(x, *expected)
    assert_close(_run(net, {"data": x}), expected_eval, rel=1e-5, what="eval after training")


@pytest.mark.parametrize("use_global", [True, False])
def test_batch_norm_explicit_use_global_stats_overrides_mode(use_global: bool,
                                                             tmp_path: Path) -> None:
    """use_global_stats given: true keeps the stored statistics in train mode; false normalises
    with the batch even in eval mode (as Caffe's TEST phase), without touching the stored ones."""
    blobs = _bn_blobs(2.0, seed=5)
    param = f"batch_norm_param {{ use_global_stats: {str(use_global).lower()} }}"
    prototxt, caffemodel = _bn_net(tmp_path, blobs, param)
    net = caffe2torch.build(prototxt, weights=caffemodel)
    net.train(use_global)  # the mode the explicit setting overrides
    x = _data({"data": DATA}, 5)["data"]
    expected = norm.batch_norm(x, *blobs) if use_global else norm.batch_norm_batch_stats(x)
    assert_close(_run(net, {"data": x}), expected, rel=1e-5, what=param)
    np.testing.assert_allclose(net.l.running_mean.numpy(), blobs[0] / 2, rtol=1e-6)


def test_batch_norm_random_blobs_are_valid(tmp_path: Path) -> None:
    """Variances > 0 and f > 0 but not 1 (the zero guard has its own tests: random deep nets
    with f = 0 layers would reach huge activations)."""
    prototxt, _ = _bn_net(tmp_path, _bn_blobs(1.0))
    layer = caffe2torch.load_graph(prototxt).layer("l")
    rng = np.random.default_rng(0)
    factors = []
    for _ in range(60):
        mean, var, f = get_converter("BatchNorm").random_blobs(layer, [DATA], rng)
        assert mean.shape == var.shape == (DATA[1],) and f.shape == (1,)
        assert f[0] > 0 and (var > 0).all()
        factors.append(f[0])
    assert len(set(factors)) > 1 and 1.0 not in factors


# ----------------------------------------------------------------------------- fillers


def test_fillers_initialise_parameters_without_weights(tmp_path: Path) -> None:
    """weights=None: Scale/Bias/PReLU start from their fillers, as Caffe's (colorization's
    Scale filler constant 2.606 works without a caffemodel)."""
    prototxt = tmp_path / "fill.prototxt"
    prototxt.write_text("\n".join([
        *_input_layers({"data": DATA}),
        ('layer { name: "color" type: "Scale" bottom: "data" top: "color" '
         'scale_param { filler { type: "constant" value: 2.606 } bias_term: true '
         'bias_filler { type: "constant" value: 0.5 } } }'),
        'layer { name: "unit" type: "Scale" bottom: "data" top: "unit" }',
        'layer { name: "prelu" type: "PReLU" bottom: "data" top: "prelu" }',
        ('layer { name: "bias" type: "Bias" bottom: "data" top: "bias" '
         'bias_param { filler { value: -1.5 } } }'),
    ]))
    net = caffe2torch.build(prototxt)
    x = _data({"data": DATA}, 6)["data"]
    with torch.no_grad():
        out = net(torch.from_numpy(x), outputs=["color", "unit", "prelu", "bias"])
    expected = {"color": np.float32(2.606) * x + np.float32(0.5), "unit": x,
                "prelu": act.prelu(x, [0.25], True), "bias": x - np.float32(1.5)}
    for name, value in expected.items():
        assert_close(out[name].numpy(), value, rel=1e-6, what=name)
