"""The README's training example: scikit-learn's digits → LMDB → `netdef train` ≥ 97%."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import NETS, REPO


@pytest.mark.slow
def test_digits_example_reaches_97_percent(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    (tmp_path / "nets").mkdir()
    for name in ("digits.net", "digits_solver.net"):
        shutil.copy(NETS / name, tmp_path / "nets" / name)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    run = lambda *a: subprocess.run([sys.executable, "-m", "netdef", *a], cwd=tmp_path,  # noqa: E731
                                    env=env, capture_output=True, text=True, timeout=900)
    made = run("make-digits", "data/digits")
    assert made.returncode == 0, made.stderr
    trained = run("train", "nets/digits_solver.net")
    assert trained.returncode == 0, trained.stderr
    accuracies = [float(a) for a in re.findall(r"Test net output #0: accuracy = (\S+)", trained.stdout)]
    assert len(accuracies) == 13  # tests at 0, 200, …, 2400
    assert accuracies[0] < 0.2 and accuracies[-1] >= 0.97, accuracies
    assert (tmp_path / "snapshots/digits_iter_2400.caffemodel").exists()
    assert (tmp_path / "snapshots/digits_curve.png").read_bytes()[:4] == b"\x89PNG"
