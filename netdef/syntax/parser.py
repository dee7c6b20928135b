"""Parse protobuf text format with the Lark grammar in ``grammar/prototxt.lark``.

The parse is LALR with Lark's contextual lexer and an inline transformer, so no parse
tree is built: each field becomes one :class:`RawField` carrying its position.  Types,
defaults and enum names are applied later by :mod:`netdef.ir.build`, which keeps fork
fields (unknown to Caffe's schema) loadable.
"""
from __future__ import annotations

import codecs
import os
from functools import lru_cache
from importlib import resources
from typing import Any

from netdef.errors import Loc, NetdefError, ParseError


class RawField:
    """One ``name: value`` or ``name { … }`` as written.

    ``kind`` is ``"msg"`` (value: list of RawField), ``"num"`` (the number's text),
    ``"str"`` (the decoded string), ``"ident"`` (an identifier such as an enum name,
    ``true`` or ``-inf``) or ``"list"`` (value: list of ``(kind, value)`` pairs).
    """

    __slots__ = ("name", "kind", "value", "line", "col")

    def __init__(self, name: str, kind: str, value: Any, line: int, col: int) -> None:
        self.name, self.kind, self.value, self.line, self.col = name, kind, value, line, col

    def __repr__(self) -> str:
        return f"RawField({self.name!r}, {self.kind!r}, {self.value!r}, {self.line}:{self.col})"


_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "f": "\f",
                   "v": "\v", "\\": "\\", "'": "'", '"': '"', "?": "?"}


def unescape(body: str) -> str:
    """Decode a C-style escaped string body as protobuf's text format does."""
    if "\\" not in body:
        return body
    out: list[str] = []
    i, n = 0, len(body)
    while i < n:
        c = body[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        i += 1
        e = body[i]
        if e in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[e])
            i += 1
        elif e in "xX":
            j = i + 1
            while j < n and j < i + 3 and body[j] in "0123456789abcdefABCDEF":
                j += 1
            out.append(chr(int(body[i + 1:j], 16)))
            i = j
        elif e in "01234567":
            j = i
            while j < n and j < i + 3 and body[j] in "01234567":
                j += 1
            out.append(chr(int(body[i:j], 8)))
            i = j
        else:
            raise ValueError(f"invalid escape \\{e}")
    return "".join(out)


def _make_transformer() -> Any:
    from lark import Transformer

    class _ToRaw(Transformer):  # one method per grammar alternative
        def start(self, items: list) -> list:
            return items

        def scalar(self, c: list) -> RawField:
            name, (kind, value) = c
            return RawField(str(name), kind, value, name.line, name.column)

        def list(self, c: list) -> RawField:
            name = c[0]
            return RawField(str(name), "list", [v for v in c[1:] if v is not None],
                            name.line, name.column)

        def block(self, c: list) -> RawField:
            name = c[0]
            return RawField(str(name), "msg", c[1:], name.line, name.column)

        def number(self, c: list) -> tuple:
            return ("num", str(c[0]))

        def string(self, c: list) -> tuple:
            parts = []
            for tok in c:
                try:
                    parts.append(unescape(tok[1:-1]))
                except (ValueError, IndexError) as exc:
                    raise ParseError(f"bad string literal {tok!s}: {exc}",
                                     loc=Loc(None, tok.line, tok.column)) from None
            return ("str", "".join(parts))

        def ident(self, c: list) -> tuple:
            return ("ident", str(c[0]))

        def neg_ident(self, c: list) -> tuple:
            return ("ident", "-" + str(c[0]))

    return _ToRaw()


@lru_cache(maxsize=1)
def _parser() -> Any:
    from lark import Lark

    grammar = grammar_text("prototxt.lark")
    return Lark(grammar, parser="lalr", lexer="contextual", transformer=_make_transformer(),
                maybe_placeholders=False, cache=_cache_path(grammar))


def grammar_text(name: str) -> str:
    """A grammar file: installed package data, or ``grammar/`` of a source checkout."""
    try:
        return resources.files("netdef.grammar").joinpath(name).read_text()
    except ModuleNotFoundError:  # running from a checkout whose netdef/ shadows the install
        from pathlib import Path
        return (Path(__file__).resolve().parents[2] / "grammar" / name).read_text()


def _cache_path(grammar: str) -> str | bool:
    """A per-user cache of the LALR tables (saves ~0.1 s per process start)."""
    import hashlib
    import tempfile

    digest = hashlib.sha256(grammar.encode()).hexdigest()[:16]
    try:
        import lark
        tag = f"{lark.__version__}-{digest}"
    except Exception:  # pragma: no cover
        return True
    return os.path.join(tempfile.gettempdir(), f"netdef-grammar-{os.getuid()}-{tag}.cache")


_TOKEN_WORDS = {"RBRACE": "'}'", "LBRACE": "'{'", "COLON": "':'", "NAME": "a field name",
                "NUMBER": "a number", "STRING": "a string", "LSQB": "'['", "RSQB": "']'",
                "MORETHAN": "'>'", "LESSTHAN": "'<'", "COMMA": "','", "MINUS": "'-'",
                "_SEP": "',' or ';'", "$END": "end of file"}


def _describe_expected(expected: set[str]) -> str:
    words = sorted({_TOKEN_WORDS.get(t, t) for t in expected if not t.startswith("__")})
    return ", ".join(words[:6])


def parse_text(text: str, file: str | None = None) -> list[RawField]:
    """Parse protobuf text into top-level :class:`RawField` s; raise ParseError."""
    from lark.exceptions import (UnexpectedCharacters, UnexpectedEOF, UnexpectedInput,
                                 UnexpectedToken, VisitError)

    try:
        return _parser().parse(text)
    except VisitError as exc:  # errors raised inside the transformer
        orig = exc.orig_exc
        if isinstance(orig, NetdefError):
            if orig.loc is not None:
                orig.loc = Loc(file, orig.loc.line, orig.loc.col)
            raise orig from None
        raise
    except ParseError as exc:
        if exc.loc is not None:
            exc.loc = Loc(file, exc.loc.line, exc.loc.col)
        raise
    except UnexpectedCharacters as exc:
        ch = text[exc.pos_in_stream] if exc.pos_in_stream < len(text) else ""
        what = _char_problem(text, exc.pos_in_stream)
        raise ParseError(what, loc=Loc(file, exc.line, exc.column), text=ch,
                         hint=_char_hint(ch)) from None
    except UnexpectedEOF as exc:
        line, col = _end_position(text)
        raise ParseError("unexpected end of file" + _open_brace_note(text),
                         loc=Loc(file, line, col),
                         hint="a '{' is not closed, or a field has no value") from None
    except UnexpectedToken as exc:
        tok = exc.token
        if tok.type == "$END":
            line, col = _end_position(text)
            raise ParseError("unexpected end of file" + _open_brace_note(text),
                             loc=Loc(file, line, col),
                             hint="a '{' is not closed, or a field has no value") from None
        expected = _describe_expected(set(exc.expected))
        msg = f"unexpected {tok.value!r}"
        hint = f"expected {expected}" if expected else None
        if tok.value == "}":
            hint = "this '}' closes nothing: remove it or add the missing '{'"
        raise ParseError(msg, loc=Loc(file, tok.line, tok.column), text=str(tok.value),
                         hint=hint) from None
    except UnexpectedInput as exc:  # pragma: no cover - other lark cases
        raise ParseError(str(exc).splitlines()[0], loc=Loc(file, exc.line, exc.column)) from None


def _char_problem(text: str, pos: int) -> str:
    ch = text[pos] if pos < len(text) else ""
    if ch in "\"'":
        return "unterminated string"
    if ch.isdigit() or ch in "-.":
        end = pos
        while end < len(text) and not text[end].isspace() and text[end] not in "{}<>,;#":
            end += 1
        return f"bad number {text[pos:end]!r}"
    if ch and not ch.isprintable():
        return f"unexpected character {ch!r} (U+{ord(ch):04X})"
    return f"unexpected character {ch!r}"


def _char_hint(ch: str) -> str | None:
    if ch in "\"'":
        return "close the string on the same line"
    if ch and (ch.isdigit() or ch in "-."):
        return "numbers look like 96, -1, 0x1F, 1e-4, .5 or inf"
    return None


def _end_position(text: str) -> tuple[int, int]:
    lines = text.split("\n")
    return len(lines), len(lines[-1]) + 1


def _open_brace_note(text: str) -> str:
    depth = 0
    for ch in text:  # rough count: strings/comments rarely hold braces in prototxt
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
    return f" ({depth} unclosed '{{')" if depth > 0 else ""


def read_source(path: str | os.PathLike[str]) -> str:
    """Read a net/solver file as text, with a NetdefError for every way it can fail."""
    p = os.fspath(path)
    try:
        with open(p, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise NetdefError("no such file", loc=Loc(p),
                          hint="check the path (nets ship in nets/, e.g. nets/alexnet.net)") from None
    except IsADirectoryError:
        raise NetdefError("is a directory, not a net file", loc=Loc(p)) from None
    except OSError as exc:
        raise NetdefError(f"cannot read file: {exc.strerror}", loc=Loc(p)) from None
    return decode_source(data, p)


def decode_source(data: bytes, file: str | None) -> str:
    """Decode bytes as UTF-8 text; binary input gets a positioned error."""
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ParseError(f"not a text file (invalid UTF-8 byte 0x{data[exc.start]:02x})",
                         loc=Loc(file, line, col),
                         hint="a .caffemodel is binary: pass it with --weights, not as the net") from None
    if "\x00" in text:
        pos = text.index("\x00")
        line = text.count("\n", 0, pos) + 1
        col = pos - (text.rfind("\n", 0, pos) + 1) + 1
        raise ParseError("not a text file (NUL byte)", loc=Loc(file, line, col),
                         hint="a .caffemodel is binary: pass it with --weights, not as the net")
    return text
