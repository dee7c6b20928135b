"""``DummyData`` (filled blobs) and ``Input`` (blobs the program feeds).

DummyData as Caffe's ``DummyDataLayer``: shapes from ``shape`` (one for all tops or one
per top) or the legacy ``num/channels/height/width`` lists; fillers likewise (none means
constant 0).  Constant fillers are filled once; other fillers draw new values for every
batch.  ``constant``, ``uniform`` and ``gaussian`` are drawn with numpy; any other filler
type goes through netdef's torch fillers.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from netdef.errors import DataError
from netdef.ir.messages import FillerParameter, LayerParameter
from netdef.ir.schema import make
from netdef.training.data.base import DataSource, Shape, item_rng

__all__ = ["DummyDataSource", "InputSource"]


def _per_top(values: Sequence[Any], n_top: int, what: str, layer: str) -> list[Any]:
    if len(values) == 1:
        return list(values) * n_top
    if len(values) != n_top:
        raise DataError(f"layer '{layer}': {len(values)} {what} for {n_top} tops",
                        hint=f"give one {what} for all tops or one per top")
    return list(values)


class DummyDataSource(DataSource):
    """Blobs filled by ``dummy_data_param`` fillers."""

    def __init__(self, layer: LayerParameter, phase: str, base_dir: Path | None = None, *,
                 rank: int = 0, world: int = 1, seed: int | None = None) -> None:
        super().__init__(layer.name, layer.top, phase, rank=rank, world=world, split=False)
        p = layer.dummy_data_param
        n = len(self.tops)
        if p.num:
            if p.shape:
                raise DataError(f"layer '{self.name}': use either shape or the legacy "
                                "num/channels/height/width, not both")
            dims = [_per_top(getattr(p, k), n, k, self.name)
                    for k in ("num", "channels", "height", "width")]
            shapes = [tuple(int(d[i]) for d in dims) for i in range(n)]
        elif p.shape:
            shapes = [tuple(int(d) for d in s.dim) for s in _per_top(p.shape, n, "shape",
                                                                     self.name)]
        else:
            raise DataError(f"layer '{self.name}': DummyData needs a shape per top",
                            hint="dummy_data_param { shape { dim: 10 dim: 3 } }")
        fillers = list(p.data_filler) if p.data_filler else [make(FillerParameter)]
        self.fillers = _per_top(fillers, n, "data_filler", self.name)
        self.shapes = dict(zip(self.tops, shapes))
        self.rng = item_rng(seed, rank)
        self._seed = seed
        self._fixed: dict[str, np.ndarray] = {}
        for top, f in zip(self.tops, self.fillers):
            if f.type == "constant":
                self._fixed[top] = np.full(self.shapes[top], f.value, np.float32)

    def top_shapes(self) -> dict[str, Shape]:
        return dict(self.shapes)

    def _fill(self, shape: Shape, f: FillerParameter) -> np.ndarray:
        if f.type == "uniform":
            return self.rng.uniform(f.min, f.max, shape).astype(np.float32)
        if f.type == "gaussian" and f.sparse < 0:
            return self.rng.normal(f.mean, f.std, shape).astype(np.float32)
        import torch

        from netdef.lowering.fillers import fill_blob

        gen = torch.Generator().manual_seed(int(self.rng.integers(2**62)))
        return fill_blob(torch.empty(shape), f, gen).numpy().astype(np.float32)

    def _read_batch(self) -> dict[str, np.ndarray]:
        return {t: self._fixed[t].copy() if t in self._fixed else self._fill(self.shapes[t], f)
                for t, f in zip(self.tops, self.fillers)}

    def _skip_batch(self) -> None:  # never called: DummyData is not split between ranks
        pass


class InputSource(DataSource):
    """``Input`` layer: nothing to read; the program calls :meth:`feed` before each batch."""

    def __init__(self, layer: LayerParameter, phase: str, base_dir: Path | None = None, *,
                 rank: int = 0, world: int = 1, seed: int | None = None) -> None:
        super().__init__(layer.name, layer.top, phase, rank=rank, world=world, split=False)
        shapes = layer.input_param.shape
        self.shapes: dict[str, Shape] = {}
        if shapes:
            for top, s in zip(self.tops, _per_top(shapes, len(self.tops), "shape", self.name)):
                self.shapes[top] = tuple(int(d) for d in s.dim)
        self._fed: dict[str, np.ndarray] | None = None

    def feed(self, arrays: Mapping[str, Any] | None = None, **kw: Any) -> None:
        """Set the arrays the next batches return (one per top)."""
        given = {**(arrays or {}), **kw}
        missing = [t for t in self.tops if t not in given]
        if missing:
            raise DataError(f"layer '{self.name}': no array for input {missing}")
        self._fed = {t: np.ascontiguousarray(given[t], dtype=np.float32) for t in self.tops}

    def top_shapes(self) -> dict[str, Shape]:
        return dict(self.shapes)

    def _read_batch(self) -> dict[str, np.ndarray]:
        if self._fed is None:
            raise DataError(f"layer '{self.name}': Input blobs are fed by the program",
                            hint="call source.feed(data=array, ...) before next_batch()")
        return dict(self._fed)
