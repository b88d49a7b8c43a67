"""Read and write Caffe weights (.caffemodel, .caffemodel.h5, .binaryproto) at disk speed.

The binary reader walks the protobuf wire format itself: a small varint/tag decoder visits only
the structure (tags and lengths, never the float values), checks every length and offset against
the buffer, and returns each blob as a zero-copy, read-only NumPy view of the memory-mapped file.

Layout read (BVLC ``caffe.proto``; NVIDIA/caffe adds ``raw_data``)::

    NetParameter     name=1  layers=2 (V1LayerParameter)  layer=100 (LayerParameter)
    LayerParameter   name=1  type=2 (string)  blobs=7
    V1LayerParameter layer=1 (V0LayerParameter)  name=4  type=5 (enum)  blobs=6
    V0LayerParameter name=1  type=2 (string)  blobs=50
    BlobProto        num=1 channels=2 height=3 width=4  data=5 (float)  shape=7 (BlobShape dim=1)
                     double_data=8  raw_data_type=10 (NVIDIA Type)  raw_data=12 (bytes)

Choices: every layer is listed, also those without blobs; a name used twice resolves to the last
one (as Caffe, whose later layers overwrite earlier ones); a V1 enum number Caffe does not know
becomes the type ``"V1LayerType(<n>)"`` and a V0 type string Caffe does not know is kept as is.
The views stay valid while referenced, even after the file is replaced; they fault (SIGBUS) if
another process truncates the file in place.
"""
from __future__ import annotations

import contextlib
import math
import mmap
import os
import secrets
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, Literal, NoReturn, Union

import numpy as np

from caffe2torch.errors import CaffemodelError
from caffe2torch.io.upgrade import V0_TYPES, V1_TYPE_NAMES
from caffe2torch.proto import caffe_pb2

__all__ = [
    "CaffeBlob", "CaffeLayerBlobs", "CaffeModel", "V0_LAYER_TYPES", "V1_LAYER_TYPES",
    "parse_caffemodel", "read_blobproto", "read_caffemodel", "release_pages", "write_caffemodel",
]

PathLike = Union[str, "os.PathLike[str]"]
Format = Literal["V2", "V1", "V0", "HDF5"]
Buffer = Union[bytes, bytearray, memoryview, mmap.mmap]
BlobsIn = Iterable[tuple[str, str, Sequence[np.ndarray]]]

# V1LayerParameter.LayerType number -> V2 type string, and V0 type string -> V2 type string:
# the same tables Caffe's upgrade uses (caffe2torch.io.upgrade), keyed as the wire format has them.
V1_LAYER_TYPES: dict[int, str] = {
    caffe_pb2.V1LayerParameter.LayerType.Value(enum): v2 for enum, v2 in V1_TYPE_NAMES.items()}
_V2_TO_V1 = {name: number for number, name in V1_LAYER_TYPES.items()}
V0_LAYER_TYPES: dict[str, str] = {v0: V1_TYPE_NAMES[enum] for v0, enum in V0_TYPES.items()}

_VARINT, _I64, _LEN, _SGROUP, _EGROUP, _I32 = 0, 1, 2, 3, 4, 5
_WIRE_NAMES = ("varint", "64-bit", "length-delimited", "group start", "group end", "32-bit")
_MAX_FIELD = (1 << 29) - 1
_MAX_AXES = 32  # Caffe's kMaxBlobAxes
_MAX_GROUP_DEPTH = 64
_U64 = (1 << 64) - 1
_RAW_TYPES = {0: "<f8", 1: "<f4", 2: "<f2"}  # NVIDIA caffe.Type: DOUBLE, FLOAT, FLOAT16
_H5_MAGIC = b"\x89HDF\r\n\x1a\n"
_H5_SUFFIXES = (".h5", ".hdf5")
_MAGICS = (
    (b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (_H5_MAGIC, "an HDF5 file"),
    (b"PK\x03\x04", "a zip archive (a PyTorch .pth?)"), (b"\x1f\x8b", "a gzip file"),
    (b"\x93NUMPY", "a NumPy .npy file"), (b"\x08\x07\x12", "an ONNX model"),
)

# Fields this reader interprets, with the wire types accepted for each; others are skipped.
_NET_FIELDS = {1: (_LEN,), 2: (_LEN,), 100: (_LEN,)}
_V2_FIELDS = {1: (_LEN,), 2: (_LEN,), 7: (_LEN,)}
_V1_FIELDS = {1: (_LEN,), 4: (_LEN,), 5: (_VARINT,), 6: (_LEN,)}
_V0_FIELDS = {1: (_LEN,), 2: (_LEN,), 50: (_LEN,)}
_BLOB_FIELDS = {
    1: (_VARINT,), 2: (_VARINT,), 3: (_VARINT,), 4: (_VARINT,), 5: (_LEN, _I32),
    6: (_LEN, _I32), 7: (_LEN,), 8: (_LEN, _I64), 9: (_LEN, _I64), 10: (_VARINT,),
    11: (_VARINT,), 12: (_LEN,), 13: (_LEN,),
}
_SHAPE_FIELDS = {1: (_LEN, _VARINT)}


# ----------------------------------------------------------------------------- result types


@dataclass(frozen=True, eq=False)
class CaffeBlob:
    """One parameter blob; ``data`` is a read-only view of the file, reshaped to ``shape``.

    ``legacy_dims``: the file gave num/channels/height/width (``shape`` is that 4-tuple), which
    Caffe compares with the last four axes of the target blob.
    """

    shape: tuple[int, ...]
    data: np.ndarray
    legacy_dims: bool = False

    def __repr__(self) -> str:
        legacy = ", legacy_dims=True" if self.legacy_dims else ""
        return f"CaffeBlob(shape={self.shape}, dtype={self.data.dtype}{legacy})"


@dataclass(frozen=True)
class CaffeLayerBlobs:
    """A layer's name, V2 type string and parameter blobs, in file order."""

    name: str
    type: str
    blobs: tuple[CaffeBlob, ...] = ()


@dataclass(frozen=True)
class CaffeModel:
    """The layers of a weights file. ``model[name]`` and ``name in model`` look layers up by name
    (the last of equal names wins); iterating yields the layers in file order."""

    path: str
    name: str
    format: Format
    layers: tuple[CaffeLayerBlobs, ...]
    _index: dict[str, CaffeLayerBlobs] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {layer.name: layer for layer in self.layers})

    def __getitem__(self, name: str) -> CaffeLayerBlobs:
        return self._index[name]

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def __iter__(self) -> Iterator[CaffeLayerBlobs]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def names(self) -> tuple[str, ...]:
        """Layer names in file order (repeats included)."""
        return tuple(layer.name for layer in self.layers)

    @property
    def num_params(self) -> int:
        """Number of values over all blobs."""
        return sum(blob.data.size for layer in self.layers for blob in layer.blobs)

    @property
    def nbytes(self) -> int:
        """Bytes of blob data over all blobs."""
        return sum(blob.data.nbytes for layer in self.layers for blob in layer.blobs)

    def __repr__(self) -> str:
        return (f"CaffeModel(path={self.path!r}, name={self.name!r}, format={self.format!r}, "
                f"layers={len(self.layers)}, num_params={self.num_params})")


# ----------------------------------------------------------------------------- wire decoding


class _Wire:
    """Bounds-checked protobuf wire-format decoding over one buffer."""

    def __init__(self, buf: Buffer, source: str) -> None:
        self.buf = buf
        self.size = len(buf)
        self.source = source
        self.hint = _sniff(buf)

    def fail(self, pos: int, found: str, expected: str, where: str = "") -> NoReturn:
        hint = f" ({self.hint})" if self.hint else ""
        where = f"{where}: " if where else ""
        raise CaffemodelError(f"{self.source}: byte {pos}: {where}found {found}; "
                              f"expected {expected}{hint}")

    def varint(self, pos: int, end: int) -> tuple[int, int]:
        """Decode the varint at ``pos`` (before ``end``); return (unsigned value, next pos)."""
        buf, start, result, shift = self.buf, pos, 0, 0
        while True:
            if pos >= end:
                self.fail(start, "a varint cut off by the end of its message",
                          "a complete varint")
            byte = buf[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                return result & _U64, pos
            shift += 7
            if shift >= 70:
                self.fail(start, "a varint longer than 10 bytes", "at most 10 bytes")

    def tag(self, pos: int, end: int) -> tuple[int, int, int]:
        """Decode a field key; return (field number, wire type, next pos)."""
        key, nxt = self.varint(pos, end)
        number, wire = key >> 3, key & 7
        if wire > _I32:
            self.fail(pos, f"wire type {wire} in tag {key:#x}", "a wire type from 0 to 5 "
                      "(a binary protobuf)")
        if number == 0 or number > _MAX_FIELD:
            self.fail(pos, f"field number {number} in tag {key:#x}",
                      f"a field number from 1 to {_MAX_FIELD}")
        return number, wire, nxt

    def length(self, pos: int, end: int) -> tuple[int, int]:
        """Decode a length prefix; return the (start, stop) of the payload."""
        size, start = self.varint(pos, end)
        if size > end - start:
            self.fail(pos, f"a length of {size} bytes with {end - start} left in the enclosing "
                      f"message (file size {self.size})", "a length that fits")
        return start, start + size

    def fixed(self, pos: int, end: int, width: int) -> int:
        if end - pos < width:
            self.fail(pos, f"{end - pos} bytes left", f"a fixed-size value of {width} bytes")
        return pos + width

    def skip(self, number: int, wire: int, pos: int, end: int) -> int:
        """Skip the value of a field we do not read; return the next pos."""
        if wire == _VARINT:
            return self.varint(pos, end)[1]
        if wire == _LEN:
            return self.length(pos, end)[1]
        if wire in (_I64, _I32):
            return self.fixed(pos, end, 8 if wire == _I64 else 4)
        if wire == _SGROUP:
            return self.skip_group(number, pos, end)
        self.fail(pos, f"an end-group tag for field {number} outside a group",
                  "a field or the end of the message")

    def skip_group(self, number: int, pos: int, end: int) -> int:
        open_groups = [number]
        while open_groups:
            tag_pos = pos
            inner, wire, pos = self.tag(pos, end)
            if wire == _EGROUP:
                if inner != open_groups[-1]:
                    self.fail(tag_pos, f"end of group {inner}",
                              f"end of group {open_groups[-1]}")
                open_groups.pop()
            elif wire == _SGROUP:
                if len(open_groups) >= _MAX_GROUP_DEPTH:
                    self.fail(tag_pos, "groups nested too deep",
                              f"at most {_MAX_GROUP_DEPTH} levels")
                open_groups.append(inner)
            else:
                pos = self.skip(inner, wire, pos, end)
        return pos

    def walk(self, start: int, end: int, known: Mapping[int, tuple[int, ...]], message: str,
             visit: Callable[[int, int, int, int], int]) -> None:
        """Visit each known field of the message in [start, end); skip the others.

        ``visit(number, wire, tag_pos, value_pos)`` returns the position after the value.
        """
        pos = start
        while pos < end:
            tag_pos = pos
            number, wire, pos = self.tag(pos, end)
            allowed = known.get(number)
            if allowed is None:
                pos = self.skip(number, wire, pos, end)
            elif wire not in allowed:
                wanted = " or ".join(f"{w} ({_WIRE_NAMES[w]})" for w in allowed)
                self.fail(tag_pos, f"{message} field {number} with wire type {wire} "
                          f"({_WIRE_NAMES[wire]})", f"wire type {wanted}")
            else:
                pos = visit(number, wire, tag_pos, pos)

    def text(self, start: int, stop: int) -> str:
        return bytes(self.buf[start:stop]).decode("utf-8", errors="replace")

    def same_tag_run(self, pos: int, end: int, tag_byte: int, stride: int) -> int:
        """Count the records of ``stride`` bytes from ``pos`` that start with ``tag_byte``."""
        count, chunk = 0, 64
        while True:
            avail = (end - pos) // stride - count
            take = min(chunk, avail)
            if take <= 0:
                return count
            tags = np.ndarray((take,), np.uint8, self.buf, pos + count * stride, (stride,))
            bad = np.flatnonzero(tags != tag_byte)
            if bad.size:
                return count + int(bad[0])
            count += take
            chunk *= 2


def _sniff(buf: Buffer) -> str:
    """A hint of what a file that is no caffemodel looks like ('' when nothing is known)."""
    head = bytes(buf[:512])
    for magic, what in _MAGICS:
        if head.startswith(magic):
            return f"the file starts like {what}, not a caffemodel"
    if head and b"\0" not in head:
        texty = sum(32 <= b < 127 or b in b"\t\n\r" for b in head)
        if texty >= 0.95 * len(head):
            return "the file looks like text (a .prototxt?), not a binary caffemodel"
    return ""


def _int32(value: int) -> int:
    """An unsigned 64-bit varint read as a protobuf int32 (low 32 bits, two's complement)."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def _int64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


# ----------------------------------------------------------------------------- blob parsing

# (byte offset, number of values, byte stride between values)
_Segment = tuple[int, int, int]


@dataclass
class _BlobFields:
    """What one BlobProto said, before validation."""

    pos: int
    where: str
    legacy: dict[int, int] = field(default_factory=dict)
    dims: list[int] = field(default_factory=list)
    floats: list[_Segment] = field(default_factory=list)
    doubles: list[_Segment] = field(default_factory=list)
    raw: tuple[int, int] | None = None
    raw_type: int | None = None


@dataclass(frozen=True)
class _BlobPlan:
    """A validated blob: where its values are; no array made yet."""

    shape: tuple[int, ...]
    legacy: bool
    dtype: str
    segments: tuple[_Segment, ...]


def _parse_blob(wire: _Wire, start: int, end: int, where: str) -> _BlobPlan:
    blob = _BlobFields(pos=start, where=where)

    def visit(number: int, kind: int, tag_pos: int, pos: int) -> int:
        if number <= 4:
            value, pos = wire.varint(pos, end)
            blob.legacy[number] = _int32(value)
            return pos
        if number == 7:
            s, e = wire.length(pos, end)
            wire.walk(s, e, _SHAPE_FIELDS, "BlobShape", lambda *a: _shape_field(wire, blob, e, *a))
            return e
        if number in (5, 6, 8, 9):  # data, diff, double_data, double_diff (diffs are dropped)
            width = 4 if number in (5, 6) else 8
            target = {5: blob.floats, 8: blob.doubles}.get(number, [])
            return _value_field(wire, target, width, kind, tag_pos, pos, end)
        if number == 10:
            value, pos = wire.varint(pos, end)
            blob.raw_type = _int32(value)
            return pos
        if number == 12:
            blob.raw = wire.length(pos, end)
            return blob.raw[1]
        return wire.skip(number, kind, pos, end)

    wire.walk(start, end, _BLOB_FIELDS, f"{where} BlobProto", visit)
    return _plan_blob(wire, blob)


def _shape_field(wire: _Wire, blob: _BlobFields, end: int, number: int, kind: int,
                 tag_pos: int, pos: int) -> int:
    """BlobShape.dim, packed or not; repeated occurrences concatenate (protobuf merge)."""
    if kind == _VARINT:
        value, pos = wire.varint(pos, end)
        blob.dims.append(_int64(value))
    else:
        s, pos = wire.length(pos, end)
        if pos - s > 10 * _MAX_AXES:
            wire.fail(tag_pos, f"a packed shape of {pos - s} bytes",
                      f"at most {_MAX_AXES} dims", blob.where)
        while s < pos:
            value, s = wire.varint(s, pos)
            blob.dims.append(_int64(value))
    if len(blob.dims) > _MAX_AXES:
        wire.fail(tag_pos, f"a shape with {len(blob.dims)} axes",
                  f"at most {_MAX_AXES} axes (Caffe's kMaxBlobAxes)", blob.where)
    return pos


def _value_field(wire: _Wire, target: list[_Segment], width: int, kind: int, tag_pos: int,
                 pos: int, end: int) -> int:
    """A packed run or a run of unpacked fixed-width values; return the next pos."""
    if kind == _LEN:
        s, e = wire.length(pos, end)
        if (e - s) % width:
            wire.fail(tag_pos, f"packed {width * 8}-bit values of {e - s} bytes",
                      f"a multiple of {width} bytes")
        target.append((s, (e - s) // width, width))
        return e
    nxt = wire.fixed(pos, end, width)
    more = 0
    if pos - tag_pos == 1:  # canonical one-byte tag: take the whole run of records at once
        more = wire.same_tag_run(nxt, end, wire.buf[tag_pos], width + 1)
    target.append((pos, 1 + more, width + 1))
    return nxt + more * (width + 1)


def _blob_shape(wire: _Wire, blob: _BlobFields) -> tuple[tuple[int, ...], bool]:
    """Caffe's Blob::FromProto: any legacy dim given means the 4-D (num, channels, h, w)."""
    legacy = bool(blob.legacy)
    if legacy:
        shape = tuple(blob.legacy.get(k, 0) for k in (1, 2, 3, 4))
    else:
        shape = tuple(blob.dims)
    if any(d < 0 for d in shape):
        kind = "num/channels/height/width" if legacy else "shape"
        wire.fail(blob.pos, f"negative dims in {kind} {shape}", "dims >= 0", blob.where)
    return shape, legacy


def _plan_blob(wire: _Wire, blob: _BlobFields) -> _BlobPlan:
    shape, legacy = _blob_shape(wire, blob)
    count = math.prod(shape)
    dtype, segments, what = _blob_values(wire, blob)
    held = sum(seg[1] for seg in segments)
    if held != count:
        wire.fail(blob.pos, f"{held} {what} values for shape {shape}",
                  f"{count} values (the product of the shape)", blob.where)
    return _BlobPlan(shape, legacy, dtype, tuple(segments))


def _blob_values(wire: _Wire, blob: _BlobFields) -> tuple[str, list[_Segment], str]:
    """Pick the values as Caffe does: double_data, else data, else (NVIDIA) raw_data."""
    if sum(seg[1] for seg in blob.doubles):
        return "<f8", blob.doubles, "double_data"
    if sum(seg[1] for seg in blob.floats) or blob.raw is None:
        return "<f4", blob.floats, "data"
    if blob.raw_type not in _RAW_TYPES:
        found = "no raw_data_type" if blob.raw_type is None else f"raw_data_type {blob.raw_type}"
        wire.fail(blob.pos, f"raw_data with {found}",
                  "raw_data_type DOUBLE (0), FLOAT (1) or FLOAT16 (2)", blob.where)
    dtype = _RAW_TYPES[blob.raw_type]
    size = np.dtype(dtype).itemsize
    start, stop = blob.raw
    if (stop - start) % size:
        wire.fail(start, f"raw_data of {stop - start} bytes",
                  f"a multiple of {size} bytes for {np.dtype(dtype).name}", blob.where)
    return dtype, [(start, (stop - start) // size, size)], f"raw_data {np.dtype(dtype).name}"


def _make_blob(buf: Buffer, plan: _BlobPlan) -> CaffeBlob:
    """The array of a validated blob: a view of ``buf`` when its values are in one run."""
    parts = [np.ndarray((n,), plan.dtype, buf, off, (stride,)) for off, n, stride in
             plan.segments if n]
    if not parts:
        data = np.zeros(0, plan.dtype)
    else:
        data = parts[0] if len(parts) == 1 else np.concatenate(parts)
    data.flags.writeable = False  # also for views of a writable buffer: one rule for all
    return CaffeBlob(plan.shape, data.reshape(plan.shape), plan.legacy)


# ----------------------------------------------------------------------------- layers and net


@dataclass
class _LayerFields:
    """One layer as read: name, type and blob plans."""

    where: str
    name: str = ""
    type: str = ""
    blobs: list[_BlobPlan] = field(default_factory=list)
    v0: _LayerFields | None = None

    def label(self) -> str:
        return f"{self.where} '{self.name}'" if self.name else self.where

    def blob_where(self) -> str:
        return f"{self.label()} blob {len(self.blobs)}"


def _parse_v2_layer(wire: _Wire, start: int, end: int, index: int) -> _LayerFields:
    layer = _LayerFields(where=f"layer[{index}]")

    def visit(number: int, kind: int, tag_pos: int, pos: int) -> int:
        s, e = wire.length(pos, end)
        if number == 1:
            layer.name = wire.text(s, e)
        elif number == 2:
            layer.type = wire.text(s, e)
        else:
            layer.blobs.append(_parse_blob(wire, s, e, layer.blob_where()))
        return e

    wire.walk(start, end, _V2_FIELDS, f"{layer.where} LayerParameter", visit)
    return layer


def _parse_v1_layer(wire: _Wire, start: int, end: int, index: int) -> _LayerFields:
    layer = _LayerFields(where=f"layers[{index}]")

    def visit(number: int, kind: int, tag_pos: int, pos: int) -> int:
        if number == 5:
            value, pos = wire.varint(pos, end)
            number = _int32(value)
            layer.type = V1_LAYER_TYPES.get(number, f"V1LayerType({number})")
            return pos
        s, e = wire.length(pos, end)
        if number == 4:
            layer.name = wire.text(s, e)
        elif number == 6:
            layer.blobs.append(_parse_blob(wire, s, e, layer.blob_where()))
        else:
            layer.v0 = layer.v0 or _LayerFields(where=f"{layer.where}.layer")
            _parse_v0_layer(wire, s, e, layer.v0)
        return e

    wire.walk(start, end, _V1_FIELDS, f"{layer.where} V1LayerParameter", visit)
    return layer


def _parse_v0_layer(wire: _Wire, start: int, end: int, layer: _LayerFields) -> None:
    """V0LayerParameter fields merge into ``layer`` (a repeated sub-message merges)."""

    def visit(number: int, kind: int, tag_pos: int, pos: int) -> int:
        s, e = wire.length(pos, end)
        if number == 1:
            layer.name = wire.text(s, e)
        elif number == 2:
            text = wire.text(s, e)
            layer.type = V0_LAYER_TYPES.get(text, text)
        else:
            layer.blobs.append(_parse_blob(wire, s, e, layer.blob_where()))
        return e

    wire.walk(start, end, _V0_FIELDS, f"{layer.where} V0LayerParameter", visit)


@dataclass
class _NetFields:
    name: str = ""
    v2: list[_LayerFields] = field(default_factory=list)
    v1: list[_LayerFields] = field(default_factory=list)


def _parse_net(wire: _Wire) -> _NetFields:
    net = _NetFields()
    end = wire.size

    def visit(number: int, kind: int, tag_pos: int, pos: int) -> int:
        s, e = wire.length(pos, end)
        if number == 1:
            net.name = wire.text(s, e)
        elif number == 100:
            net.v2.append(_parse_v2_layer(wire, s, e, len(net.v2)))
        else:
            net.v1.append(_parse_v1_layer(wire, s, e, len(net.v1)))
        return e

    wire.walk(0, end, _NET_FIELDS, "NetParameter", visit)
    return net


def _net_format(net: _NetFields) -> Format:
    if net.v2:
        return "V2"
    return "V0" if any(layer.v0 is not None for layer in net.v1) else "V1"


def _make_layer(buf: Buffer, layer: _LayerFields) -> CaffeLayerBlobs:
    chosen = layer.v0 if layer.v0 is not None else layer  # Caffe upgrades V0 from the V0 part
    blobs = tuple(_make_blob(buf, plan) for plan in chosen.blobs)
    return CaffeLayerBlobs(chosen.name, chosen.type, blobs)


# ----------------------------------------------------------------------------- public readers


def parse_caffemodel(buf: Buffer, *, source: str = "<buffer>") -> CaffeModel:
    """Parse a serialized NetParameter held in memory; blobs are read-only views of ``buf``."""
    if isinstance(buf, memoryview):
        buf = buf.cast("B") if buf.format != "B" or buf.ndim != 1 else buf
    wire = _Wire(buf, source)
    if wire.size == 0:
        wire.fail(0, "an empty file (0 bytes)", "a binary caffe.NetParameter")
    net = _parse_net(wire)
    if not net.v2 and not net.v1:
        wire.fail(0, f"a valid protobuf message of {wire.size} bytes without any layer",
                  "NetParameter.layer (field 100) or .layers (field 2) entries")
    layers = tuple(_make_layer(buf, layer) for layer in net.v2 + net.v1)
    return CaffeModel(source, net.name, _net_format(net), layers)


def read_caffemodel(path: PathLike) -> CaffeModel:
    """Read a .caffemodel (memory-mapped, zero-copy) or a .caffemodel.h5 (needs h5py)."""
    source = os.fspath(path)
    if source.lower().endswith(_H5_SUFFIXES):
        return _read_hdf5(source)
    buf = _map_file(source)
    if bytes(buf[:8]) == _H5_MAGIC:
        return _read_hdf5(source)
    return parse_caffemodel(buf, source=source)


def read_blobproto(path: PathLike) -> np.ndarray:
    """Read a single serialized BlobProto (e.g. a mean.binaryproto) as a read-only array."""
    source = os.fspath(path)
    buf = _map_file(source)
    wire = _Wire(buf, source)
    if wire.size == 0:
        wire.fail(0, "an empty file (0 bytes)", "a binary caffe.BlobProto")
    plan = _parse_blob(wire, 0, wire.size, "BlobProto")
    return _make_blob(buf, plan).data


def release_pages(values: np.ndarray) -> None:
    """Drop from this process the whole pages of a mapped weights file that ``values`` (a blob
    view from read_caffemodel, or part of one) covers, once they have been copied: memory then
    holds the copy but not the file as well, so a model loads in about its size, not twice it.
    The pages stay in the page cache and reading ``values`` again maps them back in (the map is
    shared and read-only). Any other array is left alone."""
    base = values.base
    while isinstance(base, np.ndarray):
        base = base.base
    if not isinstance(base, mmap.mmap) or not hasattr(mmap, "MADV_DONTNEED") \
            or not values.flags.c_contiguous or values.nbytes == 0:
        return
    start = np.frombuffer(base, np.uint8, count=1).__array_interface__["data"][0]
    first = values.__array_interface__["data"][0] - start
    page = mmap.PAGESIZE
    low, high = -(-first // page) * page, (first + values.nbytes) // page * page
    if high > low:
        base.madvise(mmap.MADV_DONTNEED, low, high - low)


def _map_file(path: str) -> Buffer:
    """Map a regular file read-only (empty files and special files are read instead)."""
    try:
        with open(path, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode) or info.st_size == 0:
                return handle.read()
            return mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as err:
        raise CaffemodelError(f"{path}: cannot read weights: "
                              f"{err.strerror or err}; expected a readable .caffemodel "
                              "file") from None


# ----------------------------------------------------------------------------- HDF5


def _import_h5py(path: str) -> Any:
    try:
        import h5py
    except ImportError as exc:
        raise CaffemodelError(f"{path}: HDF5 weights need the h5py package, which is not "
                              f"installed; expected 'pip install h5py'") from exc
    return h5py


def _read_hdf5(path: str) -> CaffeModel:
    """Net::ToHDF5 layout: /data/<layer name>/<blob index> (the layer type is not stored)."""
    h5py = _import_h5py(path)
    os.stat(path)  # a missing file raises FileNotFoundError, as for .caffemodel files
    try:
        with h5py.File(path, "r") as h5:
            data = h5.get("data")
            if not isinstance(data, h5py.Group):
                raise CaffemodelError(f"{path}: no /data group; expected Caffe's HDF5 layout "
                                      f"/data/<layer name>/<blob index>")
            layers = tuple(_hdf5_layer(h5py, path, name, group) for name, group in data.items())
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise CaffemodelError(f"{path}: cannot read the HDF5 weights: {exc}") from exc
    return CaffeModel(path, "", "HDF5", layers)


def _hdf5_layer(h5py: Any, path: str, name: str, group: object) -> CaffeLayerBlobs:
    where = f"{path}: /data/{name}"
    if not isinstance(group, h5py.Group):
        raise CaffemodelError(f"{where} is a dataset; expected a group of blobs")
    keys = list(group.keys())
    if sorted(keys) != sorted(str(i) for i in range(len(keys))):
        raise CaffemodelError(f"{where} holds {sorted(keys)}; expected datasets named 0..n-1 "
                              f"(a parameter shared with another layer is not supported)")
    blobs = []
    for i in range(len(keys)):
        item = group[str(i)]
        if not isinstance(item, h5py.Dataset) or item.dtype.kind != "f":
            found = item.dtype if isinstance(item, h5py.Dataset) else "a group"
            raise CaffemodelError(f"{where}/{i} is {found}; expected a float dataset")
        array = np.asarray(item[()])
        blobs.append(CaffeBlob(tuple(int(d) for d in array.shape), array, False))
    return CaffeLayerBlobs(name, "", tuple(blobs))


def _write_hdf5(path: str, layers: BlobsIn, dtype: str) -> None:
    h5py = _import_h5py(path)
    target = {"float": "<f4", "double": "<f8", "half": "<f2"}[dtype]
    with h5py.File(path, "w") as h5:
        data = h5.create_group("data", track_order=True)
        for name, _type, blobs in layers:
            if not name or "/" in name or name == ".":
                raise ValueError(f"layer name {name!r} cannot be an HDF5 group name")
            group = data.create_group(name, track_order=True)
            for i, array in enumerate(blobs):
                group.create_dataset(str(i), data=_as_values(array, name, i).astype(target))


# ----------------------------------------------------------------------------- writer


def _varint_bytes(value: int) -> bytes:
    value &= _U64
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _key(number: int, wire: int) -> bytes:
    return _varint_bytes(number << 3 | wire)


def _len_field(number: int, payload: bytes) -> bytes:
    return _key(number, _LEN) + _varint_bytes(len(payload)) + payload


def _as_values(array: object, layer: str, index: int) -> np.ndarray:
    values = np.asarray(array)
    if values.dtype.kind not in "fiub":
        raise TypeError(f"layer {layer!r} blob {index}: dtype {values.dtype}; expected real "
                        f"numbers")
    return values


def _encode_blob(array: object, layer: str, index: int, fmt: str,
                 dtype: str) -> tuple[bytes, np.ndarray]:
    """A BlobProto as (header bytes, values); the values end the message."""
    values = _as_values(array, layer, index)
    if fmt == "V1":
        if values.ndim > 4:
            raise ValueError(f"layer {layer!r} blob {index}: shape {values.shape} has "
                             f"{values.ndim} axes; the V1 format takes at most 4")
        dims = (1,) * (4 - values.ndim) + values.shape
        head = b"".join(_key(n, _VARINT) + _varint_bytes(d) for n, d in zip((1, 2, 3, 4), dims))
    else:
        dims = b"".join(_varint_bytes(d) for d in values.shape)
        head = _len_field(7, _len_field(1, dims)) if dims else b""  # 0-d: no shape, as Caffe
    if dtype == "half":
        payload = np.ascontiguousarray(values, "<f2").reshape(-1)
        head += _key(10, _VARINT) + _varint_bytes(2) + _key(12, _LEN)
    else:
        code, number = ("<f8", 8) if dtype == "double" else ("<f4", 5)
        payload = np.ascontiguousarray(values, code).reshape(-1)
        head += _key(number, _LEN) if payload.size else b""
    if payload.size or dtype == "half":
        head += _varint_bytes(payload.nbytes)
    return head, payload


def _layer_head(name: str, ltype: str, fmt: str) -> bytes:
    if fmt == "V2":
        return _len_field(1, name.encode()) + _len_field(2, ltype.encode())
    if ltype not in _V2_TO_V1:
        raise ValueError(f"layer {name!r}: type {ltype!r} has no V1 LayerType enum; expected "
                         f"one of {sorted(t for t in _V2_TO_V1 if t)}")
    return _len_field(4, name.encode()) + _key(5, _VARINT) + _varint_bytes(_V2_TO_V1[ltype])


def _write_layer(out: IO[bytes], name: str, ltype: str, blobs: Sequence[np.ndarray], fmt: str,
                 dtype: str) -> None:
    head = _layer_head(name, ltype, fmt)
    encoded = [_encode_blob(b, name, i, fmt, dtype) for i, b in enumerate(blobs)]
    blob_key = _key(7 if fmt == "V2" else 6, _LEN)
    sizes = [len(h) + p.nbytes for h, p in encoded]
    total = len(head) + sum(len(blob_key) + len(_varint_bytes(s)) + s for s in sizes)
    out.write(_key(100 if fmt == "V2" else 2, _LEN) + _varint_bytes(total) + head)
    for (blob_head, payload), size in zip(encoded, sizes):
        out.write(blob_key + _varint_bytes(size) + blob_head)
        if payload.size:
            out.write(payload.view(np.uint8))


def write_caffemodel(path: PathLike, layers: BlobsIn, *, name: str = "",
                     format: Literal["V2", "V1"] = "V2",  # noqa: A002 - Caffe's own word
                     dtype: Literal["float", "double", "half"] = "float",
                     extra_net_bytes: bytes = b"") -> None:
    """Write ``(layer name, V2 type, blobs)`` entries as a caffemodel (or .h5 by suffix).

    ``format="V2"``: ``layer`` entries, blobs with ``shape``. ``format="V1"``: ``layers`` entries
    with the V1 type enum and legacy num/channels/height/width dims (left-padded with 1s);
    blob-less Input layers are left out there (V1 nets declare inputs as net fields).
    ``dtype``: ``"float"`` (``data``), ``"double"`` (``double_data``) or ``"half"`` (NVIDIA
    ``raw_data`` FLOAT16). ``extra_net_bytes`` (serialized NetParameter fields) is appended.
    The file is written beside ``path`` and renamed over it, so maps of the old file stay valid.
    """
    target = os.fspath(path)
    if format not in ("V2", "V1") or dtype not in ("float", "double", "half"):
        raise ValueError(f"format={format!r}, dtype={dtype!r}; expected format 'V2' or 'V1' "
                         f"and dtype 'float', 'double' or 'half'")
    if target.lower().endswith(_H5_SUFFIXES):
        _write_hdf5(target, layers, dtype)
        return
    folder, base = os.path.split(os.path.abspath(target))
    temp = os.path.join(folder, f".{base}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(temp, "xb", buffering=1 << 20) as out:
            if name:
                out.write(_len_field(1, name.encode()))
            for layer_name, layer_type, blobs in layers:
                if format == "V1" and layer_type == "Input" and not len(blobs):
                    continue  # V1 nets declare inputs as net fields, not as a layer
                _write_layer(out, layer_name, layer_type, blobs, format, dtype)
            out.write(bytes(extra_net_bytes))
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
