"""Tests for our Caffe protobuf schema (proto/caffe.proto -> caffe2torch.proto.caffe_pb2)."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor, descriptor_pb2, text_format

from caffe2torch.proto import caffe_pb2

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus"
PROTOTXT_DIR = CORPUS / "prototxt"


def _corpus_files() -> list[Path]:
    if not PROTOTXT_DIR.is_dir():
        return []
    return sorted(p for p in PROTOTXT_DIR.iterdir() if p.suffix == ".prototxt")


def _parse(path: Path) -> caffe_pb2.NetParameter:
    return text_format.Parse(path.read_text(encoding="utf-8"), caffe_pb2.NetParameter())


def _require_corpus() -> None:
    if PROTOTXT_DIR.is_dir():
        return
    message = f"shared corpus not found at {PROTOTXT_DIR}"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


# ---------------------------------------------------------------------------
# (a) the committed generated module matches the .proto


def test_generated_module_is_up_to_date():
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "gen_proto.py"), "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_module_identity():
    assert caffe_pb2.DESCRIPTOR.package == "caffe"
    assert caffe_pb2.DESCRIPTOR.name == "caffe2torch/proto/caffe.proto"
    assert caffe_pb2.NetParameter.DESCRIPTOR.full_name == "caffe.NetParameter"
    assert caffe_pb2.NetParameter.__module__ == "caffe2torch.proto.caffe_pb2"


def test_messages_pickle():
    net = caffe_pb2.NetParameter(name="n")
    net.layer.add(name="c", type="Convolution").convolution_param.num_output = 3
    assert pickle.loads(pickle.dumps(net)) == net


# ---------------------------------------------------------------------------
# (b) every real-world prototxt in the shared corpus parses


def test_corpus_is_present():
    _require_corpus()
    assert len(_corpus_files()) >= 1


@pytest.mark.parametrize("path", _corpus_files(), ids=lambda p: p.name)
def test_corpus_prototxt_parses(path: Path):
    net = caffe_pb2.NetParameter()
    text_format.Parse(path.read_text(encoding="utf-8"), net)
    # Every file declares at least one layer, in one of the three formats.
    assert len(net.layer) + len(net.layers) > 0


def test_v0_layers_nest_under_v1():
    _require_corpus()
    v0_files = [p for p in _corpus_files() if "v0_legacy" in p.name]
    if not v0_files:
        pytest.skip("no V0 file in the corpus")
    for path in v0_files:
        net = text_format.Parse(path.read_text(encoding="utf-8"), caffe_pb2.NetParameter())
        assert net.layers, path.name
        assert all(entry.HasField("layer") for entry in net.layers), path.name
        assert any(entry.layer.type for entry in net.layers), path.name


def test_fork_fields_in_corpus_are_read():
    _require_corpus()
    files = {p.name: p for p in _corpus_files()}
    needed = ["densenet121_deploy.prototxt", "faceboxes_deploy.prototxt"]
    if any(name not in files for name in needed):
        pytest.skip("fork-field files not in the corpus")
    dense = _parse(files[needed[0]])
    pools = [layer.pooling_param for layer in dense.layer if layer.type == "Pooling"]
    assert any(p.HasField("ceil_mode") and not p.ceil_mode for p in pools)
    assert all(not p.HasField("round_mode") for p in pools)
    boxes = _parse(files[needed[1]])
    types = {layer.type for layer in boxes.layer}
    assert {"PriorBox", "Permute", "DetectionOutput"} <= types
    out = next(layer for layer in boxes.layer if layer.type == "DetectionOutput")
    assert out.HasField("detection_output_param")
    assert out.detection_output_param.num_classes > 0


# ---------------------------------------------------------------------------
# (c) defaults are BVLC's


def test_defaults():
    pool = caffe_pb2.PoolingParameter()
    assert pool.round_mode == caffe_pb2.PoolingParameter.CEIL
    assert pool.pool == caffe_pb2.PoolingParameter.MAX
    assert pool.stride == 1 and pool.pad == 0
    assert pool.global_pooling is False
    assert pool.ceil_mode is True

    conv = caffe_pb2.ConvolutionParameter()
    assert conv.bias_term is True
    assert conv.group == 1
    assert conv.axis == 1
    assert conv.pad_h == 0 and conv.pad_w == 0
    assert list(conv.pad) == [] and list(conv.stride) == [] and list(conv.dilation) == []

    assert caffe_pb2.SoftmaxParameter().axis == 1
    bn = caffe_pb2.BatchNormParameter()
    assert bn.eps == pytest.approx(1e-5, rel=1e-6)
    assert bn.moving_average_fraction == pytest.approx(0.999, rel=1e-6)
    assert bn.use_global_stats is False and not bn.HasField("use_global_stats")
    assert caffe_pb2.ConcatParameter().axis == 1

    lrn = caffe_pb2.LRNParameter()
    assert lrn.local_size == 5
    assert lrn.alpha == 1.0
    assert lrn.beta == 0.75
    assert lrn.k == 1.0
    assert lrn.norm_region == caffe_pb2.LRNParameter.ACROSS_CHANNELS

    ip = caffe_pb2.InnerProductParameter()
    assert ip.axis == 1 and ip.bias_term is True and ip.transpose is False
    assert caffe_pb2.CropParameter().axis == 2
    scale = caffe_pb2.ScaleParameter()
    assert scale.axis == 1 and scale.num_axes == 1 and scale.bias_term is False
    bias = caffe_pb2.BiasParameter()
    assert bias.axis == 1 and bias.num_axes == 1

    elt = caffe_pb2.EltwiseParameter()
    assert elt.operation == caffe_pb2.EltwiseParameter.SUM
    assert elt.stable_prod_grad is True

    assert caffe_pb2.DropoutParameter().dropout_ratio == 0.5
    assert caffe_pb2.ReLUParameter().negative_slope == 0.0
    assert caffe_pb2.ELUParameter().alpha == 1.0
    assert caffe_pb2.PReLUParameter().channel_shared is False
    assert caffe_pb2.SwishParameter().beta == 1.0
    power = caffe_pb2.PowerParameter()
    assert (power.power, power.scale, power.shift) == (1.0, 1.0, 0.0)
    exp = caffe_pb2.ExpParameter()
    assert (exp.base, exp.scale, exp.shift) == (-1.0, 1.0, 0.0)
    log = caffe_pb2.LogParameter()
    assert (log.base, log.scale, log.shift) == (-1.0, 1.0, 0.0)
    flat = caffe_pb2.FlattenParameter()
    assert flat.axis == 1 and flat.end_axis == -1
    reshape = caffe_pb2.ReshapeParameter()
    assert reshape.axis == 0 and reshape.num_axes == -1
    slc = caffe_pb2.SliceParameter()
    assert slc.axis == 1 and slc.slice_dim == 1
    assert caffe_pb2.MVNParameter().eps == pytest.approx(1e-9, rel=1e-6)
    assert caffe_pb2.MVNParameter().normalize_variance is True
    red = caffe_pb2.ReductionParameter()
    assert red.operation == caffe_pb2.ReductionParameter.SUM and red.axis == 0 and red.coeff == 1
    assert caffe_pb2.ThresholdParameter().threshold == 0.0
    tile = caffe_pb2.TileParameter()
    assert tile.axis == 1
    argmax = caffe_pb2.ArgMaxParameter()
    assert argmax.top_k == 1 and argmax.out_max_val is False

    filler = caffe_pb2.FillerParameter()
    assert filler.type == "constant"
    assert (filler.value, filler.min, filler.max, filler.mean, filler.std) == (0, 0, 1, 0, 1)
    assert filler.sparse == -1
    assert filler.variance_norm == caffe_pb2.FillerParameter.FAN_IN

    spec = caffe_pb2.ParamSpec()
    assert spec.lr_mult == 1.0 and spec.decay_mult == 1.0
    assert caffe_pb2.NetState().phase == caffe_pb2.TEST
    assert caffe_pb2.TransformationParameter().scale == 1.0
    assert caffe_pb2.LossParameter().normalization == caffe_pb2.LossParameter.VALID
    assert caffe_pb2.DataParameter().backend == caffe_pb2.DataParameter.LEVELDB
    assert caffe_pb2.DataParameter().prefetch == 4

    solver = caffe_pb2.SolverParameter()
    assert solver.type == "SGD"
    assert solver.solver_mode == caffe_pb2.SolverParameter.GPU
    assert solver.delta == pytest.approx(1e-8, rel=1e-6)
    assert solver.momentum2 == pytest.approx(0.999, rel=1e-6)
    assert solver.rms_decay == pytest.approx(0.99, rel=1e-6)
    assert solver.random_seed == -1
    assert solver.regularization_type == "L2"
    assert solver.snapshot_format == caffe_pb2.SolverParameter.BINARYPROTO

    v0 = caffe_pb2.V0LayerParameter()
    assert v0.biasterm is True and v0.group == 1 and v0.stride == 1
    assert v0.local_size == 5 and v0.alpha == 1.0 and v0.beta == 0.75 and v0.k == 1.0
    assert caffe_pb2.V1LayerParameter().type == caffe_pb2.V1LayerParameter.NONE


def test_ssd_defaults():
    prior = caffe_pb2.PriorBoxParameter()
    assert prior.flip is True and prior.clip is False and prior.offset == 0.5
    out = caffe_pb2.DetectionOutputParameter()
    assert out.share_location is True
    assert out.background_label_id == 0
    assert out.keep_top_k == -1
    assert out.code_type == caffe_pb2.PriorBoxParameter.CORNER
    assert caffe_pb2.NonMaximumSuppressionParameter().nms_threshold == pytest.approx(0.3)
    assert caffe_pb2.NonMaximumSuppressionParameter().eta == 1.0
    norm = caffe_pb2.NormalizeParameter()
    assert norm.across_spatial is True and norm.channel_shared is True
    assert norm.eps == pytest.approx(1e-10, rel=1e-6)


def test_ceil_mode_text_round_trip():
    net = text_format.Parse(
        'layer { name: "p" type: "Pooling" pooling_param { pool: MAX kernel_size: 3 '
        "stride: 2 ceil_mode: false } }",
        caffe_pb2.NetParameter(),
    )
    pool = net.layer[0].pooling_param
    assert pool.ceil_mode is False
    assert pool.round_mode == caffe_pb2.PoolingParameter.CEIL  # untouched, not set
    assert not pool.HasField("round_mode")


# ---------------------------------------------------------------------------
# (d) field numbers, labels and packing match BVLC's


def _field(message, name) -> descriptor.FieldDescriptor:
    return message.DESCRIPTOR.fields_by_name[name]


@pytest.mark.parametrize(
    "message, name, number",
    [
        (caffe_pb2.NetParameter, "name", 1),
        (caffe_pb2.NetParameter, "layers", 2),
        (caffe_pb2.NetParameter, "input", 3),
        (caffe_pb2.NetParameter, "input_dim", 4),
        (caffe_pb2.NetParameter, "state", 6),
        (caffe_pb2.NetParameter, "input_shape", 8),
        (caffe_pb2.NetParameter, "layer", 100),
        (caffe_pb2.LayerParameter, "name", 1),
        (caffe_pb2.LayerParameter, "type", 2),
        (caffe_pb2.LayerParameter, "bottom", 3),
        (caffe_pb2.LayerParameter, "top", 4),
        (caffe_pb2.LayerParameter, "param", 6),
        (caffe_pb2.LayerParameter, "blobs", 7),
        (caffe_pb2.LayerParameter, "include", 8),
        (caffe_pb2.LayerParameter, "phase", 10),
        (caffe_pb2.LayerParameter, "transform_param", 100),
        (caffe_pb2.LayerParameter, "convolution_param", 106),
        (caffe_pb2.LayerParameter, "inner_product_param", 117),
        (caffe_pb2.LayerParameter, "lrn_param", 118),
        (caffe_pb2.LayerParameter, "pooling_param", 121),
        (caffe_pb2.LayerParameter, "prelu_param", 131),
        (caffe_pb2.LayerParameter, "batch_norm_param", 139),
        (caffe_pb2.LayerParameter, "scale_param", 142),
        (caffe_pb2.LayerParameter, "input_param", 143),
        (caffe_pb2.LayerParameter, "crop_param", 144),
        (caffe_pb2.LayerParameter, "recurrent_param", 146),
        (caffe_pb2.LayerParameter, "swish_param", 147),
        (caffe_pb2.LayerParameter, "clip_param", 148),
        (caffe_pb2.LayerParameter, "permute_param", 202),
        (caffe_pb2.LayerParameter, "prior_box_param", 203),
        (caffe_pb2.LayerParameter, "detection_output_param", 204),
        (caffe_pb2.LayerParameter, "norm_param", 206),
        (caffe_pb2.V1LayerParameter, "layer", 1),
        (caffe_pb2.V1LayerParameter, "name", 4),
        (caffe_pb2.V1LayerParameter, "type", 5),
        (caffe_pb2.V1LayerParameter, "blobs", 6),
        (caffe_pb2.V1LayerParameter, "blobs_lr", 7),
        (caffe_pb2.V1LayerParameter, "convolution_param", 10),
        (caffe_pb2.V1LayerParameter, "pooling_param", 19),
        (caffe_pb2.V1LayerParameter, "param", 1001),
        (caffe_pb2.V0LayerParameter, "blobs", 50),
        (caffe_pb2.V0LayerParameter, "hdf5_output_param", 1001),
        (caffe_pb2.BlobProto, "num", 1),
        (caffe_pb2.BlobProto, "channels", 2),
        (caffe_pb2.BlobProto, "height", 3),
        (caffe_pb2.BlobProto, "width", 4),
        (caffe_pb2.BlobProto, "data", 5),
        (caffe_pb2.BlobProto, "diff", 6),
        (caffe_pb2.BlobProto, "shape", 7),
        (caffe_pb2.BlobProto, "double_data", 8),
        (caffe_pb2.BlobProto, "double_diff", 9),
        (caffe_pb2.BlobShape, "dim", 1),
        (caffe_pb2.PoolingParameter, "round_mode", 13),
        (caffe_pb2.ConvolutionParameter, "dilation", 18),
        (caffe_pb2.BatchNormParameter, "eps", 3),
        (caffe_pb2.SolverParameter, "layer_wise_reduce", 41),
        (caffe_pb2.SolverParameter, "weights", 42),
    ],
)
def test_field_numbers(message, name, number):
    assert _field(message, name).number == number


def _field_proto(message, name) -> descriptor_pb2.FieldDescriptorProto:
    """The declared form of a field (label, type, options) as protoc saw it."""
    proto = descriptor_pb2.DescriptorProto()
    message.DESCRIPTOR.CopyToProto(proto)
    return next(f for f in proto.field if f.name == name)


def test_packed_and_labels():
    fdp = descriptor_pb2.FieldDescriptorProto
    for name in ("data", "diff", "double_data", "double_diff"):
        field = _field_proto(caffe_pb2.BlobProto, name)
        assert field.label == fdp.LABEL_REPEATED, name
        assert field.options.packed, name
        assert _field(caffe_pb2.BlobProto, name).is_packed, name
    dim = _field_proto(caffe_pb2.BlobShape, "dim")
    assert dim.label == fdp.LABEL_REPEATED and dim.options.packed
    assert dim.type == fdp.TYPE_INT64
    assert _field_proto(caffe_pb2.BlobProto, "num").type == fdp.TYPE_INT32
    assert _field_proto(caffe_pb2.BlobProto, "num").label == fdp.LABEL_OPTIONAL
    assert _field_proto(caffe_pb2.BlobProto, "data").type == fdp.TYPE_FLOAT
    assert _field_proto(caffe_pb2.BlobProto, "double_data").type == fdp.TYPE_DOUBLE
    # BVLC does not pack these; proto2 repeated scalars are unpacked by default.
    for message, name in [
        (caffe_pb2.ConvolutionParameter, "kernel_size"),
        (caffe_pb2.Datum, "float_data"),
        (caffe_pb2.NetParameter, "input_dim"),
        (caffe_pb2.LayerParameter, "loss_weight"),
    ]:
        field = _field_proto(message, name)
        assert field.label == fdp.LABEL_REPEATED, name
        assert not field.options.HasField("packed"), name
        assert not _field(message, name).is_packed, name
    assert _field_proto(caffe_pb2.NetParameter, "input_dim").type == fdp.TYPE_INT32
    assert _field_proto(caffe_pb2.ClipParameter, "min").label == fdp.LABEL_REQUIRED
    assert _field_proto(caffe_pb2.ClipParameter, "max").label == fdp.LABEL_REQUIRED


def test_fork_ceil_mode_does_not_shadow_bvlc_number():
    ceil = _field(caffe_pb2.PoolingParameter, "ceil_mode")
    assert ceil.number not in {f.number for f in caffe_pb2.PoolingParameter.DESCRIPTOR.fields
                               if f.name != "ceil_mode"}
    assert ceil.number > 1000
    # A BVLC-written binary with round_mode FLOOR (field 13 = 1) reads back as round_mode.
    blob = caffe_pb2.PoolingParameter(round_mode=caffe_pb2.PoolingParameter.FLOOR)
    back = caffe_pb2.PoolingParameter.FromString(blob.SerializeToString())
    assert back.round_mode == caffe_pb2.PoolingParameter.FLOOR
    assert not back.HasField("ceil_mode")


def test_enum_values():
    pool = caffe_pb2.PoolingParameter
    assert (pool.MAX, pool.AVE, pool.STOCHASTIC) == (0, 1, 2)
    assert (pool.CEIL, pool.FLOOR) == (0, 1)
    elt = caffe_pb2.EltwiseParameter
    assert (elt.PROD, elt.SUM, elt.MAX) == (0, 1, 2)
    assert (caffe_pb2.TRAIN, caffe_pb2.TEST) == (0, 1)
    v1 = caffe_pb2.V1LayerParameter
    assert v1.CONVOLUTION == 4 and v1.POOLING == 17 and v1.INNER_PRODUCT == 14
    assert v1.RELU == 18 and v1.SOFTMAX == 20 and v1.SOFTMAX_LOSS == 21
    assert v1.DECONVOLUTION == 39 and v1.ABSVAL == 35 and v1.SILENCE == 36
    assert len(v1.LayerType.keys()) == 40
    assert caffe_pb2.PriorBoxParameter.CORNER == 1
    assert caffe_pb2.PriorBoxParameter.CENTER_SIZE == 2


def test_binary_round_trip_of_weights():
    net = caffe_pb2.NetParameter(name="t")
    layer = net.layer.add(name="c", type="Convolution")
    blob = layer.blobs.add()
    blob.shape.dim.extend([2, 1, 1, 1])
    blob.data.extend([1.5, -2.0])
    back = caffe_pb2.NetParameter.FromString(net.SerializeToString())
    assert list(back.layer[0].blobs[0].data) == [1.5, -2.0]
    assert list(back.layer[0].blobs[0].shape.dim) == [2, 1, 1, 1]
