"""Atomic writes: the target is replaced whole or not at all."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import h5py
import pytest

from netdef.io import atomic_open, atomic_path, atomic_write


def _leftovers(d: Path) -> list[str]:
    return [p.name for p in d.iterdir() if p.name.endswith(".tmp")]


def test_write_and_replace(tmp_path: Path) -> None:
    p = tmp_path / "w.bin"
    atomic_write(p, b"one")
    atomic_write(p, [b"tw", memoryview(b"o!")])
    assert p.read_bytes() == b"two!" and not _leftovers(tmp_path)


def test_crash_mid_write_keeps_the_old_file(tmp_path: Path) -> None:
    p = tmp_path / "w.bin"
    p.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_open(p) as fh:
            fh.write(b"half of the new")
            raise RuntimeError("killed")
    assert p.read_bytes() == b"old" and not _leftovers(tmp_path)


def test_failed_rename_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "w.bin"
    p.write_bytes(b"old")

    def boom(src: str, dst: str) -> None:
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write(p, b"new")
    assert p.read_bytes() == b"old" and not _leftovers(tmp_path)


def test_file_and_directory_are_fsynced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real = os.fsync

    def spy(fd: int) -> None:
        synced.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real(fd)
    monkeypatch.setattr(os, "fsync", spy)
    atomic_write(tmp_path / "w.bin", b"x")
    assert synced == ["file", "dir"]


def test_atomic_path_for_h5py(tmp_path: Path) -> None:
    p = tmp_path / "w.h5"
    with atomic_path(p) as tmp:
        assert tmp.parent == tmp_path and not p.exists()
        with h5py.File(tmp, "w") as f:
            f["x"] = [1, 2]
    with h5py.File(p, "r") as f:
        assert list(f["x"][()]) == [1, 2]
    assert not _leftovers(tmp_path)


def test_mode_follows_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "w.bin", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "w.bin").stat().st_mode) == 0o644
