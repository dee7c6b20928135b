"""netdef's message dataclasses must say exactly what caffe.proto says.

caffe.proto is parsed here independently of netdef (a small proto2 parser), then every
message and enum netdef models is compared with it: field names, numbers, types,
labels, packed flags, explicit defaults (and their absence), declaration order, and
enum members.  Every caffe.proto message and enum must be modelled.
"""
from __future__ import annotations

import inspect
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import netdef.ir.messages as M
from netdef.ir.schema import ProtoEnum, fields_of, is_message_class

PROTO_PATH = Path(__file__).resolve().parents[2].parent / "shared/caffe/caffe.proto"

SCALARS = {"double", "float", "int32", "int64", "uint32", "uint64", "sint32", "sint64",
           "fixed32", "fixed64", "sfixed32", "sfixed64", "bool", "string", "bytes"}
FLOAT_TYPES = {"float", "double"}
INT_TYPES = SCALARS - FLOAT_TYPES - {"bool", "string", "bytes"}


# --------------------------------------------------------------------------- parser

@dataclass
class PField:
    label: str
    type: str  # as written; resolved into ``rtype``
    name: str
    number: int
    options: dict[str, str]  # raw option tokens, e.g. {"default": "'constant'"}
    rtype: str = ""  # scalar name, or the full dotted name of a message/enum


@dataclass
class PEnum:
    full: str
    values: list[tuple[str, int]] = field(default_factory=list)


@dataclass
class PMessage:
    full: str
    fields: list[PField] = field(default_factory=list)


@dataclass
class Proto:
    messages: dict[str, PMessage] = field(default_factory=dict)
    enums: dict[str, PEnum] = field(default_factory=dict)


_TOKEN = re.compile(r"""
    \s+ | //[^\n]* | /\*.*?\*/                               # skipped
  | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<num>[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?))
  | (?P<id>[A-Za-z_][\w.]*)
  | (?P<sym>[{}\[\]=;,<>()])
""", re.S | re.X)


def _tokens(text: str) -> list[str]:
    out, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise SyntaxError(f"caffe.proto: cannot tokenize at {text[pos:pos + 30]!r}")
        pos = m.end()
        if m.lastgroup:
            out.append(m.group(m.lastgroup))
    return out


class _Parser:
    def __init__(self, text: str):
        self.toks = _tokens(text)
        self.i = 0
        self.proto = Proto()

    def peek(self) -> str:
        return self.toks[self.i]

    def take(self, expect: str | None = None) -> str:
        tok = self.toks[self.i]
        if expect is not None and tok != expect:
            raise SyntaxError(f"caffe.proto: expected {expect!r}, got {tok!r}")
        self.i += 1
        return tok

    def parse(self) -> Proto:
        while self.i < len(self.toks):
            tok = self.peek()
            if tok in ("syntax", "package", "import", "option"):
                while self.take() != ";":
                    pass
            elif tok == "message":
                self.message("")
            elif tok == "enum":
                self.enum("")
            else:
                raise SyntaxError(f"caffe.proto: unexpected {tok!r} at top level")
        self.resolve()
        return self.proto

    def message(self, scope: str) -> None:
        self.take("message")
        full = scope + self.take()
        msg = PMessage(full)
        self.proto.messages[full] = msg
        self.take("{")
        while self.peek() != "}":
            tok = self.peek()
            if tok == "message":
                self.message(full + ".")
            elif tok == "enum":
                self.enum(full + ".")
            elif tok in ("optional", "repeated", "required"):
                msg.fields.append(self.field())
            elif tok in ("option", "reserved", "extensions"):
                while self.take() != ";":
                    pass
            else:
                raise SyntaxError(f"caffe.proto: unexpected {tok!r} in message {full}")
        self.take("}")

    def field(self) -> PField:
        label, type_, name = self.take(), self.take(), self.take()
        self.take("=")
        number = int(self.take())
        options: dict[str, str] = {}
        if self.peek() == "[":
            self.take("[")
            while True:
                key = self.take()
                self.take("=")
                options[key] = self.take()
                if self.take() == "]":
                    break
        self.take(";")
        return PField(label, type_, name, number, options)

    def enum(self, scope: str) -> None:
        self.take("enum")
        full = scope + self.take()
        en = PEnum(full)
        self.proto.enums[full] = en
        self.take("{")
        while self.peek() != "}":
            if self.peek() == "option":
                while self.take() != ";":
                    pass
                continue
            name = self.take()
            self.take("=")
            en.values.append((name, int(self.take())))
            if self.peek() == "[":
                while self.take() != "]":
                    pass
            self.take(";")
        self.take("}")

    def resolve(self) -> None:
        """Protobuf scoping: innermost enclosing scope first, then outwards."""
        known = set(self.proto.messages) | set(self.proto.enums)
        for msg in self.proto.messages.values():
            for f in msg.fields:
                if f.type in SCALARS:
                    f.rtype = f.type
                    continue
                parts = msg.full.split(".")
                for k in range(len(parts), -1, -1):
                    cand = ".".join(parts[:k] + [f.type.lstrip(".")])
                    if cand in known:
                        f.rtype = cand
                        break
                else:
                    raise SyntaxError(f"caffe.proto: unknown type {f.type} in {msg.full}")


def _load() -> Proto | None:
    if not PROTO_PATH.is_file():
        return None
    return _Parser(PROTO_PATH.read_text()).parse()


PROTO = _load()
if PROTO is None:
    pytest.skip(f"caffe.proto not found at {PROTO_PATH}", allow_module_level=True)


# ----------------------------------------------------------------- netdef's model

def _is_enum(obj: object) -> bool:
    return (inspect.isclass(obj) and issubclass(obj, ProtoEnum) and obj is not ProtoEnum)


def _collect() -> tuple[dict[str, type], dict[str, type[ProtoEnum]]]:
    """Every message and enum class reachable from ``netdef.ir.messages``'s exports."""
    msgs: dict[str, type] = {}
    enums: dict[str, type[ProtoEnum]] = {}
    seen: set[int] = set()
    todo = [getattr(M, n) for n in dir(M) if not n.startswith("_")]
    while todo:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if _is_enum(obj):
            prev = enums.setdefault(obj.__qualname__, obj)
            assert prev is obj, f"two netdef enums named {obj.__qualname__}"
        elif is_message_class(obj):
            prev = msgs.setdefault(obj.__qualname__, obj)
            assert prev is obj, f"two netdef messages named {obj.__qualname__}"
            todo.extend(v for v in vars(obj).values() if inspect.isclass(v))
            todo.extend(s.type for s in fields_of(obj).values()
                        if not isinstance(s.type, str))
    return msgs, enums


NETDEF_MSGS, NETDEF_ENUMS = _collect()


def _nd_type(spec) -> str:
    return spec.type if isinstance(spec.type, str) else spec.type.__qualname__


def _unquote(tok: str) -> str:
    assert tok[0] in "'\"" and tok[-1] == tok[0], f"not a string literal: {tok}"
    return bytes(tok[1:-1], "utf-8").decode("unicode_escape")


def _check_default(where: str, pf: PField, spec, errors: list[str]) -> None:
    raw = pf.options.get("default")
    if raw is None:
        if spec.explicit_default:
            errors.append(f"{where}: netdef has explicit default {spec.default!r}, "
                          "caffe.proto has none")
        return
    if not spec.explicit_default:
        errors.append(f"{where}: caffe.proto says [default = {raw}], netdef has none")
        return
    got = spec.default
    t = pf.rtype
    if t in FLOAT_TYPES:
        ok = (isinstance(got, float)
              and math.isclose(got, float(raw), rel_tol=1e-12, abs_tol=0.0))
    elif t in INT_TYPES:
        ok = isinstance(got, int) and not isinstance(got, bool) and got == int(raw, 0)
    elif t == "bool":
        ok = isinstance(got, bool) and got == {"true": True, "false": False}[raw]
    elif t == "string":
        ok = isinstance(got, str) and got == _unquote(raw)
    elif t == "bytes":
        ok = isinstance(got, bytes) and got == _unquote(raw).encode("latin-1")
    elif t in PROTO.enums:
        ok = isinstance(got, spec.type) and got.name == raw
    else:
        ok = False
    if not ok:
        errors.append(f"{where}: default {got!r} ({type(got).__name__}) "
                      f"!= caffe.proto [default = {raw}]")


def _message_errors(name: str) -> list[str]:
    pm = PROTO.messages[name]
    cls = NETDEF_MSGS.get(name)
    if cls is None:
        return [f"{name}: not modelled by netdef"]
    specs = fields_of(cls)
    errors: list[str] = []
    proto_names = [f.name for f in pm.fields]
    missing = [n for n in proto_names if n not in specs]
    extra = [n for n in specs if n not in proto_names]
    if missing:
        errors.append(f"{name}: fields not modelled: {missing}")
    if extra:
        errors.append(f"{name}: fields not in caffe.proto: {extra}")
    common = [n for n in proto_names if n in specs]
    if [n for n in specs if n in proto_names] != common:
        errors.append(f"{name}: field order differs from caffe.proto: "
                      f"{[n for n in specs if n in proto_names]} vs {common}")
    for pf in pm.fields:
        spec = specs.get(pf.name)
        if spec is None:
            continue
        where = f"{name}.{pf.name}"
        if spec.number != pf.number:
            errors.append(f"{where}: number {spec.number} != {pf.number}")
        if _nd_type(spec) != pf.rtype:
            errors.append(f"{where}: type {_nd_type(spec)} != {pf.rtype}")
        label = ("repeated" if spec.repeated
                 else "required" if getattr(spec, "required", False) else "optional")
        if label != pf.label:
            errors.append(f"{where}: label {label} != {pf.label}")
        packed = pf.options.get("packed") == "true"
        if spec.packed != packed:
            errors.append(f"{where}: packed {spec.packed} != {packed}")
        if not pf.label == "repeated":
            _check_default(where, pf, spec, errors)
        elif "default" in pf.options:
            errors.append(f"{where}: caffe.proto gives a repeated field a default?")
    return errors


def _enum_errors(name: str) -> list[str]:
    cls = NETDEF_ENUMS.get(name)
    if cls is None:
        return [f"enum {name}: not modelled by netdef"]
    got = [(k, int(v)) for k, v in cls.__members__.items()]
    want = PROTO.enums[name].values
    if got != want:
        return [f"enum {name}: members {got} != caffe.proto {want}"]
    return []


# -------------------------------------------------------------------------- tests

@pytest.mark.parametrize("name", sorted(PROTO.messages))
def test_message_matches_caffe_proto(name: str) -> None:
    errors = _message_errors(name)
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("name", sorted(PROTO.enums))
def test_enum_matches_caffe_proto(name: str) -> None:
    errors = _enum_errors(name)
    assert not errors, "\n".join(errors)


def test_netdef_models_nothing_caffe_proto_lacks() -> None:
    extra = sorted(set(NETDEF_MSGS) - set(PROTO.messages))
    extra += sorted(f"enum {e}" for e in set(NETDEF_ENUMS) - set(PROTO.enums))
    assert not extra, f"netdef declares messages/enums caffe.proto lacks: {extra}"


ROOTS = ["LayerParameter", "V1LayerParameter", "V0LayerParameter", "NetParameter",
         "SolverParameter", "SolverState", "NetState", "NetStateRule", "ParamSpec",
         "FillerParameter", "BlobShape", "BlobProto", "BlobProtoVector", "Datum",
         "TransformationParameter", "LossParameter"]


def _closure(roots: list[str]) -> tuple[list[str], list[str]]:
    """Messages and enums reachable in caffe.proto from ``roots`` via field types."""
    seen_m: dict[str, None] = {}
    seen_e: dict[str, None] = {}
    todo = list(roots)
    while todo:
        name = todo.pop(0)
        if name in seen_m:
            continue
        seen_m[name] = None
        for f in PROTO.messages[name].fields:
            if f.rtype in PROTO.messages:
                todo.append(f.rtype)
            elif f.rtype in PROTO.enums:
                seen_e[f.rtype] = None
        for e in PROTO.enums:  # nested enums, even where no field uses them
            if e.rsplit(".", 1)[0] == name:
                seen_e[e] = None
    return list(seen_m), list(seen_e)


def _unmodelled(msg_names, enum_names) -> list[str]:
    out = []
    for name in msg_names:
        if name not in NETDEF_MSGS:
            out.append(name)
            continue
        specs = fields_of(NETDEF_MSGS[name])
        out += [f"{name}.{f.name}" for f in PROTO.messages[name].fields
                if f.name not in specs]
    out += [f"enum {e}" for e in enum_names if e not in NETDEF_ENUMS]
    return out


def test_roots_fully_modelled() -> None:
    for r in ROOTS:
        assert r in PROTO.messages, f"{r} is not in caffe.proto"
    msgs, enums = _closure(ROOTS)
    missing = _unmodelled(msgs, enums)
    assert not missing, f"caffe.proto messages/fields netdef does not model: {missing}"


def test_all_of_caffe_proto_modelled() -> None:
    missing = _unmodelled(list(PROTO.messages), list(PROTO.enums))
    assert not missing, f"caffe.proto messages/fields netdef does not model: {missing}"


def test_parser_sanity() -> None:
    """Guard the independent parser itself against silently reading too little."""
    assert len(PROTO.messages) >= 60
    conv = {f.name: f for f in PROTO.messages["ConvolutionParameter"].fields}
    assert conv["kernel_size"].label == "repeated" and conv["kernel_size"].number == 4
    assert conv["engine"].rtype == "ConvolutionParameter.Engine"
    assert conv["engine"].options["default"] == "DEFAULT"
    blob = {f.name: f for f in PROTO.messages["BlobShape"].fields}
    assert blob["dim"].options.get("packed") == "true"
    filler = {f.name: f for f in PROTO.messages["FillerParameter"].fields}
    assert _unquote(filler["type"].options["default"]) == "constant"
    assert PROTO.enums["Phase"].values == [("TRAIN", 0), ("TEST", 1)]
