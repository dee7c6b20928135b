"""`netdef train` replays every real-Caffe training run in ../shared/fixtures/train.

Per case: the run's loss at every iteration within 1e-4 (relative) of Caffe's, the lr
printed with Caffe's exact digits, test outputs equal at the printed precision, and
the final weights within 1e-4 of Caffe's (relative to each blob's magnitude).
"""
from __future__ import annotations

import io
import json
import os
import shutil
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest

from caffe_log import parse
from conftest import FIXTURES

TRAIN = FIXTURES / "train"
CASES = sorted(p.name for p in (TRAIN / "cases").iterdir()) if (TRAIN / "cases").is_dir() else []


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A writable copy of fixtures/train (Caffe ran with it as working directory)."""
    if not TRAIN.is_dir():
        pytest.skip("../shared/fixtures/train is missing")
    dst = tmp_path_factory.mktemp("train") / "train"
    shutil.copytree(TRAIN, dst, ignore=shutil.ignore_patterns("snap_iter_*", "caffe.log"))
    for lock in dst.rglob("lock.mdb"):
        lock.unlink()
    return dst


def run_case(workdir: Path, case: str) -> tuple[str, dict]:
    from netdef.cli.main import main

    args = ["train", f"cases/{case}/solver.prototxt", "--no-plot"]
    if case == "sgd_resume":
        src = TRAIN / "cases/sgd_step"
        for ext in ("caffemodel", "solverstate"):
            shutil.copy(src / f"snap_iter_30.{ext}", workdir / f"cases/sgd_step/snap_iter_30.{ext}")
        args += ["--snapshot", "cases/sgd_step/snap_iter_30.solverstate"]
    else:
        args += ["--weights", "init.caffemodel"]
    import torch

    old, threads = os.getcwd(), torch.get_num_threads()
    buf = io.StringIO()
    try:
        os.chdir(workdir)
        # netdef's default on this 2-core machine class; the conftest pins 1 thread per
        # xdist worker, and a different oneDNN summation order changes the last bits,
        # which these chaotic 60-iteration runs amplify to ~1e-4 (see PARITY_ITERS)
        torch.set_num_threads(2)
        with redirect_stdout(buf):
            code = main(args)
    finally:
        torch.set_num_threads(threads)
        os.chdir(old)
    assert code == 0
    text = buf.getvalue()
    return text, parse(text)


# sgd_long (600 iterations, lr 0.05 with momentum) is chaotic: a 1-ulp difference in a
# gradient (OpenBLAS's sgemm vs PyTorch's conv summation order) grows ~10× every 20
# iterations.  Measured: identical printed losses through iteration 100, 2e-6 relative
# at 120, 3e-5 at 160, 4% at 180.  Its per-iteration check covers the iterations before
# rounding differences can have grown; after that the run is compared by its final
# test accuracy (the fixture README calls this case "reference accuracy; long-run drift").
# The 1-ulp experiment (tools/experiments/ulp_sensitivity.py) moves the loss by 1.8e-4
# at iteration 100, so 80 is the window any float32 summation order can be held to.
PARITY_ITERS = {"sgd_long": 80}


def _long_run_accuracy_ok(got: dict, expected: dict) -> None:
    final_got = got["tests"][-1]["outputs"]["accuracy"]
    final_ref = expected["tests"][-1]["outputs"]["accuracy"]
    assert abs(final_got - final_ref) <= 0.02, (final_got, final_ref)
    assert final_got >= 0.89


@pytest.mark.parametrize("case", CASES)
def test_case_matches_caffe(workdir: Path, case: str) -> None:
    expected = json.loads((TRAIN / f"cases/{case}/curve.json").read_text())
    text, got = run_case(workdir, case)
    if case in PARITY_ITERS:
        limit = PARITY_ITERS[case]
        got_iters = {r["iter"]: r for r in got["iterations"]}
        for ref in expected["iterations"]:
            if ref["iter"] <= limit:
                assert got_iters[ref["iter"]]["loss"] == pytest.approx(ref["loss"], rel=1e-4)
            assert got_iters[ref["iter"]]["lr_text"] == f"{ref['lr']:g}"
        for mine, ref in zip(got["tests"], expected["tests"]):
            if ref["iter"] <= limit:
                assert mine["outputs"] == ref["outputs"]
        _long_run_accuracy_ok(got, expected)
        return
    exp_iters = {r["iter"]: r for r in expected["iterations"]}
    got_iters = {r["iter"]: r for r in got["iterations"]}
    assert sorted(got_iters) == sorted(exp_iters)
    for it, ref in exp_iters.items():
        mine = got_iters[it]
        assert mine["loss"] == pytest.approx(ref["loss"], rel=1e-4), f"iteration {it} loss"
        assert mine["lr"] == pytest.approx(ref["lr"], rel=1e-6) and \
            mine["lr_text"] == f"{ref['lr']:g}", f"iteration {it} lr"
        for name, v in ref["train_outputs"].items():
            assert mine["train_outputs"][name] == pytest.approx(v, rel=1e-4)
    assert [(t["iter"], t["net"]) for t in got["tests"]] == \
        [(t["iter"], t["net"]) for t in expected["tests"]]
    for mine, ref in zip(got["tests"], expected["tests"]):
        assert mine["outputs"]["accuracy"] == ref["outputs"]["accuracy"], f"test at {ref['iter']}"
        assert mine["outputs"]["loss"] == pytest.approx(ref["outputs"]["loss"], rel=1e-4)
    assert got["final_forward"]["loss"] == pytest.approx(expected["final_forward"]["loss"], rel=1e-4)
    assert "Optimization Done." in text

    from netdef.io.caffemodel import read_weights

    last = expected["snapshots"][-1]["caffemodel"]
    ours = read_weights(workdir / last)
    ref = read_weights(TRAIN / last)
    assert set(ref) <= set(ours)
    for layer, blobs in ref.items():
        for i, b in enumerate(blobs):
            np.testing.assert_allclose(ours[layer][i].reshape(b.shape), b, rtol=0,
                                       atol=1e-4 * float(np.abs(b).max()),
                                       err_msg=f"{layer}/{i}")
