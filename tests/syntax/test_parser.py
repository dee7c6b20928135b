"""The Lark grammar: every text-format feature Caffe files use, with positions."""
from __future__ import annotations

import math

import pytest

from netdef.errors import ParseError
from netdef.syntax import parse_text
from netdef.syntax.parser import unescape


def fields(text: str) -> list[tuple]:
    return [(f.name, f.kind, f.value) for f in parse_text(text)]


def test_scalars_of_every_kind() -> None:
    got = fields('a: 96 b: -1 c: 0x1F d: 1e-4 e: .5 f: 5. g: 1f h: inf i: -inf j: nan '
                 'k: true l: t m: "s" n: \'q\'')
    assert got == [("a", "num", "96"), ("b", "num", "-1"), ("c", "num", "0x1F"),
                   ("d", "num", "1e-4"), ("e", "num", ".5"), ("f", "num", "5."),
                   ("g", "num", "1f"), ("h", "ident", "inf"), ("i", "ident", "-inf"),
                   ("j", "ident", "nan"), ("k", "ident", "true"), ("l", "ident", "t"),
                   ("m", "str", "s"), ("n", "str", "q")]


def test_blocks_all_spellings_and_one_line() -> None:
    text = 'input_param { shape: { dim: 10 dim: 3 } } x < y: 1 > z: { }'
    top = parse_text(text)
    assert [f.name for f in top] == ["input_param", "x", "z"]
    shape = top[0].value[0]
    assert shape.name == "shape" and [(d.name, d.value) for d in shape.value] == [
        ("dim", "10"), ("dim", "3")]
    assert top[1].value[0].value == "1" and top[2].value == []


def test_separators_comments_and_adjacent_strings() -> None:
    text = '# header\na: 1, b: 2; c: "ab" "cd" \'ef\'  # trailing\n'
    assert fields(text) == [("a", "num", "1"), ("b", "num", "2"), ("c", "str", "abcdef")]


def test_list_syntax_for_repeated_scalars() -> None:
    (f,) = parse_text("dim: [1, 2, 3]")
    assert f.kind == "list" and f.value == [("num", "1"), ("num", "2"), ("num", "3")]


def test_string_escapes() -> None:
    assert unescape(r"a\nb\t\"q\"\\\x41\101\'") == 'a\nb\t"q"\\AA\''
    (f,) = parse_text(r'name: "conv\"1\""')
    assert f.value == 'conv"1"'


def test_positions_are_one_based_line_and_column() -> None:
    top = parse_text('name: "x"\nlayer {\n  type: "ReLU"\n}\n')
    assert (top[0].line, top[0].col) == (1, 1)
    assert (top[1].line, top[1].col) == (2, 1)
    assert (top[1].value[0].line, top[1].value[0].col) == (3, 3)


@pytest.mark.parametrize("text,line,col,words", [
    ("layer {\n  name: 'x'\n", 3, 1, "end of file"),
    ("a: 1 }", 1, 6, "unexpected '}'"),
    ("a: 1.2.3", 1, 4, "bad number"),
    ("a: 'abc\nb: 1", 1, 4, "unterminated string"),
    ("a: @", 1, 4, "unexpected character '@'"),
    ("a 1", 1, 3, "unexpected '1'"),
    ("a: {", 1, 5, "end of file"),
    ("a: 12abc", 1, 4, "bad number"),
])
def test_syntax_errors_point_at_the_problem(text: str, line: int, col: int, words: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_text(text, "f.net")
    err = info.value
    assert (err.file, err.line, err.col) == ("f.net", line, col)
    assert words in err.message


def test_special_float_spellings_are_identifiers() -> None:
    got = fields("a: inf b: -inf c: nan d: infinity")
    assert [k for _, k, _ in got] == ["ident"] * 4
    assert math.isinf(float(got[0][2]))
