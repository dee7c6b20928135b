"""How chaotic is the digits sgd_long run?  Flip one bit of one weight and compare.

Runs fixtures/train/cases/sgd_long twice with netdef — from init.caffemodel and from a
copy whose first conv1 weight is moved by one float32 ulp — and prints the relative
loss difference per displayed iteration.  Measured (2026-11-23): 0 through iteration 80,
1.8e-4 at 100, 2.2e-2 at 120, fully decorrelated by 200; netdef vs real Caffe differs
by 2e-6 at 120 and 3e-5 at 160.  So the late divergence from Caffe's curve is float
rounding amplified by the dynamics, not a netdef error.

Usage: python tools/experiments/ulp_sensitivity.py [path/to/fixtures/train]
"""
import io
import os
import shutil
import sys
import tempfile
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "training")]

from caffe_log import parse  # noqa: E402
from netdef.cli.main import main  # noqa: E402
from netdef.io.caffemodel import read_caffemodel, read_weights, write_caffemodel  # noqa: E402


def run() -> None:
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO.parent / "shared/fixtures/train"
    work = Path(tempfile.mkdtemp()) / "train"
    shutil.copytree(src, work)
    os.chdir(work)
    weights = read_weights("init.caffemodel")
    bumped = {k: [a.copy() for a in v] for k, v in weights.items()}
    bumped["conv1"][0].flat[0] = np.nextafter(bumped["conv1"][0].flat[0], np.float32(1))
    write_caffemodel("init_bumped.caffemodel", read_caffemodel("init.caffemodel"), bumped)
    losses = {}
    for name in ("init.caffemodel", "init_bumped.caffemodel"):
        buf = io.StringIO()
        with redirect_stdout(buf):
            main(["train", "cases/sgd_long/solver.prototxt", "--weights", name, "--no-plot"])
        losses[name] = {r["iter"]: r["loss"] for r in parse(buf.getvalue())["iterations"]}
    a, b = losses["init.caffemodel"], losses["init_bumped.caffemodel"]
    for it in sorted(a):
        print(f"{it:4d} {a[it]:.6g} {b[it]:.6g} {(b[it] - a[it]) / a[it]:+.2e}")


if __name__ == "__main__":
    run()
