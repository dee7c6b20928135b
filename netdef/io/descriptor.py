"""Google-protobuf message classes generated from netdef's schema, not from caffe.proto.

Tests and benchmarks compare netdef's codec with Google's ``text_format`` and binary
parser; building the ``FileDescriptorProto`` from the dataclasses avoids shipping a copy
of caffe.proto or a protoc-generated ``caffe_pb2`` (and tests the schema once more).
Classes live in a private descriptor pool, so they never clash with a real ``caffe_pb2``.
"""
from __future__ import annotations

import enum
import functools
import math
from typing import Any, Iterable

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from netdef.ir.schema import FieldSpec, ProtoEnum, fields_of, is_message_class

__all__ = ["file_descriptor", "message_classes", "message_class"]

PACKAGE = "caffe"
_FDP = descriptor_pb2.FieldDescriptorProto
_SCALAR = {
    "double": _FDP.TYPE_DOUBLE, "float": _FDP.TYPE_FLOAT, "int32": _FDP.TYPE_INT32,
    "int64": _FDP.TYPE_INT64, "uint32": _FDP.TYPE_UINT32, "uint64": _FDP.TYPE_UINT64,
    "sint32": _FDP.TYPE_SINT32, "sint64": _FDP.TYPE_SINT64, "fixed32": _FDP.TYPE_FIXED32,
    "fixed64": _FDP.TYPE_FIXED64, "bool": _FDP.TYPE_BOOL, "string": _FDP.TYPE_STRING,
    "bytes": _FDP.TYPE_BYTES,
}
_LABEL = {"optional": _FDP.LABEL_OPTIONAL, "required": _FDP.LABEL_REQUIRED,
          "repeated": _FDP.LABEL_REPEATED}


def _all_messages() -> list[type]:
    """Every message class reachable from ``netdef.ir.messages``, in a stable order."""
    import netdef.ir.messages as M

    seen: dict[type, None] = {}

    def walk(cls: type) -> None:
        if cls in seen:
            return
        seen[cls] = None
        for spec in fields_of(cls).values():
            if spec.is_message:
                walk(spec.type)

    for value in vars(M).values():
        if is_message_class(value):
            walk(value)
    return list(seen)


def _enums_of(cls: type) -> list[type[ProtoEnum]]:
    """Enums declared inside ``cls`` (caffe.proto's nested enums)."""
    return [v for v in vars(cls).values()
            if isinstance(v, type) and issubclass(v, ProtoEnum) and v is not ProtoEnum]


def _full_name(t: type) -> str:
    return f".{PACKAGE}.{t.__qualname__}"


def _default_text(spec: FieldSpec) -> str:
    v = spec.default
    if spec.is_enum:
        return v.name
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        if math.isinf(v) or math.isnan(v):
            return "nan" if math.isnan(v) else "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, bytes):
        return "".join(chr(b) if 32 <= b < 127 and b != 92 else f"\\{b:03o}" for b in v)
    return str(v)


def _field(spec: FieldSpec) -> descriptor_pb2.FieldDescriptorProto:
    f = _FDP(name=spec.name, number=spec.number, label=_LABEL[spec.label])
    if spec.is_message:
        f.type, f.type_name = _FDP.TYPE_MESSAGE, _full_name(spec.type)
    elif spec.is_enum:
        f.type, f.type_name = _FDP.TYPE_ENUM, _full_name(spec.type)
    else:
        f.type = _SCALAR[spec.type]
    if spec.explicit_default and not spec.repeated:
        f.default_value = _default_text(spec)
    if spec.packed:
        f.options.packed = True
    return f


def _enum(e: type[enum.IntEnum]) -> descriptor_pb2.EnumDescriptorProto:
    d = descriptor_pb2.EnumDescriptorProto(name=e.__name__)
    for member in e:
        d.value.add(name=member.name, number=int(member))
    return d


def file_descriptor(messages: Iterable[type] | None = None) -> descriptor_pb2.FileDescriptorProto:
    """A proto2 ``FileDescriptorProto`` (package ``caffe``) for netdef's messages."""
    classes = list(messages) if messages is not None else _all_messages()
    fdp = descriptor_pb2.FileDescriptorProto(name="netdef/caffe.proto", package=PACKAGE,
                                             syntax="proto2")
    top_enums: dict[type, None] = {}
    for cls in classes:
        m = fdp.message_type.add(name=cls.__name__)
        nested = _enums_of(cls)
        m.enum_type.extend(_enum(e) for e in nested)
        for spec in fields_of(cls).values():
            m.field.append(_field(spec))
            if spec.is_enum and spec.type not in nested and "." not in spec.type.__qualname__:
                top_enums[spec.type] = None
    fdp.enum_type.extend(_enum(e) for e in top_enums)
    return fdp


@functools.lru_cache(maxsize=None)
def message_classes() -> dict[str, Any]:
    """``{message name: Google message class}`` for every netdef message."""
    pool = descriptor_pool.DescriptorPool()
    fdp = file_descriptor()
    pool.Add(fdp)
    find = pool.FindMessageTypeByName
    return {m.name: message_factory.GetMessageClass(find(f"{PACKAGE}.{m.name}"))
            for m in fdp.message_type}


def message_class(cls_or_name: type | str) -> Any:
    """The Google message class matching a netdef message class (or its name)."""
    name = cls_or_name if isinstance(cls_or_name, str) else cls_or_name.__name__
    return message_classes()[name]
