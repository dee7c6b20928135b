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
            "cpus": os.cpu_count(), "platform": platform.platform()}


def write(name: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    data = {"benchmark": name, "machine": machine(), **data}
    path.write_text(json.dumps(data, indent=1) + "\n")
    print(json.dumps(data, indent=1))
    return path
