"""What every data source shares: the interface, path lookup, RNGs and rank splitting.

A :class:`DataSource` stands for one Caffe data layer.  ``next_batch()`` returns one
float32 array per top, shaped exactly like the layer's top blobs.

Data-parallel training (``world`` ranks): every rank opens the *same* stream (same
file order, same shuffles: the stream RNG depends only on ``seed``) and keeps every
``world``-th batch — rank ``k`` gets stream batches ``k, k+world, k+2·world, …`` and skips
the others cheaply (cursor moves, no decoding).  Together the ranks therefore see each
batch of the single-process stream exactly once.  (Caffe 1.0's ``DataLayer::Skip``
interleaves single *records* instead of batches; per-batch keeps each rank's batches
identical to single-process batches, which makes parity checks possible.)  As in Caffe,
the TEST phase is not split: only one process tests.  With ``shuffle`` and several ranks
pass a ``seed`` — otherwise each rank shuffles differently and the split is no partition.
"""
from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from netdef.errors import DataError, Loc

__all__ = ["DataSource", "resolve_path", "normalize_phase", "stream_rng", "item_rng"]

Shape = tuple[int, ...]


def normalize_phase(phase: Any) -> str:
    """``"TRAIN"``/``"TEST"`` from a string, a ``Phase`` enum or its int value."""
    name = getattr(phase, "name", phase)
    if isinstance(name, int):
        name = ("TRAIN", "TEST")[name] if name in (0, 1) else str(name)
    up = str(name).upper()
    if up not in ("TRAIN", "TEST"):
        raise DataError(f"phase must be TRAIN or TEST, not {phase!r}")
    return up


def stream_rng(seed: int | None) -> np.random.Generator:
    """The RNG of the record *stream* (shuffles, rand_skip): identical on every rank."""
    return np.random.default_rng(None if seed is None else [int(seed), 0x5EED])


def item_rng(seed: int | None, rank: int) -> np.random.Generator:
    """The RNG of per-item randomness (crop offsets, mirror, fillers): one per rank."""
    return np.random.default_rng(None if seed is None else [int(seed), 0x17E4, int(rank)])


def resolve_path(name: str, base_dir: Path | None, *, what: str, layer: str = "",
                 must_exist: bool = True) -> Path:
    """Find ``name`` like Caffe (relative to the working directory), else beside the net.

    Caffe opens every source relative to the process's working directory; netdef also
    tries the net file's folder so that a net can be run from anywhere.
    """
    if not name:
        raise DataError(f"{_who(layer)}{what} is not set",
                        hint=f"set the {what} field of the layer")
    path = Path(os.path.expanduser(name))
    candidates = [path] if path.is_absolute() else [Path.cwd() / path]
    if not path.is_absolute() and base_dir is not None:
        candidates.append(Path(base_dir) / path)
    for cand in candidates:
        if cand.exists():
            return cand
    if not must_exist:
        return candidates[0]
    looked = ", ".join(str(c.parent) for c in candidates)
    raise DataError(f"{_who(layer)}{what} '{name}' does not exist", loc=Loc(name),
                    hint=f"looked in {looked}; relative paths are taken from the working "
                         "directory (as Caffe does) or from the net file's folder")


def _who(layer: str) -> str:
    return f"layer '{layer}': " if layer else ""


class DataSource(ABC):
    """One data layer's batches.  Subclasses implement ``_read_batch``/``_skip_batch``.

    Sources are not thread-safe; wrap one in :class:`~netdef.training.data.prefetch.Prefetcher`
    to decode in the background.
    """

    def __init__(self, name: str, tops: tuple[str, ...], phase: str, *,
                 rank: int = 0, world: int = 1, split: bool = True) -> None:
        if world < 1 or not 0 <= rank < world:
            raise DataError(f"layer '{name}': rank {rank} is not in 0..{world - 1}",
                            hint="rank must be in [0, world)")
        self.name = name
        self.tops = tuple(tops)
        self.phase = phase
        # Caffe never splits the TEST stream: only rank 0 tests.
        self.rank, self.world = (rank, world) if split and phase == "TRAIN" else (0, 1)
        self._started = False
        self._closed = False

    # ---------------------------------------------------------------- public API
    @abstractmethod
    def top_shapes(self) -> dict[str, Shape]:
        """The shape of every top blob, as Caffe's ``Reshape`` at setup gives it."""

    def next_batch(self) -> dict[str, np.ndarray]:
        """This rank's next batch: ``{top: float32 array}``."""
        if self._closed:
            raise DataError(f"layer '{self.name}': the data source is closed")
        skip = self.rank if not self._started else self.world - 1
        self._started = True
        for _ in range(skip):
            self._skip_batch()
        return self._read_batch()

    def close(self) -> None:
        """Release files and handles (idempotent)."""
        self._closed = True

    def __enter__(self) -> "DataSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> "DataSource":
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        return self.next_batch()

    # ---------------------------------------------------------------- subclass hooks
    @abstractmethod
    def _read_batch(self) -> dict[str, np.ndarray]:
        """The stream's next batch."""

    def _skip_batch(self) -> None:
        """Advance the stream by one batch; override to skip without decoding."""
        self._read_batch()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, tops={self.tops}, phase={self.phase})"
