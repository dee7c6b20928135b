"""Mean files (BlobProto .binaryproto) and Datum records of the digits LMDB."""
from __future__ import annotations

import io
from pathlib import Path

import lmdb
import numpy as np
import pytest

from netdef.errors import DataError
from netdef.io import (array_to_blob, blob_to_array, datum_to_array, decode_datum, encode,
                       encode_datum, read_blobproto, write_blobproto)

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "train" / "data"
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason="the Caffe fixtures (../shared) are not beside the repo")
MEAN = DATA / "digits_mean.binaryproto"


def test_mean_file() -> None:
    mean = read_blobproto(MEAN)
    assert mean.shape == (1, 1, 8, 8) and mean.dtype == np.float32
    assert float(mean.mean()) == pytest.approx(73.2258, abs=1e-4)


def test_mean_file_rewrites_byte_identical(tmp_path: Path) -> None:
    out = tmp_path / "mean.binaryproto"
    write_blobproto(out, read_blobproto(MEAN))
    assert out.read_bytes() == MEAN.read_bytes()
    write_blobproto(out, read_blobproto(MEAN)[0], legacy=False)  # N-D ``shape`` form
    assert read_blobproto(out).shape == (1, 8, 8)


def test_blob_round_trip_shapes() -> None:
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    assert blob_to_array(array_to_blob(a)).tolist() == a.tolist()
    legacy = blob_to_array(array_to_blob(a, legacy=True))
    assert legacy.shape == (1, 2, 3, 4)
    scalar = array_to_blob(np.float32(3.0))
    assert blob_to_array(scalar).shape == () and encode(scalar) == b"\x2a\x04\x00\x00\x40\x40"


def test_corrupt_mean_file(tmp_path: Path) -> None:
    p = tmp_path / "bad.binaryproto"
    p.write_bytes(MEAN.read_bytes()[:100])
    with pytest.raises(DataError, match="at byte"):
        read_blobproto(p)
    p.write_bytes(MEAN.read_bytes()[:8])  # header only: 64 values missing
    with pytest.raises(DataError, match="needs 64 values"):
        read_blobproto(p)


@pytest.fixture(scope="module")
def records() -> list[tuple[bytes, bytes]]:
    env = lmdb.open(str(DATA / "digits_train_lmdb"), readonly=True, lock=False)
    try:
        with env.begin() as txn:
            return [(bytes(k), bytes(v)) for k, v in txn.cursor()]
    finally:
        env.close()


def test_first_datum(records: list) -> None:
    key, raw = records[0]
    assert key == b"00000000"
    d = decode_datum(raw)
    assert (d.channels, d.height, d.width, len(d.data)) == (1, 8, 8, 64)
    assert d.encoded is False and d.label == 0
    img = datum_to_array(d)
    assert img.shape == (1, 8, 8) and img.dtype == np.uint8 and img.max() <= 240
    assert encode_datum(img, d.label) == raw  # convert_imageset's bytes exactly


def test_all_train_datums(records: list) -> None:
    assert len(records) == 1500
    labels = [decode_datum(v).label for _, v in records]
    assert np.bincount(labels).tolist() == [151, 151, 150, 153, 148, 152, 151, 149, 146, 149]
    stack = np.stack([datum_to_array(decode_datum(v)) for _, v in records]).astype(np.float32)
    mean = read_blobproto(MEAN)
    assert np.array_equal(stack.sum(0, dtype=np.float32) / np.float32(1500), mean[0])


def test_float_and_encoded_datums() -> None:
    f = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 2, 2)
    d = decode_datum(encode_datum(f, 4))
    assert d.float_data.dtype == np.dtype("<f4") and len(d.data) == 0
    assert np.array_equal(datum_to_array(d), f)
    from PIL import Image
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[..., 0] = 200  # red
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    d = decode_datum(encode_datum(buf.getvalue(), 1, encoded=True))
    bgr = datum_to_array(d)
    assert bgr.shape == (3, 2, 3) and bgr[2].min() == 200 and bgr[0].max() == 0
    assert datum_to_array(d, color=False).shape == (1, 2, 3)


def test_bad_datums() -> None:
    with pytest.raises(DataError, match="corrupt Datum"):
        decode_datum(b"\x22\x40abc")
    d = decode_datum(encode_datum(np.zeros((1, 2, 2), np.uint8)))
    from netdef.ir.schema import update
    with pytest.raises(DataError, match="needs 8 values"):
        datum_to_array(update(d, channels=2))
    with pytest.raises(DataError, match="cannot decode"):
        datum_to_array(decode_datum(encode_datum(b"not an image", encoded=True)))
