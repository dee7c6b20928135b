"""``make-digits``: scikit-learn's 8×8 digits as the training fixtures' HDF5 and LMDB data.

Exactly as the fixtures were made (``fixtures/train/README.md``, Data): images 0..1499
train, 1500..1796 test, no shuffling.  HDF5: ``data`` float32 ``(N, 1, 8, 8)`` =
pixel / 16, ``label`` float32 ``(N,)`` (h5py, contiguous, uncompressed) plus a list file
naming it.  LMDB: one Datum per image under key ``%08d``: ``channels 1, height 8,
width 8``, 64 bytes of ``uint8(pixel · 15)``, the label, ``encoded: false``.  Mean: Caffe's
``compute_image_mean`` of the train LMDB.  The list files name the .h5 files as
``OUTDIR/<file>`` with OUTDIR as given, so ``make-digits data`` run in the fixture folder
writes the fixture's very list files (Caffe reads them relative to the working directory).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from netdef.errors import DataError, Loc
from netdef.io.atomic import atomic_path, atomic_write
from netdef.io.blobs import encode_datum
from netdef.training.data.db import DBWriter
from netdef.training.data.mean import compute_image_mean

__all__ = ["make_digits", "N_TRAIN", "digits_arrays"]

N_TRAIN = 1500
SPLITS = ("train", "test")


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """sklearn's digits: images ``(1797, 8, 8)`` float64 (integers 0..16), labels int.

    Reads the ``digits.csv.gz`` that scikit-learn ships the way ``load_digits`` does, without
    importing scikit-learn (seconds of start-up); falls back to ``load_digits()``.
    """
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    roots = list(spec.submodule_search_locations or []) if spec else []
    for root in roots:
        csv = Path(root) / "datasets" / "data" / "digits.csv.gz"
        if csv.is_file():
            table = np.loadtxt(csv, delimiter=",")
            return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(int)
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataError("make-digits needs scikit-learn",
                        hint="pip install scikit-learn") from None
    d = load_digits()
    return np.asarray(d.images), np.asarray(d.target)


def _write_h5(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    import h5py

    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("data", data=(images / 16.0).astype(np.float32)[:, None, :, :])
            f.create_dataset("label", data=labels.astype(np.float32))


def _write_lmdb(path: Path, images: np.ndarray, labels: np.ndarray, pad: int = 0) -> None:
    """Datums of ``uint8(pixel · 15)``; ``pad`` adds a zero border (for random-crop shifts)."""
    with DBWriter(path, "lmdb") as db:
        for i, (img, label) in enumerate(zip(images, labels)):
            pixels = np.pad(img * 15, pad).astype(np.uint8)[None]
            db.put(b"%08d" % i, encode_datum(pixels, int(label)))


def make_digits(outdir: str | os.PathLike[str], *, force: bool = False) -> list[Path]:
    """Write the digits data sets into ``outdir``; returns the paths written."""
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    images, labels = digits_arrays()
    parts = {"train": (images[:N_TRAIN], labels[:N_TRAIN]),
             "test": (images[N_TRAIN:], labels[N_TRAIN:])}
    written: list[Path] = []
    for split in SPLITS:
        for lmdb_dir in (out / f"digits_{split}_lmdb", out / f"digits_{split}_pad1_lmdb"):
            if lmdb_dir.exists():
                if not force:
                    raise DataError("the output database already exists", loc=Loc(str(lmdb_dir)),
                                    hint="pass --force to replace it")
                shutil.rmtree(lmdb_dir)
    for split, (im, lab) in parts.items():
        h5 = out / f"digits_{split}.h5"
        _write_h5(h5, im, lab)
        listing = out / f"{split}_h5.txt"
        atomic_write(listing, (os.path.join(os.fspath(outdir), h5.name) + "\n").encode())
        lmdb_dir = out / f"digits_{split}_lmdb"
        _write_lmdb(lmdb_dir, im, lab)
        # 10×10 copies with a zero border: `crop_size: 8` then shifts digits by ±1 pixel in
        # TRAIN (augmentation) while TEST's centre crop is exactly the original image
        padded = out / f"digits_{split}_pad1_lmdb"
        _write_lmdb(padded, im, lab, pad=1)
        written += [h5, listing, lmdb_dir, padded]
    mean = out / "digits_mean.binaryproto"
    compute_image_mean(out / "digits_train_lmdb", mean, backend="lmdb")
    written.append(mean)
    return written
