"""Crash safety and exact resume: kill -9 mid-run, resume, same losses bit for bit."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import FIXTURES, REPO

TRAIN = FIXTURES / "train"
SOLVER = """net: "digits_net.prototxt"
test_iter: 3
test_interval: 20
display: 1
max_iter: {max_iter}
snapshot: 10
snapshot_prefix: "run/snap"
random_seed: 1
solver_mode: CPU
base_lr: 0.05
momentum: 0.9
weight_decay: 0.0005
lr_policy: "step"
gamma: 0.5
stepsize: 20
{extra}"""


def _workdir(tmp_path: Path, max_iter: int, extra: str = "") -> Path:
    if not TRAIN.is_dir():
        pytest.skip("../shared/fixtures/train is missing")
    work = tmp_path / "train"
    shutil.copytree(TRAIN, work, ignore=shutil.ignore_patterns("cases"))
    for lock in work.rglob("lock.mdb"):
        lock.unlink()
    (work / "solver.prototxt").write_text(SOLVER.format(max_iter=max_iter, extra=extra))
    return work


def _netdef(work: Path, *args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "netdef", "train", "solver.prototxt",
                             "--no-plot", *args], cwd=work, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _losses(curve_file: Path) -> dict[int, float]:
    data = json.loads(curve_file.read_text())
    return {r["iter"]: r["loss"] for r in data["iterations"] if "loss" in r}


def test_kill_9_then_resume_reproduces_the_uninterrupted_run(tmp_path: Path) -> None:
    ref_dir = _workdir(tmp_path / "ref", 120)
    proc = _netdef(ref_dir, "--weights", "init.caffemodel")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    reference = _losses(ref_dir / "run/snap_curve.json")
    assert sorted(reference) == list(range(120))

    work = _workdir(tmp_path / "crash", 120)
    proc = _netdef(work, "--weights", "init.caffemodel")
    target = work / "run/snap_iter_30.solverstate"
    deadline = time.time() + 300
    while not target.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    states = sorted(work.glob("run/snap_iter_*.solverstate"),
                    key=lambda p: int(p.stem.split("_")[-1]))
    last = states[-1]
    done = int(last.stem.split("_")[-1])
    assert 30 <= done < 120
    # no temp files left behind count as snapshots; the last one is complete
    from netdef.io.caffemodel import read_solverstate, read_weights
    state = read_solverstate(last)
    assert state.iter == done
    assert set(read_weights(work / state.learned_net)) >= {"conv1", "conv2", "ip1", "ip2"}

    resumed = _netdef(work, "--snapshot", str(last.relative_to(work)))
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    assert f"Resuming from {last.relative_to(work)}" in out
    after = _losses(work / "run/snap_curve.json")
    assert sorted(after) == list(range(done, 120))
    for it, loss in after.items():
        assert loss == reference[it], f"iteration {it}: {loss!r} != {reference[it]!r}"


def test_sigint_snapshots_and_stops(tmp_path: Path) -> None:
    work = _workdir(tmp_path, 100000)
    proc = _netdef(work, "--weights", "init.caffemodel")
    deadline = time.time() + 300
    while not (work / "run/snap_iter_10.solverstate").exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "Optimization stopped early." in out
    states = list(work.glob("run/snap_iter_*.solverstate"))
    stopped_at = max(int(p.stem.split("_")[-1]) for p in states)
    # the newest snapshot is the stop point (written by snapshot_after_train, or the periodic
    # one when the signal came right after it): nothing was trained beyond it
    from netdef.io.caffemodel import read_solverstate
    assert read_solverstate(work / f"run/snap_iter_{stopped_at}.solverstate").iter == stopped_at
    trained = [int(n) for n in re.findall(r"Iteration (\d+)", out)]
    assert trained and max(trained) <= stopped_at


def test_hdf5_snapshot_format(tmp_path: Path) -> None:
    work = _workdir(tmp_path, 12, 'snapshot_format: HDF5\n')
    proc = _netdef(work, "--weights", "init.caffemodel")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert "Snapshotting to HDF5 file run/snap_iter_10.caffemodel.h5" in out
    from netdef.io.caffemodel import read_solverstate, read_weights
    assert read_solverstate(work / "run/snap_iter_12.solverstate.h5").iter == 12
    assert read_weights(work / "run/snap_iter_12.caffemodel.h5")["conv1"][0].shape == (8, 1, 3, 3)
