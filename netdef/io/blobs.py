"""BlobProto and Datum: arrays in Caffe's binary messages.

* BlobProto ↔ numpy with Caffe's ``Blob::FromProto``/``ToProto`` rules (legacy 4-D
  ``num/channels/height/width`` or N-D ``shape``; ``double_data`` preferred when present),
  and ``Blob::ShapeEquals`` (legacy shapes are right-aligned: 1×1×500×800 fits (500, 800)).
* ``.binaryproto`` mean files (``compute_image_mean`` writes the legacy 4-D fields).
* ``Datum`` records of LMDB/LevelDB data sets (``convert_imageset``'s format).
"""
from __future__ import annotations

import io
import math
import os
from typing import Any, Sequence

import numpy as np

from netdef.errors import DataError, Loc, NetdefError, WeightsError
from netdef.io.atomic import atomic_write
from netdef.io.wire import WireError, decode, encode, encode_chunks
from netdef.ir.messages import BlobProto, BlobShape, Datum
from netdef.ir.schema import has, make

__all__ = [
    "blob_shape", "blob_to_array", "array_to_blob", "shape_equals", "shape_string",
    "read_blobproto", "write_blobproto", "encode_datum", "decode_datum", "datum_to_array",
]

_LEGACY = ("num", "channels", "height", "width")
_INT_MAX = 2**31 - 1


# --------------------------------------------------------------------------- BlobProto

def blob_shape(blob: BlobProto) -> tuple[tuple[int, ...], bool]:
    """(shape, legacy): the shape ``Blob::FromProto`` would give and whether it is 4-D legacy."""
    if any(has(blob, k) for k in _LEGACY):
        return (blob.num, blob.channels, blob.height, blob.width), True
    return tuple(int(d) for d in blob.shape.dim), False


def shape_string(shape: Sequence[int]) -> str:
    """Caffe's ``Blob::shape_string``: ``"1 1 500 800 (400000)"``."""
    return "".join(f"{d} " for d in shape) + f"({math.prod(shape)})"


def shape_equals(target: Sequence[int], source: Sequence[int], legacy: bool) -> bool:
    """Caffe's ``Blob::ShapeEquals``: may a blob of shape ``source`` fill ``target``?

    A legacy source (num, channels, height, width) is compared with the target's last four
    axes, missing leading axes counting as 1 (``Blob::LegacyShape``).
    """
    if not legacy:
        return tuple(target) == tuple(source)
    if len(target) > 4 or len(source) != 4:
        return False
    padded = (1,) * (4 - len(target)) + tuple(target)
    return padded == tuple(source)


def blob_to_array(blob: BlobProto, *, what: str = "blob", file: str | None = None,
                  error: type[NetdefError] = WeightsError, copy: bool = False) -> np.ndarray:
    """A float32 array shaped like ``Blob::FromProto(reshape=true)``; count is checked.

    Without ``copy`` the result may be a read-only or unaligned view of the decoded buffer.
    """
    shape, legacy = blob_shape(blob)
    if any(d < 0 for d in shape):
        raise error(f"{what}: negative dimension in shape {shape_string(shape)}", loc=Loc(file))
    count = math.prod(shape)
    if count > _INT_MAX:
        raise error(f"{what}: shape {shape_string(shape)} exceeds Caffe's INT_MAX elements",
                    loc=Loc(file))
    src = blob.double_data if len(blob.double_data) else blob.data
    field = "double_data" if len(blob.double_data) else "data"
    if len(src) != count:
        raise error(f"{what}: shape {shape_string(shape)} needs {count} values but {field} "
                    f"holds {len(src)}", loc=Loc(file),
                    hint="the file is damaged, or was not written by Caffe")
    arr = np.asarray(src)
    if arr.dtype != np.float32:
        arr = arr.astype(np.float32)  # Blob<float> keeps float; doubles are rounded
    elif copy:
        arr = arr.copy()
    return arr.reshape(shape)


def array_to_blob(array: Any, *, legacy: bool = False) -> BlobProto:
    """``Blob::ToProto``: ``shape`` + packed float ``data`` (or legacy 4-D fields)."""
    arr = np.asarray(array, dtype="<f4", order="C")  # (ascontiguousarray makes 0-d 1-d)
    values: dict[str, Any] = {}
    present = set()
    if legacy:
        if arr.ndim > 4:
            raise ValueError(f"a legacy BlobProto holds at most 4 axes, not {arr.ndim}")
        dims = (1,) * (4 - arr.ndim) + arr.shape
        values.update(zip(_LEGACY, dims))
        present.update(_LEGACY)
    elif arr.ndim:
        values["shape"] = make(BlobShape, dim=arr.shape)
        present.add("shape")
    flat = arr.reshape(-1)
    if flat.size:
        values["data"] = flat
        present.add("data")
    return BlobProto(**values, _present=frozenset(present))  # type: ignore[call-arg]


# --------------------------------------------------------------------------- mean files

def read_blobproto(path: str | os.PathLike[str]) -> np.ndarray:
    """A ``.binaryproto`` (mean file) as a float32 array: (num, channels, height, width) or N-D."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as fh:
            raw = fh.read()
    except OSError as e:
        raise DataError(f"cannot read mean file: {e.strerror}", loc=Loc(name)) from None
    try:
        blob = decode(BlobProto, raw)
    except WireError as e:
        raise DataError(f"corrupt or truncated BlobProto: {e}", loc=Loc(name),
                        hint="a mean file is a binary BlobProto, as compute_image_mean "
                             "writes") from None
    return blob_to_array(blob, what="mean file", file=name, error=DataError, copy=True)


def write_blobproto(path: str | os.PathLike[str], array: Any, *, legacy: bool = True) -> None:
    """Write a BlobProto atomically; ``legacy`` gives compute_image_mean's 4-D fields."""
    chunks, _ = encode_chunks(array_to_blob(array, legacy=legacy))
    atomic_write(path, chunks)


# --------------------------------------------------------------------------- Datum

def encode_datum(data: Any, label: int | None = None, *, encoded: bool = False) -> bytes:
    """A serialized Datum as ``convert_imageset`` writes it.

    ``data``: a uint8 array (C, H, W) or (H, W) → ``data`` bytes; a float array →
    ``float_data``; raw image bytes with ``encoded=True`` (no dims, as Caffe does).
    """
    values: dict[str, Any] = {}
    if encoded:
        values.update(data=bytes(data), encoded=True)
    else:
        arr = np.asarray(data)
        if arr.ndim == 2:
            arr = arr[None]
        if arr.ndim != 3:
            raise ValueError(f"a Datum holds a (C, H, W) image, not shape {arr.shape}")
        values.update(channels=arr.shape[0], height=arr.shape[1], width=arr.shape[2])
        if arr.dtype == np.uint8:
            values["data"] = np.ascontiguousarray(arr).tobytes()
        else:
            values["float_data"] = np.ascontiguousarray(arr, dtype="<f4").reshape(-1)
        values["encoded"] = False
    if label is not None:
        values["label"] = int(label)
    present = frozenset(k for k, v in values.items() if not (k == "float_data" and not len(v)))
    return encode(Datum(**values, _present=present))  # type: ignore[call-arg]


def decode_datum(raw: bytes | memoryview, *, where: str | None = None) -> Datum:
    """Parse one Datum record; ``float_data`` comes back as a float32 array."""
    try:
        return decode(Datum, raw)
    except WireError as e:
        raise DataError(f"corrupt Datum record: {e}", loc=Loc(where),
                        hint="records must be serialized caffe.Datum messages") from None


def datum_to_array(datum: Datum, *, color: bool = True, where: str | None = None) -> np.ndarray:
    """The Datum's image as (C, H, W): uint8 from ``data``, float32 from ``float_data``.

    Encoded images are decoded like Caffe's ``DecodeDatumToCVMat`` (BGR when ``color``).
    """
    if datum.encoded:
        return _decode_image(datum.data, color, where)
    shape = (datum.channels, datum.height, datum.width)
    count = math.prod(shape)
    if len(datum.data):
        arr = np.frombuffer(datum.data, np.uint8)
    else:
        arr = np.asarray(datum.float_data, dtype=np.float32)
    if arr.size != count:
        raise DataError(f"Datum {shape[0]}x{shape[1]}x{shape[2]} needs {count} values but "
                        f"holds {arr.size}", loc=Loc(where))
    return arr.reshape(shape)


def _decode_image(raw: bytes, color: bool, where: str | None) -> np.ndarray:
    try:
        from PIL import Image
        with Image.open(io.BytesIO(raw)) as im:
            img = np.asarray(im.convert("RGB" if color else "L"))
    except Exception as e:  # PIL raises many types for bad data
        raise DataError(f"cannot decode the Datum's encoded image: {e}", loc=Loc(where)) from None
    return img[:, :, ::-1].transpose(2, 0, 1).copy() if color else img[None].copy()
