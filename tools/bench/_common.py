"""Shared benchmark helpers: medians over repeats, warm-up excluded, JSON results."""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "tools" / "bench" / "results"
SHARED = REPO.parent / "shared"


def timeit(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "repeats": repeats}


def cold_command(args: list[str]) -> Callable[[], None]:
    """A fresh interpreter per call: what a user typing the command waits for."""
    env = dict(os.environ, PYTHONPATH=str(REPO))

    def run() -> None:
        proc = subprocess.run([sys.executable, "-m", "netdef", *args], capture_output=True,
                              env=env, cwd=REPO)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr.decode()[-2000:])
    return run


def machine() -> dict[str, object]:
    return {"python": platform.python_version(), "machine": platform.machine(),
            "cpus": os.cpu_count(), "platform": platform.platform(), "cpu": _cpu()}


def _cpu() -> dict[str, str]:
    """The CPU's name and generation from /proc/cpuinfo: same-named "AMD EPYC" VMs of
    two generations gave this project's benchmarks a 2x different convolution speed."""
    keys = {"model name": "name", "cpu family": "family", "model": "model"}
    out: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in keys and keys[key.strip()] not in out:
                    out[keys[key.strip()]] = value.strip()
                if not line.strip() and out:
                    break
    except OSError:
        pass
    return out


def write(name: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    data = {"benchmark": name, "machine": machine(), **data}
    path.write_text(json.dumps(data, indent=1) + "\n")
    print(json.dumps(data, indent=1))
    return path


class Budget:
    """Seconds left of a benchmark's whole-run time limit."""

    def __init__(self, seconds: float) -> None:
        self.t0 = time.perf_counter()
        self.seconds = seconds

    @property
    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.t0)


def why(exc: BaseException) -> str:
    """One line (≤ 600 chars) for a failure recorded in a result JSON: message + cause."""
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    text = f"{type(exc).__name__}: " + (" | ".join(lines[:4]) or "(no message)")
    cause = exc.__cause__ or exc.__context__
    if cause is not None and str(cause).strip():
        text += f" (cause: {type(cause).__name__}: {str(cause).strip().splitlines()[0]})"
    return text[:600]
