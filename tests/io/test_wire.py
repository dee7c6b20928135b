"""The schema-driven wire codec against Caffe's own files and Google's protobuf runtime."""
from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import netdef.ir.messages as M
from netdef.io.descriptor import message_class
from netdef.io.wire import WireError, WireField, decode, encode, encode_chunks, is_array_field
from netdef.ir.schema import fields_of, has, is_message_class, make, present

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
FIX = SHARED / "fixtures"
pytestmark = pytest.mark.skipif(not FIX.is_dir(), reason="the Caffe fixtures (../shared) are not beside the repo")
SETTINGS = settings(max_examples=250, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

BINARY_FILES = [
    ("caffemodels/lenet_v2.caffemodel", M.NetParameter),
    ("caffemodels/lenet_v1.caffemodel", M.NetParameter),
    ("forward/lenet/net.caffemodel", M.NetParameter),
    ("train/init.caffemodel", M.NetParameter),
    ("train/cases/sgd_step/snap_iter_60.caffemodel", M.NetParameter),
    ("train/cases/adam_poly/snap_iter_60.solverstate", M.SolverState),
    ("train/cases/sgd_step/snap_iter_30.solverstate", M.SolverState),
    ("train/data/digits_mean.binaryproto", M.BlobProto),
]


@pytest.mark.parametrize("rel,cls", BINARY_FILES, ids=[r for r, _ in BINARY_FILES])
def test_caffe_files_reencode_byte_identical(rel: str, cls: type) -> None:
    raw = (FIX / rel).read_bytes()
    msg = decode(cls, raw)
    assert encode(msg) == raw
    chunks, size = encode_chunks(msg)
    assert size == len(raw) == sum(memoryview(c).nbytes for c in chunks)
    # Google's runtime (schema built from netdef's classes) agrees byte for byte
    assert message_class(cls).FromString(raw).SerializeToString() == raw


def test_float_payloads_are_zero_copy_numpy() -> None:
    raw = bytearray((FIX / "caffemodels/lenet_v2.caffemodel").read_bytes())
    net = decode(M.NetParameter, raw)
    blob = net.layer[1].blobs[0]
    assert isinstance(blob.data, np.ndarray) and blob.data.dtype == np.dtype("<f4")
    assert blob.data.size == 20 * 5 * 5
    assert np.shares_memory(blob.data, np.frombuffer(raw, np.uint8))
    assert tuple(blob.shape.dim) == (20, 1, 5, 5)


def _tag(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def _varint(v: int) -> bytes:
    v &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def test_unpacked_floats_from_legacy_writers() -> None:
    vals = [1.5, -2.0, 3.25, 0.0, 7.0]
    raw = _tag(1, 0) + _varint(2)  # num: 2
    raw += b"".join(_tag(5, 5) + struct.pack("<f", v) for v in vals[:3])
    raw += _tag(6, 5) + struct.pack("<f", 9.0)  # a diff element interleaved
    raw += _tag(5, 2) + _varint(8) + struct.pack("<2f", *vals[3:])  # then a packed chunk
    raw += _tag(8, 1) + struct.pack("<d", 0.1)  # one unpacked double
    blob = decode(M.BlobProto, raw)
    assert blob.data.dtype == np.dtype("<f4") and blob.data.tolist() == vals
    assert blob.diff.tolist() == [9.0]
    assert blob.double_data.dtype == np.dtype("<f8") and blob.double_data.tolist() == [0.1]
    assert blob.num == 2
    g = message_class("BlobProto").FromString(raw)
    assert encode(blob) == g.SerializeToString()  # both re-encode packed


def test_tuples_accepted_for_array_fields() -> None:
    a = make(M.BlobProto, shape=make(M.BlobShape, dim=(2,)), data=(1.0, 2.0))
    b = M.BlobProto(shape=a.shape, data=np.array([1, 2], "<f4"), _present=a._present)
    assert encode(a) == encode(b)


def test_unknown_fields_and_enum_values_kept_and_reemitted_last() -> None:
    raw = (_tag(10, 0) + _varint(7)                       # phase: 7 (not TRAIN/TEST)
           + _tag(1, 2) + _varint(2) + b"ip"             # name
           + _tag(999, 2) + _varint(3) + b"abc"          # unknown length-delimited
           + _tag(998, 5) + b"\x01\x02\x03\x04"          # unknown fixed32
           + _tag(997, 3) + _tag(1, 0) + _varint(5) + _tag(997, 4)  # unknown group
           + _tag(2, 0) + _varint(1))                    # type with a wrong wire type
    layer = decode(M.LayerParameter, raw)
    assert layer.name == "ip" and not has(layer, "phase") and not has(layer, "type")
    assert [u.number for u in layer._unknown] == [10, 999, 998, 997, 2]
    assert all(isinstance(u, WireField) for u in layer._unknown)
    out = encode(layer)
    assert out == message_class("LayerParameter").FromString(raw).SerializeToString()
    assert out.startswith(_tag(1, 2) + _varint(2) + b"ip")


def test_negative_int32_and_enum_are_ten_byte_varints() -> None:
    msg = make(M.ConvolutionParameter, num_output=3)
    acc = make(M.AccuracyParameter, axis=-1, ignore_label=-5)
    out = encode(acc)
    assert out == _tag(2, 0) + b"\xff" * 9 + b"\x01" + _tag(3, 0) + _varint(-5)
    assert decode(M.AccuracyParameter, out).axis == -1
    assert encode(msg) == b"\x08\x03"


def test_repeated_singular_message_is_merged() -> None:
    a = encode(make(M.ConvolutionParameter, num_output=4, kernel_size=(3,)))
    b = encode(make(M.ConvolutionParameter, pad=(1,), kernel_size=(5,)))
    raw = _tag(106, 2) + _varint(len(a)) + a + _tag(106, 2) + _varint(len(b)) + b
    layer = decode(M.LayerParameter, raw)
    conv = layer.convolution_param
    assert (conv.num_output, conv.kernel_size, conv.pad) == (4, (3, 5), (1,))
    g = message_class("LayerParameter").FromString(raw)
    assert encode(layer) == g.SerializeToString()


@pytest.mark.parametrize("raw,reason", [
    (b"\x08", "truncated varint"),
    (b"\x08\xff\xff", "truncated varint"),
    (b"\x08" + b"\xff" * 10 + b"\x01", "longer than 10 bytes"),
    (b"\x0a\x05ab", "runs past the end"),
    (b"\x2a\x03\x00\x00\x00", "not a multiple of 4"),
    (b"\x2d\x00\x00", "truncated 32-bit"),
    (b"\x0f", "invalid wire type"),
    (b"\x00", "field number 0"),
])
def test_malformed_bytes_raise_wire_error(raw: bytes, reason: str) -> None:
    with pytest.raises(WireError, match=reason) as info:
        decode(M.BlobProto if raw[:1] in (b"\x2a", b"\x2d") else M.LayerParameter, raw)
    assert info.value.offset >= 0


def test_error_path_names_the_layer() -> None:
    raw = (FIX / "caffemodels/lenet_v2.caffemodel").read_bytes()
    with pytest.raises(WireError) as info:
        decode(M.NetParameter, raw[:len(raw) // 2])
    assert info.value.layer == "ip1"
    assert info.value.names == [("NetParameter", "LeNet"), ("LayerParameter", "ip1")]
    assert info.value.where == "layer[5]{'ip1'}"
    blob = _tag(5, 2) + _varint(3) + b"\0\0\0"  # packed floats: 3 bytes
    layer = _tag(1, 2) + _varint(2) + b"fc" + _tag(7, 2) + _varint(len(blob)) + blob
    bad = _tag(100, 2) + _varint(len(layer)) + layer
    with pytest.raises(WireError, match="not a multiple of 4") as info:
        decode(M.NetParameter, bad)
    assert info.value.layer == "fc"
    assert info.value.where == "layer[0]{'fc'}.blobs[0]"


# --------------------------------------------------------------------------- vs Google

_INTS = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1),
         "uint32": (0, 2**32 - 1), "uint64": (0, 2**64 - 1), "sint32": (-(2**31), 2**31 - 1),
         "sint64": (-(2**63), 2**63 - 1), "fixed32": (0, 2**32 - 1), "fixed64": (0, 2**64 - 1)}
ALL_MESSAGES = sorted({v for v in vars(M).values() if is_message_class(v)},
                      key=lambda c: c.__name__)


def _scalar(spec: Any) -> st.SearchStrategy[Any]:
    if spec.is_enum:
        return st.sampled_from(list(spec.type))
    t = spec.type
    if t in _INTS:
        return st.integers(*_INTS[t])
    if t == "float":
        return st.floats(width=32, allow_nan=False)
    if t == "double":
        return st.floats(allow_nan=False)
    if t == "bool":
        return st.booleans()
    if t == "string":
        return st.text(max_size=8)
    return st.binary(max_size=8)


def _draw(data: st.DataObject, cls: type, depth: int) -> Any:
    specs = [s for s in fields_of(cls).values() if depth > 0 or not s.is_message]
    chosen = data.draw(st.lists(st.sampled_from(specs), max_size=6, unique=True)) if specs else []
    values: dict[str, Any] = {}
    for spec in chosen:
        if spec.is_message:
            one = lambda: _draw(data, spec.type, depth - 1)  # noqa: E731
            values[spec.name] = (tuple(one() for _ in range(data.draw(st.integers(1, 2))))
                                 if spec.repeated else one())
        elif spec.repeated:
            items = data.draw(st.lists(_scalar(spec), min_size=1, max_size=5))
            values[spec.name] = (np.array(items, "<f4" if spec.type == "float" else "<f8")
                                 if is_array_field(cls, spec) and data.draw(st.booleans())
                                 else tuple(items))
        else:
            values[spec.name] = data.draw(_scalar(spec))
    return cls(**values, _present=frozenset(values))


def _to_google(msg: Any) -> Any:
    g = message_class(type(msg))()
    for spec, value in present(msg):
        if spec.is_message:
            if spec.repeated:
                for v in value:
                    getattr(g, spec.name).add().CopyFrom(_to_google(v))
            else:
                getattr(g, spec.name).CopyFrom(_to_google(value))
        elif spec.repeated:
            items = value.tolist() if isinstance(value, np.ndarray) else value
            getattr(g, spec.name).extend([int(v) if spec.is_enum else v for v in items])
        else:
            setattr(g, spec.name, int(value) if spec.is_enum else value)
    return g


@SETTINGS
@given(st.data())
def test_encode_matches_google_serializer(data: st.DataObject) -> None:
    cls = data.draw(st.sampled_from(ALL_MESSAGES))
    msg = _draw(data, cls, depth=2)
    ours = encode(msg)
    assert ours == _to_google(msg).SerializePartialToString()
    again = decode(cls, ours)
    assert encode(again) == ours
    for spec, value in present(msg):
        if not spec.is_message and spec.type not in ("float", "double"):
            got = getattr(again, spec.name)
            assert tuple(got) == tuple(value) if spec.repeated else got == value


@SETTINGS
@given(st.binary(max_size=64), st.sampled_from(ALL_MESSAGES))
def test_random_bytes_decode_like_google(raw: bytes, cls: type) -> None:
    """Whatever Google's parser accepts we accept and re-encode identically; else WireError."""
    g = message_class(cls)()
    try:
        g.MergeFromString(raw)
        google_ok = True
    except Exception:
        google_ok = False
    try:
        ours = decode(cls, raw)
    except WireError:
        assert not google_ok, "Google parsed bytes that we rejected"
        return
    assert google_ok, "we parsed bytes that Google rejected"
    assert encode(ours) == g.SerializePartialToString()


def test_float_scalars_round_trip_bits() -> None:
    f = make(M.FillerParameter, std=0.1, min=-math.inf, max=1e39)
    out = encode(f)
    g = _to_google(f).SerializeToString()
    assert out == g
    back = decode(M.FillerParameter, out)
    assert back.std == struct.unpack("<f", struct.pack("<f", 0.1))[0]
    assert back.max == math.inf
