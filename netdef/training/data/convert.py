"""Caffe's ``convert_imageset`` without OpenCV: images (or arrays) → Datum database.

Per ``tools/convert_imageset.cpp``: the list file holds ``<path> <label>`` lines (split at
the last space); ``--shuffle`` shuffles the lines first; each image ``root + path`` is
read in colour (or gray), resized when both sizes are given, and stored as a Datum under
the key ``%08d_<path>`` (the line's index after shuffling).  Unreadable images are
skipped with a warning, as Caffe does.  With ``encoded`` the Datum keeps compressed bytes:
the file's own bytes when no resize is needed and its extension is the encoding (guessed
from the first file's extension unless given), else the image re-encoded.  Records are
committed every 1000 and the database appears under its name only when complete.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from netdef.errors import DataError, Loc
from netdef.io.blobs import encode_datum
from netdef.training.data.db import DBWriter
from netdef.training.data.image_source import read_image_list
from netdef.training.data.images import encode_image, read_image, resize_bilinear

__all__ = ["ConvertOptions", "convert_imageset", "convert_arrays"]


@dataclass(frozen=True)
class ConvertOptions:
    """``convert_imageset``'s flags."""

    gray: bool = False
    shuffle: bool = False
    seed: int | None = None
    resize_height: int = 0
    resize_width: int = 0
    encoded: bool = False
    encode_type: str = ""
    check_size: bool = False
    backend: str = "lmdb"


Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


def _check_resize(opts: ConvertOptions) -> None:
    if (opts.resize_height > 0) != (opts.resize_width > 0):
        raise DataError("give both --resize-height and --resize-width, or neither")


def convert_imageset(root: str, list_file: str | os.PathLike[str], db: str | os.PathLike[str],
                     opts: ConvertOptions = ConvertOptions(), log: Log = _stderr) -> int:
    """Convert the images of ``list_file`` (under ``root``); returns the records written."""
    _check_resize(opts)
    lines = read_image_list(Path(list_file))
    if opts.shuffle:
        order = np.random.default_rng(opts.seed).permutation(len(lines))
        lines = [lines[i] for i in order]
    log(f"A total of {len(lines)} images.")
    if root and not root.endswith(("/", os.sep)) and os.path.isdir(root):
        log(f"warning: ROOT is prefixed to each listed path as a plain string (as in Caffe); "
            f"did you mean '{root}/'?")
    enc = opts.encode_type.lower().lstrip(".")
    if opts.encoded and not enc and lines:
        first = lines[0][0]
        if "." in Path(first).name:
            enc = first.rsplit(".", 1)[1].lower()
        else:
            log(f"Failed to guess the encoding of '{first}'")
    color = not opts.gray
    size: int | None = None
    with DBWriter(db, opts.backend) as writer:
        for i, (name, label) in enumerate(lines):
            path = root + name  # Caffe concatenates the strings
            try:
                record = _image_record(path, label, color, opts, enc)
            except DataError as e:
                log(f"skipping {path}: {e.message}")
                continue
            size = _check(size, record[1], opts.check_size, path)
            writer.put(f"{i:08d}_{name}".encode(), record[0])
            if writer.count % 1000 == 0:
                log(f"Processed {writer.count} files.")
        if writer.count % 1000:
            log(f"Processed {writer.count} files.")
    return writer.count


def _image_record(path: str, label: int, color: bool, opts: ConvertOptions,
                  enc: str) -> tuple[bytes, int]:
    """Caffe's ``ReadImageToDatum``: the serialized Datum and its data size."""
    img = read_image(path, color=color, height=opts.resize_height, width=opts.resize_width)
    if opts.encoded and enc:
        resized = opts.resize_height > 0
        if not resized and _match_ext(path, enc):
            raw = Path(path).read_bytes()  # ReadFileToDatum: the file as it is
        else:
            raw = encode_image(img, enc)
        return encode_datum(raw, label, encoded=True), img.size
    return encode_datum(img, label), img.size


def _match_ext(path: str, enc: str) -> bool:
    """Caffe's ``matchExt``: the file's extension is the encoding (jpeg counts as jpg)."""
    ext = Path(path).suffix.lower().lstrip(".")
    return ext == enc or (enc == "jpg" and ext == "jpeg")


def _check(size: int | None, now: int, check: bool, where: str) -> int:
    if check and size is not None and size != now:
        raise DataError(f"image data size {now} differs from the first image's {size}",
                        loc=Loc(where), hint="resize the images (--resize-height/--resize-width) "
                                             "or drop --check-size")
    return now if size is None else size


def convert_arrays(npz: str | os.PathLike[str], db: str | os.PathLike[str],
                   opts: ConvertOptions = ConvertOptions(), log: Log = _stderr) -> int:
    """Arrays ``data`` ``(N, H, W)``/``(N, C, H, W)`` and ``label`` ``(N,)`` of an .npz → Datums.

    uint8 data become ``data`` bytes, other dtypes ``float_data``; keys are ``%08d``.
    Channels are stored as given (Caffe's order is BGR).  ``encoded`` needs uint8 data.
    """
    _check_resize(opts)
    data, labels = _load_npz(Path(npz))
    order = np.arange(len(data))
    if opts.shuffle:
        order = np.random.default_rng(opts.seed).permutation(len(data))
    enc = (opts.encode_type or "png").lower().lstrip(".")
    with DBWriter(db, opts.backend) as writer:
        for i, j in enumerate(order):
            img = data[j]
            if opts.gray and img.shape[0] != 1:
                raise DataError("--gray needs single-channel arrays", loc=Loc(str(npz)))
            if opts.resize_height > 0:
                if img.dtype != np.uint8:
                    raise DataError("--resize needs uint8 arrays", loc=Loc(str(npz)))
                img = resize_bilinear(img, opts.resize_height, opts.resize_width)
            if opts.encoded:
                if img.dtype != np.uint8:
                    raise DataError("--encoded needs uint8 arrays", loc=Loc(str(npz)))
                value = encode_datum(encode_image(img, enc), int(labels[j]), encoded=True)
            else:
                value = encode_datum(img, int(labels[j]))
            writer.put(f"{i:08d}".encode(), value)
        log(f"Processed {writer.count} arrays.")
    return writer.count


def _load_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays: dict[str, Any] = {k: f[k] for k in f.files}
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read arrays: {e}", loc=Loc(str(path))) from None
    if "data" not in arrays or "label" not in arrays:
        raise DataError(f"the file has {sorted(arrays)}, not 'data' and 'label'",
                        loc=Loc(str(path)), hint="np.savez(path, data=images, label=labels)")
    data, labels = arrays["data"], np.asarray(arrays["label"]).reshape(-1)
    if data.ndim == 3:
        data = data[:, None]
    if data.ndim != 4:
        raise DataError(f"data of shape {data.shape}: expected (N, H, W) or (N, C, H, W)",
                        loc=Loc(str(path)))
    if len(labels) != len(data):
        raise DataError(f"{len(labels)} labels for {len(data)} images", loc=Loc(str(path)))
    if data.dtype != np.uint8:
        data = data.astype(np.float32)
    return data, labels
