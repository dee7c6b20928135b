"""Data sources against the digits fixtures (made with the real Caffe's data rules).

HDF5: batches are the .h5 rows in order and wrap exactly after one epoch; LMDB with the
fixture's transform gives ``(uint8 - mean) * scale`` bitwise; round-robin ranks partition
the stream; every kind of missing input is a DataError that names the file.
"""
from __future__ import annotations

import sys
from pathlib import Path

import h5py
import lmdb
import numpy as np
import pytest

from netdef.api import load_net, parse_net_text
from netdef.errors import DataError
from netdef.io.blobs import datum_to_array, decode_datum, read_blobproto
from netdef.training.data import make_source

FIX = Path("/work/shared/fixtures/train")
DATA = FIX / "data"

pytestmark = pytest.mark.skipif(not FIX.is_dir(), reason="training fixtures missing")


def layer(text: str):  # noqa: ANN201 - a LayerParameter
    return parse_net_text(f"layer {{ {text} }}").layer[0]


def data_layer(net: str, phase: str):  # noqa: ANN201
    loaded = load_net(FIX / net, phase=phase)
    return next(l for l in loaded.net.layer if "Data" in l.type), loaded.base_dir


def h5_rows(split: str) -> tuple[np.ndarray, np.ndarray]:
    with h5py.File(DATA / f"digits_{split}.h5", "r") as f:
        return f["data"][()], f["label"][()]


def lmdb_items(split: str) -> tuple[np.ndarray, np.ndarray]:
    env = lmdb.open(str(DATA / f"digits_{split}_lmdb"), readonly=True, lock=False)
    imgs, labels = [], []
    with env.begin() as txn:
        for _, v in txn.cursor():
            d = decode_datum(v)
            imgs.append(datum_to_array(d))
            labels.append(d.label)
    env.close()
    return np.stack(imgs), np.asarray(labels, np.float32)


# ------------------------------------------------------------------ HDF5Data

def test_hdf5_batches_are_rows_in_order_and_wrap_after_one_epoch(monkeypatch):
    monkeypatch.chdir(FIX)  # Caffe's working directory for these files
    lay, base = data_layer("digits_net.prototxt", "TRAIN")
    data, label = h5_rows("train")
    with make_source(lay, "TRAIN", base) as src:
        assert src.top_shapes() == {"data": (50, 1, 8, 8), "label": (50,)}
        batches = [src.next_batch() for _ in range(31)]
    for i, b in enumerate(batches[:30]):
        assert b["data"].dtype == np.float32 and b["label"].dtype == np.float32
        assert b["data"].tobytes() == data[50 * i:50 * i + 50].tobytes()
        assert b["label"].tobytes() == label[50 * i:50 * i + 50].tobytes()
    assert batches[30]["data"].tobytes() == data[:50].tobytes()  # wrapped exactly at row 0
    assert batches[30]["label"].tobytes() == label[:50].tobytes()


def test_hdf5_paths_fall_back_to_the_net_folder():
    # run from the repo root: the list file and the .h5 it names are found beside the net
    lay, base = data_layer("digits_net.prototxt", "TEST")
    data, _ = h5_rows("test")
    with make_source(lay, "TEST", base) as src:
        assert src.top_shapes()["data"] == (99, 1, 8, 8)
        got = np.concatenate([src.next_batch()["data"] for _ in range(4)])
    assert got.tobytes() == np.concatenate([data, data[:99]]).tobytes()


def test_hdf5_batch_spanning_files_and_seeded_shuffle(tmp_path):
    for k in range(2):
        with h5py.File(tmp_path / f"f{k}.h5", "w") as f:
            f["x"] = np.arange(7 * 2, dtype=np.float64).reshape(7, 2) + 100 * k
            f["y"] = np.arange(7, dtype=np.int32) + 100 * k
    (tmp_path / "list.txt").write_text("f0.h5\nf1.h5\n")
    text = ('name: "h" type: "HDF5Data" top: "x" top: "y" '
            'hdf5_data_param { source: "list.txt" batch_size: 5 %s }')
    with make_source(layer(text % ""), "TRAIN", tmp_path) as src:
        ys = np.concatenate([src.next_batch()["y"] for _ in range(4)])
    expect = np.r_[np.arange(7), np.arange(7) + 100]
    assert np.array_equal(ys, np.r_[expect, expect[:6]])

    def epoch(seed: int) -> np.ndarray:
        with make_source(layer(text % "shuffle: true"), "TRAIN", tmp_path, seed=seed) as s:
            return np.concatenate([s.next_batch()["y"] for _ in range(14)])
    a, b = epoch(3), epoch(3)
    assert np.array_equal(a, b)  # seeded: reproducible
    assert sorted(a[:14]) == sorted(expect)  # one epoch = every row once
    assert not np.array_equal(a[:14], expect)


def test_hdf5_missing_dataset_names_the_file(tmp_path):
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["data"] = np.zeros((3, 2), np.float32)
    (tmp_path / "l.txt").write_text("a.h5")
    lay = layer('name: "h" type: "HDF5Data" top: "data" top: "label" '
                'hdf5_data_param { source: "l.txt" batch_size: 2 }')
    with pytest.raises(DataError) as e:
        make_source(lay, "TRAIN", tmp_path)
    assert "label" in e.value.message and e.value.file.endswith("a.h5") and e.value.hint


# ------------------------------------------------------------------ Data (LMDB)

def test_lmdb_transform_is_uint8_minus_mean_times_scale_bitwise(monkeypatch):
    monkeypatch.chdir(FIX)
    lay, base = data_layer("digits_net_lmdb.prototxt", "TRAIN")
    imgs, labels = lmdb_items("train")
    mean = read_blobproto(DATA / "digits_mean.binaryproto").reshape(1, 8, 8)
    expect = (imgs.astype(np.float32) - mean) * np.float32(0.00390625)
    with make_source(lay, "TRAIN", base) as src:
        assert src.top_shapes() == {"data": (50, 1, 8, 8), "label": (50,)}
        got = [src.next_batch() for _ in range(31)]
    data = np.concatenate([b["data"] for b in got])
    assert data.dtype == np.float32
    assert data[:1500].tobytes() == expect.tobytes()
    assert np.concatenate([b["label"] for b in got])[:1500].tobytes() == labels.tobytes()
    assert got[30]["data"].tobytes() == expect[:50].tobytes()  # cursor wrapped to the start


def test_lmdb_test_phase_batches_of_99():
    lay, base = data_layer("digits_net_lmdb.prototxt", "TEST")
    imgs, labels = lmdb_items("test")
    with make_source(lay, "TEST", base) as src:
        b = [src.next_batch() for _ in range(3)]
    assert np.concatenate([x["label"] for x in b]).tobytes() == labels.tobytes()


# ------------------------------------------------------------------ round robin

@pytest.mark.parametrize("net", ["digits_net.prototxt", "digits_net_lmdb.prototxt"])
def test_round_robin_ranks_partition_the_stream(net):
    lay, base = data_layer(net, "TRAIN")
    with make_source(lay, "TRAIN", base) as src:
        stream = [src.next_batch()["label"] for _ in range(12)]
    world = 3
    for rank in range(world):
        with make_source(lay, "TRAIN", base, rank=rank, world=world) as src:
            mine = [src.next_batch()["label"] for _ in range(4)]
        for j, b in enumerate(mine):
            assert b.tobytes() == stream[rank + j * world].tobytes()


def test_test_phase_is_not_split_and_bad_rank_is_rejected():
    lay, base = data_layer("digits_net.prototxt", "TEST")
    with make_source(lay, "TEST", base) as a, make_source(lay, "TEST", base, rank=1,
                                                           world=2) as b:
        assert a.next_batch()["label"].tobytes() == b.next_batch()["label"].tobytes()
    with pytest.raises(DataError):
        make_source(lay, "TRAIN", base, rank=2, world=2)


# ------------------------------------------------------------------ errors

@pytest.mark.parametrize("kind", ["Data", "HDF5Data", "ImageData"])
def test_missing_source_names_the_file_with_a_hint(tmp_path, kind):
    param = {"Data": "data_param { source: \"nope_lmdb\" batch_size: 2 backend: LMDB }",
             "HDF5Data": "hdf5_data_param { source: \"nope.txt\" batch_size: 2 }",
             "ImageData": "image_data_param { source: \"nope.txt\" batch_size: 2 }"}[kind]
    lay = layer(f'name: "d" type: "{kind}" top: "data" top: "label" {param}')
    with pytest.raises(DataError) as e:
        make_source(lay, "TRAIN", tmp_path)
    assert e.value.file in ("nope_lmdb", "nope.txt")
    assert "nope" in str(e.value) and e.value.hint and str(tmp_path) in e.value.hint


def test_missing_h5_named_in_the_list(tmp_path):
    (tmp_path / "l.txt").write_text("gone.h5\n")
    lay = layer('name: "h" type: "HDF5Data" top: "data" '
                'hdf5_data_param { source: "l.txt" batch_size: 2 }')
    with pytest.raises(DataError) as e:
        make_source(lay, "TRAIN", tmp_path)
    assert e.value.file == "gone.h5"


def test_leveldb_without_plyvel_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "plyvel", None)  # import plyvel → ImportError
    db = tmp_path / "train_leveldb"
    db.mkdir()
    (db / "CURRENT").write_text("MANIFEST-000001\n")
    lay = layer('name: "d" type: "Data" top: "data" top: "label" '
                'data_param { source: "train_leveldb" batch_size: 2 backend: LEVELDB }')
    with pytest.raises(DataError) as e:
        make_source(lay, "TRAIN", tmp_path)
    assert "plyvel" in e.value.message and "pip install plyvel" in e.value.hint
    assert e.value.file.endswith("train_leveldb")


def test_backend_mismatch_and_unset_backend_detects_lmdb():
    lay = layer(f'name: "d" type: "Data" top: "data" '
                f'data_param {{ source: "{DATA}/digits_test_lmdb" batch_size: 3 }}')
    with make_source(lay, "TEST", None) as src:  # backend unset (LEVELDB default) → detected
        assert src.backend == "lmdb" and src.top_shapes() == {"data": (3, 1, 8, 8)}
    lay = layer(f'name: "d" type: "Data" top: "data" '
                f'data_param {{ source: "{DATA}/digits_test_lmdb" batch_size: 3 '
                f'backend: LEVELDB }}')
    with pytest.raises(DataError, match="LMDB"):
        make_source(lay, "TEST", None)


def test_unknown_layer_type():
    with pytest.raises(DataError, match="not a data layer"):
        make_source(layer('name: "c" type: "ReLU" bottom: "x" top: "x"'), "TRAIN", None)


# ------------------------------------------------------------------ MemoryData, DummyData, Input

def test_memory_data_cycles_through_reset_arrays():
    lay = layer('name: "m" type: "MemoryData" top: "data" top: "label" '
                'memory_data_param { batch_size: 2 channels: 1 height: 2 width: 3 }')
    src = make_source(lay, "TRAIN", None)
    with pytest.raises(DataError, match="reset"):
        src.next_batch()
    x = np.arange(4 * 6, dtype=np.float32).reshape(4, 1, 2, 3)
    src.reset(x, [0, 1, 2, 3])
    got = [src.next_batch() for _ in range(3)]
    assert np.array_equal(got[1]["data"], x[2:]) and np.array_equal(got[2]["label"], [0, 1])
    with pytest.raises(DataError, match="multiple"):
        src.reset(x[:3], [0, 1, 2])


def test_dummy_data_shapes_and_fillers():
    lay = layer('name: "d" type: "DummyData" top: "a" top: "b" top: "c" dummy_data_param { '
                'data_filler { type: "constant" value: 2.5 } '
                'data_filler { type: "uniform" min: -1 max: 1 } '
                'data_filler { type: "gaussian" mean: 10 std: 0.1 } '
                'shape { dim: 4 dim: 3 } shape { dim: 1000 } shape { dim: 2 dim: 500 } }')
    src = make_source(lay, "TRAIN", None, seed=0)
    assert src.top_shapes() == {"a": (4, 3), "b": (1000,), "c": (2, 500)}
    b1, b2 = src.next_batch(), src.next_batch()
    assert np.all(b1["a"] == 2.5) and b1["a"].dtype == np.float32
    assert -1 <= b1["b"].min() and b1["b"].max() <= 1 and not np.array_equal(b1["b"], b2["b"])
    assert abs(b1["c"].mean() - 10) < 0.02 and abs(b1["c"].std() - 0.1) < 0.02
    legacy = layer('name: "d" type: "DummyData" top: "x" top: "y" '
                   'dummy_data_param { num: 5 channels: 3 height: 4 width: 2 }')
    src = make_source(legacy, "TEST", None)
    assert src.top_shapes() == {"x": (5, 3, 4, 2), "y": (5, 3, 4, 2)}
    assert not src.next_batch()["y"].any()  # no filler: constant 0


def test_input_is_fed_by_the_program():
    lay = layer('name: "i" type: "Input" top: "data" '
                'input_param { shape { dim: 1 dim: 3 dim: 4 dim: 4 } }')
    src = make_source(lay, "TEST", None)
    assert src.top_shapes() == {"data": (1, 3, 4, 4)}
    with pytest.raises(DataError, match="feed"):
        src.next_batch()
    src.feed(data=np.ones((1, 3, 4, 4)))
    assert src.next_batch()["data"].dtype == np.float32
