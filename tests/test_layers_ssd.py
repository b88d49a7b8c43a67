"""The SSD fork's layers (PriorBox, DetectionOutput, Normalize, Permute) against numpy specs
written from weiliu89/caffe's C++ (tests/reference/ssd.py), FaceBoxes' PriorBox variant, bad
parameters, weights round trip and exports. Real-Caffe goldens: tests/golden/nets/ssd_*."""
from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from oracle import CORPUS, require_shared
from reference import ssd as ref

import caffe2torch
from caffe2torch.cli import main
from caffe2torch.errors import Caffe2TorchError, GraphError, ShapeError
from caffe2torch.export import export_onnx, export_program, export_python, export_torchscript

INPUT = 'input: "{name}" input_shape {{ {dims} }}\n'


def _net(inputs: dict[str, tuple[int, ...]], layers: str) -> str:
    text = 'name: "ssd_test"\n'
    for name, shape in inputs.items():
        text += INPUT.format(name=name, dims=" ".join(f"dim: {d}" for d in shape))
    return text + layers


PRIOR_CASES = {
    "many": ("min_size: 3.7 min_size: 9 max_size: 8 max_size: 15.5 aspect_ratio: 2 "
             "aspect_ratio: 3 aspect_ratio: 2 flip: true clip: false offset: 0.3 "
             "variance: 0.1 variance: 0.15 variance: 0.2 variance: 0.25",
             dict(min_sizes=[3.7, 9], max_sizes=[8, 15.5], aspect_ratios=[2, 3, 2], flip=True,
                  offset=0.3, variance=[0.1, 0.15, 0.2, 0.25])),
    "img_hw_step_hw": ("min_size: 11 aspect_ratio: 0.5 flip: false clip: true img_h: 40 "
                       "img_w: 60 step_h: 6 step_w: 9.5 variance: 0.15",
                       dict(min_sizes=[11], aspect_ratios=[0.5], flip=False, clip=True,
                            img_hw=(40, 60), step_hw=(6, 9.5), variance=[0.15])),
    "img_size_step": ("min_size: 10 max_size: 31 img_size: 50 step: 7 offset: 0",
                      dict(min_sizes=[10], max_sizes=[31], img_hw=(50, 50), step_hw=(7, 7),
                           offset=0.0)),
    "faceboxes_dense": ("min_size: 32 min_size: 64 min_size: 128 variance: 0.1 variance: 0.1 "
                        "variance: 0.2 variance: 0.2 step: 32 faceboxes_dense_anchors: true",
                        dict(min_sizes=[32, 64, 128], step_hw=(32, 32), faceboxes=True,
                             variance=[0.1, 0.1, 0.2, 0.2])),
    "faceboxes_plain": ("min_size: 256 max_size: 300 aspect_ratio: 2 step: 64 "
                        "faceboxes_dense_anchors: true",
                        dict(min_sizes=[256], max_sizes=[300], aspect_ratios=[2],
                             step_hw=(64, 64), faceboxes=True)),
}


@pytest.mark.parametrize("case", sorted(PRIOR_CASES))
def test_prior_box_matches_reference(case, write_net):
    param, kwargs = PRIOR_CASES[case]
    proto = write_net(_net({"fm": (2, 3, 5, 7), "img": (2, 3, 37, 53)},
                           f'layer {{ name: "pb" type: "PriorBox" bottom: "fm" bottom: "img" '
                           f'top: "pb" prior_box_param {{ {param} }} }}\n'))
    net = caffe2torch.build(proto)
    got = net(torch.zeros(2, 3, 5, 7), torch.zeros(2, 3, 37, 53)).numpy()
    want = ref.prior_box((5, 7), (37, 53), **kwargs)
    assert got.shape == want.shape == net.caffe.graph.blob("pb").shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    # other sizes at call time, as Caffe's reshape
    got = net(torch.zeros(1, 3, 4, 3), torch.zeros(1, 3, 20, 31)).numpy()
    np.testing.assert_allclose(got, ref.prior_box((4, 3), (20, 31), **kwargs), atol=1e-6)


def test_faceboxes_priors_per_cell_and_order():
    """21 priors per cell for 32/64/128: 16 for 32 (rows of x shifts -16..8), 4 for 64, 1."""
    want = ref.prior_box((1, 1), (32, 32), [32, 64, 128], step_hw=(32, 32), faceboxes=True)
    boxes = want[0, 0].reshape(-1, 4) * 32
    assert len(boxes) == 21
    np.testing.assert_allclose(boxes[:2], [[-15.5, -15.5, 15.5, 15.5], [-7.5, -15.5, 23.5, 15.5]])
    np.testing.assert_allclose(boxes[16], [-31.5, -31.5, 31.5, 31.5])


@pytest.mark.parametrize("across, shared, eps", [(True, True, 1e-10), (True, False, 0.5),
                                                 (False, False, 1e-10), (False, True, 0.01)])
def test_normalize_matches_reference(across, shared, eps, write_net, rng):
    param = (f"across_spatial: {str(across).lower()} channel_shared: {str(shared).lower()} "
             f"eps: {eps}")
    proto = write_net(_net({"data": (2, 5, 4, 3)}, f'layer {{ name: "n" type: "Normalize" '
                           f'bottom: "data" top: "n" norm_param {{ {param} }} }}\n'))
    weights = proto.with_suffix(".caffemodel")
    caffe2torch.write_random_caffemodel(proto, weights, seed=3)
    net = caffe2torch.build(proto, weights=weights)
    scale = net.n.weight.detach().numpy()
    assert scale.shape == (() if shared else (5,))
    x = rng.standard_normal((2, 5, 4, 3)).astype(np.float32)
    with torch.no_grad():
        got = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, ref.normalize(x, scale, across, shared, eps), rtol=1e-5,
                               atol=1e-6)
    saved = proto.with_suffix(".saved.caffemodel")
    caffe2torch.save_caffemodel(net, saved)
    again = caffe2torch.build(proto, weights=saved)
    np.testing.assert_array_equal(again.n.weight.detach().numpy(), scale)


@pytest.mark.parametrize("order", [[0, 2, 3, 1], [3, 1], [], [2], [0, 1, 2, 3]])
def test_permute_matches_reference(order, write_net, rng):
    param = " ".join(f"order: {a}" for a in order)
    proto = write_net(_net({"data": (2, 3, 4, 5)}, f'layer {{ name: "p" type: "Permute" '
                           f'bottom: "data" top: "p" permute_param {{ {param} }} }}\n'))
    net = caffe2torch.build(proto)
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    want = ref.permute(x, order)
    assert net.caffe.graph.blob("p").shape == want.shape
    np.testing.assert_array_equal(net(torch.from_numpy(x)).numpy(), want)


DETECTION_CASES = {
    "corner_keep_top_k": ("confidence_threshold: 0.3 keep_top_k: 10 "
                          "nms_param { nms_threshold: 0.45 top_k: 20 }",
                          dict(confidence_threshold=0.3, keep_top_k=10, nms_threshold=0.45,
                               top_k=20)),
    "center_eta": ("code_type: CENTER_SIZE confidence_threshold: 0.2 "
                   "nms_param { nms_threshold: 0.7 eta: 0.9 }",
                   dict(code_type=2, confidence_threshold=0.2, nms_threshold=0.7, eta=0.9)),
    "center_in_target": ("code_type: CENTER_SIZE variance_encoded_in_target: true "
                         "background_label_id: 2 confidence_threshold: 0.5 "
                         "nms_param { nms_threshold: 0.3 top_k: 7 }",
                         dict(code_type=2, variance_encoded_in_target=True,
                              background_label_id=2, confidence_threshold=0.5, top_k=7)),
    "corner_size_defaults": ("code_type: CORNER_SIZE keep_top_k: 25",
                             dict(code_type=3, keep_top_k=25)),
    "unshared": ("share_location: false code_type: CENTER_SIZE confidence_threshold: 0.4 "
                 "keep_top_k: 12 nms_param { nms_threshold: 0.35 top_k: 15 }",
                 dict(share_location=False, code_type=2, confidence_threshold=0.4,
                      keep_top_k=12, nms_threshold=0.35, top_k=15)),
    "nothing": ("confidence_threshold: 1.5", dict(confidence_threshold=1.5)),
}


def _detection_net(write_net, param: str, share: bool = True):
    loc = 48 * 4 * (1 if share else 4)
    return write_net(_net(
        {"fm": (2, 1, 3, 4), "img": (1, 1, 30, 40), "loc": (2, loc), "conf": (2, 192)},
        'layer { name: "priors" type: "PriorBox" bottom: "fm" bottom: "img" top: "priors" '
        'prior_box_param { min_size: 12 max_size: 20 aspect_ratio: 2 variance: 0.1 '
        'variance: 0.1 variance: 0.2 variance: 0.2 } }\n'
        'layer { name: "det" type: "DetectionOutput" bottom: "loc" bottom: "conf" '
        f'bottom: "priors" top: "det" detection_output_param {{ num_classes: 4 {param} }} }}\n'))


@pytest.mark.parametrize("case", sorted(DETECTION_CASES))
def test_detection_output_matches_reference(case, write_net, rng):
    param, kwargs = DETECTION_CASES[case]
    share = kwargs.get("share_location", True)
    net = caffe2torch.build(_detection_net(write_net, param, share))
    assert net.caffe.graph.blob("det").shape == (1, 1, 1, 7)       # Caffe's set-up shape
    fm, img = np.zeros((2, 1, 3, 4), np.float32), np.zeros((1, 1, 30, 40), np.float32)
    loc = rng.standard_normal((2, 48 * 4 * (1 if share else 4))).astype(np.float32)
    conf = rng.uniform(0, 1, (2, 192)).astype(np.float32)
    with torch.no_grad():
        blobs = net(*(torch.from_numpy(a) for a in (fm, img, loc, conf)),
                    outputs=["det", "priors"])
    want = ref.detection_output(loc, conf, blobs["priors"].numpy(), 4, **kwargs)
    got = blobs["det"].numpy()
    assert got.shape == want.shape
    np.testing.assert_array_equal(got[..., :2], want[..., :2])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    if case == "nothing":
        np.testing.assert_array_equal(got[0, 0], [[0] + [-1] * 6, [1] + [-1] * 6])


@pytest.mark.parametrize("layer, message", [
    ('type: "PriorBox" bottom: "fm" bottom: "img" prior_box_param { max_size: 3 }',
     "no min_size"),
    ('type: "PriorBox" bottom: "fm" bottom: "img" prior_box_param { min_size: 4 max_size: 3 }',
     "max_size 3 <= min_size 4"),
    ('type: "PriorBox" bottom: "fm" bottom: "img" prior_box_param { min_size: 4 variance: 0.1 '
     'variance: 0.2 }', "2 variance values"),
    ('type: "PriorBox" bottom: "fm" bottom: "img" prior_box_param { min_size: 4 img_size: 9 '
     'img_h: 9 img_w: 9 }', "either img_size"),
    ('type: "PriorBox" bottom: "fm" bottom: "img" prior_box_param { min_size: 4 step_h: 2 }',
     "expected both > 0"),
    ('type: "PriorBox" bottom: "fm" prior_box_param { min_size: 4 }', "the image as bottom 1"),
    ('type: "PriorBox" bottom: "fm" bottom: "img" prior_box_param { min_size: 32 '
     'aspect_ratio: 2 min_size: 64 min_size: 128 faceboxes_dense_anchors: true }',
     "FaceBoxes' PriorBox allocates 21"),
    ('type: "Permute" bottom: "fm" permute_param { order: 4 }', "order 4 for a 4-D input"),
    ('type: "Permute" bottom: "fm" permute_param { order: 1 order: 1 }', "repeats axis 1"),
    ('type: "Normalize" bottom: "vec"', "expected 2 to 4 axes"),
    ('type: "DetectionOutput" bottom: "fm" bottom: "fm" bottom: "fm"', "no num_classes"),
    ('type: "DetectionOutput" bottom: "fm" bottom: "fm" bottom: "fm" detection_output_param '
     '{ num_classes: 2 nms_param { eta: 0 } }', "eta 0"),
    ('type: "DetectionOutput" bottom: "fm" bottom: "fm" bottom: "fm" detection_output_param '
     '{ num_classes: 2 background_label_id: -1 }', "background_label_id -1"),
    ('type: "DetectionOutput" bottom: "fm" bottom: "fm" bottom: "fm" detection_output_param '
     '{ num_classes: 2 }', "expected 1 * 1 * 4 = 4"),
])
def test_bad_parameters_raise_shape_errors_naming_the_layer(layer, message, write_net):
    proto = write_net(_net({"fm": (1, 3, 4, 5), "img": (1, 3, 8, 9), "vec": (6,)},
                           f'layer {{ name: "bad" {layer} top: "out" }}\n'))
    with pytest.raises(ShapeError, match=re.escape(message)) as err:
        caffe2torch.load_graph(proto)
    assert "layer 'bad'" in str(err.value)


def test_faceboxes_needs_the_variant_and_builds_with_it(tmp_path):
    """The FaceBoxes deploy file fails plainly (its heads need 21 priors per cell at the first
    PriorBox) with a hint, and builds with faceboxes_dense_anchors in its PriorBox layers."""
    path = require_shared(CORPUS / "faceboxes_deploy.prototxt")
    with pytest.raises(ShapeError, match="faceboxes_dense_anchors") as err:
        caffe2torch.load_graph(path)
    assert "layer 'detection_out'" in str(err.value)
    text = path.read_text().replace("prior_box_param {",
                                    "prior_box_param {\n    faceboxes_dense_anchors: true")
    variant = tmp_path / "faceboxes_variant.prototxt"
    variant.write_text(text)
    graph = caffe2torch.load_graph(variant)
    assert graph.blob("mbox_priorbox").shape == (1, 2, (20 * 15 * 21 + 10 * 8 + 5 * 4) * 4)
    big = caffe2torch.load_graph(variant, input_shapes={"data": (1, 3, 1024, 1024)})
    assert big.blob("mbox_priorbox").shape == (1, 2, 21824 * 4)
    net = caffe2torch.build(variant, input_shapes={"data": (1, 3, 256, 192)})
    with torch.no_grad():
        blobs = net(torch.zeros(1, 3, 256, 192), outputs=["inception_a3_concat_mbox_priorbox",
                                                          "detection_out"])
    want = ref.prior_box((8, 6), (256, 192), [32, 64, 128], step_hw=(32, 32), faceboxes=True,
                         variance=[0.1, 0.1, 0.2, 0.2])
    np.testing.assert_allclose(blobs["inception_a3_concat_mbox_priorbox"].numpy(), want, atol=1e-6)
    assert blobs["detection_out"].shape[-1] == 7


def test_faceboxes_variant_as_a_build_option(tmp_path, capsys):
    """The same priors from variants={'PriorBox': 'faceboxes'} (or --variant), the file as is."""
    path = require_shared(CORPUS / "faceboxes_deploy.prototxt")
    before = path.read_bytes()
    graph = caffe2torch.load_graph(path, variants={"PriorBox": "faceboxes"})
    assert graph.blob("mbox_priorbox").shape == (1, 2, (20 * 15 * 21 + 10 * 8 + 5 * 4) * 4)
    assert any("the faceboxes variant" in note for note in graph.notes)
    by_name = caffe2torch.load_graph(path, check=False,
                                     variants={"inception_a3_concat_mbox_priorbox": "faceboxes"})
    assert [n.variant for n in by_name.layers if n.type == "PriorBox"] == ["faceboxes", "", ""]
    assert path.read_bytes() == before
    assert main(["info", str(path), "--variant", "PriorBox=faceboxes"]) == 0
    assert "detection_out" in capsys.readouterr().out


@pytest.mark.parametrize("variants, message", [
    ({"PriorBox": "dense"}, r"variant 'dense'; expected one of: faceboxes"),
    ({"Convolution": "faceboxes"}, r"\(Convolution\): variant 'faceboxes'; expected one of: none"),
    ({"NoSuchLayer": "faceboxes"}, r"no layer or layer type 'NoSuchLayer'"),
])
def test_unknown_variants_are_refused(variants, message):
    path = require_shared(CORPUS / "faceboxes_deploy.prototxt")
    with pytest.raises(GraphError, match=message):
        caffe2torch.load_graph(path, variants=variants)


@pytest.mark.parametrize("value", ["PriorBox", "=faceboxes", "PriorBox="])
def test_variant_option_syntax(value, capsys):
    path = require_shared(CORPUS / "faceboxes_deploy.prototxt")
    assert main(["info", str(path), "--variant", value]) == 1
    assert "--variant" in capsys.readouterr().err


# ----------------------------------------------------------------------------- exports

SSD_HEADS = """
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 6 kernel_size: 3 pad: 1 } }
layer { name: "norm" type: "Normalize" bottom: "conv" top: "norm"
  norm_param { across_spatial: false channel_shared: false } }
layer { name: "loc" type: "Convolution" bottom: "norm" top: "loc"
  convolution_param { num_output: 8 kernel_size: 1 } }
layer { name: "loc_perm" type: "Permute" bottom: "loc" top: "loc_perm"
  permute_param { order: 0 order: 2 order: 3 order: 1 } }
layer { name: "loc_flat" type: "Flatten" bottom: "loc_perm" top: "loc_flat" }
layer { name: "conf" type: "Convolution" bottom: "norm" top: "conf"
  convolution_param { num_output: 6 kernel_size: 1 } }
layer { name: "conf_perm" type: "Permute" bottom: "conf" top: "conf_perm"
  permute_param { order: 0 order: 2 order: 3 order: 1 } }
layer { name: "conf_flat" type: "Flatten" bottom: "conf_perm" top: "conf_flat" }
layer { name: "priors" type: "PriorBox" bottom: "norm" bottom: "data" top: "priors"
  prior_box_param { min_size: 4 max_size: 9 clip: true variance: 0.1 variance: 0.1
                    variance: 0.2 variance: 0.2 } }
"""
DETECTION = """layer { name: "det" type: "DetectionOutput" bottom: "loc_flat"
  bottom: "conf_flat" bottom: "priors" top: "det"
  detection_output_param { num_classes: 3 code_type: CENTER_SIZE confidence_threshold: 0.3
                           nms_param { nms_threshold: 0.45 top_k: 50 } keep_top_k: 20 } }
"""


@pytest.fixture
def ssd_net(write_net):
    proto = write_net(_net({"data": (1, 3, 6, 5)}, SSD_HEADS + DETECTION))
    weights = proto.with_suffix(".caffemodel")
    caffe2torch.write_random_caffemodel(proto, weights, seed=4)
    return proto, weights


@pytest.mark.parametrize("export", [export_onnx, export_torchscript, export_program])
def test_traced_exports_refuse_detection_output_naming_the_heads(export, ssd_net, tmp_path):
    net = caffe2torch.build(*ssd_net)
    with pytest.raises(Caffe2TorchError, match=r"layer 'det' \(DetectionOutput\): its output "
                                               r"row count depends on the scores") as err:
        export(net, tmp_path / "out")
    assert "its bottoms are " in str(err.value) and "bottoms instead" in str(err.value)


def test_heads_without_detection_output_export_to_torchscript_and_pt2(write_net, tmp_path, rng):
    proto = write_net(_net({"data": (1, 3, 6, 5)}, SSD_HEADS), "heads.prototxt")
    weights = tmp_path / "heads.caffemodel"
    caffe2torch.write_random_caffemodel(proto, weights, seed=4)
    net = caffe2torch.build(proto, weights=weights)
    x = torch.from_numpy(rng.standard_normal((2, 3, 6, 5)).astype(np.float32))
    with torch.no_grad():
        want = net(x)
        traced = torch.jit.load(str(export_torchscript(net, tmp_path / "h.ts")))
        program = torch.export.load(str(export_program(net, tmp_path / "h.pt2"))).module()
        for got in (traced(x), program(x)):
            for a, b in zip(got, want, strict=True):
                torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


_RUN = """
import sys
sys.modules["caffe2torch"] = None
sys.path.insert(0, sys.argv[1])
import numpy as np, torch, ssd_standalone
x = torch.from_numpy(np.load(sys.argv[1] + "/x.npy"))
with torch.no_grad():
    np.save(sys.argv[1] + "/det.npy", ssd_standalone.load()(x).numpy())
"""


def test_python_and_caffemodel_exports_keep_every_ssd_layer(ssd_net, tmp_path):
    net = caffe2torch.build(*ssd_net)
    x = torch.linspace(-3, 3, 90).reshape(1, 3, 6, 5)
    with torch.no_grad():
        want = net(x).numpy()
    assert want.shape[2] >= 1 and want.shape[3] == 7
    export_python(net, tmp_path / "ssd_standalone.py")
    np.save(tmp_path / "x.npy", x.numpy())
    result = subprocess.run([sys.executable, "-c", _RUN, str(tmp_path)], capture_output=True,
                            text=True, timeout=300, cwd="/", check=False)
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "det.npy"), want)
    saved = tmp_path / "again.caffemodel"
    caffe2torch.save_caffemodel(net, saved)
    with torch.no_grad():
        again = caffe2torch.build(ssd_net[0], weights=saved)(x).numpy()
    np.testing.assert_array_equal(again, want)
