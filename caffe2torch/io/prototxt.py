"""Read a Caffe network definition (text format) into a ``NetParameter``."""
from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

from google.protobuf import text_format

from caffe2torch.errors import PrototxtError
from caffe2torch.io.textblocks import find_unparsed, scan_text
from caffe2torch.proto import caffe_pb2

PathLike = str | os.PathLike[str]


_UNKNOWN_FIELD = "has no field named"
_LAYER_MESSAGES = frozenset({caffe_pb2.LayerParameter.DESCRIPTOR.full_name,
                             caffe_pb2.V1LayerParameter.DESCRIPTOR.full_name})


def parse_prototxt(text: str, source: str = "<string>") -> caffe_pb2.NetParameter:
    """Parse prototxt ``text``; a syntax error names ``source:line:column``.

    Fields the schema does not know (a fork's ``interp_param { ... }``) do not stop the parse:
    each is kept, as its text and line, in the ``unparsed`` list of the layer (or net) holding
    it, so that the build reports it by name and a custom converter can read it.
    """
    net = caffe_pb2.NetParameter()
    try:
        text_format.Parse(text, net, allow_unknown_extension=False)
    except text_format.ParseError as err:
        if _UNKNOWN_FIELD not in str(err):
            _raise_parse_error(err, source)
        net = _parse_keeping_unknown_fields(text, source)
    return net


def _parse_keeping_unknown_fields(text: str, source: str) -> caffe_pb2.NetParameter:
    net = caffe_pb2.NetParameter()
    try:
        text_format.Parse(text, net, allow_unknown_extension=False, allow_unknown_field=True)
    except text_format.ParseError as err:
        _raise_parse_error(err, source)
    fields = scan_text(text, source)
    for found in find_unparsed(fields, net.DESCRIPTOR, _LAYER_MESSAGES):
        owner = net
        for name, index in found.owner:
            owner = getattr(owner, name)[index]
        owner.unparsed.add(path=found.path, text=found.text, line=found.line)
    return net


def _raise_parse_error(err: text_format.ParseError, source: str) -> NoReturn:
    line, column = err.GetLine(), err.GetColumn()
    message = str(err)
    prefix = f"{line}:{column} : "
    if message.startswith(prefix):
        message = message[len(prefix):]
    where = f"{source}:{line}:{column}" if line else source
    raise PrototxtError(f"{where}: {message}") from None


def read_prototxt(path: PathLike) -> caffe_pb2.NetParameter:
    """Read and parse a ``.prototxt`` file (not yet upgraded to the V2 layer format)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise PrototxtError(f"{path}: cannot read network definition: {err.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise PrototxtError(
            f"{path}: not a text prototxt (byte {err.start} is not UTF-8); "
            "expected a Caffe network definition in protobuf text format"
        ) from None
    return parse_prototxt(text, str(path))
