"""Property: any mutation of a real BVLC file gives a valid IR or a NetdefError.

Tokens of real files are deleted, duplicated, swapped or replaced; the front half
of the pipeline must never raise anything but NetdefError (no KeyError, no
IndexError, no lark exception leaking out).
"""
from __future__ import annotations

import re
from functools import lru_cache

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import bvlc_files, need_shared
from netdef.api import load_net, load_solver, looks_like_solver
from netdef.errors import NetdefError

TOKEN = re.compile(r'"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'|[{}<>:,;\[\]]|[^\s{}<>:,;\[\]]+|\s+')
JUNK = ["{", "}", ":", "<", ">", "-", "0x", "1e", "inf", '"', "'", "layer", "layers",
        "top", "bottom", "type", "\"ReLU\"", "CONVOLUTION", "include", "phase", "TEST", "#",
        "\\", "[", "]", ",", "9999999999999999999999", "-1", "nan", "true", "param", "\x00"]


@lru_cache(maxsize=1)
def corpus() -> list[list[str]]:
    files = [p for p in bvlc_files() if p.stat().st_size < 40_000]
    return [TOKEN.findall(p.read_text()) for p in files]


@st.composite
def mutated(draw: st.DrawFn) -> str:
    docs = corpus()
    tokens = list(draw(st.sampled_from(docs)))
    for _ in range(draw(st.integers(1, 4))):
        if not tokens:
            break
        i = draw(st.integers(0, len(tokens) - 1))
        op = draw(st.sampled_from(["delete", "duplicate", "swap", "replace", "insert"]))
        if op == "delete":
            del tokens[i]
        elif op == "duplicate":
            tokens.insert(i, tokens[i])
        elif op == "swap":
            j = draw(st.integers(0, len(tokens) - 1))
            tokens[i], tokens[j] = tokens[j], tokens[i]
        elif op == "replace":
            tokens[i] = draw(st.sampled_from(JUNK))
        else:
            tokens.insert(i, draw(st.sampled_from(JUNK)) + " ")
    return "".join(tokens)


@settings(max_examples=2000, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mutated(), st.sampled_from(["TRAIN", "TEST"]))
def test_mutated_real_files_give_ir_or_netdef_error(text: str, phase: str) -> None:
    try:
        if looks_like_solver(text):
            load_solver(text=text)
        else:
            load_net(text=text, phase=phase)
    except NetdefError as exc:
        assert exc.message
        assert exc.format()


def setup_module() -> None:
    need_shared()
    if not corpus():
        pytest.skip("no BVLC files")
