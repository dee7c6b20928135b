"""Prefetcher: same batches in the same order, errors carried over, prompt shutdown."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from netdef.api import load_net
from netdef.errors import DataError
from netdef.training.data import DataSource, Prefetcher, make_source

FIX = Path("/work/shared/fixtures/train")


class Counting(DataSource):
    """Batch i is [i, i]; fails with ValueError at ``fail_at``."""

    def __init__(self, fail_at: int | None = None) -> None:
        super().__init__("count", ("x",), "TRAIN")
        self.i = 0
        self.fail_at = fail_at
        self.closed = False

    def top_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"x": (2,)}

    def _read_batch(self) -> dict[str, np.ndarray]:
        if self.i == self.fail_at:
            raise ValueError("boom")
        self.i += 1
        return {"x": np.full(2, self.i - 1, np.float32)}

    def close(self) -> None:
        self.closed = True
        super().close()


@pytest.mark.skipif(not FIX.is_dir(), reason="training fixtures missing")
def test_prefetched_batches_equal_direct_batches():
    loaded = load_net(FIX / "digits_net_lmdb.prototxt", phase="TRAIN")
    lay = next(l for l in loaded.net.layer if l.type == "Data")
    with make_source(lay, "TRAIN", loaded.base_dir) as direct:
        expect = [direct.next_batch() for _ in range(35)]
    with Prefetcher(make_source(lay, "TRAIN", loaded.base_dir), depth=3) as pf:
        assert pf.top_shapes() == {"data": (50, 1, 8, 8), "label": (50,)}
        got = [pf.next_batch() for _ in range(35)]
    for a, b in zip(expect, got):
        assert a["data"].tobytes() == b["data"].tobytes()
        assert a["label"].tobytes() == b["label"].tobytes()


def test_queue_is_bounded_and_close_is_prompt():
    src = Counting()
    pf = Prefetcher(src, depth=2)
    time.sleep(0.3)
    assert src.i <= 3  # two queued + one waiting to be queued
    assert [pf.next_batch()["x"][0] for _ in range(5)] == [0, 1, 2, 3, 4]
    t = time.perf_counter()
    pf.close()
    assert time.perf_counter() - t < 2
    assert not pf._thread.is_alive() and src.closed
    with pytest.raises(DataError, match="closed"):
        pf.next_batch()
    pf.close()  # idempotent


def test_worker_error_reaches_the_consumer():
    with Prefetcher(Counting(fail_at=3), depth=4) as pf:
        assert [pf.next_batch()["x"][0] for _ in range(3)] == [0, 1, 2]
        with pytest.raises(ValueError, match="boom"):
            pf.next_batch()


def test_as_torch_and_pin_memory_without_cuda():
    torch = pytest.importorskip("torch")
    with Prefetcher(Counting(), depth=1, pin_memory=True) as pf:
        x = pf.next_batch()["x"]
        assert isinstance(x, torch.Tensor) and x.dtype == torch.float32
        assert x.is_pinned() == torch.cuda.is_available()


def test_no_thread_leak():
    before = threading.active_count()
    for _ in range(5):
        with Prefetcher(Counting(), depth=2) as pf:
            pf.next_batch()
    assert threading.active_count() <= before
