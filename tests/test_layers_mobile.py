"""Mobile-net and YOLO v2 fork layers: numpy specs from the forks' C++, OpenCV, shapes, bad
parameters, weights write-back and standalone export.

ReLU6, HardSwish and HardSigmoid are also checked against real Caffe (inisis/caffe) in
tests/golden/nets/mobile_*.prototxt; the other layers are not in that fork.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from oracle import assert_close, opencv_layers
from reference import mobile as ref

import caffe2torch
from caffe2torch import Caffe2TorchError, ShapeError
from caffe2torch.export import export_python
from caffe2torch.io.prototxt import read_prototxt
from caffe2torch.weights import random_blobs

DATA = (2, 12, 6, 4)  # N, C, H, W all different; C divisible by 2, 3, 4, 6, 12
Ref = Callable[[dict, list], np.ndarray]


@dataclass(frozen=True)
class Case:
    id: str
    layer: str  # type, parameters and bottoms of the layer 'l' under test (top 'out')
    ref: Ref  # (inputs by name, parameter blobs) -> expected top
    inputs: dict = field(default_factory=lambda: {"data": DATA})
    scale: float = 4.0  # inputs ~ N(0, scale): past the activations' clips


def _x(i: dict) -> np.ndarray:
    return i["data"]


def _unary(fn: Callable, **kw) -> Ref:
    return lambda i, b: fn(_x(i), **kw)


def _dw(stride=(1, 1), pad=(0, 0), dilation=(1, 1), bias=True) -> Ref:
    return lambda i, b: ref.depthwise_conv(_x(i), b[0], b[1] if bias else None,
                                           stride, pad, dilation)


def _case(id: str, layer: str, fn: Ref, **kw) -> Case:
    return Case(id, layer, fn, **kw)


def _conv(kind: str, conv: str) -> str:
    return f'type: "{kind}" bottom: "data" convolution_param {{ {conv} }}'


ACTIVATIONS = [
    _case("relu6", 'type: "ReLU6" bottom: "data"', _unary(ref.relu6)),
    _case("relu6-slope", 'type: "ReLU6" bottom: "data" relu6_param { negative_slope: 0.1 }',
          _unary(ref.relu6, negative_slope=0.1)),
    _case("relu6-threshold", 'type: "ReLU6" bottom: "data" relu6_param { threshold: 2.5 }',
          _unary(ref.relu6, threshold=2.5)),
    _case("relu6-eric612", 'type: "ReLU6" bottom: "data" '
          'relu6_param { negative_slope: 0.2 engine: CAFFE }',
          _unary(ref.relu6, negative_slope=0.2)),
    _case("relu6-2d", 'type: "ReLU6" bottom: "data"', _unary(ref.relu6),
          inputs={"data": (3, 7)}),
    _case("hardswish", 'type: "HardSwish" bottom: "data"', _unary(ref.hardswish)),
    _case("hswish", 'type: "HSwish" bottom: "data"', _unary(ref.hswish)),
    _case("hardsigmoid", 'type: "HardSigmoid" bottom: "data"', _unary(ref.hardsigmoid)),
    _case("hardsigmoid-ab", 'type: "HardSigmoid" bottom: "data" '
          'hardsigmoid_param { alpha: 0.3 beta: 0.4 }',
          _unary(ref.hardsigmoid, alpha=0.3, beta=0.4)),
    _case("hsigmoid", 'type: "HSigmoid" bottom: "data"', _unary(ref.hsigmoid)),
]

SHUFFLE = [
    _case("shuffle-g3", 'type: "ShuffleChannel" bottom: "data" shuffle_channel_param { group: 3 }',
          _unary(ref.shuffle_channel, group=3)),
    _case("shuffle-g4", 'type: "ShuffleChannel" bottom: "data" shuffle_channel_param { group: 4 }',
          _unary(ref.shuffle_channel, group=4)),
    _case("shuffle-default", 'type: "ShuffleChannel" bottom: "data"',
          _unary(ref.shuffle_channel, group=1)),
    _case("shuffle-3d", 'type: "ShuffleChannel" bottom: "data" shuffle_channel_param { group: 2 }',
          _unary(ref.shuffle_channel, group=2), inputs={"data": (3, 6, 5)}),
]

DEPTHWISE = [
    # PR #5665: num_output and group are ignored (one filter per input channel)
    _case("conv-dw", _conv("ConvolutionDepthwise", "num_output: 12 kernel_size: 3 stride: 1 pad: 1"),
          _dw(pad=(1, 1))),
    _case("conv-dw-ignores-num-output", _conv(
        "ConvolutionDepthwise", "num_output: 5 group: 5 kernel_size: 3 stride: 2 pad: 1"),
        _dw(stride=(2, 2), pad=(1, 1))),
    _case("conv-dw-hw", _conv("ConvolutionDepthwise", "num_output: 12 kernel_h: 3 kernel_w: 2 "
                              "stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0 bias_term: false"),
          _dw(stride=(2, 1), pad=(1, 0), bias=False)),
    _case("conv-dw-lists", _conv("ConvolutionDepthwise", "num_output: 12 kernel_size: 3 "
                                 "kernel_size: 2 stride: 1 stride: 2 pad: 2 pad: 1 dilation: 2"),
          _dw(stride=(1, 2), pad=(2, 1), dilation=(2, 2))),
    _case("depthwise-convolution", _conv(
        "DepthwiseConvolution", "num_output: 12 group: 12 kernel_size: 3 stride: 2 pad: 1"),
        _dw(stride=(2, 2), pad=(1, 1))),
    _case("depthwise-convolution-dilated", _conv(
        "DepthwiseConvolution", "num_output: 12 group: 12 kernel_size: 3 pad: 2 dilation: 2"),
        _dw(pad=(2, 2), dilation=(2, 2))),
]

AXPY_INPUTS = {"a": (2, 12, 1, 1), "data": DATA, "y": DATA}
AXPY = [
    _case("axpy", 'type: "Axpy" bottom: "a" bottom: "data" bottom: "y"',
          lambda i, b: ref.axpy(i["a"], i["data"], i["y"]), inputs=AXPY_INPUTS),
    _case("axpy-2d-scale", 'type: "Axpy" bottom: "a" bottom: "data" bottom: "y"',
          lambda i, b: ref.axpy(i["a"], i["data"], i["y"]),
          inputs={"a": (2, 12), "data": DATA, "y": DATA}),
    # a 3-D scale: Caffe checks only axes 0 and 1 and reads the first N * C values
    _case("axpy-3d-scale", 'type: "Axpy" bottom: "a" bottom: "data" bottom: "y"',
          lambda i, b: ref.axpy(i["a"], i["data"], i["y"]),
          inputs={"a": (2, 12, 3), "data": DATA, "y": DATA}),
]

YOLO = [
    _case("reorg", 'type: "Reorg" bottom: "data" reorg_param { stride: 2 }',
          _unary(ref.reorg, stride=2)),
    _case("reorg-s3", 'type: "Reorg" bottom: "data" reorg_param { stride: 3 }',
          _unary(ref.reorg, stride=3), inputs={"data": (2, 18, 6, 9)}),
    _case("reorg-reverse", 'type: "Reorg" bottom: "data" reorg_param { stride: 2 reverse: true }',
          _unary(ref.reorg, stride=2, reverse=True), inputs={"data": (2, 12, 5, 3)}),
    _case("region", 'type: "Region" bottom: "data" region_param { classes: 3 boxes_of_each_grid: 2 }',
          _unary(ref.region, classes=3, coords=4, boxes=2, softmax=False),
          inputs={"data": (2, 16, 5, 3)}),
    _case("region-softmax", 'type: "Region" bottom: "data" '
          'region_param { classes: 4 coords: 5 boxes_of_each_grid: 3 softmax: true }',
          _unary(ref.region, classes=4, coords=5, boxes=3, softmax=True),
          inputs={"data": (2, 30, 3, 4)}),
]

CASES = ACTIVATIONS + SHUFFLE + DEPTHWISE + AXPY + YOLO


def _input_layers(inputs: dict) -> str:
    lines = ['name: "t"']
    for name, shape in inputs.items():
        dims = " ".join(f"dim: {d}" for d in shape)
        lines.append(f'layer {{ name: "{name}" type: "Input" top: "{name}" '
                     f'input_param {{ shape {{ {dims} }} }} }}')
    return "\n".join(lines) + "\n"


def _prototxt(inputs: dict, layer: str) -> str:
    """Input layers, then the layer 'l' (top 'out') under test."""
    return _input_layers(inputs) + f'layer {{ name: "l" top: "out" {layer} }}\n'


def _data(shapes: dict, seed: int, scale: float) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: (rng.standard_normal(shape) * scale).astype(np.float32)
            for name, shape in shapes.items()}


def _setup(case: Case, tmp_path: Path, seed: int = 0):
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(_prototxt(case.inputs, case.layer))
    caffemodel = tmp_path / "net.caffemodel"
    layers = random_blobs(caffe2torch.load_graph(prototxt), seed)
    caffe2torch.write_caffemodel(caffemodel, layers, name="t")
    blobs = [blob for _, _, blobs in layers for blob in blobs]
    net = caffe2torch.build(prototxt, weights=caffemodel if blobs else None)
    return prototxt, caffemodel, blobs, net


def _run(net, inputs: dict[str, np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        return net(**{k: torch.from_numpy(v) for k, v in inputs.items()}).numpy()


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_reference_and_inferred_shape(case: Case, seed: int, tmp_path: Path) -> None:
    _, _, blobs, net = _setup(case, tmp_path, seed)
    inputs = _data(case.inputs, seed, case.scale)
    out = _run(net, inputs)
    assert out.shape == net.caffe.graph.blob("out").shape
    assert_close(out, case.ref(inputs, blobs), rel=1e-5, what=case.id)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_other_batch_size(case: Case, tmp_path: Path) -> None:
    _, _, blobs, net = _setup(case, tmp_path)
    inputs = _data({k: (3, *s[1:]) for k, s in case.inputs.items()}, 5, case.scale)
    assert_close(_run(net, inputs), case.ref(inputs, blobs), rel=1e-5, what=case.id)


def test_reorg_is_not_space_to_depth() -> None:
    """darknet's order: in the bottom's own (C, H, W) index space, position (c, h, w) of the top
    reads the bottom's memory viewed as (C/s², H·s, W·s) at (c % C', h·s + k // s, w·s + k % s),
    k = c // C'; that buffer is then read as (C·s², H/s, W/s). SpaceToDepth differs."""
    x = np.arange(2 * 8 * 4 * 6, dtype=np.float32).reshape(2, 8, 4, 6)
    s, c_ = 2, 2
    out = ref.reorg(x, s)
    assert out.shape == (2, 32, 2, 3)
    view, flat = x.reshape(2, c_, 8, 12), out.reshape(2, 8, 4, 6)
    for c, h, w in [(0, 0, 0), (1, 2, 3), (5, 3, 5), (7, 1, 4)]:
        k = c // c_
        assert flat[1, c, h, w] == view[1, c % c_, h * s + k // s, w * s + k % s]
    s2d = torch.nn.functional.pixel_unshuffle(torch.from_numpy(x), s).numpy()
    assert not np.array_equal(out, s2d)


# --- OpenCV -----------------------------------------------------------------------------------

_NO_OPENCV = "OpenCV 4.x has no {} layer"
_AXPY = ("OpenCV 4.14's Axpy (imported as Scale + Eltwise) fails for N > 1 and for N = 1 "
         "computes a * bottom 2 + bottom 1 (SENet: a * bottom 1 + bottom 2)")
_REORG = "OpenCV's Reorg reads its stride from reorg_stride (default 2), and has no reverse"
OPENCV_DIFFERS: dict[str, str] = {
    "relu6-slope": "OpenCV's ReLU6 ignores negative_slope (clips at 0)",
    "relu6-eric612": "OpenCV's ReLU6 ignores negative_slope (clips at 0)",
    "relu6-threshold": "OpenCV's ReLU6 ignores threshold (clips at 6)",
    "hswish": _NO_OPENCV.format("HSwish"), "hsigmoid": _NO_OPENCV.format("HSigmoid"),
    "depthwise-convolution": _NO_OPENCV.format("DepthwiseConvolution"),
    "depthwise-convolution-dilated": _NO_OPENCV.format("DepthwiseConvolution"),
    "shuffle-3d": "OpenCV's ShuffleChannel takes 4-D inputs only",
    "conv-dw-ignores-num-output": "OpenCV's ConvolutionDepthwise convolves to num_output "
                                  "channels; the fork's layer ignores num_output and group",
    "axpy": _AXPY, "axpy-2d-scale": _AXPY, "axpy-3d-scale": _AXPY,
    "reorg-s3": _REORG, "reorg-reverse": _REORG,
    "region": "OpenCV's Region is darknet's detection head (anchors blob, other output)",
    "region-softmax": "OpenCV's Region is darknet's detection head (anchors blob, other output)",
}


def _opencv_params() -> list:
    return [pytest.param(case, id=case.id, marks=[pytest.mark.xfail(
        reason=OPENCV_DIFFERS[case.id], strict=True)] if case.id in OPENCV_DIFFERS else [])
        for case in CASES]


@pytest.mark.parametrize("case", _opencv_params())
def test_matches_opencv(case: Case, tmp_path: Path) -> None:
    prototxt, caffemodel, _, net = _setup(case, tmp_path, seed=3)
    inputs = _data(case.inputs, 3, case.scale)
    expected = opencv_layers(prototxt, caffemodel, inputs, ["l"])["l"]
    assert_close(_run(net, inputs), expected.reshape(net.caffe.graph.blob("out").shape),
                 rel=1e-5, what=case.id)


# --- a whole net, bad parameters, write-back and export ----------------------------------------

NET = Path(__file__).resolve().parent / "data" / "mobile_shuffle_net.prototxt"
# blob -> the OpenCV layer whose top is that blob's final (after in-place layers) value
NET_BLOBS = {"conv1": "conv1/relu", "b1/dw": "b1/dw/relu", "b1/pw": "b1/pw",
             "b1/shuffle": "b1/shuffle", "b1/hs": "b1/hs", "b1/reorg": "b1/reorg",
             "b2/dw": "b2/relu", "b2/pw": "b2/pw", "b2/gate": "b2/gate", "b2/mul": "b2/mul",
             "fc": "fc", "prob": "prob"}


@pytest.fixture(scope="module")
def mobile_net(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mobile")
    weights = folder / "net.caffemodel"
    caffe2torch.write_random_caffemodel(NET, weights, seed=7)
    net = caffe2torch.build(NET, weights=weights)
    x = _data({"data": (2, 3, 20, 28)}, 7, 1.0)
    return folder, weights, net, x


def test_mobile_net_matches_opencv_end_to_end(mobile_net) -> None:
    """ReLU6, ConvolutionDepthwise, ShuffleChannel, HardSwish, Reorg and HardSigmoid in one net,
    every layer's top against OpenCV's importer."""
    _, weights, net, x = mobile_net
    with torch.no_grad():
        ours = net(data=torch.from_numpy(x["data"]), outputs=list(NET_BLOBS))
    theirs = opencv_layers(NET, weights, x, list(NET_BLOBS.values()))
    for blob, layer in NET_BLOBS.items():
        assert_close(ours[blob].numpy(), theirs[layer].reshape(ours[blob].shape), rel=1e-4,
                     what=blob)


def test_mobile_net_writes_back_its_caffemodel(mobile_net) -> None:
    folder, _, net, _ = mobile_net
    again = folder / "again.caffemodel"
    caffe2torch.save_caffemodel(net, again)
    rebuilt = caffe2torch.build(NET, weights=again)
    for key, value in net.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[key], value), key
    dw = caffe2torch.read_caffemodel(again)["b1/dw"]
    assert dw.type == "ConvolutionDepthwise"
    assert [b.shape for b in dw.blobs] == [(12, 1, 3, 3)]  # the fork's (C, 1, kh, kw), no bias


def test_every_new_layer_exports_to_python_and_caffemodel(tmp_path: Path) -> None:
    """One net with every mobile / YOLO type, exported as a .py that rebuilds it without
    caffe2torch and as a caffemodel that rebuilds it; outputs equal."""
    layers = "\n".join(f'layer {{ name: "{name}" top: "{name}" {text} }}' for name, text in [
        ("r6", 'type: "ReLU6" bottom: "data" relu6_param { negative_slope: 0.1 threshold: 3 }'),
        ("hs", 'type: "HardSwish" bottom: "data"'), ("hs2", 'type: "HSwish" bottom: "data"'),
        ("hg", 'type: "HardSigmoid" bottom: "data" hardsigmoid_param { alpha: 0.3 }'),
        ("hg2", 'type: "HSigmoid" bottom: "data"'),
        ("sc", 'type: "ShuffleChannel" bottom: "data" shuffle_channel_param { group: 3 }'),
        ("dw", _conv("ConvolutionDepthwise", "num_output: 12 kernel_size: 3 stride: 2 pad: 1")),
        ("dw2", _conv("DepthwiseConvolution", "num_output: 12 group: 12 kernel_size: 3")),
        ("ax", 'type: "Axpy" bottom: "a" bottom: "data" bottom: "hs"'),
        ("ro", 'type: "Reorg" bottom: "data" reorg_param { stride: 2 }'),
        ("ro2", 'type: "Reorg" bottom: "data" reorg_param { stride: 2 reverse: true }'),
        ("rg", ('type: "Region" bottom: "data" '
                'region_param { classes: 1 boxes_of_each_grid: 2 softmax: true }')),
    ])
    prototxt = tmp_path / "every.prototxt"
    prototxt.write_text(_input_layers({"data": DATA, "a": (2, 12, 1, 1)}) + layers + "\n")
    weights = tmp_path / "every.caffemodel"
    caffe2torch.write_random_caffemodel(prototxt, weights, seed=2)
    net = caffe2torch.build(prototxt, weights=weights)
    inputs = {k: torch.from_numpy(v) for k, v in _data({"data": DATA, "a": (2, 12, 1, 1)},
                                                         2, 4.0).items()}
    with torch.no_grad():
        expected = net(**inputs)
    path = export_python(net, tmp_path / "every_net.py")
    assert "caffe2torch" not in [line.split()[1] for line in path.read_text().splitlines()
                                 if line.startswith(("import ", "from "))]
    import importlib.util
    spec = importlib.util.spec_from_file_location("every_net", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with torch.no_grad():
        got = module.load()(**inputs)
    for a, b in zip(got, expected, strict=True):
        assert torch.equal(a, b)
    caffe2torch.save_caffemodel(net, tmp_path / "again.caffemodel")
    rebuilt = caffe2torch.build(prototxt, weights=tmp_path / "again.caffemodel")
    with torch.no_grad():
        for a, b in zip(rebuilt(**inputs), expected, strict=True):
            assert torch.equal(a, b)


def test_eric612_relu6_param_parses(tmp_path: Path) -> None:
    """eric612/MobileNet-YOLO's relu6_param is a ReLUParameter (negative_slope, engine)."""
    path = tmp_path / "n.prototxt"
    path.write_text(_prototxt({"data": DATA},
                              'type: "ReLU6" bottom: "data" relu6_param { engine: CUDNN }'))
    p = read_prototxt(path).layer[-1].relu6_param
    assert p.threshold == 6 and p.negative_slope == 0 and p.engine == p.engine.__class__(2)


BAD = [
    ("shuffle group does not divide", {"data": DATA},
     'type: "ShuffleChannel" bottom: "data" shuffle_channel_param { group: 5 }', "group 5"),
    ("shuffle group 0", {"data": DATA},
     'type: "ShuffleChannel" bottom: "data" shuffle_channel_param { group: 0 }', "group 0"),
    ("reorg without stride", {"data": DATA}, 'type: "Reorg" bottom: "data"', "no stride"),
    ("reorg odd width", {"data": (2, 12, 6, 5)},
     'type: "Reorg" bottom: "data" reorg_param { stride: 2 }', "multiples"),
    ("reorg channels", {"data": (2, 6, 6, 4)},
     'type: "Reorg" bottom: "data" reorg_param { stride: 2 reverse: true }', "multiples"),
    ("reorg 3-D", {"data": (2, 12, 6)},
     'type: "Reorg" bottom: "data" reorg_param { stride: 2 }', "4-D"),
    ("region channels", {"data": DATA},
     'type: "Region" bottom: "data" region_param { classes: 3 }', "boxes_of_each_grid"),
    ("axpy scale shape", {"a": (2, 11, 1, 1), "data": DATA, "y": DATA},
     'type: "Axpy" bottom: "a" bottom: "data" bottom: "y"', "scale a"),
    ("axpy scale spatial", {"a": (2, 12, 2, 1), "data": DATA, "y": DATA},
     'type: "Axpy" bottom: "a" bottom: "data" bottom: "y"', "scale a"),
    ("axpy y shape", {"a": (2, 12, 1, 1), "data": DATA, "y": (2, 12, 6, 3)},
     'type: "Axpy" bottom: "a" bottom: "data" bottom: "y"', r"y \(bottom 2\)"),
    ("axpy two bottoms", {"a": (2, 12, 1, 1), "data": DATA},
     'type: "Axpy" bottom: "a" bottom: "data"', "expected 3"),
    ("conv-dw 3-D", {"data": (2, 12, 6)},
     _conv("ConvolutionDepthwise", "num_output: 12 kernel_size: 3 stride: 1 pad: 0"), "4-D"),
    ("depthwise group", {"data": DATA},
     _conv("DepthwiseConvolution", "num_output: 12 group: 5 kernel_size: 3"), "group 5"),
]


@pytest.mark.parametrize(("inputs", "layer", "match"), [b[1:] for b in BAD],
                         ids=[b[0] for b in BAD])
def test_bad_parameters_raise_shape_errors_naming_the_layer(inputs, layer, match,
                                                            tmp_path: Path) -> None:
    path = tmp_path / "n.prototxt"
    path.write_text(_prototxt(inputs, layer))
    with pytest.raises(ShapeError, match=match) as error:
        caffe2torch.load_graph(path)
    assert "layer 'l'" in str(error.value)


@pytest.mark.parametrize("conv", ["num_output: 12 kernel_size: 3 pad: 1",
                                  "num_output: 12 kernel_size: 3 stride: 1",
                                  "num_output: 12 stride: 1 pad: 0"])
def test_conv_dw_without_stride_or_pad_is_unsupported(conv: str, tmp_path: Path) -> None:
    """PR #5665 reads stride(0) and pad(0) even when the list is empty (undefined in Caffe)."""
    path = tmp_path / "n.prototxt"
    path.write_text(_prototxt({"data": DATA}, _conv("ConvolutionDepthwise", conv)))
    with pytest.raises(Caffe2TorchError, match=r"layer 'l' \(ConvolutionDepthwise\): "
                                                r"convolution_param has no (stride|pad|kernel)"):
        caffe2torch.build(path)


@pytest.mark.parametrize("kind", ["Reorg", "Region"])
def test_reorg_and_region_refuse_in_place(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "n.prototxt"
    path.write_text(_input_layers({"data": (2, 12, 4, 2)}) + f'layer {{ name: "l" type: "{kind}" bottom: "data" top: "data" '
                    'reorg_param { stride: 2 } region_param { classes: 1 boxes_of_each_grid: 2 } }\n')
    with pytest.raises(ShapeError, match="in place"):
        caffe2torch.load_graph(path)


def test_region_coords_below_four_is_unsupported(tmp_path: Path) -> None:
    path = tmp_path / "n.prototxt"
    path.write_text(_prototxt({"data": (2, 12, 3, 4)}, 'type: "Region" bottom: "data" '
                              'region_param { classes: 3 coords: 2 boxes_of_each_grid: 2 }'))
    with pytest.raises(Caffe2TorchError, match="coords 2"):
        caffe2torch.build(path)
