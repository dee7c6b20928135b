"""Typed IR → protobuf text format, byte-identical to Caffe's ``DebugString``.

Caffe prints nets with protobuf's text printer (init logs, ``upgrade_net_proto_text``):
fields in field-number order, two-space indent, floats by ``SimpleFtoa`` (shortest of
``%.6g``/``%.9g`` that round-trips float32), doubles by ``SimpleDtoa``
(``%.15g``/``%.17g``).  ``netdef fmt`` and ``report --caffe-log`` use this printer.
"""
from __future__ import annotations

import math
import struct
from typing import Any

from netdef.ir.schema import FieldSpec, ProtoEnum, is_message_class, present


def format_float32(v: float) -> str:
    """protobuf's SimpleFtoa: the shortest %g form that reads back as the same float32."""
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    f = _to_f32(v)
    s = "%.6g" % f
    if _to_f32(float(s)) != f:
        s = "%.9g" % f
    return s


def format_double(v: float) -> str:
    """protobuf's SimpleDtoa."""
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    s = "%.15g" % v
    if float(s) != v:
        s = "%.17g" % v
    return s


def _to_f32(v: float) -> float:
    return struct.unpack("<f", struct.pack("<f", v))[0]


_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", '"': '\\"', "'": "\\'", "\\": "\\\\"}


def escape(s: str | bytes) -> str:
    """C-style escaping as protobuf's printer does (printable UTF-8 kept)."""
    if isinstance(s, bytes):
        return "".join(_ESCAPES.get(chr(b), chr(b) if 32 <= b < 127 else "\\%03o" % b)
                       for b in s)
    out = []
    for ch in s:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 32 or ord(ch) == 127:
            out.append("\\%03o" % ord(ch))
        else:
            out.append(ch)
    return "".join(out)


def format_scalar(spec: FieldSpec, v: Any) -> str:
    t = spec.type
    if isinstance(v, ProtoEnum):
        return v.name
    if t == "float":
        return format_float32(float(v))
    if t == "double":
        return format_double(float(v))
    if t == "bool":
        return "true" if v else "false"
    if t in ("string", "bytes"):
        return f'"{escape(v)}"'
    return str(int(v))


def to_text(msg: Any, indent: int = 0) -> str:
    """The message as protobuf text (ends with a newline unless empty)."""
    lines: list[str] = []
    _emit(msg, indent, lines)
    return "".join(line + "\n" for line in lines)


def _emit(msg: Any, indent: int, lines: list[str]) -> None:
    pad = " " * indent
    for spec, value in present(msg):
        values = value if spec.repeated else (value,)
        if spec.repeated and hasattr(value, "dtype"):  # numpy payloads from the wire codec
            values = tuple(float(x) for x in value)
        for v in values:
            if is_message_class(type(v)):
                lines.append(f"{pad}{spec.name} {{")
                _emit(v, indent + 2, lines)
                lines.append(f"{pad}}}")
            else:
                lines.append(f"{pad}{spec.name}: {format_scalar(spec, v)}")
