"""Background prefetching: decode the next batches while the net computes.

Caffe's ``BasePrefetchingDataLayer`` keeps ``PREFETCH_COUNT`` (``data_param.prefetch``,
default 4) batches loaded by a worker thread.  :class:`Prefetcher` does the same for any
:class:`DataSource`: one daemon thread calls ``next_batch()`` and puts results in a
bounded queue, so the trainer only waits when decoding is slower than compute.  The
batch order is exactly the source's.  An error in the thread is raised again by the
consumer's next ``next_batch()``.  ``close()`` stops the thread promptly (it never
blocks on a full queue) and closes the source.

With ``pin_memory=True`` and CUDA available, batches come back as page-locked torch
tensors (fast, asynchronous ``.to("cuda", non_blocking=True)``); without CUDA they are
plain torch tensors.  ``as_torch=True`` gives torch tensors without pinning.

Only the worker may touch the source once prefetching started: feed ``MemoryData``/``Input``
sources directly instead of through a Prefetcher.
"""
from __future__ import annotations

import queue
import threading
from typing import Any

import numpy as np

from netdef.errors import DataError
from netdef.training.data.base import DataSource, Shape

__all__ = ["Prefetcher"]

_POLL_S = 0.1


class _Failure:
    """An exception raised by the worker, carried to the consumer."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Prefetcher:
    """Wrap ``source`` so that up to ``depth`` batches are decoded ahead of use."""

    def __init__(self, source: DataSource, depth: int = 4, *, pin_memory: bool = False,
                 as_torch: bool = False, close_source: bool = True) -> None:
        if depth < 1:
            raise DataError(f"prefetch depth must be at least 1, not {depth}")
        self.source = source
        self.depth = depth
        self.close_source = close_source
        self.as_torch = as_torch or pin_memory
        self.pin = pin_memory and _cuda_available()
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._closed = False
        # The worker gets no reference to ``self``, so an unclosed Prefetcher can still be
        # garbage-collected (``__del__`` then stops the thread).
        self._thread = threading.Thread(
            target=_work, args=(source, self._queue, self._stop, self.as_torch, self.pin),
            name=f"prefetch-{source.name}", daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------- consumer
    def top_shapes(self) -> dict[str, Shape]:
        return self.source.top_shapes()

    @property
    def tops(self) -> tuple[str, ...]:
        return self.source.tops

    def next_batch(self) -> dict[str, Any]:
        """The next batch, waiting for the worker if it is behind."""
        while True:
            if self._closed:
                raise DataError(f"prefetcher of layer '{self.source.name}' is closed")
            try:
                item = self._queue.get(timeout=_POLL_S)
                break
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    raise DataError(f"prefetch thread of layer '{self.source.name}' "
                                    "stopped") from None
        if isinstance(item, _Failure):
            self.close()
            raise item.exc
        return item

    def close(self) -> None:
        """Stop the worker, drop queued batches, close the source (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        while True:  # free a worker blocked on put()
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout=30)
        if self.close_source and not self._thread.is_alive():
            self.source.close()

    def __enter__(self) -> "Prefetcher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> "Prefetcher":
        return self

    def __next__(self) -> dict[str, Any]:
        return self.next_batch()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def _work(source: DataSource, q: "queue.Queue[Any]", stop: threading.Event, as_torch: bool,
          pin: bool) -> None:
    """The worker thread: read, convert, enqueue until stopped or failed."""
    while not stop.is_set():
        try:
            item: Any = _convert(source.next_batch(), as_torch, pin)
        except BaseException as exc:  # carried to the consumer, never lost
            item = _Failure(exc)
        if not _put(q, stop, item) or isinstance(item, _Failure):
            return


def _put(q: "queue.Queue[Any]", stop: threading.Event, item: Any) -> bool:
    """Block until there is room or the prefetcher is closed; False when stopped."""
    while not stop.is_set():
        try:
            q.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            continue
    return False


def _convert(batch: dict[str, np.ndarray], as_torch: bool, pin: bool) -> dict[str, Any]:
    if not as_torch:
        return batch
    import torch

    out: dict[str, Any] = {}
    for k, v in batch.items():
        t = torch.from_numpy(np.ascontiguousarray(v))
        out[k] = t.pin_memory() if pin else t
    return out


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())
