"""``HDF5Data`` layer: rows of HDF5 datasets named like the tops, file after file.

As Caffe's ``HDF5DataLayer``: the source is a text file of ``.h5`` paths (whitespace
separated); every file is loaded whole, as float32, one dataset per top (all with the same
number of rows); a batch takes the next ``batch_size`` rows, continuing into the next file
and wrapping from the last file to the first.  With ``shuffle`` the file order is shuffled
at setup and again at every wrap, and the rows of a file whenever it is loaded and at every
wrap of its rows.  ``transform_param`` does not apply (Caffe's HDF5Data ignores it).
H5 paths are taken relative to the working directory first, then the net's folder.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from netdef.errors import DataError, Loc
from netdef.ir.messages import LayerParameter
from netdef.training.data.base import DataSource, Shape, resolve_path, stream_rng

__all__ = ["HDF5DataSource", "read_list_tokens"]


def read_list_tokens(path: Path) -> list[str]:
    """The whitespace-separated names of a list file (Caffe reads it with ``>>``)."""
    try:
        return path.read_text().split()
    except OSError as e:
        raise DataError(f"cannot read list file: {e.strerror}", loc=Loc(str(path))) from None


class HDF5DataSource(DataSource):
    """Batches of rows from a list of HDF5 files."""

    def __init__(self, layer: LayerParameter, phase: str, base_dir: Path | None, *,
                 rank: int = 0, world: int = 1, seed: int | None = None) -> None:
        super().__init__(layer.name, layer.top, phase, rank=rank, world=world)
        p = layer.hdf5_data_param
        if not self.tops:
            raise DataError(f"layer '{self.name}': HDF5Data needs at least one top")
        self.batch_size = int(p.batch_size)
        if self.batch_size <= 0:
            raise DataError(f"layer '{self.name}': hdf5_data_param.batch_size must be positive")
        self.shuffle = bool(p.shuffle)
        self.rng = stream_rng(seed)
        self.base_dir = base_dir
        self.list_path = resolve_path(p.source, base_dir, what="hdf5_data_param.source",
                                      layer=self.name)
        names = read_list_tokens(self.list_path)
        if not names:
            raise DataError(f"layer '{self.name}': the list file names no HDF5 file",
                            loc=Loc(str(self.list_path)),
                            hint="write one .h5 path per line")
        self.files = [resolve_path(n, base_dir, what="HDF5 file", layer=self.name)
                      for n in names]
        self.file_order = np.arange(len(self.files))
        if self.shuffle:
            self.rng.shuffle(self.file_order)
        self.current_file = 0
        self._load(self.files[self.file_order[0]])

    def _load(self, path: Path) -> None:
        """Load every top's dataset of one file (Caffe's ``LoadHDF5FileData``)."""
        import h5py

        blobs: list[np.ndarray] = []
        try:
            with h5py.File(path, "r") as f:
                for top in self.tops:
                    if top not in f or not isinstance(f[top], h5py.Dataset):
                        raise DataError(f"layer '{self.name}': no dataset '{top}' in the file",
                                        loc=Loc(str(path)),
                                        hint="HDF5Data reads one dataset per top, named "
                                             f"like the top; the file has {sorted(f.keys())}")
                    arr = f[top][()]
                    if arr.ndim < 1:
                        raise DataError(f"dataset '{top}' is a scalar", loc=Loc(str(path)))
                    blobs.append(np.ascontiguousarray(arr, dtype=np.float32))
        except OSError as e:
            raise DataError(f"cannot read HDF5 file: {e}", loc=Loc(str(path))) from None
        rows = blobs[0].shape[0]
        for top, b in zip(self.tops, blobs):
            if b.shape[0] != rows:
                raise DataError(f"dataset '{top}' has {b.shape[0]} rows, '{self.tops[0]}' has "
                                f"{rows}", loc=Loc(str(path)))
        if rows == 0:
            raise DataError("the HDF5 file has no rows", loc=Loc(str(path)))
        if hasattr(self, "blobs") and [b.shape[1:] for b in blobs] != \
                [b.shape[1:] for b in self.blobs]:
            raise DataError(f"layer '{self.name}': rows of this file have another shape than "
                            "the first file's", loc=Loc(str(path)))
        self.blobs = blobs
        self.rows = rows
        self.current_row = 0
        self.row_order = np.arange(rows)
        if self.shuffle:
            self.rng.shuffle(self.row_order)

    def top_shapes(self) -> dict[str, Shape]:
        return {t: (self.batch_size, *b.shape[1:]) for t, b in zip(self.tops, self.blobs)}

    def _advance(self, n: int) -> None:
        """Move ``n`` rows on within the current file; at its end, Caffe's ``Next``."""
        self.current_row += n
        if self.current_row < self.rows:
            return
        if len(self.files) > 1:
            self.current_file += 1
            if self.current_file == len(self.files):
                self.current_file = 0
                if self.shuffle:
                    self.rng.shuffle(self.file_order)
            self._load(self.files[self.file_order[self.current_file]])
        self.current_row = 0
        if self.shuffle:
            self.rng.shuffle(self.row_order)

    def _read_batch(self) -> dict[str, np.ndarray]:
        out = {t: np.empty((self.batch_size, *b.shape[1:]), np.float32)
               for t, b in zip(self.tops, self.blobs)}
        filled = 0
        while filled < self.batch_size:
            take = min(self.batch_size - filled, self.rows - self.current_row)
            idx = self.row_order[self.current_row:self.current_row + take]
            for t, b in zip(self.tops, self.blobs):
                out[t][filled:filled + take] = b[idx]
            filled += take
            self._advance(take)
        return out

    def _skip_batch(self) -> None:
        left = self.batch_size
        while left:
            take = min(left, self.rows - self.current_row)
            left -= take
            self._advance(take)
