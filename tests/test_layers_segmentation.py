"""Segmentation / upsampling fork layers against numpy specs of their C++ (bit-exact where the
C++ is float32 arithmetic), OpenCV where it has the layer, and real-Caffe goldens
(tests/golden/nets/seg_*.prototxt, for the layers of the oracle fork: Upsample, Resize,
BilinearInterpolate, Pad, PixelShuffle, MaxUnPool, Unsqueeze, BN).

Interp and SegNet's Upsample / BN are not in the oracle fork: their specs are written from
hszhao/PSPNet's and alexgkendall/caffe-segnet's sources, and Interp is also run through OpenCV.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import prototxt_text
import pytest
import torch
from oracle import assert_close, opencv_layers
from prototxt_text import layer
from reference import segmentation as ref

import caffe2torch
from caffe2torch import ShapeError
from caffe2torch.errors import Caffe2TorchError

try:
    from cv2 import error as OPENCV_ERROR
except ImportError:  # the OpenCV tests skip then
    OPENCV_ERROR = Exception

SHAPE = (2, 3, 5, 7)  # N, C, H, W all different


def net_text(layers: str, shape=SHAPE, inputs=("data",)) -> str:
    return prototxt_text.net_text(layers, shape, inputs, name="seg")


def sample(shape, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def build(tmp_path: Path, text: str, **kwargs):
    proto = tmp_path / "net.prototxt"
    proto.write_text(text)
    return proto, caffe2torch.build(proto, **kwargs)


def run(net, *xs, names):
    with torch.no_grad():
        out = net(*(torch.from_numpy(np.ascontiguousarray(x)) for x in xs), outputs=list(names))
    return {k: v.numpy() for k, v in out.items()}


def check(tmp_path, params_layer: str, expected: np.ndarray, x=None, shape=SHAPE, exact=True):
    x = sample(shape) if x is None else x
    proto, net = build(tmp_path, net_text(params_layer, shape))
    out = run(net, x, names=["out"])["out"]
    assert out.shape == net.caffe.graph.blob("out").shape == expected.shape
    if exact:
        np.testing.assert_array_equal(out, expected)
    else:
        assert_close(out, expected, rel=1e-6)
    return proto, net, x, out


# ----------------------------------------------------------------------------- Interp

INTERP_CASES = [
    ("zoom2", "zoom_factor: 2", {"zoom": 2}),
    ("zoom3-crop", "zoom_factor: 3 pad_beg: -1 pad_end: -1", {"zoom": 3, "pad_beg": -1, "pad_end": -1}),
    ("shrink2", "shrink_factor: 2", {"shrink": 2}),
    ("shrink-zoom", "shrink_factor: 2 zoom_factor: 3", {"shrink": 2, "zoom": 3}),
    ("size", "height: 9 width: 4", {"height": 9, "width": 4}),
    ("size-down", "height: 3 width: 2", {"height": 3, "width": 2}),
    ("to-one-row", "height: 1 width: 11", {"height": 1, "width": 11}),
    ("same-size-crop", "height: 4 width: 5 pad_beg: 0 pad_end: -1 ",
     {"height": 4, "width": 5, "pad_end": -1}),
    ("zoom-wins-over-size", "zoom_factor: 2 height: 3 width: 3", {"zoom": 2}),
]


@pytest.mark.parametrize("case_id, params, kwargs", INTERP_CASES, ids=[c[0] for c in INTERP_CASES])
def test_interp_matches_spec_bit_for_bit(tmp_path, case_id, params, kwargs):
    x = sample(SHAPE, 1)
    check(tmp_path, layer("out", "Interp", f"interp_param {{ {params} }}"),
          ref.interp(x, **kwargs), x)


def test_interp_one_pixel_input(tmp_path):
    x = sample((3, 2, 1, 4), 2)
    check(tmp_path, layer("out", "Interp", "interp_param { height: 5 width: 6 }"),
          ref.interp(x, height=5, width=6), x, shape=(3, 2, 1, 4))


@pytest.mark.parametrize("params", [
    "zoom_factor: 2", "height: 11 width: 13",
    pytest.param("shrink_factor: 2", marks=pytest.mark.xfail(
        strict=True, raises=OPENCV_ERROR,
        reason="OpenCV's Interp computes an empty output for shrink_factor alone; PSPNet's "
               "gives (H - 1) / shrink + 1 (3x4 here)")),
    pytest.param("zoom_factor: 3 pad_beg: -1 pad_end: -2", marks=pytest.mark.xfail(
        strict=True, raises=AssertionError,
        reason="OpenCV ignores pad_beg/pad_end (13x19 here); PSPNet's Interp crops the input "
               "first (2x4 -> 4x10): Caffe is right")),
    pytest.param("shrink_factor: 2 zoom_factor: 3", marks=pytest.mark.xfail(
        strict=True, raises=AssertionError,
        reason="OpenCV applies only the shrink factor when both are given (7x10 here); "
               "PSPNet's InterpLayer::Reshape shrinks then zooms (13x19): Caffe is right")),
])
def test_interp_against_opencv(tmp_path, params):
    """OpenCV's Interp layer (align corners, the same size rules) agrees to float rounding."""
    text = net_text(layer("out", "Interp", f"interp_param {{ {params} }}"))
    proto, net = build(tmp_path, text)
    model = tmp_path / "net.caffemodel"
    caffe2torch.write_random_caffemodel(proto, model, seed=0)
    x = sample(SHAPE, 3)
    ours = run(net, x, names=["out"])["out"]
    theirs = opencv_layers(proto, model, {"data": x}, ["out"])["out"]
    assert_close(ours, theirs, rel=1e-5, what="Interp vs OpenCV")


def test_interp_other_input_size_at_run_time(tmp_path):
    _, net = build(tmp_path, net_text(layer("out", "Interp", "interp_param { zoom_factor: 2 }")))
    x = sample((1, 3, 4, 6), 4)
    out = run(net, x, names=["out"])["out"]
    np.testing.assert_array_equal(out, ref.interp(x, zoom=2))


@pytest.mark.parametrize("params, message", [
    ("pad_beg: 1", "pad_beg is 1"),
    ("zoom_factor: 0", "zoom_factor is 0"),
    ("height: 4", "give zoom_factor, shrink_factor, or both height and width"),
    ("zoom_factor: 2 pad_beg: -3 pad_end: -3", "crop the 5x7 input"),
])
def test_interp_bad_parameters(tmp_path, params, message):
    with pytest.raises(ShapeError, match=rf"layer 'out' \(Interp\).*{message}"):
        build(tmp_path, net_text(layer("out", "Interp", f"interp_param {{ {params} }}")))


# ----------------------------------------------------------------------------- Resize, BilinearInterpolate


@pytest.mark.parametrize("params, size", [
    ("height: 11 width: 16", (11, 16)), ("height: 3 width: 4", (3, 4)),
    ("height: 5 width: 7", (5, 7)), (("is_pyramid_test: true out_height_scale: 1.5 "
                                     "out_width_scale: 0.7"), (7, 4)),
], ids=["up", "down", "same", "pyramid"])
def test_resize_matches_spec(tmp_path, params, size):
    x = sample(SHAPE, 5)
    check(tmp_path, layer("out", "Resize", f"resize_param {{ {params} }}"), ref.resize(x, *size), x)


@pytest.mark.parametrize("params, size, align", [
    ("dst_h: 9 dst_w: 12", (9, 12), True), ("dst_h: 9 dst_w: 12 align_corners: false",
                                            (9, 12), False),
    ("scale_factor: 2.5", (12, 17), True), ("scale_factor: 0.6 align_corners: false", (3, 4), False),
    ("dst_h: 8", (8, 7), True), ("dst_h: 5 dst_w: 7 align_corners: false", (5, 7), False),
], ids=["dst", "dst-half-pixel", "scale", "scale-down-half-pixel", "dst-h-only", "same"])
def test_bilinear_interpolate_matches_spec(tmp_path, params, size, align):
    x = sample(SHAPE, 6)
    check(tmp_path, layer("out", "BilinearInterpolate",
                          f"bilinear_interpolate_param {{ {params} }}"),
          ref.bilinear_interpolate(x, *size, align), x)


def test_bilinear_interpolate_one_pixel_axis(tmp_path):
    x = sample((2, 3, 1, 4), 7)
    check(tmp_path, layer("out", "BilinearInterpolate",
                          "bilinear_interpolate_param { dst_h: 3 dst_w: 6 }"),
          ref.bilinear_interpolate(x, 3, 6, True), x, shape=(2, 3, 1, 4))


@pytest.mark.parametrize("kind, params, message", [
    ("Resize", "height: 3", "needs height and width"),
    ("Resize", "is_pyramid_test: true out_height_scale: 2", "needs out_height_scale"),
    ("BilinearInterpolate", "dst_h: 3 scale_factor: 2", "exactly one"),
    ("BilinearInterpolate", "", "exactly one"),
    ("BilinearInterpolate", "dst_h: 1 dst_w: 4", "divides by"),
])
def test_resize_bad_parameters(tmp_path, kind, params, message):
    field = "resize_param" if kind == "Resize" else "bilinear_interpolate_param"
    with pytest.raises(ShapeError, match=rf"layer 'out' \({kind}\).*{message}"):
        build(tmp_path, net_text(layer("out", kind, f"{field} {{ {params} }}")))


# ----------------------------------------------------------------------------- Upsample (nearest)


@pytest.mark.parametrize("params, scales, shape", [
    ("scale: 2", (2, 2), SHAPE), ("scale: 3", (3, 3), SHAPE), ("", (1, 1), SHAPE),
    ("scale_h: 2 scale_w: 3", (2, 3), SHAPE), ("stride: 2", (2, 2), SHAPE),
    ("scale: 2 dims_num: 3", (2,), (2, 3, 5)),
], ids=["x2", "x3", "default-1", "per-axis", "stride", "dims3"])
def test_upsample_nearest(tmp_path, params, scales, shape):
    x = sample(shape, 8)
    check(tmp_path, layer("out", "Upsample", f"upsample_param {{ {params} }}"),
          ref.upsample_nearest(x, scales), x, shape=shape)


@pytest.mark.parametrize("params, message", [
    ("scale: 1.5", "scale is 1.5"), ("upsample_h: 10 upsample_w: 14", "pooling mask"),
    ("dims_num: 5", "dims_num is 5"), ("scale: 2 stride: 2", "together with stride"),
])
def test_upsample_nearest_bad_parameters(tmp_path, params, message):
    with pytest.raises(ShapeError, match=rf"layer 'out' \(Upsample\).*{message}"):
        build(tmp_path, net_text(layer("out", "Upsample", f"upsample_param {{ {params} }}")))


# ----------------------------------------------------------------------------- unpooling

POOL = ('layer { name: "pool" type: "Pooling" bottom: "data" top: "pool" top: "mask" '
        'pooling_param { pool: MAX %s } }')


@pytest.mark.parametrize("pool, params, size", [
    ("kernel_size: 2 stride: 2", "scale: 2", None),
    ("kernel_size: 2 stride: 2", "", None),                        # SegNet's default scale 2
    ("kernel_size: 2 stride: 2", "upsample_h: 5 upsample_w: 7", (5, 7)),
    ("kernel_size: 2 stride: 2", "scale: 2 pad_out_h: true", None),
    ("kernel_size: 3 stride: 2", "upsample_h: 5 upsample_w: 7", (5, 7)),  # overlapping windows
    ("kernel_h: 2 kernel_w: 3 stride_h: 2 stride_w: 3", "scale_h: 2 scale_w: 3", None),
], ids=["scale2", "default", "size", "pad-out", "overlap", "per-axis"])
def test_segnet_upsample(tmp_path, pool, params, size):
    x = sample(SHAPE, 9)
    text = net_text(POOL % pool + layer("out", "Upsample", f"upsample_param {{ {params} }}",
                                        bottoms=("pool", "mask")))
    _, net = build(tmp_path, text)
    got = run(net, x, names=["pool", "mask", "out"])
    shape = net.caffe.graph.blob("out").shape
    expected = ref.unpool(got["pool"], got["mask"], *shape[2:])
    np.testing.assert_array_equal(got["out"], expected)
    assert got["out"].shape == shape
    if size:
        assert shape[2:] == size


def test_unpool_later_entry_wins_on_a_shared_position():
    """Two pooled entries naming one position: the later one is written last, as in Caffe."""
    from caffe2torch.modules.segmentation import MaxUnpool
    x = torch.tensor([[[[1.0, 2.0, 3.0]]]])
    mask = torch.tensor([[[[4.0, 4.0, 0.0]]]])
    out = MaxUnpool((2, 3))(x, mask)
    assert out.flatten().tolist() == [3.0, 0, 0, 0, 2.0, 0]


def test_unpool_index_out_of_range_raises():
    from caffe2torch.modules.segmentation import MaxUnpool
    with pytest.raises(IndexError, match="mask index 6 is out of range for a 2x3"):
        MaxUnpool((2, 3))(torch.ones(1, 1, 1, 1), torch.full((1, 1, 1, 1), 6.0))


def test_maxunpool(tmp_path):
    x = sample(SHAPE, 10)
    text = net_text(POOL % "kernel_size: 2 stride: 2" + layer(
        "out", "MaxUnPool", "max_unpool_param { dst_h: 5 dst_w: 7 }", bottoms=("pool", "mask")))
    _, net = build(tmp_path, text)
    got = run(net, x, names=["pool", "mask", "out"])
    np.testing.assert_array_equal(got["out"], ref.unpool(got["pool"], got["mask"], 5, 7))


@pytest.mark.parametrize("kind, params, message", [
    ("Upsample", "scale: 1", "must be > 1"),
    ("Upsample", "scale: 3 pad_out_w: true", "pad_out_w needs scale_w == 2"),
    ("Upsample", "scale: 2 scale_h: 2 scale_w: 2", "without scale"),
    ("MaxUnPool", "dst_h: 4", "needs dst_h and dst_w"),
])
def test_unpool_bad_parameters(tmp_path, kind, params, message):
    field = "upsample_param" if kind == "Upsample" else "max_unpool_param"
    text = net_text(POOL % "kernel_size: 2 stride: 2" + layer(
        "out", kind, f"{field} {{ {params} }}", bottoms=("pool", "mask")))
    with pytest.raises(ShapeError, match=rf"layer 'out' \({kind}\).*{message}"):
        build(tmp_path, text)


# ----------------------------------------------------------------------------- Pad, PixelShuffle, Unsqueeze


@pytest.mark.parametrize("params, args", [
    ("pad_u: 1 pad_d: 2 pad_l: 3 pad_r: 0 pad_value: 1.5", (1, 2, 3, 0, "constant", 1.5)),
    ("pad_type: REPLICATE pad_u: 2 pad_d: 0 pad_l: 1 pad_r: 3", (2, 0, 1, 3, "replicate")),
    ("pad_type: REFLECT pad_u: 1 pad_d: 3 pad_l: 2 pad_r: 1", (1, 3, 2, 1, "reflect")),
    ("pad_u: -1 pad_d: -2 pad_l: -1 pad_r: -3", (-1, -2, -1, -3)),
], ids=["constant", "replicate", "reflect", "crop"])
def test_pad(tmp_path, params, args):
    x = sample(SHAPE, 11)
    check(tmp_path, layer("out", "Pad", f"pad_param {{ {params} }}"), ref.pad(x, *args), x)


@pytest.mark.parametrize("params, error, message", [
    ("pad_u: -1 pad_d: 1", Caffe2TorchError, "mixed signs"),
    ("pad_type: REFLECT pad_l: 7", ShapeError, "must be smaller"),
])
def test_pad_bad_parameters(tmp_path, params, error, message):
    with pytest.raises(error, match=rf"out.*{message}"):
        build(tmp_path, net_text(layer("out", "Pad", f"pad_param {{ {params} }}")))


def test_pad_in_place_is_refused(tmp_path):
    with pytest.raises(ShapeError, match=r"layer 'pad' \(Pad\).*in place"):
        build(tmp_path, net_text(layer("pad", "Pad", "pad_param { pad_u: 1 }", tops=("data",))))


@pytest.mark.parametrize("shape, r", [((2, 12, 3, 5), 2), ((3, 9, 2, 4), 3), ((2, 6, 3, 4), 2)],
                         ids=["r2", "r3", "unused-channels"])
def test_pixel_shuffle(tmp_path, shape, r):
    x = sample(shape, 12)
    check(tmp_path, layer("out", "PixelShuffle", f"pixelshuffle_param {{ upscale_factor: {r} }}"),
          ref.pixel_shuffle(x, r), x, shape=shape)


def test_pixel_shuffle_bad_channels(tmp_path):
    with pytest.raises(ShapeError, match=r"layer 'out' \(PixelShuffle\).*not a multiple"):
        build(tmp_path, net_text(layer("out", "PixelShuffle",
                                       "pixelshuffle_param { upscale_factor: 2 }")))


@pytest.mark.parametrize("dim, axis", [(0, 0), (2, 2), (4, 4), (-1, 4), (-5, 0)])
def test_unsqueeze(tmp_path, dim, axis):
    x = sample(SHAPE, 13)
    check(tmp_path, layer("out", "Unsqueeze", f"unsqueeze_param {{ dim: {dim} }}"),
          np.expand_dims(x, axis), x)


def test_unsqueeze_bad_dim(tmp_path):
    with pytest.raises(ShapeError, match=r"layer 'out' \(Unsqueeze\).*dim 5 is out of range"):
        build(tmp_path, net_text(layer("out", "Unsqueeze", "unsqueeze_param { dim: 5 }")))


# ----------------------------------------------------------------------------- BN

BN_SHAPE = (3, 4, 5, 6)


def bn_blobs(form: str, channels: int = BN_SHAPE[1], seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = (1, channels) if form == "inv_std" else (1, channels, 1, 1)
    slope, bias = rng.normal(1, 0.3, shape), rng.normal(0, 0.3, shape)
    if form == "segnet":
        return [slope.astype(np.float32), bias.astype(np.float32)]
    mean, spread = rng.normal(0, 0.5, shape), rng.uniform(0.5, 2, shape)
    return [a.astype(np.float32) for a in (slope, bias, mean, spread)]


def bn_net(tmp_path: Path, params: str, blobs: list[np.ndarray] | None, tops=("bn",), **kwargs):
    text = net_text(layer("bn", "BN", params, tops=tops), BN_SHAPE)
    proto, model = tmp_path / "bn.prototxt", tmp_path / "bn.caffemodel"
    proto.write_text(text)
    if blobs is not None:
        caffe2torch.write_caffemodel(model, [("bn", "BN", blobs)])
    return proto, model, caffe2torch.build(proto, weights=model if blobs is not None else None,
                                           **kwargs)


@pytest.mark.parametrize("params", ["", "bn_param { frozen: true eps: 0.001 }",
                                    "bn_param { slope_filler { type: 'constant' value: 1 } }"],
                         ids=["undeclared", "frozen-eps", "fillers"])
def test_bn_pspnet_form_from_blobs(tmp_path, params):
    blobs = bn_blobs("variance")
    _, _, net = bn_net(tmp_path, params, blobs)
    module = net.get_submodule("bn")
    assert module.form == "variance" and "caffemodel" in module.chosen_by
    x = sample(BN_SHAPE, 20)
    eps = 0.001 if "eps" in params else 1e-5
    assert_close(run(net, x, names=["bn"])["bn"], ref.bn_pspnet(x, *blobs, eps), rel=1e-6)


def test_bn_inisis_form_from_blobs(tmp_path):
    """(1, C) blobs are inisis/caffe's: blob 3 multiplies directly, no eps."""
    blobs = bn_blobs("inv_std")
    _, _, net = bn_net(tmp_path, "bn_param { frozen: true }", blobs)
    assert net.get_submodule("bn").form == "inv_std"
    x = sample(BN_SHAPE, 21)
    np.testing.assert_array_equal(run(net, x, names=["bn"])["bn"], ref.bn_inisis(x, *blobs))


@pytest.mark.parametrize("params", ["bn_param { bn_mode: INFERENCE }", "", ("bn_param { "
                                    "scale_filler { type: 'constant' value: 1 } }")],
                         ids=["inference", "undeclared-two-blobs", "learn-declared"])
def test_bn_segnet(tmp_path, params):
    blobs = bn_blobs("segnet")
    _, _, net = bn_net(tmp_path, params, blobs)
    module = net.get_submodule("bn")
    assert module.form == "segnet"
    x = sample(BN_SHAPE, 22)
    learn = "INFERENCE" not in params
    expected, _, _ = ref.bn_segnet(x, *blobs, learn=learn)
    assert_close(run(net, x, names=["bn"])["bn"], expected, rel=1e-5)


def test_bn_segnet_learn_gives_batch_statistics_as_tops(tmp_path):
    blobs = bn_blobs("segnet")
    _, _, net = bn_net(tmp_path, "", blobs, tops=("bn", "mean", "var"))
    x = sample(BN_SHAPE, 23)
    got = run(net, x, names=["bn", "mean", "var"])
    for name, expected in zip(("bn", "mean", "var"), ref.bn_segnet(x, *blobs, learn=True)):
        assert got[name].shape == net.caffe.graph.blob(name).shape
        assert_close(got[name], expected, rel=1e-5, what=name)


def test_bn_train_mode_uses_batch_statistics_unless_frozen(tmp_path):
    blobs = bn_blobs("variance")
    x = sample(BN_SHAPE, 24)
    _, _, net = bn_net(tmp_path, "", blobs)
    with torch.no_grad():
        out = net.train()(torch.from_numpy(x)).numpy()
    assert_close(out, ref.bn_batch(x, blobs[0], blobs[1], 1e-5), rel=1e-5)
    _, _, frozen = bn_net(tmp_path, "bn_param { frozen: true }", blobs)
    with torch.no_grad():
        out = frozen.train()(torch.from_numpy(x)).numpy()
    assert_close(out, ref.bn_pspnet(x, *blobs, 1e-5), rel=1e-6)


def test_bn_without_weights_assumes_pspnet_and_says_so(tmp_path):
    _, _, net = bn_net(tmp_path, "", None)
    module = net.get_submodule("bn")
    assert module.form == "variance"
    assert "assumed" in repr(module)
    assert net.caffe.graph  # builds; blob shapes are PSPNet's
    from caffe2torch.weights import parameter_layers
    [(_, shapes)] = parameter_layers(net.caffe.graph)
    assert shapes == [(1, 4, 1, 1)] * 4


@pytest.mark.parametrize("form, params", [("variance", ""), ("inv_std", ""),
                                          ("segnet", "bn_param { bn_mode: INFERENCE }")])
def test_bn_save_caffemodel_round_trip(tmp_path, form, params):
    blobs = bn_blobs(form)
    _, _, net = bn_net(tmp_path, params, blobs)
    out = tmp_path / "saved.caffemodel"
    caffe2torch.save_caffemodel(net, out)
    saved = [np.array(b.data) for b in caffe2torch.read_caffemodel(out)["bn"].blobs]
    assert [s.shape for s in saved] == [b.shape for b in blobs]
    for got, want in zip(saved, blobs):
        np.testing.assert_array_equal(got, want)


def test_bn_contradicting_fields(tmp_path):
    with pytest.raises(ShapeError, match=r"layer 'bn' \(BN\).*mixes SegNet's BN \(bn_mode\)"):
        bn_net(tmp_path, "bn_param { bn_mode: INFERENCE frozen: true }", None)


def test_bn_declared_segnet_with_four_blobs_is_a_weights_error(tmp_path):
    with pytest.raises(caffe2torch.WeightsError, match=r"layer 'bn' \(BN\).*4 blob"):
        bn_net(tmp_path, "bn_param { bn_mode: INFERENCE }", bn_blobs("variance"))


# ----------------------------------------------------------------------------- realistic nets

NETS = Path(__file__).resolve().parent / "nets"


def _spec_of(node, params, bottoms, module):
    """The numpy spec's output for one fork layer of a net, from the values of its bottoms."""
    x = bottoms[0]
    if node.type == "Interp":
        p = params.interp_param
        return [ref.interp(x, zoom=p.zoom_factor if p.HasField("zoom_factor") else None,
                           shrink=p.shrink_factor if p.HasField("shrink_factor") else None,
                           height=p.height, width=p.width, pad_beg=p.pad_beg,
                           pad_end=p.pad_end)]
    if node.type == "Upsample":
        return [ref.unpool(x, bottoms[1], *module.size)] if module.size else \
            [ref.unpool(x, bottoms[1], x.shape[2] * module.scales[0] - module.trims[0],
                        x.shape[3] * module.scales[1] - module.trims[1])]
    blobs = [t.detach().numpy() for t in (getattr(module, n) for n in module.caffe_blobs)]
    if module.form == "segnet":
        return [ref.bn_segnet(x, *blobs, learn=module.learn)[0]]
    return [ref.bn_pspnet(x, *blobs, module.eps)]


@pytest.mark.parametrize("net_name", ["seg_pspnet_like", "seg_segnet_like"])
def test_realistic_net_layer_by_layer(tmp_path, net_name):
    """Every fork layer of the net equals its spec, fed the values the net gave its bottoms."""
    proto = NETS / f"{net_name}.prototxt"
    model = tmp_path / "net.caffemodel"
    caffe2torch.write_random_caffemodel(proto, model, seed=3)
    net = caffe2torch.build(proto, weights=model)
    graph = net.caffe.graph
    x = sample(graph.blob("data").shape, 30)
    with torch.no_grad():
        tops = net.layer_outputs(torch.from_numpy(x))
    values = {"data": x}
    for node in graph.layers:
        if node.name in tops:
            values.update({t: v.numpy() for t, v in zip(node.tops, tops[node.name])})
    checked = []
    for node in graph.layers:
        if node.type in ("Interp", "Upsample", "BN"):
            module = net.get_submodule(node.module_name)
            expected = _spec_of(node, node.param, [values[b] for b in node.bottoms], module)
            assert_close(values[node.tops[0]], expected[0], rel=1e-5, what=node.name)
            checked.append(node.type)
    assert {"BN"} < set(checked)
    out = graph.blob("prob").shape
    assert out == (x.shape[0], out[1], x.shape[2], x.shape[3])  # back to the input resolution


def test_pspnet_like_net_against_opencv(tmp_path):
    """OpenCV runs the PSPNet-like net once BN (a type it lacks) and the layers it gets wrong
    (shrink alone, pad_beg/pad_end; see test_interp_against_opencv) are left out of both."""
    from google.protobuf import text_format

    from caffe2torch.proto import caffe_pb2
    net_param = caffe_pb2.NetParameter()
    text_format.Parse((NETS / "seg_pspnet_like.prototxt").read_text(), net_param)
    kept = [lp for lp in net_param.layer
            if lp.type != "BN" and lp.name not in ("cls_shrink", "cls_crop_zoom")]
    del net_param.layer[:]
    net_param.layer.extend(kept)
    proto, model = tmp_path / "psp.prototxt", tmp_path / "psp.caffemodel"
    proto.write_text(text_format.MessageToString(net_param))
    caffe2torch.write_random_caffemodel(proto, model, seed=4)
    net = caffe2torch.build(proto, weights=model)
    x = sample(net.caffe.graph.blob("data").shape, 31)
    names = ["pool_2x2_interp", "cls_up", "prob"]
    ours = run(net, x, names=names)
    theirs = opencv_layers(proto, model, {"data": x}, names)
    for name in names:
        assert_close(ours[name], theirs[name], rel=1e-4, what=f"{name} vs OpenCV")


_RUN_EXPORTED = """
import importlib, sys
sys.modules["caffe2torch"] = None  # `import caffe2torch` now raises ImportError
folder = sys.argv[1]
sys.path.insert(0, folder)
import numpy as np, torch
for name in sys.argv[2:]:
    model = importlib.import_module(name).load()
    with torch.no_grad():
        out = model(torch.from_numpy(np.load(f"{folder}/{name}_x.npy")))
    out = out if isinstance(out, tuple) else (out,)
    np.savez(f"{folder}/{name}_out.npz", *[o.numpy() for o in out])
"""


def test_python_export_of_the_fork_layers_runs_without_caffe2torch(tmp_path):
    """The standalone .py export carries Interp, BN (every form), SegNet's Upsample, ..."""
    import subprocess
    import sys

    from caffe2torch.export import export_python
    expected = {}
    for name in ("seg_pspnet_like", "seg_segnet_like"):
        proto, model = NETS / f"{name}.prototxt", tmp_path / f"{name}.caffemodel"
        caffe2torch.write_random_caffemodel(proto, model, seed=5)
        net = caffe2torch.build(proto, weights=model)
        export_python(net, tmp_path / f"{name}.py")
        x = sample(net.caffe.graph.blob("data").shape, 32)
        np.save(tmp_path / f"{name}_x.npy", x)
        outs = run(net, x, names=net.caffe.output_names)
        expected[name] = [outs[n] for n in net.caffe.output_names]
    result = subprocess.run([sys.executable, "-c", _RUN_EXPORTED, str(tmp_path), *expected],
                            capture_output=True, text=True, timeout=300, cwd="/", check=False)
    assert result.returncode == 0, result.stderr
    for name, wanted in expected.items():
        got = np.load(tmp_path / f"{name}_out.npz")
        assert len(got.files) == len(wanted)
        for i, want in enumerate(wanted):
            np.testing.assert_array_equal(got[f"arr_{i}"], want)
        assert "import caffe2torch" not in (tmp_path / f"{name}.py").read_text()


@pytest.mark.parametrize("net_name", ["seg_pspnet_like", "seg_segnet_like"])
def test_onnx_export_of_the_fork_layers(tmp_path, net_name):
    """ONNX (via torch.export) runs in onnxruntime at the declared batch and another one."""
    ort = pytest.importorskip("onnxruntime")
    from caffe2torch.export import export
    proto, model = NETS / f"{net_name}.prototxt", tmp_path / "net.caffemodel"
    caffe2torch.write_random_caffemodel(proto, model, seed=6)
    net = caffe2torch.build(proto, weights=model)
    export(net, tmp_path / "net.onnx")
    session = ort.InferenceSession(str(tmp_path / "net.onnx"))
    shape = list(net.caffe.graph.blob("data").shape)
    for batch in (shape[0], shape[0] + 1):
        x = sample((batch, *shape[1:]), 33)
        theirs = session.run(None, {session.get_inputs()[0].name: x})
        ours = run(net, x, names=net.caffe.output_names)
        for name, value in zip(net.caffe.output_names, theirs, strict=True):
            assert_close(value, ours[name], rel=1e-5, what=f"{name} (batch {batch}) in ONNX")
