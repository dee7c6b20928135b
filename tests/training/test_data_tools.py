"""convert-imageset, compute-image-mean and make-digits (the CLI) against the fixtures."""
from __future__ import annotations

from pathlib import Path

import h5py
import lmdb
import numpy as np
import pytest
from PIL import Image

from netdef.api import parse_net_text
from netdef.cli.main import main
from netdef.io.blobs import decode_datum
from netdef.training.data import make_source

FIX = Path("/work/shared/fixtures/train")
DATA = FIX / "data"
need_fixtures = pytest.mark.skipif(not FIX.is_dir(), reason="training fixtures missing")


def records(path: Path) -> list[tuple[bytes, bytes]]:
    lock = (path / "lock.mdb").exists()
    env = lmdb.open(str(path), readonly=True, lock=lock)
    with env.begin() as txn:
        out = [(bytes(k), bytes(v)) for k, v in txn.cursor()]
    env.close()
    return out


def data_source(db: Path, batch: int, transform: str = ""):  # noqa: ANN201
    lay = parse_net_text(f'layer {{ name: "d" type: "Data" top: "data" top: "label" '
                         f'transform_param {{ {transform} }} '
                         f'data_param {{ source: "{db}" batch_size: {batch} backend: LMDB }} }}')
    return make_source(lay.layer[0], "TEST", None)


@pytest.fixture()
def image_set(tmp_path):
    gen = np.random.default_rng(0)
    root = tmp_path / "img"
    root.mkdir()
    arrays = [gen.integers(0, 256, (4, 6, 3), dtype=np.uint8) for _ in range(3)]
    for i, a in enumerate(arrays):
        Image.fromarray(a).save(root / f"im{i}.png")
    (tmp_path / "list.txt").write_text("im0.png 5\nim1.png 6\nim2.png 7\n")
    return tmp_path, arrays


def test_convert_imageset_round_trip(image_set, capsys):
    tmp, arrays = image_set
    db = tmp / "out_lmdb"
    assert main(["convert-imageset", f"{tmp / 'img'}/", str(tmp / "list.txt"), str(db)]) == 0
    recs = records(db)
    assert [k for k, _ in recs] == [b"00000000_im0.png", b"00000001_im1.png", b"00000002_im2.png"]
    d = decode_datum(recs[0][1])
    assert (d.channels, d.height, d.width, d.label, d.encoded) == (3, 4, 6, 5, False)
    with data_source(db, 3) as src:
        b = src.next_batch()
    expect = np.stack([a[:, :, ::-1].transpose(2, 0, 1) for a in arrays]).astype(np.float32)
    assert b["data"].tobytes() == expect.tobytes() and b["label"].tolist() == [5, 6, 7]
    # the DB exists now: Caffe refuses to overwrite, so do we (exit 2, one line)
    assert main(["convert-imageset", f"{tmp / 'img'}/", str(tmp / "list.txt"), str(db)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_convert_imageset_encoded_gray_resize_shuffle(image_set):
    tmp, arrays = image_set
    enc = tmp / "enc_lmdb"
    assert main(["convert-imageset", f"{tmp / 'img'}/", str(tmp / "list.txt"), str(enc),
                 "--encoded"]) == 0
    d = decode_datum(records(enc)[1][1])
    assert d.encoded and d.data == (tmp / "img" / "im1.png").read_bytes()  # file kept as is
    with data_source(enc, 3, "force_color: true") as src:
        assert src.next_batch()["data"][1].tobytes() == \
            arrays[1][:, :, ::-1].transpose(2, 0, 1).astype(np.float32).tobytes()
    small = tmp / "small_lmdb"
    assert main(["convert-imageset", f"{tmp / 'img'}/", str(tmp / "list.txt"), str(small),
                 "--gray", "--resize-height", "2", "--resize-width", "3", "--shuffle",
                 "--seed", "1"]) == 0
    recs = records(small)
    assert sorted(k.split(b"_", 1)[1] for k, _ in recs) == [b"im0.png", b"im1.png", b"im2.png"]
    d = decode_datum(recs[0][1])
    assert (d.channels, d.height, d.width) == (1, 2, 3)


def test_convert_from_npz(tmp_path):
    gen = np.random.default_rng(1)
    data = gen.integers(0, 256, (5, 2, 3, 4), dtype=np.uint8)
    np.savez(tmp_path / "a.npz", data=data, label=np.arange(5) + 10)
    db = tmp_path / "npz_lmdb"
    assert main(["convert-imageset", "--from-npz", str(tmp_path / "a.npz"), str(db)]) == 0
    assert [k for k, _ in records(db)] == [b"%08d" % i for i in range(5)]
    with data_source(db, 5, "scale: 2") as src:
        b = src.next_batch()
    assert b["data"].tobytes() == (data.astype(np.float32) * 2).tobytes()
    assert b["label"].tolist() == list(range(10, 15))
    floats = gen.normal(size=(2, 3, 3)).astype(np.float32)  # (N, H, W) floats → float_data
    np.savez(tmp_path / "f.npz", data=floats, label=[1, 2])
    assert main(["convert-imageset", "--from-npz", str(tmp_path / "f.npz"),
                 str(tmp_path / "f_lmdb")]) == 0
    with data_source(tmp_path / "f_lmdb", 2) as src:
        assert src.next_batch()["data"].tobytes() == floats[:, None].tobytes()


def test_leveldb_output_without_plyvel_leaves_nothing(image_set, monkeypatch, capsys):
    import sys

    tmp, _ = image_set
    monkeypatch.setitem(sys.modules, "plyvel", None)
    assert main(["convert-imageset", f"{tmp / 'img'}/", str(tmp / "list.txt"),
                 str(tmp / "out_leveldb"), "--backend", "leveldb"]) == 2
    assert "plyvel" in capsys.readouterr().err
    assert sorted(p.name for p in tmp.iterdir()) == ["img", "list.txt"]


@need_fixtures
def test_compute_image_mean_equals_fixture_bitwise(tmp_path, capsys):
    out = tmp_path / "mean.binaryproto"
    assert main(["compute-image-mean", str(DATA / "digits_train_lmdb"), str(out)]) == 0
    assert out.read_bytes() == (DATA / "digits_mean.binaryproto").read_bytes()
    assert "mean_value channel [0]: 73.2258" in capsys.readouterr().err


@need_fixtures
def test_make_digits_reproduces_the_fixture_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["make-digits", "data"]) == 0
    out = tmp_path / "data"
    for split in ("train", "test"):
        with h5py.File(out / f"digits_{split}.h5", "r") as a, \
                h5py.File(DATA / f"digits_{split}.h5", "r") as b:
            for name in ("data", "label"):
                assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape
                assert a[name][()].tobytes() == b[name][()].tobytes()
        assert (out / f"{split}_h5.txt").read_bytes() == (DATA / f"{split}_h5.txt").read_bytes()
        mine, theirs = records(out / f"digits_{split}_lmdb"), records(DATA / f"digits_{split}_lmdb")
        assert len(mine) == len(theirs) == {"train": 1500, "test": 297}[split]
        assert mine == theirs  # every key and Datum byte for byte
    assert (out / "digits_mean.binaryproto").read_bytes() == \
        (DATA / "digits_mean.binaryproto").read_bytes()
    assert main(["make-digits", "data"]) == 2  # LMDBs exist: refuse without --force
