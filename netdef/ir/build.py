"""Stage 2: untyped :class:`~netdef.syntax.RawField` s → typed schema messages.

Types, ranges, enum names and repeated/singular rules of caffe.proto are checked
here, each failure a :class:`SchemaError` at the offending field's line:col with a
hint ("did you mean 'kernel_size'?").  Unknown fields inside a layer whose *type*
netdef does not know (fork layers: ``bn_param``, ``deephi_*`` …) are kept as raw data
with a warning, so such files still load.
"""
from __future__ import annotations

import difflib
import math
import struct
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from netdef.errors import Loc, SchemaError
from netdef.ir.schema import INT_RANGES, FieldSpec, ProtoEnum, fields_of
from netdef.syntax.parser import RawField

# Messages that carry a layer ``type`` and so may hold fork fields.
_LAYER_MESSAGES = ("LayerParameter", "V1LayerParameter")
_TRUE = {"true", "True", "t", "1"}
_FALSE = {"false", "False", "f", "0"}
_SPECIAL_FLOATS = {"inf": math.inf, "infinity": math.inf, "-inf": -math.inf,
                   "-infinity": -math.inf, "nan": math.nan, "-nan": math.nan}


@dataclass
class BuildContext:
    """Per-file state: where we are, what to warn about, which layer types exist."""

    file: str | None
    known_layer_type: Callable[[str], bool] | None = None
    warnings: list[str] = field(default_factory=list)
    # unknown fields met inside the layer being built (None: outside any layer)
    pending_unknown: list[tuple[type, RawField]] | None = None

    def loc(self, line: int, col: int) -> Loc:
        return Loc(self.file, line, col)


def build_message(cls: type, raw: Iterable[RawField], ctx: BuildContext,
                  loc: Loc | None = None) -> Any:
    """Build a ``cls`` message from its raw fields (see module doc)."""
    specs = fields_of(cls)
    is_layer = cls.__name__ in _LAYER_MESSAGES
    outer_pending = ctx.pending_unknown
    if is_layer:
        ctx.pending_unknown = []
    values: dict[str, Any] = {}
    locs: dict[str, list[Loc]] = {}
    try:
        for rf in raw:
            spec = specs.get(rf.name)
            if spec is None:
                _unknown_field(cls, rf, ctx)
                continue
            here = ctx.loc(rf.line, rf.col)
            if spec.repeated:
                items = rf.value if rf.kind == "list" else [(rf.kind, rf.value)]
                bucket = values.setdefault(spec.name, [])
                for kind, value in items:
                    bucket.append(_convert(spec, kind, value, rf, ctx))
                    locs.setdefault(spec.name, []).append(here)
            else:
                if spec.name in values:
                    first = locs[spec.name][0]
                    raise SchemaError(
                        f"field '{spec.name}' of {cls.__name__} is set twice "
                        f"(first at line {first.line})", loc=here, text=rf.name,
                        hint=f"'{spec.name}' is not repeated: keep one value")
                if rf.kind == "list":
                    raise SchemaError(f"field '{spec.name}' takes one value, not a list",
                                      loc=here, text=rf.name)
                values[spec.name] = _convert(spec, rf.kind, rf.value, rf, ctx)
                locs[spec.name] = [here]
        unknown: tuple[RawField, ...] = ()
        if is_layer and ctx.pending_unknown:
            _settle_unknown(values, ctx.pending_unknown, ctx)
            unknown = tuple(rf for _, rf in ctx.pending_unknown)
    finally:
        if is_layer:
            ctx.pending_unknown = outer_pending
    for name, v in values.items():
        if isinstance(v, list):
            values[name] = tuple(v)
    present = frozenset(k for k, v in values.items() if not (isinstance(v, tuple) and not v))
    return cls(**values, _present=present, _loc=loc,  # type: ignore[call-arg]
               _locs={k: tuple(v) for k, v in locs.items()}, _unknown=unknown)


def _unknown_field(cls: type, rf: RawField, ctx: BuildContext) -> None:
    if ctx.pending_unknown is not None and ctx.known_layer_type is not None:
        ctx.pending_unknown.append((cls, rf))  # decided once the layer's type is known
        return
    raise unknown_field_error(cls, rf, ctx)


def unknown_field_error(cls: type, rf: RawField, ctx: BuildContext) -> SchemaError:
    names = list(fields_of(cls))
    close = difflib.get_close_matches(rf.name, names, n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'?" if close else None
    where = _message_label(cls)
    if cls.__name__ == "NetParameter" and rf.name in _SOLVER_ONLY_FIELDS:
        hint = "this looks like a solver file: run it with `netdef train`"
    elif cls.__name__ == "LayerParameter" and rf.name.endswith("_param") and not close:
        hint = ("no BVLC layer has this parameter message; fork layers load only when their "
                "type is not a BVLC type")
    return SchemaError(f"unknown field '{rf.name}' in {where}", loc=ctx.loc(rf.line, rf.col),
                       text=rf.name, hint=hint)


_SOLVER_ONLY_FIELDS = {"base_lr", "lr_policy", "max_iter", "solver_mode", "momentum",
                       "test_iter", "test_interval", "snapshot_prefix", "train_net", "net",
                       "weight_decay", "display", "solver_type"}


def _message_label(cls: type) -> str:
    """``convolution_param`` style name for param messages, else the message name."""
    name = cls.__name__
    labels = {"LayerParameter": "layer", "V1LayerParameter": "layers",
              "V0LayerParameter": "layer (V0)", "NetParameter": "the net",
              "SolverParameter": "the solver"}
    if name in labels:
        return labels[name]
    from netdef.ir.messages.layer import LayerParameter

    for spec in fields_of(LayerParameter).values():
        if spec.type is cls:
            return spec.name
    return name


def _settle_unknown(values: dict[str, Any], unknown: list[tuple[type, RawField]],
                    ctx: BuildContext) -> None:
    """Fork fields: an error for a BVLC layer type, a warning for a fork type."""
    ltype = values.get("type")
    type_name = ltype.name if isinstance(ltype, ProtoEnum) else ltype
    known = ctx.known_layer_type
    owner, first = unknown[0]
    if type_name is None or (known is not None and known(str(type_name))):
        raise unknown_field_error(owner, first, ctx)
    names = ", ".join(sorted({rf.name for _, rf in unknown}))
    layer = values.get("name", "?")
    ctx.warnings.append(
        f"{ctx.loc(first.line, first.col)}: warning: layer '{layer}' of unknown type "
        f"'{type_name}': kept fields netdef does not model ({names})")


def _convert(spec: FieldSpec, kind: str, value: Any, rf: RawField, ctx: BuildContext) -> Any:
    t = spec.type
    if spec.is_message:
        if kind != "msg":
            raise _type_error(spec, rf, ctx, "a { … } block",
                              hint=f"write {spec.name} {{ … }}")
        return build_message(t, value, ctx, ctx.loc(rf.line, rf.col))
    if kind == "msg":
        raise _type_error(spec, rf, ctx, _type_words(spec), hint=None, got="a { … } block")
    if spec.is_enum:
        return _to_enum(spec, kind, value, rf, ctx)
    if t in ("string", "bytes"):
        if kind != "str":
            raise _type_error(spec, rf, ctx, "a quoted string",
                              hint=f'quote it: {spec.name}: "{value}"')
        return value.encode("latin-1", "surrogatepass") if t == "bytes" and \
            all(ord(c) < 256 for c in value) else (value.encode() if t == "bytes" else value)
    if t == "bool":
        if kind in ("ident", "num") and value in _TRUE:
            return True
        if kind in ("ident", "num") and value in _FALSE:
            return False
        raise _type_error(spec, rf, ctx, "true or false")
    if t in ("float", "double"):
        if kind == "num":
            v = _parse_float(value, spec, rf, ctx)
        elif kind == "ident" and value.lower() in _SPECIAL_FLOATS:
            v = _SPECIAL_FLOATS[value.lower()]
        else:
            raise _type_error(spec, rf, ctx, "a number")
        return to_float32(v) if t == "float" else v
    # integers
    if kind != "num":
        raise _type_error(spec, rf, ctx, "an integer")
    return _parse_int(value, spec, rf, ctx)


def to_float32(v: float) -> float:
    """A ``float`` field holds a float32, as in protobuf (prints and compares like Caffe)."""
    try:
        return _F32.unpack(_F32.pack(v))[0]
    except OverflowError:  # beyond float32's range: protobuf's parser gives ±inf
        return math.copysign(math.inf, v)


_F32 = struct.Struct("<f")


def _parse_float(text: str, spec: FieldSpec, rf: RawField, ctx: BuildContext) -> float:
    body = text[:-1] if text[-1] in "fF" and not text.lower().startswith(("0x", "-0x")) else text
    try:
        if body.lower().lstrip("-").startswith("0x"):
            return float(int(body, 16))
        return float(body)
    except ValueError:
        raise _type_error(spec, rf, ctx, "a number") from None


def _parse_int(text: str, spec: FieldSpec, rf: RawField, ctx: BuildContext) -> int:
    try:
        low = text.lower().lstrip("-")
        if low.startswith("0x"):
            v = int(text, 16)
        elif len(low) > 1 and low.startswith("0") and low.isdigit():
            v = int(text, 8)
        else:
            v = int(text, 10)
    except ValueError:
        raise _type_error(spec, rf, ctx, "an integer",
                          hint=f"'{spec.name}' is {spec.type_name}: write a whole number") from None
    lo, hi = INT_RANGES.get(spec.type, (-(2**63), 2**64))
    if not lo <= v <= hi:
        raise SchemaError(f"value {text} is out of range for '{spec.name}' ({spec.type_name})",
                          loc=ctx.loc(rf.line, rf.col), text=text,
                          hint=f"{spec.type_name} holds {lo} … {hi}")
    return v


def _to_enum(spec: FieldSpec, kind: str, value: Any, rf: RawField, ctx: BuildContext) -> Any:
    enum_cls = spec.type
    if kind == "ident":
        try:
            return enum_cls[value]
        except KeyError:
            names = [m.name for m in enum_cls]
            close = difflib.get_close_matches(value.upper(), names, n=1, cutoff=0.5)
            hint = f"did you mean {close[0]}? " if close else ""
            raise SchemaError(
                f"unknown value '{value}' for '{spec.name}' ({enum_cls.__name__})",
                loc=ctx.loc(rf.line, rf.col), text=value,
                hint=hint + "one of " + ", ".join(names)) from None
    if kind == "num":
        try:
            return enum_cls(int(value, 0))
        except ValueError:
            pass
    names = ", ".join(m.name for m in enum_cls)
    raise _type_error(spec, rf, ctx, f"one of {names}")


def _type_words(spec: FieldSpec) -> str:
    if spec.is_enum:
        return "one of " + ", ".join(m.name for m in spec.type)
    return {"string": "a quoted string", "bytes": "a quoted string", "bool": "true or false",
            "float": "a number", "double": "a number"}.get(spec.type, "an integer")


def _type_error(spec: FieldSpec, rf: RawField, ctx: BuildContext, expected: str,
                hint: str | None = None, got: str | None = None) -> SchemaError:
    shown = got or _show(rf)
    return SchemaError(f"field '{spec.name}' expects {expected}, got {shown}",
                       loc=ctx.loc(rf.line, rf.col), text=rf.name, hint=hint)


def _show(rf: RawField) -> str:
    if rf.kind == "str":
        return repr(rf.value)
    if rf.kind == "msg":
        return "a { … } block"
    if rf.kind == "list":
        return "a list"
    return str(rf.value)
