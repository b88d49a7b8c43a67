"""Tests of caffe2torch.io.caffemodel: round trips, agreement with a protobuf parse, corruption."""
from __future__ import annotations

import hashlib
import mmap
import os
import sys
import time

import numpy as np
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caffe2torch.errors import CaffemodelError
from caffe2torch.io.caffemodel import (
    V0_LAYER_TYPES,
    V1_LAYER_TYPES,
    CaffeModel,
    parse_caffemodel,
    read_blobproto,
    read_caffemodel,
    write_caffemodel,
)

F = descriptor_pb2.FieldDescriptorProto
V2_TYPES = ["Convolution", "InnerProduct", "ReLU", "Pooling", "Scale", "BatchNorm", "PReLU"]
V1_TYPES = ["Convolution", "InnerProduct", "ReLU", "Pooling", "Deconvolution", "Eltwise"]

# ----------------------------------------------------------------------------- reference schema

# message -> [(field name, number, type, repeated, sub-message or None, packable)]
_SCHEMA = {
    "FillerParameter": [("type", 1, F.TYPE_STRING, False, None, False),
                        ("std", 6, F.TYPE_FLOAT, False, None, False)],
    "ConvolutionParameter": [("num_output", 1, F.TYPE_UINT32, False, None, False),
                             ("kernel_size", 4, F.TYPE_UINT32, True, None, True),
                             ("weight_filler", 7, F.TYPE_MESSAGE, False, "FillerParameter", False)],
    "BlobShape": [("dim", 1, F.TYPE_INT64, True, None, True)],
    "BlobProto": [("num", 1, F.TYPE_INT32, False, None, False),
                  ("channels", 2, F.TYPE_INT32, False, None, False),
                  ("height", 3, F.TYPE_INT32, False, None, False),
                  ("width", 4, F.TYPE_INT32, False, None, False),
                  ("data", 5, F.TYPE_FLOAT, True, None, True),
                  ("diff", 6, F.TYPE_FLOAT, True, None, True),
                  ("shape", 7, F.TYPE_MESSAGE, False, "BlobShape", False),
                  ("double_data", 8, F.TYPE_DOUBLE, True, None, True),
                  ("double_diff", 9, F.TYPE_DOUBLE, True, None, True),
                  ("raw_data_type", 10, F.TYPE_INT32, False, None, False),
                  ("raw_data", 12, F.TYPE_BYTES, False, None, False)],
    "LayerParameter": [("name", 1, F.TYPE_STRING, False, None, False),
                       ("type", 2, F.TYPE_STRING, False, None, False),
                       ("bottom", 3, F.TYPE_STRING, True, None, False),
                       ("top", 4, F.TYPE_STRING, True, None, False),
                       ("blobs", 7, F.TYPE_MESSAGE, True, "BlobProto", False),
                       ("phase", 10, F.TYPE_INT32, False, None, False),
                       ("convolution_param", 106, F.TYPE_MESSAGE, False, "ConvolutionParameter",
                        False)],
    "V0LayerParameter": [("name", 1, F.TYPE_STRING, False, None, False),
                         ("type", 2, F.TYPE_STRING, False, None, False),
                         ("num_output", 3, F.TYPE_UINT32, False, None, False),
                         ("blobs", 50, F.TYPE_MESSAGE, True, "BlobProto", False),
                         ("blobs_lr", 51, F.TYPE_FLOAT, True, None, True)],
    "V1LayerParameter": [("layer", 1, F.TYPE_MESSAGE, False, "V0LayerParameter", False),
                         ("bottom", 2, F.TYPE_STRING, True, None, False),
                         ("top", 3, F.TYPE_STRING, True, None, False),
                         ("name", 4, F.TYPE_STRING, False, None, False),
                         ("type", 5, F.TYPE_INT32, False, None, False),
                         ("blobs", 6, F.TYPE_MESSAGE, True, "BlobProto", False),
                         ("blobs_lr", 7, F.TYPE_FLOAT, True, None, True),
                         ("convolution_param", 10, F.TYPE_MESSAGE, False, "ConvolutionParameter",
                          False)],
    "NetParameter": [("name", 1, F.TYPE_STRING, False, None, False),
                     ("layers", 2, F.TYPE_MESSAGE, True, "V1LayerParameter", False),
                     ("input", 3, F.TYPE_STRING, True, None, False),
                     ("input_dim", 4, F.TYPE_INT32, True, None, True),
                     ("layer", 100, F.TYPE_MESSAGE, True, "LayerParameter", False)],
}


def _schema(package: str, packed: bool) -> dict[str, type]:
    """Message classes of a minimal caffe.proto, built at test time (no generated module)."""
    proto = descriptor_pb2.FileDescriptorProto(name=f"{package}.proto", package=package,
                                               syntax="proto2")
    for message, fields in _SCHEMA.items():
        desc = proto.message_type.add(name=message)
        for name, number, ftype, repeated, sub, packable in fields:
            item = desc.field.add(name=name, number=number, type=ftype,
                                  label=F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL)
            if sub:
                item.type_name = f".{package}.{sub}"
            if packable:
                item.options.packed = packed
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return {m: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.{m}"))
            for m in _SCHEMA}


PACKED = _schema("refpacked", True)
UNPACKED = _schema("refunpacked", False)
RAW_DTYPES = {0: "<f8", 1: "<f4", 2: "<f2"}


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


# ----------------------------------------------------------------------------- expectations


def _ref_blob(blob) -> tuple[tuple[int, ...], bool, np.ndarray]:
    """Caffe's Blob::FromProto, written independently of the module under test."""
    legacy = any(blob.HasField(f) for f in ("num", "channels", "height", "width"))
    shape = ((blob.num, blob.channels, blob.height, blob.width) if legacy
             else tuple(blob.shape.dim))
    if len(blob.double_data):
        values = np.array(blob.double_data, "<f8")
    elif len(blob.data):
        values = np.array(blob.data, "<f4")
    elif blob.HasField("raw_data"):
        values = np.frombuffer(blob.raw_data, RAW_DTYPES[blob.raw_data_type])
    else:
        values = np.zeros(0, "<f4")
    return shape, legacy, values.reshape(shape)


def _text(value) -> str:
    """A string field as our reader gives it: protobuf hands invalid UTF-8 back as bytes (C++
    Caffe keeps the bytes; the reader decodes them with replacement characters)."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _ref_layers(net) -> list[tuple[str, str, list]]:
    out = [(_text(layer.name), _text(layer.type), [_ref_blob(b) for b in layer.blobs])
           for layer in net.layer]
    for layer in net.layers:
        if layer.HasField("layer"):
            v0 = layer.layer
            out.append((_text(v0.name), V0_LAYER_TYPES.get(_text(v0.type), _text(v0.type)),
                        [_ref_blob(b) for b in v0.blobs]))
        else:
            out.append((_text(layer.name), V1_LAYER_TYPES.get(layer.type, ""),
                        [_ref_blob(b) for b in layer.blobs]))
    return out


def _bits(array: np.ndarray) -> np.ndarray:
    array = np.ascontiguousarray(array)
    return array.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[array.dtype.itemsize])


def _assert_same(model: CaffeModel, expected: list[tuple[str, str, list]]) -> None:
    assert len(model.layers) == len(expected)
    for layer, (name, ltype, blobs) in zip(model.layers, expected):
        assert (layer.name, layer.type) == (name, ltype)
        assert len(layer.blobs) == len(blobs)
        for blob, (shape, legacy, values) in zip(layer.blobs, blobs):
            assert blob.shape == shape and blob.legacy_dims == legacy
            assert blob.data.shape == shape and blob.data.dtype == values.dtype
            assert np.array_equal(_bits(blob.data), _bits(values))


# ----------------------------------------------------------------------------- random nets


def _values(rng: np.random.Generator, count: int, dtype: str) -> np.ndarray:
    values = rng.standard_normal(count).astype(dtype)
    if count >= 6:
        specials = [np.inf, -np.inf, -0.0, np.nan, np.finfo(dtype).tiny / 4, np.finfo(dtype).max]
        values[rng.choice(count, 6, replace=False)] = specials
    return values


def _random_shape(rng: np.random.Generator, max_axes: int) -> tuple[int, ...]:
    return tuple(int(d) for d in rng.integers(0 if rng.random() < 0.1 else 1, 5,
                                               rng.integers(0, max_axes + 1)))


def _fill_blob(blob, rng: np.random.Generator, legacy: bool, max_axes: int) -> None:
    shape = _random_shape(rng, 4 if legacy else max_axes)
    if legacy:
        shape = (1,) * (4 - len(shape)) + shape
        blob.num, blob.channels, blob.height, blob.width = shape
        if rng.random() < 0.2:  # both given: Caffe takes the legacy dims
            blob.shape.dim.extend([7, 7])
    else:
        blob.shape.dim.extend(shape)
    count = int(np.prod(shape))
    kind = rng.choice(["float", "double", "half"], p=[0.6, 0.25, 0.15])
    if kind == "float":
        blob.data.extend(_values(rng, count, "<f4").tolist())
    elif kind == "double":
        blob.double_data.extend(_values(rng, count, "<f8").tolist())
    else:
        blob.raw_data_type = 2
        blob.raw_data = _values(rng, count, "<f2").tobytes()
    if rng.random() < 0.3:
        blob.diff.extend(rng.standard_normal(3).astype("<f4").tolist())


def _fill_unknowns(layer, rng: np.random.Generator) -> None:
    layer.bottom.append("in")
    layer.top.append("out")
    if rng.random() < 0.5:
        layer.convolution_param.num_output = int(rng.integers(1, 300))
        layer.convolution_param.kernel_size.extend([3, 3])
        layer.convolution_param.weight_filler.type = "gaussian"
        layer.convolution_param.weight_filler.std = 0.01


def _name(rng: np.random.Generator, i: int) -> str:
    return rng.choice(["conv", "fc", "prob", "bn", "ünï", "a/b"]) + f"{i}"


def _random_net(rng: np.random.Generator, schema: dict[str, type], fmt: str):
    net = schema["NetParameter"](name="net" if rng.random() < 0.8 else "")
    for i in range(int(rng.integers(1, 5))):
        style = fmt if fmt != "mixed" else rng.choice(["V2", "V1"])
        if style == "V2":
            layer = net.layer.add(name=_name(rng, i), type=rng.choice(V2_TYPES))
            legacy, max_axes = rng.random() < 0.2, 5
            if rng.random() < 0.5:
                layer.phase = 1
        elif style == "V1":
            layer = net.layers.add(name=_name(rng, i), type=int(rng.choice(list(V1_LAYER_TYPES))))
            legacy, max_axes = rng.random() < 0.8, 4
            layer.blobs_lr.extend([1.0, 2.0])
        else:
            layer = net.layers.add().layer
            layer.name, layer.type = _name(rng, i), rng.choice(["conv", "innerproduct", "relu",
                                                                "padding"])
            legacy, max_axes = True, 4
            layer.num_output = 3
        if style != "V0":
            _fill_unknowns(layer, rng)
        for _ in range(int(rng.integers(0, 4))):
            _fill_blob(layer.blobs.add(), rng, legacy, max_axes)
    return net


# ----------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("fmt", ["V2", "V1"])
@pytest.mark.parametrize("dtype", ["float", "double", "half"])
def test_round_trip(tmp_path, fmt: str, dtype: str) -> None:
    rng = np.random.default_rng(1)
    code = {"float": "<f4", "double": "<f8", "half": "<f2"}[dtype]
    for trial in range(20):
        layers = []
        for i in range(int(rng.integers(1, 6))):
            shapes = [_random_shape(rng, 4 if fmt == "V1" else 6) for _ in range(rng.integers(3))]
            blobs = [_values(rng, int(np.prod(s)), code).astype("<f8").reshape(s)
                     for s in shapes]
            layers.append((f"layer{i}", rng.choice(V1_TYPES), blobs))
        path = tmp_path / f"{fmt}{dtype}{trial}.caffemodel"
        write_caffemodel(path, layers, name=f"n{trial}", format=fmt, dtype=dtype)
        model = read_caffemodel(path)
        assert (model.name, model.format) == (f"n{trial}", fmt)
        expected = []
        for name, ltype, blobs in layers:
            legacy = fmt == "V1"
            shapes = [(1,) * (4 - b.ndim) + b.shape if legacy else b.shape for b in blobs]
            # an empty blob carries no values, so no dtype: it reads as float32
            expected.append((name, ltype, [(s, legacy, b.astype(code if b.size or dtype == "half"
                                                                else "<f4").reshape(s))
                                           for s, b in zip(shapes, blobs)]))
        _assert_same(model, expected)


def test_float32_exact_and_lookups(tmp_path) -> None:
    rng = np.random.default_rng(2)
    weights = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    bias = _values(rng, 8, "<f4")
    path = tmp_path / "m.caffemodel"
    write_caffemodel(path, [("conv1", "Convolution", [weights, bias]), ("relu1", "ReLU", []),
                            ("conv1", "Convolution", [bias])])
    model = read_caffemodel(path)
    assert model.names() == ("conv1", "relu1", "conv1")
    assert "relu1" in model and "nope" not in model
    assert model["relu1"].blobs == ()
    assert model["conv1"].blobs[0].shape == (8,)  # the last of equal names wins
    assert np.array_equal(_bits(model.layers[0].blobs[0].data), _bits(weights))
    assert model.num_params == weights.size + 2 * bias.size
    assert model.nbytes == 4 * model.num_params
    assert [layer.name for layer in model] == list(model.names()) and len(model) == 3
    with pytest.raises(KeyError):
        model["nope"]
    assert "num_params=232" in repr(model)


def test_writer_rejects_bad_input(tmp_path) -> None:
    with pytest.raises(ValueError, match="at most 4"):
        write_caffemodel(tmp_path / "a", [("x", "Convolution", [np.zeros((1,) * 5)])],
                         format="V1")
    with pytest.raises(ValueError, match="no V1 LayerType"):
        write_caffemodel(tmp_path / "b", [("x", "BatchNorm", [])], format="V1")
    with pytest.raises(TypeError, match="real numbers"):
        write_caffemodel(tmp_path / "c", [("x", "Scale", [np.array(["a"])])])
    with pytest.raises(ValueError, match="format"):
        write_caffemodel(tmp_path / "d", [], format="V3")  # type: ignore[arg-type]
    assert sorted(os.listdir(tmp_path)) == []  # no temporary file is left behind


def test_v1_enum_mapping() -> None:
    expected = {4: "Convolution", 14: "InnerProduct", 18: "ReLU", 17: "Pooling",
                21: "SoftmaxWithLoss", 39: "Deconvolution", 0: "", 35: "AbsVal", 23: "TanH"}
    assert all(V1_LAYER_TYPES[k] == v for k, v in expected.items())
    assert sorted(V1_LAYER_TYPES) == list(range(40)) and len(set(V1_LAYER_TYPES.values())) == 40


# ----------------------------------------------------------------------------- protobuf agreement


@pytest.mark.parametrize("fmt", ["V2", "V1", "V0", "mixed"])
def test_agrees_with_protobuf(fmt: str) -> None:
    rng = np.random.default_rng(3)
    for trial in range(150):
        schema = PACKED if trial % 2 else UNPACKED
        data = _random_net(rng, schema, fmt).SerializeToString()
        reference = PACKED["NetParameter"].FromString(data)
        model = parse_caffemodel(data, source="mem")
        _assert_same(model, _ref_layers(reference))
        assert model.name == reference.name
        want = "V2" if len(reference.layer) else ("V0" if fmt == "V0" else "V1")
        assert model.format == want


def test_merged_and_mixed_encodings() -> None:
    """Concatenated messages merge: repeated values append, scalars take the last value."""
    rng = np.random.default_rng(4)
    values = _values(rng, 24, "<f4")
    first = PACKED["BlobProto"](data=values[:10].tolist())
    first.shape.dim.extend([2, 3])
    second = UNPACKED["BlobProto"](data=values[10:].tolist())
    second.shape.dim.extend([4])
    blob = first.SerializeToString() + second.SerializeToString()
    doubles = UNPACKED["BlobProto"](double_data=values[:6].astype("<f8").tolist())
    doubles.shape.dim.extend([6])
    layer = (PACKED["LayerParameter"](name="a", type="Convolution").SerializeToString()
             + _field(7, blob) + _field(7, doubles.SerializeToString())
             + PACKED["LayerParameter"](name="b").SerializeToString())
    data = _field(100, layer) + _field(1, b"first") + _field(1, b"last")
    reference = PACKED["NetParameter"].FromString(data)
    model = parse_caffemodel(data)
    _assert_same(model, _ref_layers(reference))
    assert model.name == "last" and model.layers[0].name == "b"
    assert model.layers[0].blobs[0].shape == (2, 3, 4)
    assert model.layers[0].blobs[1].data.dtype == np.float64


def test_unknown_groups_are_skipped() -> None:
    group = _varint(50 << 3 | 3) + _varint(1 << 3) + b"\x05" + _varint(50 << 3 | 4)
    layer = PACKED["LayerParameter"](name="x", type="ReLU").SerializeToString()
    data = group + _field(100, layer + group)
    reference = PACKED["NetParameter"].FromString(data)
    assert [layer.name for layer in parse_caffemodel(data)] == [reference.layer[0].name]


def test_our_files_parse_with_protobuf(tmp_path) -> None:
    rng = np.random.default_rng(5)
    layers = [("c", "Convolution", [rng.standard_normal((2, 3, 1, 1)), np.arange(2.0)]),
              ("r", "ReLU", [])]
    extra = PACKED["NetParameter"](input=["data"], input_dim=[1, 3, 4, 4]).SerializeToString()
    for fmt in ("V2", "V1"):
        path = tmp_path / f"{fmt}.caffemodel"
        write_caffemodel(path, layers, name="n", format=fmt, extra_net_bytes=extra)
        reference = PACKED["NetParameter"].FromString(path.read_bytes())
        assert list(reference.input) == ["data"] and list(reference.input_dim) == [1, 3, 4, 4]
        _assert_same(read_caffemodel(path), _ref_layers(reference))


def test_blobproto(tmp_path) -> None:
    mean = PACKED["BlobProto"](num=1, channels=3, height=4, width=5)
    mean.data.extend(np.arange(60, dtype="<f4").tolist())
    path = tmp_path / "mean.binaryproto"
    path.write_bytes(mean.SerializeToString())
    array = read_blobproto(path)
    assert array.shape == (1, 3, 4, 5) and array[0, 2, 3, 4] == 59
    path.write_bytes(b"")
    with pytest.raises(CaffemodelError, match="empty"):
        read_blobproto(path)


# ----------------------------------------------------------------------------- zero copy


def test_views_of_the_mapped_file(tmp_path) -> None:
    rng = np.random.default_rng(6)
    path = tmp_path / "m.caffemodel"
    write_caffemodel(path, [("fc", "InnerProduct", [rng.standard_normal((30, 20))])])
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    array = read_caffemodel(path)["fc"].blobs[0].data
    assert not array.flags.owndata and not array.flags.writeable
    base = array
    while isinstance(base, np.ndarray):
        base = base.base
    assert isinstance(base, mmap.mmap)
    with pytest.raises(ValueError):
        array[0, 0] = 1.0
    write_caffemodel(path, [("fc", "InnerProduct", [np.zeros((2, 2))])])  # replaces the file
    assert np.isfinite(array).all() and array.shape == (30, 20)  # the old map is still valid
    assert hashlib.sha256(path.read_bytes()).hexdigest() != digest


def test_unpacked_run_is_a_strided_view() -> None:
    values = _values(np.random.default_rng(7), 50, "<f4")
    blob = UNPACKED["BlobProto"](data=values.tolist())
    blob.shape.dim.extend([5, 10])
    data = _field(100, _field(1, b"u") + _field(7, blob.SerializeToString()))
    array = parse_caffemodel(data)["u"].blobs[0].data
    assert not array.flags.owndata and array.strides == (50, 5)
    assert np.array_equal(_bits(array), _bits(values.reshape(5, 10)))


# ----------------------------------------------------------------------------- corruption


def _small_net() -> tuple[bytes, list[int]]:
    """A small V2 file and the offsets where its top-level fields end."""
    rng = np.random.default_rng(8)
    net = _random_net(rng, PACKED, "V2")
    while len(net.layer) < 3:
        net = _random_net(rng, PACKED, "V2")
    ends = []
    for i in range(1, len(net.layer) + 1):
        prefix = PACKED["NetParameter"](name=net.name)
        prefix.layer.extend(net.layer[:i])
        ends.append(len(prefix.SerializeToString()))
    return net.SerializeToString(), ends


def test_truncation_at_every_offset() -> None:
    """A cut parses only at a boundary between layers (giving those layers), else raises."""
    data, ends = _small_net()
    full = parse_caffemodel(data)
    for cut in range(len(data)):
        if cut in ends:
            model = parse_caffemodel(data[:cut])
            assert model.names() == full.names()[:ends.index(cut) + 1]
            for got, want in zip(model.layers, full.layers):
                assert all(np.array_equal(_bits(a.data), _bits(b.data))
                           for a, b in zip(got.blobs, want.blobs))
        else:
            with pytest.raises(CaffemodelError, match="mem: byte"):
                parse_caffemodel(data[:cut], source="mem")


def _blob_net(blob: bytes) -> bytes:
    return _field(100, _field(1, b"layer") + _field(7, blob))


@pytest.mark.parametrize("data, message", [
    (b"", "empty file"),
    (b"\xa2", "varint cut off"),
    (b"\x0a" + b"\xff" * 10 + b"\x01", "longer than 10 bytes"),
    (_field(100, b"\x0a\x05ab"), "length of 5 bytes"),
    (b"\x0a\x03abc", "without any layer"),
    (_varint(100 << 3 | 0) + b"\x01", "wire type 2"),
    (_field(100, b"\x08\x01"), "wire type 2"),
    (_field(100, b"\x0e"), "wire type 6"),
    (_field(100, b"\x00"), "field number 0"),
    (_field(100, _varint(9 << 3 | 4)), "end-group"),
    (_blob_net(_field(7, b"\x08" + _varint(-3)) + b"\x2d\0\0\0\0"), "negative dims"),
    (_blob_net(b"\x08\x02\x10\x02" + _field(5, bytes(12))), "0 values"),
    (_blob_net(_field(7, _field(1, _varint(3))) + _field(5, bytes(6))), "multiple of 4"),
    (_blob_net(_field(7, _field(1, bytes(40)))), "at most 32 axes"),
    (_blob_net(_field(7, _field(1, _varint(2))) + _field(12, bytes(4))), "raw_data with no"),
    (_blob_net(_field(7, _field(1, _varint(2))) + b"\x50\x07" + _field(12, bytes(4))),
     "raw_data_type 7"),
    (_blob_net(b"\x2d\0\0"), "fixed-size value of 4"),
])
def test_corrupt_inputs(data: bytes, message: str) -> None:
    with pytest.raises(CaffemodelError, match=message):
        parse_caffemodel(data, source="bad.caffemodel")


def test_huge_claims_fail_fast() -> None:
    claims = [
        _blob_net(_field(7, _field(1, _varint(10**6) + _varint(10**6))) + _field(5, bytes(4))),
        _blob_net(_field(7, _field(1, _varint(10**12))) + b"\x2a" + _varint(4 * 10**12)),
        _varint(100 << 3 | 2) + _varint(1 << 62),
    ]
    for data in claims:
        start = time.perf_counter()
        with pytest.raises(CaffemodelError):
            parse_caffemodel(data)
        assert time.perf_counter() - start < 0.5
    with pytest.raises(CaffemodelError, match="1000000000000"):
        parse_caffemodel(claims[0])


def test_not_a_caffemodel(tmp_path) -> None:
    cases = {
        "net.prototxt": (b'name: "VGG"\nlayer {\n  name: "conv1"\n  type: "Convolution"\n}\n',
                         "looks like text"),
        "img.png": (b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, "PNG image"),
        "empty.caffemodel": (b"", "empty file"),
        "w.pth": (b"PK\x03\x04" + bytes(200), "zip archive"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(CaffemodelError, match=message) as info:
            read_caffemodel(path)
        assert str(path) in str(info.value)


def test_random_bytes(tmp_path) -> None:
    rng = np.random.default_rng(9)
    outcomes = {"ok": 0, "error": 0}
    for i in range(300):
        data = rng.integers(0, 256, int(rng.integers(1, 400)), dtype=np.uint8).tobytes()
        try:
            parse_caffemodel(data)
            outcomes["ok"] += 1
        except CaffemodelError:
            outcomes["error"] += 1
    assert outcomes["error"] > 0


_BASE, _ = _small_net()


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.integers(0, len(_BASE) - 1), st.integers(0, 255)),
                      min_size=1, max_size=6),
       cut=st.one_of(st.none(), st.integers(0, len(_BASE))),
       insert=st.one_of(st.none(), st.tuples(st.integers(0, len(_BASE)), st.binary(max_size=8))))
def test_mutations_return_or_raise(tmp_path, edits, cut, insert) -> None:
    data = bytearray(_BASE)
    for pos, value in edits:
        data[pos] = value
    if insert is not None:
        data[insert[0]:insert[0]] = insert[1]
    if cut is not None:
        del data[cut:]
    path = tmp_path / f"m{hashlib.md5(bytes(data)).hexdigest()}.caffemodel"
    path.write_bytes(bytes(data))
    try:
        model = read_caffemodel(path)
    except CaffemodelError as error:
        assert str(path) in str(error)
        return
    for layer in model:
        for blob in layer.blobs:
            assert blob.data.shape == blob.shape
            blob.data.tobytes()  # every view lies inside the file
    # an accepted mutant is a valid message, and reads as protobuf's own parse of it
    try:
        reference = PACKED["NetParameter"].FromString(bytes(data))
    except DecodeError as error:
        raise AssertionError(f"read_caffemodel accepted bytes protobuf rejects: {error}") from None
    _assert_same(model, _ref_layers(reference))
    assert model.name == _text(reference.name)


# ----------------------------------------------------------------------------- HDF5


def test_hdf5_round_trip(tmp_path) -> None:
    pytest.importorskip("h5py")
    rng = np.random.default_rng(10)
    layers = [("z_conv", "Convolution", [rng.standard_normal((4, 3, 3, 3)), np.ones(4)]),
              ("a_relu", "ReLU", []), ("fc", "InnerProduct", [rng.standard_normal((5, 7))])]
    path = tmp_path / "net.caffemodel.h5"
    write_caffemodel(path, layers)
    model = read_caffemodel(path)
    assert model.format == "HDF5" and model.names() == ("z_conv", "a_relu", "fc")
    _assert_same(model, [(n, "", [(b.shape, False, b.astype("<f4")) for b in blobs])
                         for n, _, blobs in layers])


def test_hdf5_problems(tmp_path, monkeypatch) -> None:
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "bad.caffemodel.h5"
    with h5py.File(path, "w") as h5:
        h5.create_group("data/conv").create_dataset("1", data=np.zeros(3))
    with pytest.raises(CaffemodelError, match="0..n-1"):
        read_caffemodel(path)
    path.write_bytes(b"not hdf5 at all")
    with pytest.raises(CaffemodelError, match="cannot read"):
        read_caffemodel(path)
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(CaffemodelError, match="h5py"):
        read_caffemodel(path)


# ----------------------------------------------------------------------------- large files


def test_sparse_file_past_2_gib(tmp_path) -> None:
    """A 2.2 GB file with a blob past the 2**31 byte mark (zeros left as a sparse hole): the
    README's "files over 2 GB work". Runs in CI: the hole takes no disk and the reader maps the
    file, so it costs milliseconds and a few pages."""
    count = 550_000_000
    blob_head = _field(7, _field(1, _varint(count))) + b"\x2a" + _varint(4 * count)
    blob_len = len(blob_head) + 4 * count
    layer_head = _field(1, b"big") + b"\x3a" + _varint(blob_len) + blob_head
    layer_len = len(layer_head) + 4 * count
    small = _field(1, b"small") + _field(7, _field(7, _field(1, _varint(3)))
                                          + _field(5, np.arange(3, dtype="<f4").tobytes()))
    path = tmp_path / "big.caffemodel"
    with open(path, "wb") as out:
        out.write(b"\xa2\x06" + _varint(layer_len) + layer_head)
        out.seek(4 * count, os.SEEK_CUR)  # a hole: the zeros of the big blob
        out.write(_field(100, small))
    if os.stat(path).st_blocks * 512 > 1 << 26:
        pytest.skip("the filesystem does not keep sparse files")
    model = read_caffemodel(path)
    assert model["big"].blobs[0].shape == (count,)
    assert os.path.getsize(path) > 1 << 31
    assert model["small"].blobs[0].data.tolist() == [0.0, 1.0, 2.0]
    big = model["big"].blobs[0].data
    assert big[-1] == 0.0 and big[count // 2] == 0.0  # the view reaches past 2**31 bytes


def test_released_pages_read_back_the_same_values(tmp_path):
    """After a blob is copied its file pages are dropped from the process; the view still reads
    the same values (they come back from the page cache)."""
    from caffe2torch.io.caffemodel import release_pages
    rng = np.random.default_rng(8)
    values = rng.standard_normal((64, 1024)).astype(np.float32)  # 256 KiB: whole pages inside
    path = tmp_path / "big.caffemodel"
    write_caffemodel(path, [("fc", "InnerProduct", [values])])
    blob = read_caffemodel(path)["fc"].blobs[0]
    before = np.array(blob.data)
    release_pages(blob.data)
    assert np.array_equal(np.asarray(blob.data), before)
    assert np.array_equal(before, values)
