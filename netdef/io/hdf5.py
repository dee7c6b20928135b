"""HDF5 weights and solver state, laid out exactly as Caffe's ``hdf5.cpp`` writes them.

Weights (``Net::ToHDF5``): a group ``/data/<layer>`` for every layer (empty for layers
without parameters) holding float32 datasets ``/data/<layer>/<i>`` with the N-D blob
shape.  Solver state (``SGDSolver::SnapshotSolverStateToHDF5``): ``iter`` and
``current_step`` as int32 datasets of shape (1,), ``learned_net`` as a scalar
null-terminated fixed-length string, and ``history/<i>`` float32 datasets.

libhdf5 reports damage through many exception types, so every failure while reading is
turned into one :class:`~netdef.errors.WeightsError` naming the file.
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np

from netdef.errors import Loc, WeightsError
from netdef.io.atomic import atomic_path

__all__ = ["is_hdf5", "read_hdf5_weights", "write_hdf5_weights", "read_hdf5_solverstate",
           "write_hdf5_solverstate"]

_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def is_hdf5(head: bytes) -> bool:
    """Does a file starting with ``head`` look like HDF5 (signature at 0 or a user block)?"""
    return any(head[o:o + 8] == _SIGNATURE for o in (0, 512, 1024, 2048, 4096))


def _h5py() -> Any:
    import h5py  # imported lazily: only HDF5 users pay for it
    return h5py


def _float_array(ds: Any, what: str, name: str) -> np.ndarray:
    if ds.dtype.kind != "f":
        raise WeightsError(f"{what}: expected float or double data, found {ds.dtype}",
                           loc=Loc(name), hint="Caffe stores parameters as float32 datasets")
    return np.asarray(ds[()], dtype=np.float32)


def _indexed(group: Any, what: str, name: str) -> list[np.ndarray]:
    """Datasets named 0..n-1 of ``group``, in index order."""
    h5py = _h5py()
    found = {int(k): v for k, v in group.items()
             if k.isdigit() and isinstance(v, h5py.Dataset)}
    if sorted(found) != list(range(len(found))):
        raise WeightsError(f"{what}: datasets are not numbered 0..{len(found) - 1} "
                           f"(found {sorted(found)})", loc=Loc(name))
    return [_float_array(found[i], f"{what}/{i}", name) for i in range(len(found))]


def _open(path: str) -> Any:
    try:
        return _h5py().File(path, "r")
    except Exception as e:
        raise WeightsError(f"cannot open HDF5 file: {e}", loc=Loc(path),
                           hint="the file is damaged or truncated") from None


def read_hdf5_weights(path: str | os.PathLike[str]) -> dict[str, list[np.ndarray]]:
    """``{layer: [param arrays]}`` from ``/data``; layer names may contain ``/``."""
    name = os.fspath(path)
    h5py = _h5py()
    out: dict[str, list[np.ndarray]] = {}

    def visit(group: Any, layer: str) -> None:
        subgroups = [(k, v) for k, v in group.items() if isinstance(v, h5py.Group)]
        if len(subgroups) < len(group) or not subgroups:
            out[layer] = _indexed(group, f"/data/{layer}", name)
        for k, sub in subgroups:  # ``a/b`` layer names become nested groups
            visit(sub, f"{layer}/{k}")

    with _open(name) as f:
        try:
            data = f.get("data")
            if not isinstance(data, h5py.Group):
                raise WeightsError("no /data group: not a Caffe HDF5 weights file",
                                   loc=Loc(name), hint="Caffe writes weights as /data/<layer>/<i>")
            for k, g in data.items():
                if isinstance(g, h5py.Group):
                    visit(g, k)
        except WeightsError:
            raise
        except Exception as e:
            raise WeightsError(f"cannot read HDF5 weights: {e}", loc=Loc(name),
                               hint="the file is damaged or truncated") from None
    return out


def write_hdf5_weights(path: str | os.PathLike[str],
                       weights: Mapping[str, Sequence[Any]]) -> None:
    """Caffe's ``Net::ToHDF5`` (no diffs): ``/data/<layer>/<i>`` float32, atomically."""
    h5py = _h5py()
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            data = f.create_group("data")
            for layer, arrays in weights.items():
                g = data.require_group(layer)
                for i, a in enumerate(arrays):
                    g.create_dataset(str(i), data=np.asarray(a, dtype="<f4", order="C"))


# --------------------------------------------------------------------------- solver state

def write_hdf5_solverstate(path: str | os.PathLike[str], iter: int, learned_net: str,
                           history: Sequence[Any], current_step: int = 0) -> None:
    """``SnapshotSolverStateToHDF5``: iter, learned_net, current_step, history/<i>."""
    h5py = _h5py()
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("iter", data=np.array([iter], dtype="<i4"))
            _save_string(f, "learned_net", learned_net)
            f.create_dataset("current_step", data=np.array([current_step], dtype="<i4"))
            g = f.create_group("history")
            for i, a in enumerate(history):
                g.create_dataset(str(i), data=np.asarray(a, dtype="<f4", order="C"))


def _save_string(f: Any, key: str, value: str) -> None:
    """``H5LTmake_dataset_string``: scalar, fixed length strlen+1, null-terminated."""
    h5py = _h5py()
    raw = value.encode("utf-8", "surrogateescape") + b"\0"
    tid = h5py.h5t.C_S1.copy()
    tid.set_size(len(raw))
    tid.set_strpad(h5py.h5t.STR_NULLTERM)
    ds = h5py.h5d.create(f.id, key.encode(), tid, h5py.h5s.create(h5py.h5s.SCALAR))
    ds.write(h5py.h5s.ALL, h5py.h5s.ALL, np.array(raw, dtype=f"S{len(raw)}"), mtype=tid)


def read_hdf5_solverstate(path: str | os.PathLike[str]
                          ) -> tuple[int, str | None, list[np.ndarray], int]:
    """(iter, learned_net or None, history arrays, current_step) of an HDF5 solver state."""
    name = os.fspath(path)
    with _open(name) as f:
        try:
            def scalar(key: str) -> int:
                if key not in f:
                    raise WeightsError(f"solver state has no '{key}' dataset", loc=Loc(name))
                return int(np.asarray(f[key][()]).reshape(-1)[0])

            it, step = scalar("iter"), scalar("current_step")
            learned = None
            if "learned_net" in f:
                raw = f["learned_net"][()]
                raw = raw.tobytes() if isinstance(raw, np.ndarray) else raw
                learned = (raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
                           if isinstance(raw, bytes) else str(raw))
            hist = f.get("history")
            history = _indexed(hist, "/history", name) if hist is not None else []
        except WeightsError:
            raise
        except Exception as e:
            raise WeightsError(f"cannot read HDF5 solver state: {e}", loc=Loc(name),
                               hint="the file is damaged or truncated") from None
    return it, learned, history, step
