"""caffe2torch.optimize: the inference model equals the plain net (1e-5 relative) on every corpus
net that builds and on nets made to exercise each pass; folded blobs are refused by name.

Nothing here is timed: bench/bench_forward.py measures speed.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import prototxt_text
import pytest
import torch
import torch.nn.functional as F
from oracle import CORPUS, max_rel_error, require_shared
from prototxt_text import layer
from test_corpus import INPUTS as CORPUS_INPUTS

import caffe2torch
from caffe2torch import Caffe2TorchError
from caffe2torch.ir.deploy import deploy_prototxt
from caffe2torch.layers.registry import get_converter
from caffe2torch.modules.basic import Split
from caffe2torch.modules.fast import NativePool2d, native_pooling_applies
from caffe2torch.modules.pooling import caffe_pool2d

TOLERANCE = 1e-5
SHAPE = (2, 6, 9, 11)  # N, C, H, W all different


def net_text(layers: str, shape=SHAPE) -> str:
    return prototxt_text.net_text(layers, shape, name="opt")


def conv(name: str, bottom: str, top: str | None = None, bias: bool = True, out: int = 5,
         kind: str = "Convolution", extra: str = "") -> str:
    term = "" if bias else "bias_term: false"
    return layer(name, kind, f"convolution_param {{ num_output: {out} kernel_size: 3 pad: 1 "
                             f"{term} {extra} }}", (bottom,), (top or name,))


def random_net(write_net, tmp_path, text: str, seed: int = 3):
    path = write_net(text)
    weights = tmp_path / "net.caffemodel"
    caffe2torch.write_random_caffemodel(path, weights, seed=seed)
    return caffe2torch.build(path, weights)


def inputs_for(net, shapes=None, seed: int = 5) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(seed)
    graph = net.caffe.graph
    shapes = shapes or {graph.blobs[b].name: graph.blobs[b].shape for b in graph.inputs}
    return {name: torch.from_numpy(rng.standard_normal(shape, dtype=np.float32))
            for name, shape in shapes.items()}


def _selected_by_values(net) -> set[str]:
    """Blobs of data-dependent layers (DetectionOutput, Proposal...): which rows they keep turns
    on thresholds and NMS ties, so a last-bit difference in their bottoms (which are compared)
    may keep another row."""
    graph = net.caffe.graph
    return {graph.blobs[t].name for node in graph.layers if node.role == "compute"
            and get_converter(node.type).data_dependent for t in node.tops}


def assert_same(plain, opt, inputs, what: str = "") -> None:
    """Every output, and every blob the optimised net keeps, within TOLERANCE (the rows that
    data-dependent layers select: same width)."""
    blobs = sorted(opt.caffe.blob_nodes)
    selected = _selected_by_values(plain)
    with torch.no_grad():
        expected = plain(**inputs, outputs=blobs)
        actual = opt(**inputs, outputs=blobs)
        outs_plain, outs_opt = plain(**inputs), opt(**inputs)
    if not isinstance(outs_plain, tuple):
        outs_plain, outs_opt = (outs_plain,), (outs_opt,)
    for i, (name, e, a) in enumerate(zip(plain.caffe.output_names, outs_plain, outs_opt)):
        if name in selected:
            assert a.shape[1:] == e.shape[1:], f"{what} output {name}"
            continue
        error = max_rel_error(a.numpy(), e.numpy())
        assert error <= TOLERANCE, f"{what} output {i}: relative max error {error:.3g}"
    for name in (b for b in blobs if b not in selected):
        error = max_rel_error(actual[name].numpy(), expected[name].numpy())
        assert error <= TOLERANCE, f"{what} blob {name}: relative max error {error:.3g}"


def module_types(net) -> set[str]:
    return {type(m).__name__ for m in net.children()}


# ----------------------------------------------------------------------------- the corpus


CORPUS_FILES = sorted(p.name for p in CORPUS.glob("*.prototxt")) if CORPUS.exists() \
    else ["<corpus missing>"]
SMALLER = CORPUS_INPUTS  # the corpus test's open and smaller inputs


VARIANTS = {"faceboxes_deploy": {"PriorBox": "faceboxes"}}  # its fork's priors (test_layers_ssd)


@pytest.mark.parametrize("file_name", CORPUS_FILES)
def test_corpus_net(file_name, tmp_path):
    require_shared(CORPUS)
    stem = file_name.removesuffix(".prototxt")
    variants = VARIANTS.get(stem)
    graph = caffe2torch.load_graph(CORPUS / file_name, SMALLER.get(stem), variants=variants)
    shapes = {graph.blobs[b].name: (1, *graph.blobs[b].shape[1:])
              if math.prod(graph.blobs[b].shape) > 1_000_000 else graph.blobs[b].shape
              for b in graph.inputs}  # batch 1 where a batch of large inputs only costs time
    shapes.update(SMALLER.get(stem, {}))
    deploy = tmp_path / "deploy.prototxt"
    deploy.write_text(deploy_prototxt(caffe2torch.load_graph(CORPUS / file_name, shapes,
                                                             variants=variants)))
    weights = tmp_path / "net.caffemodel"
    caffe2torch.write_random_caffemodel(deploy, weights, seed=11, variants=variants)
    plain = caffe2torch.build(deploy, weights, variants=variants)
    assert_same(plain, caffe2torch.optimize(plain), inputs_for(plain, shapes), file_name)


# ----------------------------------------------------------------------------- fold


BN = 'batch_norm_param { eps: 0.001 }'


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("in_place", [True, False])
def test_conv_bn_scale_relu_fold(write_net, tmp_path, bias, in_place):
    t = (lambda name, prev: prev) if in_place else (lambda name, prev: name)
    text = net_text("\n".join([
        conv("conv", "data", bias=bias),
        layer("bn", "BatchNorm", BN, (t("conv", "conv"),), (t("bn", "conv"),)),
        layer("scale", "Scale", "scale_param { bias_term: true }", (t("bn", "conv"),),
              (t("scale", "conv"),)),
        layer("relu", "ReLU", "", (t("scale", "conv"),), (t("relu", "conv"),)),
    ]))
    plain = random_net(write_net, tmp_path, text)
    opt = caffe2torch.optimize(plain)
    assert not {"CaffeBatchNorm", "Scale", "ChannelAffine"} & module_types(opt)
    assert_same(plain, opt, inputs_for(plain))
    if not in_place:  # the convolution's own output went into the folded layers
        with pytest.raises(Caffe2TorchError, match=r"'conv'.*folded.*keep"):
            opt(inputs_for(plain)["data"], outputs=["conv"])
        kept = caffe2torch.optimize(plain, keep=["conv"])
        assert_same(plain, kept, inputs_for(plain))
        assert "conv" in kept.caffe.blob_nodes


def test_fold_into_inner_product_and_deconvolution(write_net, tmp_path):
    text = net_text("\n".join([
        conv("up", "data", kind="Deconvolution", out=4, extra="group: 2 stride: 2"),
        layer("bn", "BatchNorm", BN, ("up",), ("up",)),
        layer("power", "Power", "power_param { scale: 2 shift: 0.5 }", ("up",), ("up",)),
        layer("ip", "InnerProduct", "inner_product_param { num_output: 7 }", ("up",)),
        layer("scale", "Scale", "scale_param { bias_term: true }", ("ip",), ("ip",)),
        layer("bias", "Bias", "", ("ip",), ("ip",)),
    ]), shape=(2, 6, 5, 4))
    plain = random_net(write_net, tmp_path, text)
    opt = caffe2torch.optimize(plain)
    assert module_types(opt) == {"ConvTranspose2d", "InnerProduct"}
    assert_same(plain, opt, inputs_for(plain))


def test_bn_with_two_readers_does_not_fold(write_net, tmp_path):
    text = net_text("\n".join([
        conv("conv", "data"),
        layer("bn", "BatchNorm", BN, ("conv",), ("bn",)),
        conv("other", "conv"),  # a second reader of the convolution's output
        layer("sum", "Eltwise", "", ("bn", "other")),
    ]))
    plain = random_net(write_net, tmp_path, text)
    opt = caffe2torch.optimize(plain)
    torch.testing.assert_close(opt.conv.weight, plain.conv.weight, rtol=0, atol=0)
    assert "ChannelAffine" in module_types(opt)  # the BN alone, in one pass
    assert_same(plain, opt, inputs_for(plain))
    assert "conv" in opt.caffe.blob_nodes


def test_in_place_chain_shared_by_two_readers(write_net, tmp_path):
    """conv -> relu (in place), read by a convolution and a sum: the sum must accumulate into
    the convolution's fresh output, not into the relu's, which the convolution also reads."""
    text = net_text("\n".join([
        conv("conv", "data"),
        layer("relu", "ReLU", "", ("conv",), ("conv",)),
        conv("c2", "conv"),
        layer("sum", "Eltwise", "", ("conv", "c2")),
        layer("relu2", "ReLU", "", ("sum",), ("sum",)),
    ]))
    plain = random_net(write_net, tmp_path, text)
    opt = caffe2torch.optimize(plain)
    assert opt.sum.into == 1 and "conv" in opt.caffe.blob_nodes and "c2" in opt.caffe.folded
    assert_same(plain, opt, inputs_for(plain))


def test_batch_statistics_bn_is_left_alone(write_net, tmp_path):
    text = net_text("\n".join([
        conv("conv", "data"),
        layer("bn", "BatchNorm", "batch_norm_param { use_global_stats: false }", ("conv",),
              ("conv",)),
    ]))
    plain = random_net(write_net, tmp_path, text)
    opt = caffe2torch.optimize(plain)
    assert "CaffeBatchNorm" in module_types(opt)
    assert_same(plain, opt, inputs_for(plain))


# ----------------------------------------------------------------------------- identities


def test_dropout_split_and_identity_power_go(write_net, tmp_path):
    text = net_text("\n".join([
        conv("conv", "data"),
        layer("split", "Split", "", ("conv",), ("a", "b")),
        layer("drop", "Dropout", "dropout_param { dropout_ratio: 0.3 }", ("a",), ("a",)),
        layer("same", "Power", "", ("b",), ("b",)),
        layer("sum", "Eltwise", "eltwise_param { coeff: 1 coeff: -2 }", ("a", "b")),
        layer("silence", "Silence", "", ("data",), ()),
    ]))
    plain = random_net(write_net, tmp_path, text)
    opt = caffe2torch.optimize(plain)
    assert not {"Split", "Dropout", "Power"} & module_types(opt)
    assert not any(isinstance(m, Split) for m in opt.modules())
    assert_same(plain, opt, inputs_for(plain))


# ----------------------------------------------------------------------------- pooling


def _torch_pool(x, method, k, s, p, ceil):
    if method == "MAX":
        return F.max_pool2d(x, k, s, p, ceil_mode=ceil)
    return F.avg_pool2d(x, k, s, p, ceil_mode=ceil)


GEOMETRIES = [(n, k, s, p) for n, k, s, p in itertools.product(
    range(1, 9), range(1, 5), range(1, 5), range(4)) if p < k and n + 2 * p >= k]


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("ceil", [True, False])
def test_native_pooling_condition(method, ceil):
    """Wherever native_pooling_applies on both axes, torch's kernel gives Caffe's shape and
    values; pairs of axes cover a padded and an unpadded axis together (the clip rule)."""
    rng = np.random.default_rng(0)
    applied = 0
    for (h, kh, sh, ph), (w, kw, sw, pw) in itertools.product(GEOMETRIES[::7], GEOMETRIES[::11]):
        if not (native_pooling_applies(h, kh, ph, sh) and native_pooling_applies(w, kw, pw, sw)):
            continue
        x = torch.from_numpy(rng.standard_normal((2, 3, h, w), dtype=np.float32))
        expected = caffe_pool2d(x, method, (kh, kw), (sh, sw), (ph, pw), ceil)
        actual = _torch_pool(x, method, (kh, kw), (sh, sw), (ph, pw), ceil)
        where = f"{method} n={(h, w)} k={(kh, kw)} s={(sh, sw)} p={(ph, pw)} ceil={ceil}"
        assert actual.shape == expected.shape, where
        torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-6, msg=where)
        applied += 1
    assert applied > 100


@pytest.mark.parametrize(("n", "k", "s", "p", "applies"), [
    (224, 2, 2, 0, True),  # VGG
    (112, 3, 2, 0, True),  # GoogLeNet, ceil overhang inside the image
    (28, 3, 1, 1, True),  # inception's padded 3x3
    (7, 3, 2, 2, False),  # pad above kernel / 2: torch refuses it
    (5, 1, 3, 0, False),  # ceil puts a window past an unpadded edge: the clip rules differ
    (5, 2, 3, 1, True),  # a ceil window past a padded edge: both rules clip it
])
def test_native_pooling_cases(n, k, s, p, applies):
    assert native_pooling_applies(n, k, p, s) is applies
    if applies:  # the shape agrees with Caffe's rule
        x = torch.zeros(1, 1, n, n)
        expected = caffe_pool2d(x, "MAX", (k, k), (s, s), (p, p), True)
        assert _torch_pool(x, "MAX", k, s, p, True).shape == expected.shape


def test_native_pool_module_falls_back_and_clamps():
    x = torch.randn(2, 3, 5, 7)
    x[0, 0] = -torch.inf
    for kernel, stride, pad in [((2, 2), (2, 2), (0, 0)), ((1, 1), (3, 3), (0, 0)),
                                ((3, 3), (2, 2), (2, 1)), ((3, 2), (1, 2), (1, 0))]:
        for method in ("MAX", "AVE"):
            module = NativePool2d(method, kernel, stride, pad)
            expected = caffe_pool2d(x, method, kernel, stride, pad)
            torch.testing.assert_close(module(x), expected, equal_nan=True)
    assert (NativePool2d("MAX", (2, 2), (2, 2), (0, 0))(x) > -torch.inf).all()


def test_pooling_after_relu_and_global(write_net, tmp_path):
    pool = 'pooling_param {{ pool: {} kernel_size: 3 stride: 2 pad: 1 }}'
    text = net_text("\n".join([
        conv("conv", "data"),
        layer("relu", "ReLU", "", ("conv",), ("conv",)),
        layer("pool", "Pooling", pool.format("MAX"), ("conv",)),
        layer("ave", "Pooling", pool.format("AVE"), ("conv",)),
        layer("odd", "Pooling", "pooling_param { pool: MAX kernel_size: 1 stride: 3 }",
              ("conv",)),
        layer("global", "Pooling", "pooling_param { pool: AVE global_pooling: true }",
              ("pool",)),
        layer("gmax", "Pooling", "pooling_param { pool: MAX global_pooling: true }",
              ("data",)),  # may hold -inf: clamped
    ]))
    plain = random_net(write_net, tmp_path, text)
    opt = caffe2torch.optimize(plain)
    assert isinstance(opt.pool, NativePool2d) and not opt.pool.clamp  # after a ReLU
    assert opt.gmax.clamp and not opt.global_.clamp
    assert_same(plain, opt, inputs_for(plain))


# ----------------------------------------------------------------------------- in place, API


def test_eltwise_in_place_and_kept_blobs(write_net, tmp_path):
    text = net_text("\n".join([
        conv("a", "data"), conv("b", "data"),
        layer("sum", "Eltwise", "", ("a", "b")),
        layer("relu", "ReLU", "", ("sum",), ("sum",)),
        layer("lrn", "LRN", "lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 }", ("sum",)),
    ]))
    plain = random_net(write_net, tmp_path, text)
    opt = caffe2torch.optimize(plain)
    assert "SumInPlace" in module_types(opt) and "ChannelLRN" in module_types(opt)
    gone = [b for b in ("a", "b") if b in opt.caffe.folded]
    assert len(gone) == 1  # one input takes the sum
    assert_same(plain, opt, inputs_for(plain))
    kept = caffe2torch.optimize(plain, keep=["a", "b"])
    assert "SumInPlace" not in module_types(kept)
    assert_same(plain, kept, inputs_for(plain))
    with pytest.raises(Caffe2TorchError, match="no blob named"):
        caffe2torch.optimize(plain, keep=["nothing"])


@pytest.mark.parametrize("channels_last", [False, True])
def test_layouts_and_build_option(write_net, tmp_path, channels_last):
    text = net_text("\n".join([
        conv("conv", "data"),
        layer("bn", "BatchNorm", BN, ("conv",), ("conv",)),
        layer("relu", "ReLU", "", ("conv",), ("conv",)),
        layer("pool", "Pooling", "pooling_param { pool: MAX kernel_size: 2 stride: 2 }",
              ("conv",)),
    ]))
    plain = random_net(write_net, tmp_path, text)
    opt = caffe2torch.optimize(plain, channels_last=channels_last)
    assert ("channels_last" in opt.caffe.passes) is channels_last
    assert_same(plain, opt, inputs_for(plain))
    x = inputs_for(plain)["data"]
    with torch.no_grad():
        assert opt(x).is_contiguous()
        built = caffe2torch.build(write_net(text), tmp_path / "net.caffemodel", optimize=True)
        torch.testing.assert_close(built(x), plain(x), rtol=1e-5, atol=1e-6)
    assert built.caffe.passes and not plain.caffe.passes
    assert opt.caffe.output_names == plain.caffe.output_names
    assert "conv" in opt.caffe.blob_nodes


def test_plain_net_is_untouched(write_net, tmp_path):
    text = net_text("\n".join([conv("conv", "data"),
                               layer("bn", "BatchNorm", BN, ("conv",), ("conv",))]))
    plain = random_net(write_net, tmp_path, text)
    before = {k: v.clone() for k, v in plain.state_dict().items()}
    caffe2torch.optimize(plain)
    for key, value in plain.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)


def test_refuses_other_modules():
    with pytest.raises(Caffe2TorchError, match="caffe2torch.build"):
        caffe2torch.optimize(torch.nn.Linear(2, 2))


# ----------------------------------------------------------------------------- commands


def test_extract_runs_the_optimised_net_by_default(write_net, tmp_path):
    from PIL import Image

    from caffe2torch.cli import main
    from caffe2torch.research import read_features

    text = net_text("\n".join([
        conv("conv1", "data"),
        layer("bn", "BatchNorm", BN, ("conv1",), ("conv1",)),
        layer("relu1", "ReLU", "", ("conv1",), ("conv1",)),
        layer("pool1", "Pooling", "pooling_param { pool: MAX kernel_size: 2 stride: 2 }",
              ("conv1",)),
        layer("fc7", "InnerProduct", "inner_product_param { num_output: 5 }", ("pool1",)),
    ]), shape=(1, 3, 8, 10))
    proto = write_net(text)
    weights = tmp_path / "net.caffemodel"
    caffe2torch.write_random_caffemodel(proto, weights, seed=4)
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        pixels = rng.integers(0, 256, size=(8, 10, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / f"img{i}.png")
    base = [str(proto), "-w", str(weights), "--images", str(images), "--blobs", "fc7,conv1",
            "--no-progress", "--batch-size", "4", "--mean", "100,110,120"]
    fast, slow = tmp_path / "fast.npz", tmp_path / "slow.npz"
    assert main(["extract", *base, "-o", str(fast)]) == 0
    assert main(["extract", *base, "-o", str(slow), "--no-optimize"]) == 0
    a, b = read_features(fast), read_features(slow)
    assert a.files == b.files
    for name in ("fc7", "conv1"):
        assert max_rel_error(a.blobs[name], b.blobs[name]) <= TOLERANCE


def test_optimising_twice_keeps_what_was_folded(write_net, tmp_path):
    text = net_text("\n".join([conv("conv", "data"),
                               layer("bn", "BatchNorm", BN, ("conv",), ("bn",))]))
    plain = random_net(write_net, tmp_path, text)
    twice = caffe2torch.optimize(caffe2torch.optimize(plain))
    assert "conv" in twice.caffe.folded
    assert_same(plain, twice, inputs_for(plain))
