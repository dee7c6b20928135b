"""Trained weights (``.caffemodel``, ``.caffemodel.h5``) and solver snapshots.

Reading sniffs the *content*: HDF5 by its signature, otherwise a binary NetParameter,
modern (``layer``, field 100) or legacy V1/V0 (``layers``, field 2).  The message
structure is decoded from a memory map (payloads stay untouched, see
:mod:`netdef.io.wire`), then each float payload is read with one ``preadv`` into its own
aligned numpy array, so loading runs at page-cache speed (~2-3 GB/s for VGG-16 here).  Writing follows Caffe's ``Net::ToProto``: the net's name, then
every layer's full LayerParameter with its blobs as ``shape`` + packed ``data``.  Every
write is atomic (:mod:`netdef.io.atomic`).

Loading into a net follows ``Net::CopyTrainedLayersFrom``: matched by layer name, blob
count checked, shapes compared with ``Blob::ShapeEquals``; the error texts are Caffe's.
"""
from __future__ import annotations

import dataclasses
import mmap
import os
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from netdef.errors import Loc, WeightsError
from netdef.io import hdf5
from netdef.io.atomic import atomic_write
from netdef.io.blobs import array_to_blob, blob_shape, blob_to_array, shape_equals, shape_string
from netdef.io.wire import WireError, decode, encode_chunks
from netdef.ir.messages import LayerParameter, NetParameter, Phase, SolverState
from netdef.ir.schema import has, make, present, update

__all__ = [
    "Weights", "read_weights", "read_caffemodel", "write_caffemodel", "write_hdf5_weights",
    "net_to_proto", "fit_weights", "check_param_shape", "read_solverstate",
    "write_solverstate", "make_solverstate", "solverstate_history",
]

_DAMAGED = ("the file is damaged or incomplete (interrupted download or copy?): "
            "fetch or save it again")


class Weights(dict):
    """``{layer name: [float32 param arrays]}`` in file order, plus provenance.

    Every layer of the file is a key (param-less layers map to ``[]``).  Attributes:
    ``format`` (``"binaryproto"`` or ``"hdf5"``), ``upgraded_from`` (``None``, ``"V1"``,
    ``"V0"``), ``legacy`` (layer → per-blob flags: shape came from the 4-D
    num/channels/height/width fields), ``net`` (the decoded NetParameter when asked for),
    ``path``.
    """

    format: str = "binaryproto"
    upgraded_from: str | None = None
    legacy: dict[str, tuple[bool, ...]]
    net: NetParameter | None = None
    path: str | None = None

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.legacy = {}


# --------------------------------------------------------------------------- reading

def _pread_into(fd: int, arr: np.ndarray, offset: int) -> None:
    """Fill ``arr`` from the file at ``offset``: one kernel copy, no Python buffer."""
    view, done = memoryview(arr).cast("B"), 0
    while done < len(view):
        if hasattr(os, "preadv"):
            n = os.preadv(fd, [view[done:]], offset + done)
        else:  # pragma: no cover - platforms without preadv
            os.lseek(fd, offset + done, os.SEEK_SET)
            n = os.readv(fd, [view[done:]])
        if n <= 0:
            raise OSError(f"unexpected end of file at byte {offset + done}")
        done += n


def _detach(msg: Any, own: Callable[[np.ndarray], np.ndarray]) -> Any:
    """``msg`` with every float array replaced by ``own(array)`` (structure walk only)."""
    changes: dict[str, Any] = {}
    for spec, value in present(msg):
        if spec.is_message:
            if spec.repeated:
                new = tuple(_detach(v, own) for v in value)
                if any(a is not b for a, b in zip(new, value)):
                    changes[spec.name] = new
            else:
                new = _detach(value, own)
                if new is not value:
                    changes[spec.name] = new
        elif isinstance(value, np.ndarray):
            new = own(value)
            if new is not value:
                changes[spec.name] = new
    return dataclasses.replace(msg, **changes) if changes else msg


def _owned(arr: np.ndarray) -> np.ndarray:
    """Aligned, writable arrays stay; others (unaligned views, read-only) are copied."""
    return arr if arr.flags.aligned and arr.flags.writeable else arr.copy()


def _preader(fd: int, lo: int, hi: int) -> Callable[[np.ndarray], np.ndarray]:
    """Arrays viewing the mapping [lo, hi) are re-read with ``preadv`` into fresh arrays.

    One kernel copy straight into aligned numpy memory: several times faster than copying
    500 MB out of one big read buffer (page-fault bound on small VMs).
    """
    def own(arr: np.ndarray) -> np.ndarray:
        addr = arr.__array_interface__["data"][0]
        if not (arr.size and lo <= addr < hi):
            return _owned(arr)
        out = np.empty(arr.shape, arr.dtype)
        _pread_into(fd, out, addr - lo)
        return out
    return own


def _read_bytes(path: str) -> np.ndarray:
    """The whole file in one writable buffer (fallback where mmap is impossible)."""
    try:
        with open(path, "rb", buffering=0) as fh:
            size = os.fstat(fh.fileno()).st_size
            buf = np.empty(size, np.uint8)
            view, got = memoryview(buf), 0
            while got < size:
                n = fh.readinto(view[got:])
                if not n:
                    break
                got += n
    except OSError as e:
        raise WeightsError(f"cannot read file: {e.strerror}", loc=Loc(path)) from None
    return buf[:got]


def _load(path: str, cls: type, what: str) -> Any:
    """Decode a whole binary message file: structure from an mmap, payloads by preadv.

    Every float array of the result owns aligned, writable memory; the mapping is gone
    when this returns.  Files that cannot be mapped (empty, pipes) are read instead.
    (Like any mmap reader, truncating the file *while* it is decoded may raise SIGBUS;
    the writers here replace files atomically, so they never cause that.)
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    except OSError as e:
        raise WeightsError(f"cannot read {what}: {e.strerror}", loc=Loc(path)) from None
    try:
        try:
            mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):
            return _detach(_decode_file(_read_bytes(path), cls, path, what), _owned)
        try:
            base = np.frombuffer(mm, np.uint8)
            lo = base.__array_interface__["data"][0]
            msg = _decode_file(base, cls, path, what)
            try:
                msg = _detach(msg, _preader(fd, lo, lo + len(base)))
            except OSError as e:  # an I/O error, or the file shrank under us
                raise WeightsError(f"cannot read {what}: {e}", loc=Loc(path)) from None
            del base
        finally:
            try:
                mm.close()
            except BufferError:  # a traceback still holds a view: the GC unmaps it later
                pass
        return msg
    finally:
        os.close(fd)


def _looks_like_text(head: bytes) -> bool:
    sample = head[:256]
    return bool(sample) and all(32 <= b < 127 or b in b"\t\r\n" for b in sample)


def _decode_file(buf: Any, cls: type, path: str, what: str) -> Any:
    try:
        return decode(cls, buf)
    except WireError as e:
        layer = f" while reading layer '{e.layer}'" if e.layer else ""
        hint = (f"this looks like a text prototxt; a {what} is a binary protobuf file"
                if _looks_like_text(bytes(buf[:256])) else _DAMAGED)
        raise WeightsError(f"corrupt or truncated {what}: {e.reason} at byte "
                           f"{e.offset}{layer} ({e.where})", loc=Loc(path), hint=hint) from None


def read_caffemodel(path: str | os.PathLike[str]) -> NetParameter:
    """The full decoded NetParameter of a binary caffemodel (blob data as numpy arrays)."""
    name = os.fspath(path)
    return _load(name, NetParameter, "caffemodel")


def _layers_of(net: NetParameter, path: str) -> tuple[list[tuple[str, tuple]], str | None]:
    """(name, blobs) per layer, and the legacy version the file was written in."""
    if net.layer and net.layers:
        raise WeightsError("the file has both 'layer' (V2) and 'layers' (V1) fields",
                           loc=Loc(path), hint="Caffe refuses such inconsistent NetParameters")
    if net.layer:
        return [(l.name, l.blobs) for l in net.layer], None
    if net.layers:
        out, v0 = [], False
        for l in net.layers:
            if has(l, "layer"):  # V0: everything inside the nested V0LayerParameter
                v0 = True
                out.append((l.layer.name, l.layer.blobs))
            else:
                out.append((l.name, l.blobs))
        return out, "V0" if v0 else "V1"
    raise WeightsError("the file contains no layers: not a caffemodel", loc=Loc(path),
                       hint=_DAMAGED)


def read_weights(path: str | os.PathLike[str], *, net: bool = False,
                 shapes: Mapping[str, Sequence[Sequence[int]]] | None = None) -> Weights:
    """Read V2, V1/V0 or HDF5 weights (sniffed by content) as float32 N-D arrays.

    Legacy blobs keep their stored 4-D num/channels/height/width shape unless ``shapes``
    (target layer → param shapes) is given: then :func:`fit_weights` checks and reshapes
    them like Caffe's loader.  ``net=True`` keeps the decoded NetParameter in ``.net``.
    """
    name = os.fspath(path)
    out = Weights()
    out.path = name
    try:
        with open(name, "rb") as fh:
            head = fh.read(4104)
    except OSError as e:
        raise WeightsError(f"cannot read weights: {e.strerror}", loc=Loc(name)) from None
    if hdf5.is_hdf5(head):
        out.format = "hdf5"
        for layer, arrays in hdf5.read_hdf5_weights(name).items():
            out[layer] = arrays
            out.legacy[layer] = (False,) * len(arrays)
    else:
        msg = read_caffemodel(name)
        layers, out.upgraded_from = _layers_of(msg, name)
        for layer, blobs in layers:
            arrays, legacy = [], []
            for i, b in enumerate(blobs):
                arrays.append(blob_to_array(b, what=f"layer '{layer}' param {i}", file=name))
                legacy.append(blob_shape(b)[1])
            out[layer] = arrays
            out.legacy[layer] = tuple(legacy)
        if net:
            out.net = msg
    if shapes is not None:
        fitted = fit_weights(out, shapes)
        out.clear()
        out.update(fitted)
    return out


# --------------------------------------------------------------------------- loading rules

def check_param_shape(layer: str, index: int, target: Sequence[int], source: Sequence[int],
                      legacy: bool = False, file: str | None = None) -> None:
    """Raise Caffe's "Cannot copy param ..." error unless ``Blob::ShapeEquals`` holds."""
    if shape_equals(target, source, legacy):
        return
    raise WeightsError(
        f"Cannot copy param {index} weights from layer '{layer}'; shape mismatch.  "
        f"Source param shape is {shape_string(source)}; target param shape is "
        f"{shape_string(target)}. To learn this layer's parameters from scratch rather than "
        f"copying from a saved net, rename the layer.", loc=Loc(file),
        hint=f"rename layer '{layer}' in the net to learn it from scratch, or fix its shape")


def fit_weights(weights: Mapping[str, Sequence[np.ndarray]],
                target: Mapping[str, Sequence[Sequence[int]]]) -> dict[str, list[np.ndarray]]:
    """``Net::CopyTrainedLayersFrom``: the source layers that exist in ``target``, checked.

    Source layers the target lacks are ignored (Caffe logs "Ignoring source layer");
    blob counts must agree; legacy shapes are right-aligned and reshaped to the target's.
    """
    legacy = getattr(weights, "legacy", {})
    file = getattr(weights, "path", None)
    out: dict[str, list[np.ndarray]] = {}
    for layer, arrays in weights.items():
        if layer not in target:
            continue
        shapes = target[layer]
        if len(shapes) != len(arrays):
            raise WeightsError(f"Incompatible number of blobs for layer {layer}", loc=Loc(file),
                               hint=f"the file has {len(arrays)} blobs, the net's layer "
                                    f"'{layer}' has {len(shapes)}")
        flags = legacy.get(layer, (False,) * len(arrays))
        fitted = []
        for i, (arr, shape) in enumerate(zip(arrays, shapes)):
            check_param_shape(layer, i, tuple(shape), arr.shape, flags[i], file)
            fitted.append(arr.reshape(tuple(shape)))
        out[layer] = fitted
    return out


# --------------------------------------------------------------------------- writing

def net_to_proto(net: NetParameter | Iterable[LayerParameter],
                 weights: Mapping[str, Sequence[Any]], *, phase: Phase | None = None
                 ) -> NetParameter:
    """Caffe's ``Net::ToProto``: name + each layer's LayerParameter with fresh blobs.

    ``phase`` is set on layers that lack one (``Net::Init`` does).  Only the name and the
    layers are kept, as in Caffe; a V1 net must be upgraded first.
    """
    if isinstance(net, NetParameter):
        if net.layers and not net.layer:
            raise WeightsError("cannot write a V1 ('layers') net as weights",
                               hint="upgrade the net to 'layer' syntax first")
        name, layers = net.name, tuple(net.layer)
    else:
        name, layers = "", tuple(net)
    names = {l.name for l in layers}
    extra = [k for k in weights if k not in names]
    if extra:
        raise WeightsError(f"weights given for layer '{extra[0]}', which the net does not have")
    out = []
    for layer in layers:
        blobs = tuple(array_to_blob(a) for a in weights.get(layer.name, ()))
        changes: dict[str, Any] = {"blobs": blobs if blobs else None}
        if phase is not None and not has(layer, "phase"):
            changes["phase"] = Phase(phase)
        out.append(update(layer, **changes))
    return make(NetParameter, name=name, layer=out)


def write_caffemodel(path: str | os.PathLike[str], net: NetParameter | Iterable[LayerParameter],
                     weights: Mapping[str, Sequence[Any]], *, phase: Phase | None = None) -> None:
    """Write V2 binary weights atomically, as Caffe's ``Net::ToProto`` + serialize."""
    chunks, _ = encode_chunks(net_to_proto(net, weights, phase=phase))
    atomic_write(path, chunks)


def write_hdf5_weights(path: str | os.PathLike[str], weights: Mapping[str, Sequence[Any]]) -> None:
    """Caffe's ``save_hdf5``: ``/data/<layer>`` for every layer, ``/data/<layer>/<i>`` float32."""
    hdf5.write_hdf5_weights(path, weights)


# --------------------------------------------------------------------------- solver state

def make_solverstate(iter: int, learned_net: str | None, history: Sequence[Any],
                     current_step: int = 0) -> SolverState:
    """A SolverState as ``SnapshotSolverStateToBinaryProto`` fills it."""
    values: dict[str, Any] = {"iter": iter, "current_step": current_step,
                              "history": tuple(array_to_blob(h) for h in history)}
    if learned_net is not None:
        values["learned_net"] = learned_net
    return make(SolverState, **values)


def solverstate_history(state: SolverState, file: str | None = None) -> list[np.ndarray]:
    """The history blobs as float32 arrays in their N-D shapes."""
    return [blob_to_array(b, what=f"history blob {i}", file=file)
            for i, b in enumerate(state.history)]


def read_solverstate(path: str | os.PathLike[str]) -> SolverState:
    """A ``.solverstate`` (binary SolverState) or ``.solverstate.h5``, sniffed by content."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as fh:
            head = fh.read(4104)
    except OSError as e:
        raise WeightsError(f"cannot read solver state: {e.strerror}", loc=Loc(name)) from None
    if hdf5.is_hdf5(head):
        it, learned, history, step = hdf5.read_hdf5_solverstate(name)
        return make_solverstate(it, learned, history, step)
    state = _load(name, SolverState, "solver state")
    if not has(state, "iter"):
        raise WeightsError("not a solver state: no 'iter' field", loc=Loc(name), hint=_DAMAGED)
    solverstate_history(state, name)  # validates every blob's count against its shape
    return state


def write_solverstate(path: str | os.PathLike[str], state: SolverState, *,
                      hdf5_format: bool | None = None) -> None:
    """Write a solver state atomically; HDF5 when ``hdf5_format`` (default: ``.h5`` suffix)."""
    name = os.fspath(path)
    if hdf5_format is None:
        hdf5_format = name.endswith(".h5")
    if hdf5_format:
        hdf5.write_hdf5_solverstate(name, state.iter,
                                    state.learned_net if has(state, "learned_net") else "",
                                    solverstate_history(state, name), state.current_step)
        return
    chunks, _ = encode_chunks(state)
    atomic_write(name, chunks)
