"""Layers that bring data into the net: Input, Data, ImageData, HDF5Data, MemoryData,
DummyData, WindowData — and the HDF5Output sink.

Where a shape comes from, in order:

1. ``ctx.input_shapes[top]`` (``--input-shape top=N,C,H,W``) — the user knows best;
   for Data/ImageData it gives the stored image size *before* ``crop_size``;
2. the layer's own params (Input/DummyData shapes, MemoryData dims, ImageData
   ``new_height``/``new_width``);
3. the data source itself, if it exists: the first Datum of an LMDB, the first image
   of an image list, the datasets of the first HDF5 file, the window file's channels.

``ctx.batch`` (``--batch``) then replaces the batch (first) dim of every top.
Label tops are ``(batch,)`` like Caffe's. These layers do no arithmetic (0 FLOPs).

Lowering: data layers are *not* lowered.  The builder turns each of their tops into an
input of the lowered net (``forward(data=..., label=...)``); reading LMDBs, image lists
or HDF5 files and transforming the data is the job of the training/data pipeline, not
of the module.  Calling :meth:`lower` on one says so.  HDF5Output is no data layer (it
consumes blobs): it lowers to a module that writes its bottoms to its HDF5 file on every
forward (see :class:`HDF5Output`).
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from netdef.layers.families._util import fail
from netdef.layers.registry import (LayerDef, LayerMemory, MemoryContext, Shape, ShapeContext,
                                    register)

if TYPE_CHECKING:  # pragma: no cover
    from netdef.ir.messages import LayerParameter

_HINT = "pass --input-shape {top}=N,C,H,W"


def _rebatch(shape: Sequence[int], ctx: ShapeContext) -> Shape:
    dims = tuple(int(d) for d in shape)
    return (ctx.batch,) + dims[1:] if ctx.batch and dims else dims


def _find(path: str, ctx: ShapeContext) -> Path | None:
    """A data path as Caffe opens it (relative to cwd), else relative to ``ctx.base_dir``."""
    if not path:
        return None
    for cand in (Path(path), (ctx.base_dir / path) if ctx.base_dir else None):
        if cand is not None and cand.exists():
            return cand
    return None


def _first_line(path: Path | None) -> str | None:
    """The first non-blank line of a list file (image list, HDF5 list), stripped."""
    if path is None:
        return None
    try:
        return next((ln.strip() for ln in path.read_text().splitlines() if ln.strip()), None)
    except (OSError, UnicodeDecodeError):
        return None


def _crop_size(layer: "LayerParameter", legacy: int = 0) -> int:
    """``transform_param.crop_size`` (or a legacy per-layer ``crop_size`` not yet upgraded)."""
    return layer.transform_param.crop_size or legacy


def _image_top(layer: "LayerParameter", batch: int, chw: Sequence[int], crop: int,
               ctx: ShapeContext) -> Shape:
    """(batch, C, H, W) after Caffe's DataTransformer center/random crop."""
    c, h, w = (int(d) for d in chw)
    if crop:
        if crop > h or crop > w:
            raise fail(layer, f"crop_size {crop} exceeds the {h}×{w} data")
        h = w = crop
    return _rebatch((batch, c, h, w), ctx)


def _label(layer: "LayerParameter", batch: int, ctx: ShapeContext) -> list[Shape]:
    return [_rebatch((batch,), ctx)] if len(layer.top) > 1 else []


class _Data(LayerDef):
    bottoms = (0, 0)
    is_data = True
    category = "data"

    def _batch(self, layer: "LayerParameter", batch: int, ctx: ShapeContext) -> int:
        if not (ctx.batch or batch):
            raise fail(layer, "batch_size is missing or zero",
                       hint="set batch_size or pass --batch N")
        return ctx.batch or batch

    def summary(self, layer: "LayerParameter") -> str:
        p = getattr(layer, self.param_field) if self.param_field else None
        return f"batch {p.batch_size}" if p is not None and hasattr(p, "batch_size") else ""

    def lower(self, layer: "LayerParameter", ctx: Any) -> Any:
        """Data layers have no module: their tops are the lowered net's inputs."""
        from netdef.errors import NetdefError
        from netdef.ir.schema import loc_of

        tops = ", ".join(layer.top) or "its tops"
        raise NetdefError(f"layer '{layer.name}' ({layer.type}) is a data layer and is not "
                          f"lowered: {tops} are inputs of the lowered net",
                          loc=loc_of(layer),
                          hint="pass them by name: net(**{top: tensor}); "
                               "netdef.lowering.module.build does this for you")

    def memory(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape], ctx: MemoryContext) -> LayerMemory:
        """Data tops are the lowered net's inputs: the caller owns them."""
        return LayerMemory(differentiable=False)


# --- LMDB Datum ---------------------------------------------------------------------

def datum_chw(raw: bytes, force_color: bool = False,
              force_gray: bool = False) -> tuple[int, int, int]:
    """(C, H, W) of a serialized ``caffe.Datum``, decoding the image when ``encoded``
    (Caffe's ``InferBlobShape``: native channels unless force_color/force_gray)."""
    from netdef.io.blobs import decode_datum
    datum = decode_datum(raw)
    if not datum.encoded:
        return datum.channels, datum.height, datum.width
    from PIL import Image
    with Image.open(io.BytesIO(datum.data)) as img:
        channels = 1 if img.mode in ("1", "L", "I", "F", "I;16") else 3
        channels = 3 if force_color else (1 if force_gray else channels)
        return channels, img.height, img.width


def _lmdb_first(path: Path) -> bytes:
    import lmdb
    env = lmdb.open(str(path), readonly=True, lock=False, subdir=path.is_dir())
    try:
        with env.begin() as txn:
            cur = txn.cursor()
            if not cur.first():
                raise ValueError("the database is empty")
            return bytes(cur.value())
    finally:
        env.close()


# --- layers -------------------------------------------------------------------------

@register
class Input(_Data):
    """Shapes from ``input_param.shape``: one shared by all tops, or one per top."""

    type = "Input"
    param_field = "input_param"
    tops = (1, None)

    def shapes(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               ctx: ShapeContext) -> list[Shape]:
        given = layer.input_param.shape
        tops = layer.top or ("data",)
        if len(given) not in (0, 1, len(tops)):
            raise fail(layer, f"{len(given)} shapes for {len(tops)} tops: give 'shape' once, "
                              "once per top, or not at all", field="input_param")
        out = []
        for i, top in enumerate(tops):
            if top in ctx.input_shapes:
                out.append(_rebatch(ctx.input_shapes[top], ctx))
            elif given:
                out.append(_rebatch(given[0 if len(given) == 1 else i].dim, ctx))
            else:
                raise fail(layer, f"no shape for input '{top}'", hint=_HINT.format(top=top))
        return out

    def summary(self, layer: "LayerParameter") -> str:
        return "; ".join("×".join(map(str, s.dim)) for s in layer.input_param.shape)


@register
class Data(_Data):
    """A database of Datums (LMDB/LevelDB); the first record gives C, H, W."""

    type = "Data"
    param_field = "data_param"
    v1_type = "DATA"
    tops = (1, 2)

    def shapes(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               ctx: ShapeContext) -> list[Shape]:
        p = layer.data_param
        top = layer.top[0] if layer.top else "data"
        if top in ctx.input_shapes:
            given = tuple(ctx.input_shapes[top])
            batch, chw = (given[0], given[1:]) if len(given) == 4 else (p.batch_size, given)
            batch = self._batch(layer, batch, ctx)
        else:
            batch, chw = self._batch(layer, p.batch_size, ctx), self._read(layer, top, ctx)
        if len(chw) != 3:
            raise fail(layer, f"data shape {tuple(chw)} is not C,H,W", hint=_HINT.format(top=top))
        crop = _crop_size(layer, p.crop_size)
        return [_image_top(layer, batch, chw, crop, ctx)] + _label(layer, batch, ctx)

    def _read(self, layer: "LayerParameter", top: str, ctx: ShapeContext) -> tuple[int, int, int]:
        p = layer.data_param
        path = _find(p.source, ctx)
        if path is None:
            raise fail(layer, f"cannot read data source '{p.source}' to learn the data shape",
                       hint=_HINT.format(top=top))
        if p.backend.name != "LMDB":
            raise fail(layer, f"reading a {p.backend.name} source is not supported",
                       hint=_HINT.format(top=top) + " (or convert the database to LMDB)")
        try:
            t = layer.transform_param
            chw = datum_chw(_lmdb_first(path), t.force_color, t.force_gray)
        except Exception as e:  # lmdb.Error, a corrupt Datum, an undecodable image
            raise fail(layer, f"cannot read the first Datum of '{path}': {e}",
                       hint=_HINT.format(top=top)) from None
        return chw


@register
class ImageData(_Data):
    """Images listed in ``source`` ("path label" lines): data and label tops."""

    type = "ImageData"
    param_field = "image_data_param"
    v1_type = "IMAGE_DATA"
    tops = (2, 2)

    def shapes(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               ctx: ShapeContext) -> list[Shape]:
        p = layer.image_data_param
        top = layer.top[0] if layer.top else "data"
        if (p.new_height > 0) != (p.new_width > 0):
            raise fail(layer, "new_height and new_width must be set together",
                       field="image_data_param")
        channels = 3 if p.is_color else 1
        batch = self._batch(layer, p.batch_size, ctx)
        if top in ctx.input_shapes:
            given = tuple(ctx.input_shapes[top])
            chw = given[-3:] if len(given) >= 3 else (channels, *given)
            if not ctx.batch and len(given) == 4:
                batch = given[0]
        elif p.new_height > 0:
            chw = (channels, p.new_height, p.new_width)
        else:
            chw = (channels, *self._first_image_hw(layer, top, ctx))
        return [_image_top(layer, batch, chw, _crop_size(layer, p.crop_size), ctx)] \
            + _label(layer, batch, ctx)

    def _first_image_hw(self, layer: "LayerParameter", top: str,
                        ctx: ShapeContext) -> tuple[int, int]:
        """Caffe reads the first listed image ("<path> <label>") to size the top."""
        p = layer.image_data_param
        line = _first_line(_find(p.source, ctx)) or ""
        image = _find(p.root_folder + line.rsplit(maxsplit=1)[0], ctx) if line else None
        try:
            from PIL import Image
            with Image.open(image) as img:  # type: ignore[arg-type]
                return img.height, img.width
        except Exception:  # no image (None), unreadable image: PIL raises many types
            raise fail(layer, f"cannot read the first image listed in '{p.source}' to learn "
                              "its size", hint=_HINT.format(top=top) +
                       " or set new_height and new_width") from None


@register
class HDF5Data(_Data):
    """Each top reads the dataset of the same name from the HDF5 files in ``source``."""

    type = "HDF5Data"
    param_field = "hdf5_data_param"
    v1_type = "HDF5_DATA"
    tops = (1, None)

    def shapes(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               ctx: ShapeContext) -> list[Shape]:
        p = layer.hdf5_data_param
        batch = self._batch(layer, p.batch_size, ctx)
        missing = [t for t in layer.top if t not in ctx.input_shapes]
        found = self._read(layer, missing, ctx) if missing else {}
        return [_rebatch(ctx.input_shapes[t], ctx) if t in ctx.input_shapes
                else (batch,) + found[t] for t in layer.top]

    def _read(self, layer: "LayerParameter", tops: list[str],
              ctx: ShapeContext) -> dict[str, Shape]:
        """Dataset shapes (without the item axis) from the first file of the list."""
        p = layer.hdf5_data_param
        hint = _HINT.format(top=tops[0])
        first = _first_line(_find(p.source, ctx))
        if first is None:
            raise fail(layer, f"cannot read the HDF5 file list '{p.source}'", hint=hint)
        path = _find(first, ctx)
        if path is None:
            raise fail(layer, f"cannot find '{first}' (first file of '{p.source}')", hint=hint)
        import h5py
        out: dict[str, Shape] = {}
        try:
            with h5py.File(path, "r") as f:
                for t in tops:
                    if t not in f or not getattr(f[t], "shape", None):
                        raise fail(layer, f"'{path}' has no dataset '{t}' with at least 1 axis",
                                   hint="name each top after a dataset of the file")
                    out[t] = tuple(int(d) for d in f[t].shape[1:])
        except OSError as e:
            raise fail(layer, f"cannot read '{path}': {e}", hint=hint) from None
        return out


@register
class HDF5Output(LayerDef):
    """Writes its two bottoms (data, label) to an HDF5 file; no tops.

    Lowered: every forward appends the batch to the datasets ``data`` and ``label`` of
    ``hdf5_output_param.file_name`` (relative to the working directory, as Caffe opens
    it).  The file is created (truncated) by the module's first forward — Caffe creates it
    at net init — and closed after each write so it can be read at once.  Rows are stored
    the way Caffe's ``HDF5OutputLayer`` stores them: float32, reshaped to the legacy 4-D
    (num, channels, height, width) (a label (N,) is written as (N, 1, 1, 1)); blobs with
    more than 4 axes keep their shape.  Caffe writes one dataset per forward and fails
    on the second; appending is netdef's extension.  No gradient flows back (as in Caffe).
    """

    type = "HDF5Output"
    param_field = "hdf5_output_param"
    v1_type = "HDF5_OUTPUT"
    bottoms = (2, 2)
    tops = (0, 0)
    category = "data"

    def shapes(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               ctx: ShapeContext) -> list[Shape]:
        return []

    def summary(self, layer: "LayerParameter") -> str:
        return layer.hdf5_output_param.file_name

    def lower(self, layer: "LayerParameter", ctx: Any) -> Any:
        from netdef.errors import NetdefError
        from netdef.ir.schema import loc_of

        name = layer.hdf5_output_param.file_name
        if not name:
            raise NetdefError(f"layer '{layer.name}' (HDF5Output): no output file",
                              loc=loc_of(layer),
                              hint='set hdf5_output_param { file_name: "out.h5" }')
        return _define()["HDF5OutputModule"](name)

    def memory(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape], ctx: MemoryContext) -> LayerMemory:
        """Writes detached copies (numpy): no node."""
        return LayerMemory(differentiable=False)


@register
class MemoryData(_Data):
    """Arrays handed in from Python/C++: (batch, channels, height, width) + labels."""

    type = "MemoryData"
    param_field = "memory_data_param"
    v1_type = "MEMORY_DATA"
    tops = (2, 2)

    def shapes(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               ctx: ShapeContext) -> list[Shape]:
        p = layer.memory_data_param
        dims = (p.batch_size, p.channels, p.height, p.width)
        if min(dims) <= 0:
            raise fail(layer, f"batch_size, channels, height and width must all be positive, "
                              f"got {dims}", field="memory_data_param")
        return [_rebatch(dims, ctx)] + _label(layer, p.batch_size, ctx)


@register
class DummyData(_Data):
    """Filler-made blobs: ``shape`` (or legacy num/channels/height/width) once or per top."""

    type = "DummyData"
    param_field = "dummy_data_param"
    v1_type = "DUMMY_DATA"
    tops = (1, None)

    def shapes(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               ctx: ShapeContext) -> list[Shape]:
        p = layer.dummy_data_param
        n = len(layer.top) or 1
        legacy = (p.num, p.channels, p.height, p.width)
        if any(legacy):
            if p.shape:
                raise fail(layer, "both shape and legacy num/channels/height/width are given")
            for name, values in zip(("num", "channels", "height", "width"), legacy):
                if len(values) not in (1, n):
                    raise fail(layer, f"'{name}' must be given once or once per top ({n}), "
                                      f"got {len(values)}", field="dummy_data_param")
            shapes = [tuple(v[0 if len(v) == 1 else i] for v in legacy) for i in range(n)]
        else:
            if len(p.shape) not in (1, n):
                raise fail(layer, f"'shape' must be given once or once per top ({n}), "
                                  f"got {len(p.shape)}", field="dummy_data_param")
            shapes = [tuple(p.shape[0 if len(p.shape) == 1 else i].dim) for i in range(n)]
        return [_rebatch(s, ctx) for s in shapes]

    def summary(self, layer: "LayerParameter") -> str:
        return "; ".join("×".join(map(str, s.dim)) for s in layer.dummy_data_param.shape)


@register
class WindowData(_Data):
    """R-CNN windows cropped to crop_size × crop_size; channels from the window file."""

    type = "WindowData"
    param_field = "window_data_param"
    v1_type = "WINDOW_DATA"
    tops = (2, 2)

    def shapes(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               ctx: ShapeContext) -> list[Shape]:
        p = layer.window_data_param
        top = layer.top[0] if layer.top else "data"
        crop = _crop_size(layer, p.crop_size)
        if crop <= 0:
            raise fail(layer, "WindowData needs a positive crop_size",
                       hint="set transform_param { crop_size: N }")
        batch = self._batch(layer, p.batch_size, ctx)
        if top in ctx.input_shapes:
            channels = int(tuple(ctx.input_shapes[top])[-3])
        else:
            channels = self._channels(layer, ctx)
        return [_rebatch((batch, channels, crop, crop), ctx)] + _label(layer, batch, ctx)

    def _channels(self, layer: "LayerParameter", ctx: ShapeContext) -> int:
        """The window file starts ``# idx / path / channels / height / width``; 3 if unreadable."""
        path = _find(layer.window_data_param.source, ctx)
        try:
            words = path.read_text().split()  # type: ignore[union-attr]
            return int(words[3])
        except Exception:
            return 3  # R-CNN window files list colour images


# --- lowering (torch imported on first use; classes reachable for pickle, PEP 562) -------

_LOWERED = ("HDF5OutputModule",)
_CLASSES: dict[str, type] = {}


def _legacy4(shape: Sequence[int]) -> tuple[int, ...]:
    """Caffe's ``Blob::LegacyShape`` view (num, channels, height, width); N-D beyond 4 axes."""
    dims = tuple(int(d) for d in shape)
    return dims + (1,) * (4 - len(dims)) if len(dims) <= 4 else dims


def _define() -> dict[str, type]:
    if _CLASSES:
        return _CLASSES
    import numpy as np
    import torch

    from netdef.errors import DataError
    from netdef.lowering.module import LayerModule

    class HDF5OutputModule(LayerModule):
        """Appends ``data`` and ``label`` rows to an HDF5 file on each forward."""

        def __init__(self, file_name: str) -> None:
            super().__init__()
            self.file_name = file_name
            self.created = False  # the first forward truncates the file

        def forward(self, data: torch.Tensor, label: torch.Tensor) -> tuple:
            import h5py

            if data.shape[0] != label.shape[0]:
                raise DataError(f"HDF5Output: data and label must have the same batch size, "
                                f"got {tuple(data.shape)} and {tuple(label.shape)}")
            arrays = {}
            for key, t in (("data", data), ("label", label)):
                a = t.detach().to("cpu", torch.float32).numpy()
                arrays[key] = np.ascontiguousarray(a.reshape(_legacy4(a.shape)))
            try:
                with h5py.File(self.file_name, "a" if self.created else "w") as f:
                    for key, a in arrays.items():
                        if key not in f:
                            f.create_dataset(key, data=a, maxshape=(None,) + a.shape[1:],
                                             chunks=True)
                            continue
                        ds = f[key]
                        if ds.shape[1:] != a.shape[1:]:
                            raise DataError(f"HDF5Output '{self.file_name}': {key} rows "
                                            f"{a.shape[1:]} differ from the earlier "
                                            f"{ds.shape[1:]}")
                        n = ds.shape[0]
                        ds.resize(n + a.shape[0], axis=0)
                        ds[n:] = a
            except OSError as e:
                raise DataError(f"cannot write HDF5 file '{self.file_name}': {e}") from None
            self.created = True
            return ()

        def extra_repr(self) -> str:
            return f"file_name={self.file_name!r}"

    HDF5OutputModule.__module__ = __name__
    HDF5OutputModule.__qualname__ = "HDF5OutputModule"
    _CLASSES["HDF5OutputModule"] = HDF5OutputModule
    return _CLASSES


def __getattr__(name: str):  # PEP 562: pickle finds the lazily defined classes here
    if name in _LOWERED:
        return _define()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
