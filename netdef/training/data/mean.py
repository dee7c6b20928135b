"""Caffe's ``compute_image_mean``: the per-pixel mean of a Datum database.

The tool's exact arithmetic (``tools/compute_image_mean.cpp``): a float32 running sum of
the records' values in cursor order (uint8 ``data`` or ``float_data``; encoded images
decoded natively), then ``sum / count`` in float32, written as a BlobProto with the legacy
``num: 1, channels, height, width`` fields.  The per-channel means it logs are the float32
sums of a channel's mean values divided by ``height·width``.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from netdef.errors import DataError, Loc
from netdef.io.blobs import decode_datum, write_blobproto
from netdef.training.data.db import detect_backend, iterate_records
from netdef.training.data.images import decode_image

__all__ = ["compute_image_mean", "channel_means"]


def compute_image_mean(db: str | os.PathLike[str], out: str | os.PathLike[str] | None = None,
                       *, backend: str | None = None) -> np.ndarray:
    """The mean ``(1, C, H, W)`` float32; written atomically to ``out`` when given."""
    path = Path(db)
    if not path.exists():
        raise DataError("the database does not exist", loc=Loc(str(path)))
    backend = (backend or detect_backend(path) or "lmdb").lower()
    total: np.ndarray | None = None
    shape: tuple[int, int, int] | None = None
    count = 0
    for _, raw in iterate_records(path, backend):
        datum = decode_datum(raw, where=str(path))
        if datum.encoded:
            values = decode_image(datum.data, "native", where=str(path))
            here: tuple[int, int, int] = values.shape  # type: ignore[assignment]
            values = values.reshape(-1)
        else:
            here = (datum.channels, datum.height, datum.width)
            values = (np.frombuffer(datum.data, np.uint8) if len(datum.data)
                      else np.asarray(datum.float_data, np.float32))
        if total is None:
            shape = here
            total = np.zeros(values.size, np.float32)
        if values.size != total.size:
            raise DataError(f"record {count} holds {values.size} values, the first "
                            f"{total.size}", loc=Loc(str(path)),
                            hint="every image must have the same size")
        total += values.astype(np.float32)
        count += 1
    if total is None or shape is None:
        raise DataError("the database holds no records", loc=Loc(str(path)))
    mean = (total / np.float32(count)).astype(np.float32).reshape((1, *shape))
    if out is not None:
        write_blobproto(out, mean, legacy=True)
    return mean


def channel_means(mean: np.ndarray) -> list[float]:
    """The per-channel ``mean_value``s the tool logs (float32 sums / pixels per channel)."""
    c = mean.shape[-3]
    flat = mean.reshape(c, -1)
    out = []
    for row in flat:
        acc = np.float32(0)
        for v in row:
            acc = np.float32(acc + v)
        out.append(float(acc / np.float32(row.size)))
    return out
