"""Fields of a prototxt that the schema does not know: found, kept as text, read back as blocks.

Forks add parameter messages (``interp_param { ... }``) and fields inside known messages that no
single schema can hold. :func:`find_unparsed` walks protobuf's own tokenizer over the text
alongside the schema's descriptors and returns every field the schema lacks, with its source text
and line; :class:`ParamBlock` gives a converter typed access to such a block's values.
"""
from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import descriptor as _descriptor
from google.protobuf import text_encoding, text_format

from caffe2torch.errors import PrototxtError

_MESSAGE = _descriptor.FieldDescriptor.TYPE_MESSAGE
_GROUP = _descriptor.FieldDescriptor.TYPE_GROUP
_INT = re.compile(r"[-+]?(0[xX][0-9a-fA-F]+|\d+)$")
_TRUE, _FALSE = {"true", "True", "t"}, {"false", "False", "f"}


@dataclass
class TextField:
    """One ``name: value`` or ``name { ... }`` of a text prototxt, as written."""

    name: str
    line: int
    value: str | None = None  # the scalar's source token(s); None for a message
    children: list[TextField] = field(default_factory=list)

    def render(self, indent: str = "") -> str:
        if self.value is not None:
            return f"{indent}{self.name}: {self.value}"
        inner = "\n".join(child.render(indent + "  ") for child in self.children)
        return f"{indent}{self.name} {{\n{inner}\n{indent}}}" if inner else \
            f"{indent}{self.name} {{ }}"


@dataclass
class Unparsed:
    """A field the schema lacks: which message holds it, its dotted path there, its text."""

    owner: tuple[tuple[str, int], ...]  # e.g. (("layer", 3),): the 4th `layer` of the net
    path: str
    text: str
    line: int


def scan_text(text: str, source: str = "<string>") -> list[TextField]:
    """The fields of a prototxt as a tree of :class:`TextField` (no schema needed)."""
    tokenizer = text_format.Tokenizer(text.split("\n"))
    try:
        fields = _scan_fields(tokenizer, closing=None)
    except text_format.ParseError as err:
        raise PrototxtError(f"{source}: {err}") from None
    return fields


def _line(tokenizer: text_format.Tokenizer) -> int:
    return getattr(tokenizer, "_line", -1) + 1


def _scan_fields(tokenizer: text_format.Tokenizer, closing: str | None) -> list[TextField]:
    fields: list[TextField] = []
    while not tokenizer.AtEnd() and not (closing and tokenizer.LookingAt(closing)):
        line = _line(tokenizer)
        if tokenizer.TryConsume("["):  # an extension or Any name: [a.b.c]
            name = "[" + tokenizer.ConsumeIdentifierOrNumber()
            while tokenizer.TryConsume(".") or tokenizer.TryConsume("/"):
                name += "." + tokenizer.ConsumeIdentifierOrNumber()
            tokenizer.Consume("]")
            name += "]"
        else:
            name = tokenizer.ConsumeIdentifierOrNumber()
        has_colon = tokenizer.TryConsume(":")
        if tokenizer.LookingAt("[") and has_colon:
            fields += _scan_list(tokenizer, name, line)
        elif tokenizer.LookingAt("{") or tokenizer.LookingAt("<"):
            fields.append(_scan_message(tokenizer, name, line))
        elif has_colon:
            fields.append(TextField(name, line, value=_scan_value(tokenizer)))
        else:
            raise tokenizer.ParseError(f'expected ":" or "{{" after "{name}"')
        if not tokenizer.TryConsume(","):
            tokenizer.TryConsume(";")
    return fields


def _scan_message(tokenizer: text_format.Tokenizer, name: str, line: int) -> TextField:
    closing = "}" if tokenizer.TryConsume("{") else (tokenizer.Consume("<") or ">")
    children = _scan_fields(tokenizer, closing)
    tokenizer.Consume(closing)
    return TextField(name, line, children=children)


def _scan_list(tokenizer: text_format.Tokenizer, name: str, line: int) -> list[TextField]:
    tokenizer.Consume("[")
    items: list[TextField] = []
    while not tokenizer.TryConsume("]"):
        if tokenizer.LookingAt("{") or tokenizer.LookingAt("<"):
            items.append(_scan_message(tokenizer, name, line))
        else:
            items.append(TextField(name, line, value=_scan_value(tokenizer)))
        if not tokenizer.LookingAt("]"):
            tokenizer.Consume(",")
    return items


def _scan_value(tokenizer: text_format.Tokenizer) -> str:
    token = tokenizer.token
    if token[:1] in ("'", '"'):
        raw = tokenizer.ConsumeByteString()
        return '"' + text_encoding.CEscape(raw, as_utf8=True) + '"'
    sign = "-" if tokenizer.TryConsume("-") else ""
    token = tokenizer.token
    if not token or token in "{}<>[]:,;":
        raise tokenizer.ParseError(f"expected a value, found {token!r}")
    tokenizer.NextToken()
    return sign + token


def find_unparsed(fields: list[TextField], descriptor: _descriptor.Descriptor,
                  stop_at: frozenset[str]) -> list[Unparsed]:
    """Every field in ``fields`` that ``descriptor`` (recursively) lacks.

    Messages whose full names are in ``stop_at`` (the layer messages) become owners: a field
    unknown anywhere inside one is reported relative to it, with the owner's position.
    """
    found: list[Unparsed] = []
    _walk(fields, descriptor, (), "", stop_at, found)
    return found


def _walk(fields: list[TextField], descriptor: _descriptor.Descriptor,
          owner: tuple[tuple[str, int], ...], prefix: str, stop_at: frozenset[str],
          found: list[Unparsed]) -> None:
    counts: dict[str, int] = {}
    for item in fields:
        known = descriptor.fields_by_name.get(item.name)
        if known is None:
            found.append(Unparsed(owner, prefix + item.name, item.render(), item.line))
            continue
        index = counts.get(item.name, 0)
        counts[item.name] = index + 1
        if known.type not in (_MESSAGE, _GROUP) or item.value is not None:
            continue
        child = known.message_type
        if child.full_name in stop_at:
            _walk(item.children, child, owner + ((item.name, index),), "", stop_at, found)
        else:
            _walk(item.children, child, owner, f"{prefix}{item.name}.", stop_at, found)


def close_field(path: str, descriptor: _descriptor.Descriptor) -> str | None:
    """The field of the message at ``path`` (dotted, below ``descriptor``) whose name is
    closest to the path's last part: ``convolution_parm`` -> ``convolution_param``."""
    *parents, name = path.split(".")
    for parent in parents:
        known = descriptor.fields_by_name.get(parent)
        if known is None or known.message_type is None:
            return None
        descriptor = known.message_type
    matches = difflib.get_close_matches(name, list(descriptor.fields_by_name), n=1, cutoff=0.88)
    return matches[0] if matches else None


class ParamBlock:
    """Read-only, typed access to a parameter block the schema does not define.

    ``block.get("beta", 1.0)`` gives the last value of ``beta`` converted to the default's type
    (the default when absent); ``get_all`` gives every value of a repeated field; nested blocks
    are ParamBlocks. Values without a default are read as Caffe's text format writes them: int,
    float, bool, str (quoted strings and enum names alike).
    """

    def __init__(self, name: str, fields: list[TextField], line: int = 0,
                 source: str = "<net>") -> None:
        self.name = name
        self.line = line
        self.source = source
        self._fields = fields

    def __contains__(self, name: object) -> bool:
        return any(f.name == name for f in self._fields)

    def __iter__(self) -> Iterator[str]:
        seen: dict[str, None] = {}
        for f in self._fields:
            seen.setdefault(f.name)
        return iter(seen)

    def __bool__(self) -> bool:
        return bool(self._fields)

    def __repr__(self) -> str:
        return f"ParamBlock({self.name!r}, fields={list(self)})"

    def get(self, name: str, default: Any = None) -> Any:
        values = self.get_all(name, type(default) if default is not None else None)
        return values[-1] if values else default

    def get_all(self, name: str, kind: type | None = None) -> list[Any]:
        return [self._convert(f, kind) for f in self._fields if f.name == name]

    def block(self, name: str) -> ParamBlock:
        """The nested block ``name`` (an empty one if absent, so ``get`` gives defaults)."""
        blocks = [f for f in self._fields if f.name == name]
        if not blocks:
            return ParamBlock(f"{self.name}.{name}", [], self.line, self.source)
        return self._convert(blocks[-1], ParamBlock)

    def _convert(self, item: TextField, kind: type | None) -> Any:
        where = f"{self.source}:{item.line}: {self.name}.{item.name}"
        if item.value is None:
            if kind not in (None, ParamBlock):
                raise PrototxtError(f"{where} is a block; expected a {kind.__name__} value")
            return ParamBlock(f"{self.name}.{item.name}", item.children, item.line, self.source)
        if kind is ParamBlock:
            raise PrototxtError(f"{where} is the value {item.value}; expected a block {{ ... }}")
        return _scalar(item.value, kind, where)


def _scalar(text: str, kind: type | None, where: str) -> Any:
    if text.startswith('"'):
        value: Any = text_encoding.CUnescape(text[1:-1]).decode("utf-8", "replace")
        if kind in (None, str):
            return value
        raise PrototxtError(f"{where} is the string {text}; expected a {kind.__name__}")
    if kind is bool or (kind is None and text in _TRUE | _FALSE):
        if text in _TRUE or text == "1":
            return True
        if text in _FALSE or text == "0":
            return False
        raise PrototxtError(f"{where} is {text}; expected true or false")
    is_int = bool(_INT.match(text))
    try:
        if kind is int or (kind is None and is_int):
            if not is_int:
                raise ValueError
            return int(text, 0)
        if kind is float or kind is None:
            number = float(text.rstrip("fF")) if not is_int else float(int(text, 0))
            return number
    except ValueError:
        if kind is None:
            return text  # an enum name
        raise PrototxtError(f"{where} is {text}; expected a {kind.__name__}") from None
    if kind is str:
        return text  # an enum name read as a string
    raise PrototxtError(f"{where} is {text}; expected a {kind.__name__}")


def unparsed_block(entries, source: str = "<net>") -> ParamBlock:
    """The unknown fields of one layer (``LayerParameter.unparsed``) as one tree: top-level
    unknown blocks by name, fields unknown inside known messages under that message's name."""
    root: list[TextField] = []
    for entry in entries:
        parents = entry.path.split(".")[:-1]
        fields = scan_text(entry.text, source)
        for item in fields:
            _shift(item, entry.line - 1)
        _insert(root, parents, fields, entry.line)
    return ParamBlock("", root, 0, source)


def _shift(item: TextField, offset: int) -> None:
    """Move a re-scanned field's line numbers to where it sat in the original file."""
    item.line += offset
    for child in item.children:
        _shift(child, offset)


def _insert(root: list[TextField], parents: list[str], fields: list[TextField], line: int) -> None:
    level = root
    for name in parents:
        holder = next((f for f in level if f.name == name and f.value is None), None)
        if holder is None:
            holder = TextField(name, line)
            level.append(holder)
        level = holder.children
    level.extend(fields)
