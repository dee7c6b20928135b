"""Weights files: Caffe's LeNet in V2/V1/HDF5, byte-exact rewriting, damage, shapes."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import netdef.ir.messages as M
from netdef.errors import WeightsError
from netdef.io import (check_param_shape, fit_weights, read_caffemodel, read_weights,
                       shape_equals, write_caffemodel, write_hdf5_weights)
from netdef.io.caffemodel import net_to_proto
from netdef.io.descriptor import message_class
from netdef.io.wire import WireError, decode, encode
from netdef.ir.schema import has, make

FIX = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures"
MODELS = FIX / "caffemodels"
if not FIX.is_dir():  # the module reads fixtures at import
    pytest.skip("the Caffe fixtures (../shared) are not beside the repo", allow_module_level=True)
V2 = MODELS / "lenet_v2.caffemodel"
V1 = MODELS / "lenet_v1.caffemodel"
H5 = MODELS / "lenet.caffemodel.h5"
SETTINGS = settings(max_examples=250, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    with np.load(FIX / "forward/lenet/blobs.npz") as z:
        return {k[len("param/"):]: z[k] for k in z.files if k.startswith("param/")}


@pytest.fixture(scope="module")
def lenet_shapes() -> dict[str, list[list[int]]]:
    net = json.loads((FIX / "forward/lenet/net.json").read_text())
    return {l["name"]: l["params"] for l in net["layers"]}


def _flat(w: dict) -> dict[str, np.ndarray]:
    return {f"{k}/{i}": a for k, v in w.items() for i, a in enumerate(v)}


def _bit_equal(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype == np.float32 and a.shape == b.shape and a.tobytes() == b.tobytes()


# --------------------------------------------------------------------------- LeNet x3

def test_v2_equals_forward_params(ref: dict) -> None:
    w = read_weights(V2)
    assert w.format == "binaryproto" and w.upgraded_from is None
    assert list(w) == ["data", "conv1", "pool1", "conv2", "pool2", "ip1", "relu1", "ip2", "prob"]
    flat = _flat(w)
    assert flat.keys() == ref.keys()
    assert all(_bit_equal(flat[k], ref[k]) for k in ref)
    for a in flat.values():  # own, aligned, writable memory: safe to hand to torch
        assert a.flags.aligned and a.flags.writeable and a.flags.c_contiguous


def test_v1_keeps_legacy_shapes_and_fits_them(ref: dict, lenet_shapes: dict) -> None:
    w = read_weights(V1)
    assert w.upgraded_from == "V1"
    assert w["ip1"][0].shape == (1, 1, 500, 800) and w["conv1"][1].shape == (1, 1, 1, 20)
    assert w.legacy["ip1"] == (True, True)
    fitted = read_weights(V1, shapes=lenet_shapes)
    flat = _flat(fitted)
    assert flat.keys() == ref.keys()
    assert all(_bit_equal(flat[k], ref[k]) for k in ref)


def test_hdf5_equals_forward_params(ref: dict) -> None:
    w = read_weights(H5)
    assert w.format == "hdf5"
    assert set(w) == {"data", "conv1", "pool1", "conv2", "pool2", "ip1", "relu1", "ip2", "prob"}
    flat = _flat(w)
    assert flat.keys() == ref.keys()
    assert all(_bit_equal(flat[k], ref[k]) for k in ref)


def test_format_is_sniffed_from_content_not_name(tmp_path: Path, ref: dict) -> None:
    shutil.copy(H5, tmp_path / "weights.caffemodel")
    shutil.copy(V2, tmp_path / "weights.h5")
    assert read_weights(tmp_path / "weights.caffemodel").format == "hdf5"
    w = read_weights(tmp_path / "weights.h5")
    assert w.format == "binaryproto"
    assert _bit_equal(w["ip2"][0], ref["ip2/0"])


def test_init_caffemodel_equals_init_params() -> None:
    w = read_weights(FIX / "train/init.caffemodel")
    with np.load(FIX / "train/init_params.npz") as z:
        want = {k: z[k] for k in z.files}
    flat = _flat(w)
    assert flat.keys() == want.keys()
    assert all(_bit_equal(flat[k], want[k]) for k in want)


# --------------------------------------------------------------------------- writing

def test_rewrite_is_byte_identical_to_caffe(tmp_path: Path) -> None:
    original = V2.read_bytes()
    w = read_weights(V2, net=True)
    assert isinstance(w.net, M.NetParameter) and w.net.name == "LeNet"
    out = tmp_path / "again.caffemodel"
    write_caffemodel(out, w.net, w)
    assert out.read_bytes() == original
    again = read_weights(out, net=True)
    assert _flat(again).keys() == _flat(w).keys()
    assert all(_bit_equal(a, _flat(w)[k]) for k, a in _flat(again).items())
    write_caffemodel(out, again.net, again)  # and once more from the re-read file
    assert out.read_bytes() == original


def test_write_from_layers_sets_phase_like_net_init(tmp_path: Path) -> None:
    layers = [make(M.LayerParameter, name="ip", type="InnerProduct", bottom=("x",), top=("ip",),
                   inner_product_param=make(M.InnerProductParameter, num_output=2)),
              make(M.LayerParameter, name="relu", type="ReLU", phase=M.Phase.TRAIN)]
    w = {"ip": [np.arange(6, dtype=np.float64).reshape(2, 3), np.array([1.0, 2.0])]}
    out = tmp_path / "small.caffemodel"
    write_caffemodel(out, layers, w, phase=M.Phase.TEST)
    net = read_caffemodel(out)
    assert has(net, "name") and net.name == ""  # Net::ToProto always sets the name
    assert [l.phase for l in net.layer] == [M.Phase.TEST, M.Phase.TRAIN]
    assert tuple(net.layer[0].blobs[0].shape.dim) == (2, 3)
    assert not has(net.layer[0].blobs[0], "num")
    g = message_class("NetParameter").FromString(out.read_bytes())
    assert list(g.layer[0].blobs[1].data) == [1.0, 2.0]
    with pytest.raises(WeightsError, match="'nope'"):
        write_caffemodel(out, layers, {"nope": [np.zeros(1)]})


def test_write_hdf5_like_caffe_save_hdf5(tmp_path: Path, ref: dict) -> None:
    w = read_weights(V2)
    out = tmp_path / "w.caffemodel.h5"
    write_hdf5_weights(out, w)
    with h5py.File(out, "r") as mine, h5py.File(H5, "r") as caffe:
        assert list(mine) == list(caffe) == ["data"]
        assert set(mine["data"]) == set(caffe["data"])
        for layer in caffe["data"]:
            assert set(mine["data"][layer]) == set(caffe["data"][layer])
            for i in caffe["data"][layer]:
                a, b = mine["data"][layer][i], caffe["data"][layer][i]
                assert a.dtype == b.dtype == np.dtype("<f4") and a.shape == b.shape
                assert a.chunks is None and b.chunks is None  # contiguous, like H5LTmake_dataset
    flat = _flat(read_weights(out))
    assert all(_bit_equal(flat[k], ref[k]) for k in ref)


def test_hdf5_layer_names_with_slashes(tmp_path: Path) -> None:
    w = {"inception_3a/1x1": [np.ones((2, 2), np.float32)], "inception_3a/output": [],
         "a": [np.zeros(3, np.float32)]}
    out = tmp_path / "g.h5"
    write_hdf5_weights(out, w)
    got = read_weights(out)
    assert set(got) == set(w)
    assert got["inception_3a/1x1"][0].shape == (2, 2)


# --------------------------------------------------------------------------- damage

@pytest.mark.parametrize("cut", [1, 2, 10, 40, 200, 5_000, 600_000, 1_000_000, -4, -1])
def test_truncated_caffemodel_names_offset_and_layer(tmp_path: Path, cut: int) -> None:
    raw = V2.read_bytes()
    p = tmp_path / "cut.caffemodel"
    p.write_bytes(raw[:cut])
    with pytest.raises(WeightsError) as info:
        read_weights(p)
    err = info.value
    assert err.loc is not None and err.loc.file == str(p)
    assert "at byte" in err.message
    if cut >= 200:
        assert "while reading layer '" in err.message
    if cut == -1:
        assert "layer 'prob'" in err.message


def test_empty_and_text_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.caffemodel"
    empty.write_bytes(b"")
    with pytest.raises(WeightsError, match="no layers"):
        read_weights(empty)
    text = tmp_path / "net.caffemodel"
    text.write_text('name: "LeNet"\nlayer {\n  name: "data"\n  type: "Input"\n}\n')
    with pytest.raises(WeightsError) as info:
        read_weights(text)
    assert "text prototxt" in (info.value.hint or "")
    with pytest.raises(WeightsError, match="cannot read"):
        read_weights(tmp_path / "missing.caffemodel")


@pytest.mark.parametrize("cut", [100, 5_000, 1_000_000])
def test_truncated_hdf5_is_a_weights_error(tmp_path: Path, cut: int) -> None:
    p = tmp_path / "cut.h5"
    p.write_bytes(H5.read_bytes()[:cut])
    with pytest.raises(WeightsError):
        read_weights(p)


def _top_level_fields(raw: bytes) -> list[tuple[int, int, int]]:
    """(field number, start, end) of each complete top-level field of ``raw``."""
    from netdef.io.wire import _skip, _varint
    buf, pos, out = memoryview(raw), 0, []
    try:
        while pos < len(raw):
            start = pos
            key, pos = _varint(buf, pos, len(raw))
            pos = _skip(buf, pos, len(raw), key & 7, key >> 3)
            out.append((key >> 3, start, pos))
    except WireError:
        pass
    return out


_INIT = (FIX / "train/init.caffemodel").read_bytes()
_LENET_HEAD = V2.read_bytes()[:60_000]  # data, conv1, pool1, then cut inside conv2
_FIELDS = {id(r): _top_level_fields(r) for r in (_INIT, _LENET_HEAD)}


@SETTINGS
@given(st.data())
def test_random_truncation_is_a_weights_error(tmp_path_factory: pytest.TempPathFactory,
                                              data: st.DataObject) -> None:
    raw = _LENET_HEAD if data.draw(st.booleans()) else _INIT
    cut = data.draw(st.integers(0, len(raw) - 1))
    p = tmp_path_factory.mktemp("cut") / "w.caffemodel"
    p.write_bytes(raw[:cut])
    fields = _FIELDS[id(raw)]
    at_boundary = any(end == cut for _, _, end in fields)
    if at_boundary and any(n == 100 and end <= cut for n, _, end in fields):
        # a cut between two top-level fields leaves valid protobuf (Caffe would accept it
        # too): the result must be exactly the complete layers before the cut
        names = [decode(M.NetParameter, raw[s:e]).layer[0].name
                 for n, s, e in fields if n == 100 and e <= cut]
        assert list(read_weights(p)) == names
        return
    with pytest.raises(WeightsError):
        read_weights(p)


@SETTINGS
@given(st.data())
def test_random_corruption_is_weights_error_or_like_google(
        tmp_path_factory: pytest.TempPathFactory, data: st.DataObject) -> None:
    """Flipped bytes: a WeightsError, or a file Google's parser reads the same way."""
    raw = bytearray(_INIT)
    for _ in range(data.draw(st.integers(1, 4))):
        # half the flips hit the structure-dense head (layer headers, params, shapes)
        i = data.draw(st.integers(0, len(raw) - 1) | st.integers(0, 400))
        raw[i] ^= data.draw(st.integers(1, 255))
    p = tmp_path_factory.mktemp("flip") / "w.caffemodel"
    p.write_bytes(bytes(raw))
    try:
        w = read_weights(p, net=True)
    except WeightsError as e:
        assert e.loc is not None and e.loc.file == str(p)
        return
    assert encode(w.net) == message_class("NetParameter").FromString(bytes(raw)).SerializeToString()


# --------------------------------------------------------------------------- shapes

@pytest.mark.parametrize("target,source,legacy,ok", [
    ((500, 800), (1, 1, 500, 800), True, True),
    ((20,), (1, 1, 1, 20), True, True),
    ((20, 1, 5, 5), (20, 1, 5, 5), True, True),
    ((20, 1, 5, 5), (20, 1, 5, 5), False, True),
    ((500, 800), (1, 1, 500, 800), False, False),  # N-D shapes must match exactly
    ((10, 800), (1, 1, 500, 800), True, False),
    ((2, 3, 4, 5, 6), (3, 4, 5, 6), True, False),  # legacy fits only <= 4 axes
    ((), (1, 1, 1, 1), True, True),
    ((800, 500), (1, 1, 500, 800), True, False),
])
def test_shape_equals_like_caffe(target: tuple, source: tuple, legacy: bool, ok: bool) -> None:
    assert shape_equals(target, source, legacy) is ok


def test_shape_mismatch_error_has_caffe_wording() -> None:
    with pytest.raises(WeightsError) as info:
        check_param_shape("ip1", 0, (10, 800), (1, 1, 500, 800), legacy=True)
    assert info.value.message == (
        "Cannot copy param 0 weights from layer 'ip1'; shape mismatch.  Source param shape "
        "is 1 1 500 800 (400000); target param shape is 10 800 (8000). To learn this layer's "
        "parameters from scratch rather than copying from a saved net, rename the layer.")
    check_param_shape("ip1", 0, (500, 800), (1, 1, 500, 800), legacy=True)


def test_fit_weights_like_copy_trained_layers(lenet_shapes: dict) -> None:
    w = read_weights(V1)
    shapes = dict(lenet_shapes)
    shapes.pop("conv2")  # not in the target: ignored, like "Ignoring source layer"
    got = fit_weights(w, shapes)
    assert "conv2" not in got and got["ip1"][0].shape == (500, 800)
    shapes["ip1"] = [[500, 800]]
    with pytest.raises(WeightsError, match="Incompatible number of blobs for layer ip1"):
        fit_weights(w, shapes)
    shapes["ip1"] = [[10, 800], [500]]
    with pytest.raises(WeightsError, match="Cannot copy param 0 weights from layer 'ip1'"):
        fit_weights(w, shapes)


def test_count_mismatch_in_file_is_a_weights_error(tmp_path: Path) -> None:
    blob = make(M.BlobProto, shape=make(M.BlobShape, dim=(2, 3)), data=(1.0, 2.0))
    net = make(M.NetParameter, layer=(make(M.LayerParameter, name="fc", blobs=(blob,)),))
    p = tmp_path / "bad.caffemodel"
    p.write_bytes(encode(net))
    with pytest.raises(WeightsError, match=r"layer 'fc' param 0: shape 2 3 \(6\) needs 6 values"):
        read_weights(p)


def test_v1_and_v2_together_are_rejected(tmp_path: Path) -> None:
    net = make(M.NetParameter, layer=(make(M.LayerParameter, name="a"),),
               layers=(make(M.V1LayerParameter, name="b"),))
    p = tmp_path / "both.caffemodel"
    p.write_bytes(encode(net))
    with pytest.raises(WeightsError, match="both"):
        read_weights(p)


def test_v0_layers_are_read(tmp_path: Path) -> None:
    blob = make(M.BlobProto, num=1, channels=1, height=2, width=2, data=(1.0, 2.0, 3.0, 4.0))
    v0 = make(M.V0LayerParameter, name="fc", type="innerproduct", blobs=(blob,))
    net = make(M.NetParameter, layers=(make(M.V1LayerParameter, layer=v0),))
    p = tmp_path / "v0.caffemodel"
    p.write_bytes(encode(net))
    w = read_weights(p)
    assert w.upgraded_from == "V0" and w["fc"][0].shape == (1, 1, 2, 2)
    assert fit_weights(w, {"fc": [[2, 2]]})["fc"][0].tolist() == [[1, 2], [3, 4]]


def test_double_data_is_rounded_to_float(tmp_path: Path) -> None:
    blob = make(M.BlobProto, shape=make(M.BlobShape, dim=(2,)), double_data=(0.1, 2.0))
    net = make(M.NetParameter, layer=(make(M.LayerParameter, name="fc", blobs=(blob,)),))
    p = tmp_path / "d.caffemodel"
    p.write_bytes(encode(net))
    a = read_weights(p)["fc"][0]
    assert a.dtype == np.float32 and a.tolist() == [np.float32(0.1), 2.0]


def test_net_to_proto_rejects_v1_nets() -> None:
    with pytest.raises(WeightsError, match="V1"):
        net_to_proto(make(M.NetParameter, layers=(make(M.V1LayerParameter, name="x"),)), {})


def test_read_without_mmap_gives_the_same_owned_arrays(monkeypatch: pytest.MonkeyPatch,
                                                       ref: dict) -> None:
    import mmap

    def refuse(*args: object, **kw: object) -> None:
        raise OSError("mmap not supported here")
    monkeypatch.setattr(mmap, "mmap", refuse)
    flat = _flat(read_weights(V2))
    assert all(_bit_equal(flat[k], ref[k]) for k in ref)
    assert all(a.flags.aligned and a.flags.writeable for a in flat.values())
