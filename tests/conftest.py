"""Shared test helpers: where the real Caffe files and fixtures live."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CAFFE = SHARED / "caffe"
FIXTURES = SHARED / "fixtures"
NETS = REPO / "nets"


def need_shared() -> None:
    if not CAFFE.is_dir():
        pytest.skip("../shared (real Caffe files) is not beside the repo")


def bvlc_files() -> list[Path]:
    """Every real .prototxt under ../shared/caffe (nets and solvers)."""
    if not CAFFE.is_dir():
        return []
    return sorted(CAFFE.rglob("*.prototxt"))


def is_solver_file(path: Path) -> bool:
    from netdef.api import looks_like_solver
    return looks_like_solver(path.read_text())
