"""Data-parallel `netdef train` under real `torchrun` processes (gloo on the CPU).

The digits fixture `sgd_step` (one process, batch 50, real Caffe's curve) is re-run as
two ranks of batch 25 (`digits_net_b25.prototxt`): rank k reads stream batches k, k+2, …,
so each update sees the same 50 rows, and the averaged gradient of two 25-batches is
the 50-batch gradient.  The curve rank 0 prints (losses averaged over the ranks) must
equal Caffe's within 1e-4, as `test_fixture_runs.py` requires of a single process.
Also: one rank killed or hung mid-run, two "nodes" on one machine, mismatched nets,
resuming a 2-rank snapshot with one process, and `--gpus` without CUDA.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest

from caffe_log import parse
from conftest import FIXTURES, REPO

TRAIN = FIXTURES / "train"
EXPECTED = TRAIN / "cases/sgd_step/curve.json"
CASE = "ddp"  # the 2×25 copy of sgd_step, in cases/ddp/

pytestmark = pytest.mark.skipif(not TRAIN.is_dir(), reason="../shared/fixtures/train is missing")


# ------------------------------------------------------------------------- helpers
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def copy_fixtures(dst: Path) -> Path:
    shutil.copytree(TRAIN, dst, ignore=shutil.ignore_patterns(
        "snap_iter_*", "snap_curve*", "caffe.log", "lock.mdb"))
    # cases/sgd_step's solver with the batch-25 net; same hyper-parameters, iter_size 1
    text = (TRAIN / "cases/sgd_step/solver.prototxt").read_text()
    assert 'net: "digits_net.prototxt"' in text and "iter_size" not in text
    text = text.replace('"digits_net.prototxt"', '"digits_net_b25.prototxt"')
    for case, extra in ((CASE, "iter_size: 1\n"), ("single_b25x2", "iter_size: 2\n")):
        (dst / "cases" / case).mkdir(parents=True, exist_ok=True)
        solver = text.replace("cases/sgd_step/snap", f"cases/{case}/snap") + extra
        (dst / "cases" / case / "solver.prototxt").write_text(solver)
    return dst


def env(**extra: str) -> dict[str, str]:
    e = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                "MASTER_PORT", "NETDEF_TEST_DIE_AT_ITER", "NETDEF_TEST_DIE_RANK",
                "NETDEF_TEST_DIE_HOW", "NETDEF_DIST_TIMEOUT"):
        e.pop(key, None)
    e.update(extra)
    return e


def torchrun(*launcher: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *launcher, "-m", "netdef", "train",
            f"cases/{CASE}/solver.prototxt"]


def node_cmd(node: int, port: int, *train_args: str) -> list[str]:
    return torchrun("--nnodes", "2", "--nproc_per_node", "1", "--node_rank", str(node),
                    "--master_addr", "127.0.0.1", "--master_port", str(port)) + list(train_args)


def files(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*") if p.is_file()}


def check_curve(got: dict, expected: dict, first_iter: int = 0, iter_size: int = 1) -> None:
    """Like test_fixture_runs: losses/outputs 1e-4 relative, lr and accuracies exact.

    With iter_size 2 × 25 the train output and the final forward are one 25-batch's
    (Caffe prints the last sub-batch), so only the iteration loss compares.
    """
    exp_iters = {r["iter"]: r for r in expected["iterations"] if r["iter"] >= first_iter}
    got_iters = {r["iter"]: r for r in got["iterations"]}
    assert sorted(got_iters) == sorted(exp_iters)
    for it, ref in exp_iters.items():
        mine = got_iters[it]
        assert mine["loss"] == pytest.approx(ref["loss"], rel=1e-4), f"iteration {it} loss"
        assert mine["lr_text"] == f"{ref['lr']:g}", f"iteration {it} lr"
        for name, v in ref["train_outputs"].items() if iter_size == 1 else ():
            assert mine["train_outputs"][name] == pytest.approx(v, rel=1e-4), f"iteration {it}"
    ref_tests = [t for t in expected["tests"] if t["iter"] > first_iter or first_iter == 0]
    assert [t["iter"] for t in got["tests"]] == [t["iter"] for t in ref_tests]
    for mine, ref in zip(got["tests"], ref_tests):
        assert mine["outputs"]["accuracy"] == ref["outputs"]["accuracy"], f"test at {ref['iter']}"
        assert mine["outputs"]["loss"] == pytest.approx(ref["outputs"]["loss"], rel=1e-4)
    if iter_size == 1:
        assert got["final_forward"]["loss"] == pytest.approx(expected["final_forward"]["loss"],
                                                             rel=1e-4)


def check_final_state(workdir: Path, case: str) -> None:
    """Final weights and momentum history within 1e-4 of Caffe's sgd_step (per blob)."""
    from netdef.io.caffemodel import read_solverstate, read_weights, solverstate_history

    ours = read_weights(workdir / f"cases/{case}/snap_iter_60.caffemodel")
    ref = read_weights(TRAIN / "cases/sgd_step/snap_iter_60.caffemodel")
    for layer, blobs in ref.items():
        for i, b in enumerate(blobs):
            np.testing.assert_allclose(ours[layer][i].reshape(b.shape), b, rtol=0,
                                       atol=1e-4 * float(np.abs(b).max()), err_msg=f"{layer}/{i}")
    path = workdir / f"cases/{case}/snap_iter_60.solverstate"
    mine = solverstate_history(read_solverstate(path))
    theirs = solverstate_history(read_solverstate(TRAIN / "cases/sgd_step/snap_iter_60.solverstate"))
    assert len(mine) == len(theirs) == 8
    for k, (h, r) in enumerate(zip(mine, theirs)):
        np.testing.assert_allclose(h.reshape(r.shape), r, rtol=0,
                                   atol=1e-4 * float(np.abs(r).max()), err_msg=f"history {k}")


@pytest.fixture(scope="module")
def expected() -> dict:
    return json.loads(EXPECTED.read_text())


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One 2-process torchrun run of the 2×25 solver; each rank's streams in its own files."""
    work = copy_fixtures(tmp_path_factory.mktemp("ddp") / "train")
    logs = work.parent / "torchrun_logs"
    before = files(work)
    t0 = time.monotonic()
    proc = subprocess.run(
        torchrun("--nproc_per_node", "2", "--master_port", str(free_port()),
                 "--log-dir", str(logs), "--redirects", "3")
        + ["--weights", "init.caffemodel"],
        cwd=work, env=env(), capture_output=True, text=True, timeout=180)
    elapsed = time.monotonic() - t0
    streams = {}
    for rank in (0, 1):
        found = list(logs.rglob(f"attempt_0/{rank}"))
        assert len(found) == 1, (rank, list(logs.rglob("*")), proc.stderr[-3000:])
        streams[rank] = {s: (found[0] / f"{s}.log").read_text() for s in ("stdout", "stderr")}
    return {"work": work, "proc": proc, "before": before, "streams": streams, "elapsed": elapsed}


# ------------------------------------------------------------------------- tests
def test_two_ranks_reproduce_the_batch50_caffe_curve(two_ranks: dict, expected: dict) -> None:
    proc, streams = two_ranks["proc"], two_ranks["streams"]
    assert proc.returncode == 0, streams[0]["stderr"][-3000:] + streams[1]["stderr"][-3000:]
    log = streams[0]["stdout"]
    assert "Data-parallel training on 2 ranks (gloo)" in log
    check_curve(parse(log), expected)
    # every rank applied the same updates: bit-identical weights and history
    assert "All 2 ranks hold identical weights and solver history (checksum" in log
    assert log.rstrip().endswith("Optimization Done.")
    check_final_state(two_ranks["work"], CASE)


def test_only_rank0_writes(two_ranks: dict) -> None:
    assert two_ranks["proc"].returncode == 0
    assert two_ranks["streams"][1]["stdout"] == ""  # rank 1 printed nothing
    before, after = two_ranks["before"], files(two_ranks["work"])
    assert all(after[k] == v for k, v in before.items())  # nothing overwritten
    new = sorted(set(after) - set(before))
    prefix = f"cases/{CASE}/snap"
    assert new == sorted([f"{prefix}_curve.json", f"{prefix}_curve.png",
                          *(f"{prefix}_iter_{i}.{ext}" for i in (30, 60)
                            for ext in ("caffemodel", "solverstate", "solverstate.netdef.json"))])


def test_resume_two_rank_snapshot_with_one_process(two_ranks: dict, expected: dict) -> None:
    """History is per parameter and the data position counts stream batches: one process
    (iter_size 2 × 25) resumes the 2-rank snapshot at 30 and continues the same curve."""
    assert two_ranks["proc"].returncode == 0
    from netdef.cli.main import main

    work = two_ranks["work"]
    sidecar = json.loads((work / f"cases/{CASE}/snap_iter_30.solverstate.netdef.json").read_text())
    assert sidecar["train_batches"] == 60  # 30 iterations × 2 ranks of the 25-row stream
    old, buf = os.getcwd(), io.StringIO()
    try:
        os.chdir(work)
        with redirect_stdout(buf):
            code = main(["train", "cases/single_b25x2/solver.prototxt", "--no-plot",
                         "--snapshot", f"cases/{CASE}/snap_iter_30.solverstate"])
    finally:
        os.chdir(old)
    assert code == 0
    check_curve(parse(buf.getvalue()), expected, first_iter=30, iter_size=2)
    check_final_state(work, "single_b25x2")


def test_two_nodes_on_one_machine(tmp_path: Path, expected: dict) -> None:
    """`torchrun --nnodes 2 --node_rank {0,1}` (static rendezvous), each node in its own
    copy of the fixtures: node 0 reproduces the curve, node 1 writes no file, no stdout."""
    nodes = [copy_fixtures(tmp_path / f"node{i}") for i in (0, 1)]
    before = files(nodes[1])
    port = free_port()
    procs = [subprocess.Popen(node_cmd(i, port, "--weights", "init.caffemodel"), cwd=nodes[i],
                              env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in (0, 1)]
    outs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][1][-3000:] + outs[1][1][-3000:]
    check_curve(parse(outs[0][0]), expected)
    assert "All 2 ranks hold identical weights" in outs[0][0]
    assert outs[1][0] == ""
    assert files(nodes[1]) == before
    assert (nodes[0] / f"cases/{CASE}/snap_iter_60.solverstate").is_file()


@pytest.mark.parametrize("how", ["kill", "hang"])
def test_a_lost_rank_stops_the_run(tmp_path: Path, how: str) -> None:
    """Rank 1 is SIGKILLed (or hangs) at iteration 5: rank 0 stops with a clear message,
    well within 60 s (a dead peer's sockets close at once; a hung one hits the timeout)."""
    work = copy_fixtures(tmp_path / "train")
    t0 = time.monotonic()
    proc = subprocess.run(
        torchrun("--nproc_per_node", "2", "--master_port", str(free_port()))
        + ["--weights", "init.caffemodel", "--no-plot"],
        cwd=work, capture_output=True, text=True, timeout=90,
        env=env(NETDEF_TEST_DIE_AT_ITER="5", NETDEF_TEST_DIE_HOW=how, NETDEF_DIST_TIMEOUT="5"))
    elapsed = time.monotonic() - t0
    assert proc.returncode != 0
    assert elapsed < 60
    assert "error: rank 1 lost during iteration 5" in proc.stderr, proc.stderr[-3000:]
    if how == "hang":
        assert "timeout" in proc.stderr.lower() or "timed out" in proc.stderr.lower()
    assert "Iteration 4, lr = 0.05" in proc.stdout
    assert "Iteration 5 (" not in proc.stdout  # no update after the loss
    assert not (work / f"cases/{CASE}/snap_iter_30.caffemodel").exists()


def test_mismatched_nets_are_refused(tmp_path: Path) -> None:
    nodes = [copy_fixtures(tmp_path / f"node{i}") for i in (0, 1)]
    net = nodes[1] / "digits_net_b25.prototxt"
    text = net.read_text()
    assert "alpha: 0.0001" in text  # LRN: no weights change, only the definition
    net.write_text(text.replace("alpha: 0.0001", "alpha: 0.0002"))
    port = free_port()
    procs = [subprocess.Popen(node_cmd(i, port, "--weights", "init.caffemodel", "--no-plot"),
                              cwd=nodes[i], env=env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in (0, 1)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode != 0
        assert ("the ranks compiled different nets or solvers: train net, test net #0 differ "
                "(rank 0 vs rank 1)") in err, err[-2000:]
    assert "Iteration 0 (" not in outs[0][0]


# ------------------------------------------------------------------------- CLI / units
def test_gpus_without_cuda_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from netdef.cli.main import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    for spec in ("all", "0,1"):
        err = io.StringIO()
        with redirect_stderr(err):
            code = main(["train", str(TRAIN / "cases/sgd_step/solver.prototxt"), "--gpus", spec])
        assert code == 2
        assert f"--gpus {spec}: no CUDA GPU is visible" in err.getvalue()


def test_gpus_spec_and_relaunch_command() -> None:
    import argparse

    from netdef.cli.train_cmd import _relaunch_args
    from netdef.errors import NetdefError
    from netdef.training.distributed import launch_command, parse_gpus

    assert parse_gpus("all", 3) == [0, 1, 2]
    assert parse_gpus("2,0", 3) == [2, 0]
    for bad in ("3", "0,0", "x", ","):
        with pytest.raises(NetdefError):
            parse_gpus(bad, 3)
    args = argparse.Namespace(solver="s.prototxt", weights="w.caffemodel", snapshot=None,
                              iterations=7, no_plot=True, device=None, gpus="0,1",
                              compile=False, channels_last=None)
    tail = _relaunch_args(args)
    assert tail == ["train", "s.prototxt", "--device", "cuda", "--weights", "w.caffemodel",
                    "--iterations", "7", "--no-plot"]
    # the per-GPU processes get the same --compile and layout choice
    more = argparse.Namespace(**{**vars(args), "compile": True, "channels_last": False})
    assert _relaunch_args(more)[-2:] == ["--compile", "--no-channels-last"]
    more.channels_last = True
    assert _relaunch_args(more)[-1] == "--channels-last"
    cmd = launch_command(tail, 2)
    assert cmd[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    assert cmd[6:8] == ["-m", "netdef"] and cmd[8:] == tail


def test_environment_and_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch
    import torch.distributed as dist

    from netdef.errors import NetdefError
    from netdef.training.distributed import Launch, from_env, pick_backend

    assert from_env({}) is None
    assert from_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}) == Launch(1, 2, 0, 2)
    for bad in ({"RANK": "2", "WORLD_SIZE": "2"}, {"RANK": "a", "WORLD_SIZE": "2"}):
        with pytest.raises(NetdefError):
            from_env(bad)
    assert pick_backend(torch.device("cpu")) == "gloo"
    monkeypatch.setenv("NETDEF_DIST_BACKEND", "nccl")
    with pytest.raises(NetdefError, match="nccl"):  # no NCCL build, or no CUDA device
        pick_backend(torch.device("cpu"))
    monkeypatch.setenv("NETDEF_DIST_BACKEND", "gloo")
    monkeypatch.setattr(dist, "is_gloo_available", lambda: False)
    with pytest.raises(NetdefError, match="gloo backend is not available"):
        pick_backend(torch.device("cpu"))
