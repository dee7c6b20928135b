"""Learning-rate policies against the real Caffe runs (fixtures/train/cases/*).

Every iteration's rate must equal pycaffe's float32 ``solver.lr`` bit for bit and print
(``%g``) as the CLI log did; the final ``current_step`` must equal the solverstate's.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from netdef.errors import SolverError
from netdef.training.lr_policy import POLICIES, LearningRate, f32, learning_rate

FIXTURES = Path("/work/shared/fixtures/train")
CASES = sorted(p.name for p in (FIXTURES / "cases").glob("*") if p.is_dir())

pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason="training fixtures missing")


class _Solver:
    """The few SolverParameter fields a schedule needs, read with a tiny regex."""

    def __init__(self, text: str) -> None:
        fields: dict[str, list[str]] = {}
        for key, value in re.findall(r'^\s*(\w+)\s*:\s*"?([^"\n#]*?)"?\s*$', text, re.M):
            fields.setdefault(key, []).append(value)
        one = lambda k, d: fields.get(k, [d])[0]  # noqa: E731
        self.lr_policy = one("lr_policy", "")
        self.base_lr = float(one("base_lr", "0"))
        self.gamma = float(one("gamma", "0"))
        self.power = float(one("power", "0"))
        self.stepsize = int(one("stepsize", "0"))
        self.stepvalue = [int(v) for v in fields.get("stepvalue", [])]
        self.max_iter = int(one("max_iter", "0"))


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


def _solverstate_current_step(path: Path) -> int:
    """Field 4 (``current_step``) of a binary SolverState; 0 when absent."""
    buf, pos, found = path.read_bytes(), 0, 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        wire = tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            if tag >> 3 == 4:
                found = value
        elif wire == 2:
            size, pos = _varint(buf, pos)
            pos += size
        else:
            pos += 4 if wire == 5 else 8
    return found


def _case(name: str) -> tuple[_Solver, dict, dict]:
    d = FIXTURES / "cases" / name
    return (_Solver((d / "solver.prototxt").read_text()),
            json.loads((d / "pycaffe_replay.json").read_text()),
            json.loads((d / "curve.json").read_text()))


@pytest.mark.parametrize("case", CASES)
def test_lr_matches_pycaffe_bitwise_and_log_digits(case: str) -> None:
    solver, replay, curve = _case(case)
    schedule = LearningRate(solver)
    printed = {it["iter"]: it for it in curve["iterations"]}
    for it in replay["iterations"]:
        lr, line = schedule(it["iter"])
        want = np.float32(it["lr"])
        assert np.float32(lr).view(np.uint32) == want.view(np.uint32), (case, it["iter"], lr)
        if it["iter"] in printed:
            logged = printed[it["iter"]]
            assert f"{lr:g}" == f"{logged['lr']:g}", (case, it["iter"])
            step = logged.get("multistep")
            assert line == (None if step is None else
                            f"MultiStep Status: Iteration {it['iter']}, step = {step}")


@pytest.mark.parametrize("case", CASES)
def test_final_current_step_matches_solverstate(case: str) -> None:
    solver, replay, _ = _case(case)
    schedule = LearningRate(solver)
    for it in replay["iterations"]:
        schedule(it["iter"])
    last = max((FIXTURES / "cases" / case).glob("snap_iter_*.solverstate"),
               key=lambda p: int(re.search(r"_iter_(\d+)\.", p.name).group(1)))
    assert schedule.current_step == _solverstate_current_step(last)


def test_all_seven_policies_are_exercised_by_the_fixtures() -> None:
    assert {_case(c)[0].lr_policy for c in CASES} == set(POLICIES)


def test_sigmoid_rejects_negative_gamma_like_caffe() -> None:
    with pytest.raises(SolverError, match="gamma >= 0"):
        learning_rate("sigmoid", 0.05, 0, gamma=-0.1, stepsize=30)


def test_sigmoid_values_from_readme() -> None:
    rates = [learning_rate("sigmoid", 0.05, i, gamma=0.1, stepsize=30)[0] for i in (0, 30, 59)]
    assert [f"{r:g}" for r in rates] == ["0.00237129", "0.025", "0.0473923"]


def test_unknown_policy_names_the_valid_ones() -> None:
    with pytest.raises(SolverError) as err:
        learning_rate("cosine", 0.1, 0)
    assert "cosine" in str(err.value) and all(p in str(err.value) for p in POLICIES)


@pytest.mark.parametrize("policy, kwargs", [
    ("step", dict(gamma=0.1, stepsize=0)),
    ("sigmoid", dict(gamma=0.1, stepsize=0)),
    ("poly", dict(power=1.0, max_iter=0)),
    ("exp", dict(gamma=-1.0)),
])
def test_invalid_parameters_are_solver_errors(policy: str, kwargs: dict) -> None:
    with pytest.raises(SolverError):
        learning_rate(policy, 0.1, 3, **kwargs)


def test_multistep_advances_at_most_one_step_per_call_like_caffe() -> None:
    # Caffe uses `if`, not `while`: two equal stepvalues take two iterations.
    lr, step, logged = learning_rate("multistep", 1.0, 5, gamma=0.5, stepvalues=(5, 5))
    assert (lr, step, logged) == (0.5, 1, True)
    lr, step, logged = learning_rate("multistep", 1.0, 6, gamma=0.5, stepvalues=(5, 5),
                                     current_step=step)
    assert (lr, step, logged) == (0.25, 2, True)
    assert learning_rate("multistep", 1.0, 7, gamma=0.5, stepvalues=(5, 5),
                         current_step=step) == (0.25, 2, False)


def test_step_recomputes_current_step_from_iter() -> None:
    assert learning_rate("step", 0.05, 59, gamma=0.5, stepsize=20, current_step=7)[1] == 2


def test_rates_are_float32_values() -> None:
    lr = learning_rate("inv", 0.005, 17, gamma=0.01, power=0.75)[0]
    assert f32(lr) == lr and lr != 0.005 * (1 + 0.01 * 17) ** -0.75
