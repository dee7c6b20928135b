"""Trained weights in and out of a built net (:func:`netdef.lowering.module.build`).

Loading follows Caffe's ``Net::CopyTrainedLayersFrom``: the file's layers are matched to
the net's by *name*; a file layer the net lacks is ignored ("Ignoring source layer X");
a matched layer must have as many blobs as the net's layer ("Incompatible number of
blobs for layer X"), and each blob must pass ``Blob::ShapeEquals`` (legacy V1 4-D
``num/channels/height/width`` blobs compared right-aligned); net layers the file lacks
keep their filler values.  A blob shared by ``param { name }`` is one Parameter, so, as
in Caffe, the last file layer that writes it wins.

Saving follows ``Net::ToProto``: the net's name, then every layer of the set-up net
(Caffe's auto-inserted Split layers included, each with its ``phase``) with its blobs,
written by :func:`netdef.io.caffemodel.write_caffemodel`; or Caffe's ``save_hdf5``
layout (``/data/<layer>/<i>`` for every layer) for ``.h5``/``.hdf5`` paths.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from netdef.errors import Loc, WeightsError
from netdef.io.caffemodel import check_param_shape, read_weights, write_caffemodel, write_hdf5_weights

__all__ = ["LoadReport", "layer_blobs", "load", "load_file", "state", "save"]


@dataclass
class LoadReport:
    """What :func:`load` did, by layer name (file order)."""

    loaded: list[str] = field(default_factory=list)  # layers whose blobs were copied
    ignored: list[str] = field(default_factory=list)  # file layers the net lacks
    missing: list[str] = field(default_factory=list)  # net layers with blobs the file lacks

    @property
    def log(self) -> list[str]:
        """The lines Caffe's loader logs (``Ignoring source layer X``)."""
        return [f"Ignoring source layer {name}" for name in self.ignored]


def layer_blobs(module: nn.Module) -> dict[str, list[nn.Parameter]]:
    """``{layer: [blob 0, blob 1, …]}`` for every lowered layer (submodule) of ``module``.

    A layer's blobs are its own parameters ``"0"``, ``"1"`` … (see ``LayerModule``)."""
    out: dict[str, list[nn.Parameter]] = {}
    for name, sub in module.named_children():
        params = sub._parameters  # noqa: SLF001 - the blob convention of LayerModule
        blobs = []
        for i in range(len(params)):
            p = params.get(str(i))
            if p is None:
                raise WeightsError(f"layer '{name}': parameters are not Caffe blobs "
                                   f"'0'..'{len(params) - 1}' (got {sorted(params)})")
            blobs.append(p)
        out[name] = blobs
    return out


def load(module: nn.Module, weights: Mapping[str, Sequence[np.ndarray]], *,
         net_layers: Sequence[str] | None = None) -> LoadReport:
    """Copy ``weights`` (``read_weights`` output: layer → arrays) into ``module``.

    ``net_layers``: every layer name of the net (e.g. ``[l.name for l in
    analysis.layers]``), so that file layers the net has but that hold no blobs (data
    layers, which are not submodules) are not reported as ignored.  Raises
    :class:`~netdef.errors.WeightsError` with Caffe's message on a blob-count or shape
    mismatch; nothing is copied then (the check runs over every layer first).
    """
    targets = layer_blobs(module)
    known = set(targets) | set(net_layers or ())
    legacy = getattr(weights, "legacy", {}) or {}
    file = getattr(weights, "path", None)
    report = LoadReport()
    plan: list[tuple[nn.Parameter, np.ndarray]] = []
    for layer, arrays in weights.items():
        if layer not in known:
            report.ignored.append(layer)
            continue
        blobs = targets.get(layer, [])
        if len(blobs) != len(arrays):
            raise WeightsError(
                f"Incompatible number of blobs for layer {layer}", loc=Loc(file),
                hint=f"the file has {len(arrays)} blob(s) for '{layer}', the net's layer has "
                     f"{len(blobs)}: rename the layer in the net to learn it from scratch")
        flags = legacy.get(layer, (False,) * len(arrays))
        for i, (param, arr) in enumerate(zip(blobs, arrays)):
            arr = np.asarray(arr)
            check_param_shape(layer, i, tuple(param.shape), arr.shape, bool(flags[i]), file)
            plan.append((param, arr.reshape(tuple(param.shape))))
        if blobs:
            report.loaded.append(layer)
    with torch.no_grad():
        for param, arr in plan:
            param.copy_(torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)))
    in_file = set(weights)
    report.missing = [name for name, blobs in targets.items() if blobs and name not in in_file]
    return report


def load_file(module: nn.Module, path: str | os.PathLike[str], *,
              net_layers: Sequence[str] | None = None) -> LoadReport:
    """:func:`load` from a ``.caffemodel`` (V2, V1/V0) or ``.caffemodel.h5`` file."""
    return load(module, read_weights(path), net_layers=net_layers)


def state(module: nn.Module) -> dict[str, list[np.ndarray]]:
    """``{layer: [float32 arrays]}`` of every layer with blobs (copies, on the CPU)."""
    return {name: [b.detach().to("cpu", torch.float32).numpy().copy() for b in blobs]
            for name, blobs in layer_blobs(module).items() if blobs}


def save(module: nn.Module, path: str | os.PathLike[str], analysis, *,  # noqa: ANN001
         format: str | None = None) -> None:  # noqa: A002 - the natural name
    """Write ``module``'s blobs as Caffe would save the net ``analysis`` describes.

    ``format``: ``"binaryproto"`` (V2 ``.caffemodel``, ``Net::ToProto``) or ``"hdf5"``
    (``Net::ToHDF5``); by default HDF5 for ``.h5``/``.hdf5`` paths.  Every layer of the
    set-up net is written (Split layers included), with its full LayerParameter and
    ``phase``; its blobs come from the module's submodule of the same name.
    """
    from netdef.ir.messages import NetParameter, Phase
    from netdef.ir.schema import make

    name = os.fspath(path)
    fmt = format or ("hdf5" if name.endswith((".h5", ".hdf5")) else "binaryproto")
    blobs = state(module)
    layers = [info.param for info in analysis.layers]
    names = {info.name for info in analysis.layers}
    extra = [k for k in blobs if k not in names]
    if extra:
        raise WeightsError(f"the module has layer '{extra[0]}', which the net does not have",
                           hint="save with the analysis the module was built from")
    if fmt == "hdf5":
        write_hdf5_weights(name, {info.name: blobs.get(info.name, []) for info in analysis.layers})
    elif fmt == "binaryproto":
        net = make(NetParameter, name=analysis.name, layer=layers)
        write_caffemodel(name, net, blobs, phase=Phase[analysis.phase])
    else:
        raise WeightsError(f"unknown weights format '{fmt}'", hint="binaryproto or hdf5")
