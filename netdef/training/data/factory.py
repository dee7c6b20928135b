"""``make_source``: the :class:`DataSource` for one data layer, by layer type."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from netdef.errors import DataError
from netdef.ir.messages import LayerParameter
from netdef.training.data.base import DataSource, normalize_phase
from netdef.training.data.dummy_source import DummyDataSource, InputSource
from netdef.training.data.hdf5_source import HDF5DataSource
from netdef.training.data.image_source import ImageDataSource
from netdef.training.data.lmdb_source import DBDataSource
from netdef.training.data.memory_source import MemoryDataSource

__all__ = ["make_source", "SOURCES", "is_data_layer"]

SOURCES: dict[str, Callable[..., DataSource]] = {
    "Data": DBDataSource,
    "HDF5Data": HDF5DataSource,
    "ImageData": ImageDataSource,
    "MemoryData": MemoryDataSource,
    "DummyData": DummyDataSource,
    "Input": InputSource,
}


def is_data_layer(layer: LayerParameter) -> bool:
    """True for the layer types :func:`make_source` serves."""
    return layer.type in SOURCES


def make_source(layer: LayerParameter, phase: Any, base_dir: Path | None, *, rank: int = 0,
                world: int = 1, seed: int | None = None) -> DataSource:
    """Open the data source of ``layer`` for ``phase`` (``"TRAIN"``/``"TEST"``).

    ``base_dir`` (the net file's folder) is the fallback for relative paths, which are
    first taken from the working directory as in Caffe.  ``rank``/``world`` split the
    TRAIN stream between data-parallel processes batch by batch (see
    :mod:`netdef.training.data.base`); ``seed`` makes shuffles and random transforms
    reproducible.
    """
    cls = SOURCES.get(layer.type)
    if cls is None:
        raise DataError(f"layer '{layer.name}' of type '{layer.type}' is not a data layer "
                        "netdef can read", hint="supported: " + ", ".join(SOURCES))
    base = Path(base_dir) if base_dir is not None else None
    return cls(layer, normalize_phase(phase), base, rank=rank, world=world, seed=seed)
