"""Bad input: a NetdefError at the right line:col, and the CLI exits 2 without a traceback.

Each case is (name, file text, expected line, expected column, words in the message).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from netdef.api import load_net
from netdef.cli.main import main
from netdef.errors import NetdefError

CONV = 'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }\n'

CASES: list[tuple[str, str, int, int, str]] = [
    ("truncated", 'name: "x"\nlayer {\n  name: "a"\n', 4, 1, "unexpected end of file"),
    ("extra_brace", 'name: "x"\n}\n', 2, 1, "unexpected '}'"),
    ("unclosed_nested", 'layer {\n  convolution_param {\n    num_output: 1\n', 4, 1, "2 unclosed"),
    ("bad_number", 'layer {\n  name: "c"\n  convolution_param { kernel_size: 3x }\n}', 3, 36, "bad number"),
    ("bad_number_dots", "name: \"x\"\nlayer { convolution_param { pad: 1.2.3 } }", 2, 34, "bad number"),
    ("unknown_enum", CONV + 'layer { name: "p" type: "Pooling" bottom: "data" top: "p"\n  pooling_param { pool: MAXX } }', 3, 19, "unknown value 'MAXX'"),
    ("unknown_field", CONV + 'layer { name: "c" type: "Convolution" bottom: "data" top: "c"\n  convolution_param {\n    kernal_size: 3 num_output: 4 } }', 4, 5, "unknown field 'kernal_size' in convolution_param"),
    ("unknown_top_field", 'layerz { name: "x" }', 1, 1, "unknown field 'layerz'"),
    ("unknown_layer_field", 'layer { name: "x" tpye: "ReLU" }', 1, 19, "unknown field 'tpye'"),
    ("unknown_type", CONV + 'layer { name: "c" type: "Convolutoin" bottom: "data" top: "c" }', 2, 19, "unknown layer type 'Convolutoin'"),
    ("unknown_types_all", CONV + 'layer { name: "a" type: "Foo" bottom: "data" top: "a" }\nlayer { name: "b" type: "Bar" bottom: "a" top: "b" }', 2, 19, "'Bar', 'Foo'"),
    ("missing_bottom", CONV + 'layer { name: "r" type: "ReLU" bottom: "dat" top: "r" }', 2, 32, "unknown bottom blob 'dat'"),
    ("bottom_made_later", CONV + 'layer { name: "a" type: "ReLU" bottom: "b" top: "a" }\nlayer { name: "b" type: "ReLU" bottom: "data" top: "b" }', 2, 32, "unknown bottom blob 'b'"),
    ("duplicate_top", CONV + 'layer { name: "a" type: "ReLU" bottom: "data" top: "x" }\nlayer { name: "b" type: "ReLU" bottom: "data" top: "x" }', 3, 47, "produced by multiple sources"),
    ("duplicate_layer_name", CONV + 'layer { name: "c" type: "Convolution" bottom: "data" top: "c" param { lr_mult: 1 } convolution_param { num_output: 2 kernel_size: 1 } }\nlayer { name: "c" type: "Convolution" bottom: "c" top: "d" convolution_param { num_output: 2 kernel_size: 1 } }', 3, 9, "duplicate layer name 'c'"),
    ("string_for_int", CONV + 'layer { name: "c" type: "Convolution" bottom: "data" top: "c"\n  convolution_param { num_output: "96" } }', 3, 23, "expects an integer"),
    ("negative_uint", CONV + 'layer { name: "c" type: "Convolution" bottom: "data" top: "c"\n  convolution_param { num_output: -1 } }', 3, 23, "out of range"),
    ("float_for_int", CONV + 'layer { name: "c" type: "Convolution" bottom: "data" top: "c"\n  convolution_param { kernel_size: 3.5 } }', 3, 23, "expects an integer"),
    ("bad_bool", CONV + 'layer { name: "c" type: "Convolution" bottom: "data" top: "c"\n  convolution_param { bias_term: yes } }', 3, 23, "true or false"),
    ("set_twice", 'layer {\n  name: "a"\n  name: "b"\n}', 3, 3, "set twice"),
    ("list_for_singular", 'layer { name: ["a", "b"] }', 1, 9, "takes one value"),
    ("block_for_scalar", 'layer { name { } }', 1, 9, "got a { … } block"),
    ("scalar_for_block", 'layer { convolution_param: 3 }', 1, 9, "expects a { … } block"),
    ("unquoted_string", 'layer { name: "r" type: ReLU }', 1, 19, "expects a quoted string"),
    ("include_and_exclude", CONV + 'layer { name: "r" type: "ReLU" bottom: "data" top: "data"\n  include { phase: TRAIN } exclude { phase: TEST } }', 3, 28, "both include and exclude"),
    ("no_bottom_for_conv", CONV + 'layer { name: "c" type: "Convolution" top: "c" convolution_param { num_output: 2 kernel_size: 1 } }', 2, 1, "takes at least 1 bottom"),
    ("unterminated_string", 'name: "abc\n', 1, 7, "unterminated string"),
    ("bad_char", 'name: "x"\nlayer { name: @ }', 2, 15, "unexpected character '@'"),
    ("missing_value", 'layer { name: }', 1, 15, "unexpected '}'"),
    ("missing_colon_scalar", 'layer { name "x" }', 1, 14, "unexpected '\"x\"'"),
    ("digit_field_name", '1abc: 3', 1, 1, "bad number"),
    ("trailing_comma_list", 'input_dim: [1, 2, ]', 1, 19, "unexpected ']'"),
    ("unknown_phase", CONV + 'layer { name: "r" type: "ReLU" bottom: "data" top: "data"\n  include { phase: TRAINING } }', 3, 13, "unknown value 'TRAINING'"),
    ("int32_overflow", 'state { level: 0x1FFFFFFFF }', 1, 9, "out of range"),
    ("v1_unknown_enum", 'layers { name: "c" type: CONVOLUTON }', 1, 20, "unknown value 'CONVOLUTON'"),
    ("mixed_layer_layers", CONV + 'layers { name: "r" type: RELU bottom: "data" top: "data" }', 2, 1, "layers"),
    ("solver_as_net", 'net: "x.prototxt"\nbase_lr: 0.01\n', 1, 1, "unknown field 'net'"),
    ("empty_file", '', 1, 1, "no layers"),
    ("only_comments", '# nothing here\n', 1, 1, "no layers"),
    ("nul_byte", 'name: "x"\x00', 1, 10, "not a text file"),
    ("angle_unclosed", 'layer < name: "x" ', 1, 19, "end of file"),
]


@pytest.mark.parametrize("name,text,line,col,words", CASES, ids=[c[0] for c in CASES])
def test_error_has_position_and_words(tmp_path: Path, name: str, text: str, line: int,
                                      col: int, words: str) -> None:
    path = tmp_path / f"{name}.net"
    path.write_text(text)
    with pytest.raises(NetdefError) as info:
        load_net(path)
    err = info.value
    assert words in err.message, err.format()
    assert (err.file, err.line, err.col) == (str(path), line, col), err.format()


def test_binary_junk_and_non_utf8(tmp_path: Path) -> None:
    path = tmp_path / "junk.net"
    path.write_bytes(b"name: \"x\"\nlayer {\xff\xfe\x00\x01 }")
    with pytest.raises(NetdefError) as info:
        load_net(path)
    assert "not a text file" in info.value.message
    assert (info.value.line, info.value.col) == (2, 8)


def test_ten_megabytes_of_junk_fails_fast_at_first_bad_char(tmp_path: Path) -> None:
    path = tmp_path / "big.net"
    path.write_text("a: 1\n" * 10 + "%" + "x" * (10 * 1024 * 1024))
    with pytest.raises(NetdefError) as info:
        load_net(path)
    assert (info.value.line, info.value.col) == (11, 1)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(NetdefError, match="no such file"):
        load_net(tmp_path / "nope.net")
    with pytest.raises(NetdefError, match="directory"):
        load_net(tmp_path)


@pytest.mark.parametrize("name,text,line,col,words", CASES, ids=[c[0] for c in CASES])
def test_cli_prints_one_or_two_lines_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                  name: str, text: str, line: int, col: int,
                                                  words: str) -> None:
    path = tmp_path / f"{name}.net"
    path.write_text(text)
    code = main(["compile", str(path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert 1 <= len(err) <= 2, err
    assert err[0].startswith(f"{path}:{line}:{col}: error: ")
    assert "Traceback" not in "\n".join(err)


def test_cli_subprocess_has_no_traceback(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    for name, text, line, col, _ in CASES[:6] + [("bin", "\x00\x01", 1, 1, "")]:
        path = tmp_path / f"{name}.net"
        path.write_text(text)
        proc = subprocess.run([sys.executable, "-m", "netdef", "compile", str(path)],
                              capture_output=True, text=True, env=env, timeout=60)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr and proc.stderr.startswith(f"{path}:{line}:{col}:")
