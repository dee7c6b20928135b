"""``MemoryData`` layer: batches cut from arrays the program hands over.

As Caffe's ``MemoryDataLayer::Reset``: ``reset(data, labels)`` takes ``N`` items of shape
``(channels, height, width)`` and ``N`` labels, ``N`` a multiple of ``batch_size``; each
batch is the next ``batch_size`` items, wrapping to the first.  Like Caffe, arrays given
to ``reset`` are *not* transformed (Caffe only warns that ``transform_param`` is ignored).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from netdef.errors import DataError
from netdef.ir.messages import LayerParameter
from netdef.ir.schema import has
from netdef.training.data.base import DataSource, Shape

__all__ = ["MemoryDataSource"]


class MemoryDataSource(DataSource):
    """Batches of in-memory arrays, set with :meth:`reset`."""

    def __init__(self, layer: LayerParameter, phase: str, base_dir: Path | None = None, *,
                 rank: int = 0, world: int = 1, seed: int | None = None) -> None:
        super().__init__(layer.name, layer.top, phase, rank=rank, world=world)
        p = layer.memory_data_param
        if len(self.tops) != 2:
            raise DataError(f"layer '{self.name}': MemoryData has 2 tops (data, label)")
        self.batch_size = int(p.batch_size)
        self.item_shape = (int(p.channels), int(p.height), int(p.width))
        if self.batch_size <= 0 or min(self.item_shape) <= 0:
            raise DataError(f"layer '{self.name}': memory_data_param needs positive "
                            "batch_size, channels, height and width")
        self._warn_transform = has(layer, "transform_param")
        self.data: np.ndarray | None = None
        self.labels: np.ndarray | None = None
        self.pos = 0

    def reset(self, data: Any, labels: Any) -> None:
        """Hand over ``data`` ``(N, C, H, W)`` and ``labels`` ``(N,)``; start at item 0."""
        arr = np.ascontiguousarray(data, dtype=np.float32)
        lab = np.ascontiguousarray(labels, dtype=np.float32).reshape(-1)
        n = arr.shape[0] if arr.ndim else 0
        if arr.shape[1:] != self.item_shape:
            raise DataError(f"layer '{self.name}': items of shape {arr.shape[1:]}, the layer "
                            f"declares {self.item_shape}")
        if n == 0 or n % self.batch_size:
            raise DataError(f"layer '{self.name}': {n} items is not a positive multiple of "
                            f"batch_size {self.batch_size}")
        if lab.shape[0] != n:
            raise DataError(f"layer '{self.name}': {lab.shape[0]} labels for {n} items")
        if self._warn_transform:
            warnings.warn(f"MemoryData '{self.name}' does not transform array data on reset()",
                          stacklevel=2)
            self._warn_transform = False
        self.data, self.labels, self.pos = arr, lab, 0

    def top_shapes(self) -> dict[str, Shape]:
        return {self.tops[0]: (self.batch_size, *self.item_shape),
                self.tops[1]: (self.batch_size,)}

    def _read_batch(self) -> dict[str, np.ndarray]:
        if self.data is None or self.labels is None:
            raise DataError(f"layer '{self.name}': MemoryData has no data yet",
                            hint="call source.reset(data, labels) first")
        sl = slice(self.pos, self.pos + self.batch_size)
        out = {self.tops[0]: self.data[sl].copy(), self.tops[1]: self.labels[sl].copy()}
        self._skip_batch()
        return out

    def _skip_batch(self) -> None:
        if self.data is not None:
            self.pos = (self.pos + self.batch_size) % self.data.shape[0]
