"""The mechanism behind netdef's model of Caffe's protobuf schema.

Each Caffe message is a frozen dataclass declared with :func:`message`; each field is
declared with :func:`opt` (optional) or :func:`rep` (repeated) carrying the facts of
caffe.proto: field number, protobuf type, label and default.  The dataclass *is* the
schema: the text builder, the canonical printer, the binary (wire) codec and the
schema-equivalence test all read :func:`fields_of`.

Protobuf-2 semantics are kept: reading an unset field gives its default (a default
instance for sub-messages), while ``has(msg, name)`` tells whether it was set — Caffe
relies on that distinction (``has_kernel_h``, ``has_pad`` …).
"""
from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Iterator, Mapping, TypeVar

from netdef.errors import Loc

SCALAR_TYPES = ("double", "float", "int32", "int64", "uint32", "uint64", "sint32",
                "sint64", "fixed32", "fixed64", "bool", "string", "bytes")
INT_RANGES = {
    "int32": (-(2**31), 2**31 - 1), "sint32": (-(2**31), 2**31 - 1),
    "int64": (-(2**63), 2**63 - 1), "sint64": (-(2**63), 2**63 - 1),
    "uint32": (0, 2**32 - 1), "fixed32": (0, 2**32 - 1),
    "uint64": (0, 2**64 - 1), "fixed64": (0, 2**64 - 1),
}
_IMPLICIT = {"double": 0.0, "float": 0.0, "bool": False, "string": "", "bytes": b""}

_MISSING: Any = object()
_EMPTY_LOCS: Mapping[str, tuple[Loc, ...]] = MappingProxyType({})


class ProtoEnum(enum.IntEnum):
    """Base of every Caffe enum; printed by name like protobuf's text format."""

    def __str__(self) -> str:  # pragma: no cover - cosmetic
        return self.name


@dataclass(frozen=True)
class FieldSpec:
    """One field of a message as caffe.proto declares it."""

    name: str
    number: int
    type: Any  # a scalar type name, a ProtoEnum subclass or a message class
    repeated: bool
    default: Any  # the value read when unset
    explicit_default: bool  # caffe.proto says ``[default = …]``
    packed: bool = False
    required: bool = False  # a proto2 ``required`` field (must be set)

    @property
    def label(self) -> str:
        """``optional``, ``required`` or ``repeated``, as caffe.proto writes it."""
        return "repeated" if self.repeated else "required" if self.required else "optional"

    @property
    def is_message(self) -> bool:
        return isinstance(self.type, type) and is_message_class(self.type)

    @property
    def is_enum(self) -> bool:
        return isinstance(self.type, type) and issubclass(self.type, ProtoEnum)

    @property
    def type_name(self) -> str:
        return self.type if isinstance(self.type, str) else self.type.__name__


def opt(number: int, type_: Any, default: Any = _MISSING) -> Any:
    """An ``optional`` field; ``default`` only where caffe.proto states one."""
    return dataclasses.field(default=_MISSING, metadata={
        "proto": ("optional", number, type_, default, False)})


def req(number: int, type_: Any, default: Any = _MISSING) -> Any:
    """A ``required`` field: like :func:`opt`, but a message lacking it is invalid."""
    return dataclasses.field(default=_MISSING, metadata={
        "proto": ("required", number, type_, default, False)})


def rep(number: int, type_: Any, packed: bool = False) -> Any:
    """A ``repeated`` field (a tuple in the IR)."""
    return dataclasses.field(default=(), metadata={
        "proto": ("repeated", number, type_, _MISSING, packed)})


def _implicit_default(type_: Any) -> Any:
    if isinstance(type_, str):
        if type_ in _IMPLICIT:
            return _IMPLICIT[type_]
        return 0
    if issubclass(type_, ProtoEnum):
        return next(iter(type_))
    return type_()  # a message: the default instance


T = TypeVar("T")


def message(cls: type[T]) -> type[T]:
    """Turn an annotated class into a frozen protobuf-message dataclass."""
    specs: dict[str, FieldSpec] = {}
    for name, value in list(vars(cls).items()):
        if not isinstance(value, dataclasses.Field) or "proto" not in value.metadata:
            continue
        label, number, type_, default, packed = value.metadata["proto"]
        repeated = label == "repeated"
        explicit = default is not _MISSING
        if repeated:
            default = ()
        elif not explicit:
            default = _implicit_default(type_)
        elif isinstance(type_, type) and issubclass(type_, ProtoEnum):
            default = type_(default)
        spec = FieldSpec(name, number, type_, repeated, default, explicit, packed,
                         required=label == "required")
        specs[name] = spec
        setattr(cls, name, dataclasses.field(default=default, metadata=value.metadata))
    # bookkeeping that is not part of caffe.proto
    cls.__annotations__ = dict(getattr(cls, "__annotations__", {}))
    cls.__annotations__["_present"] = "frozenset[str]"
    cls.__annotations__["_loc"] = "Loc | None"
    cls.__annotations__["_locs"] = "Mapping[str, tuple[Loc, ...]]"
    cls.__annotations__["_unknown"] = "tuple[Any, ...]"
    cls._present = dataclasses.field(default=frozenset(), repr=False)  # type: ignore[attr-defined]
    cls._loc = dataclasses.field(default=None, compare=False, repr=False)  # type: ignore[attr-defined]
    cls._locs = dataclasses.field(default_factory=lambda: _EMPTY_LOCS, compare=False, repr=False)  # type: ignore[attr-defined]
    cls._unknown = dataclasses.field(default=(), compare=False, repr=False)  # type: ignore[attr-defined]
    out = dataclass(frozen=True, repr=False)(cls)
    out.__proto_fields__ = MappingProxyType(specs)  # type: ignore[attr-defined]
    out.__proto_by_number__ = MappingProxyType(  # type: ignore[attr-defined]
        {s.number: s for s in specs.values()})
    out.__repr__ = _repr  # type: ignore[assignment]
    return out


def _repr(self: Any) -> str:
    body = ", ".join(f"{n}={getattr(self, n)!r}" for n in fields_of(type(self))
                     if n in self._present)
    return f"{type(self).__name__}({body})"


def is_message_class(cls: Any) -> bool:
    return isinstance(cls, type) and hasattr(cls, "__proto_fields__")


def fields_of(cls_or_msg: Any) -> Mapping[str, FieldSpec]:
    """The field specs of a message class (or instance), in declaration order."""
    cls = cls_or_msg if isinstance(cls_or_msg, type) else type(cls_or_msg)
    return cls.__proto_fields__


def has(msg: Any, name: str) -> bool:
    """Protobuf's ``has_<name>()``: was the field set (for repeated: non-empty)?"""
    if name not in fields_of(msg):
        raise AttributeError(f"{type(msg).__name__} has no field {name!r}")
    return name in msg._present


def present(msg: Any) -> Iterator[tuple[FieldSpec, Any]]:
    """The set fields of ``msg`` in field-number order (protobuf's print order)."""
    specs = sorted(fields_of(msg).values(), key=lambda s: s.number)
    for spec in specs:
        if spec.name in msg._present:
            yield spec, getattr(msg, spec.name)


def make(cls: type[T], /, _loc: Loc | None = None, **values: Any) -> T:
    """Build a message; every keyword given counts as set (``has`` is true)."""
    specs = fields_of(cls)
    for k in values:
        if k not in specs:
            raise AttributeError(f"{cls.__name__} has no field {k!r}")
    pres = frozenset(k for k, v in values.items()
                     if not (specs[k].repeated and len(v) == 0))
    conv = {k: tuple(v) if specs[k].repeated else v for k, v in values.items()}
    return cls(**conv, _present=pres, _loc=_loc)  # type: ignore[call-arg]


def update(msg: T, /, **values: Any) -> T:
    """A copy of ``msg`` with fields set (added to ``has``); ``None`` clears one."""
    specs = fields_of(msg)
    pres = set(msg._present)  # type: ignore[attr-defined]
    conv: dict[str, Any] = {}
    for k, v in values.items():
        spec = specs.get(k)
        if spec is None:
            raise AttributeError(f"{type(msg).__name__} has no field {k!r}")
        if v is None:
            conv[k] = spec.default
            pres.discard(k)
        else:
            conv[k] = tuple(v) if spec.repeated else v
            if spec.repeated and len(conv[k]) == 0:
                pres.discard(k)
            else:
                pres.add(k)
    return dataclasses.replace(msg, **conv, _present=frozenset(pres))  # type: ignore[type-var]


def loc_of(msg: Any, name: str | None = None, index: int = 0) -> Loc | None:
    """Where ``msg`` (or its field ``name``, element ``index``) was written."""
    if name is None:
        return msg._loc
    locs = msg._locs.get(name)
    if locs:
        return locs[min(index, len(locs) - 1)]
    return msg._loc


def to_dict(msg: Any) -> dict[str, Any]:
    """Set fields only, as plain JSON-able data (enums by name)."""
    out: dict[str, Any] = {}
    for spec, value in present(msg):
        out[spec.name] = _plain(value)
    return out


def _plain(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    if isinstance(v, ProtoEnum):
        return v.name
    if isinstance(v, bytes):
        return v.decode("latin-1")
    if is_message_class(type(v)):
        return to_dict(v)
    return v
