"""Read a Caffe network definition (text format) into a ``NetParameter``."""
from __future__ import annotations

import os
from pathlib import Path

from google.protobuf import text_format

from caffe2torch.errors import PrototxtError
from caffe2torch.proto import caffe_pb2

PathLike = str | os.PathLike[str]


def parse_prototxt(text: str, source: str = "<string>") -> caffe_pb2.NetParameter:
    """Parse prototxt ``text``; a syntax error names ``source:line:column``."""
    net = caffe_pb2.NetParameter()
    try:
        text_format.Parse(text, net, allow_unknown_extension=False)
    except text_format.ParseError as err:
        line, column = err.GetLine(), err.GetColumn()
        message = str(err)
        prefix = f"{line}:{column} : "
        if message.startswith(prefix):
            message = message[len(prefix):]
        where = f"{source}:{line}:{column}" if line else source
        raise PrototxtError(f"{where}: {message}") from None
    return net


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
