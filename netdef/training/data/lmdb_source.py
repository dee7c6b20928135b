"""``Data`` layer: Datum records from an LMDB (or LevelDB) in cursor (key) order.

As Caffe's ``DataLayer``: each record is parsed as a ``Datum`` (raw uint8 ``data``,
``float_data``, or an ``encoded`` image decoded here with Pillow, natively or as
``force_color``/``force_gray`` ask), transformed by ``transform_param``, and its ``label``
goes to the second top.  At the last record the cursor starts again at the first.
The batch's shape is that of its first record, so every record of a batch must agree.

``backend`` defaults to LEVELDB in caffe.proto; when the field is *not written* and the
folder holds an LMDB (``data.mdb``), it is read as LMDB instead of failing.
``rand_skip: n`` skips a random number in ``[0, n)`` of records once at the start, as
older Caffe did.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from netdef.errors import DataError, Loc
from netdef.io.blobs import datum_to_array, decode_datum
from netdef.ir.messages import Datum, LayerParameter
from netdef.ir.schema import has
from netdef.training.data.base import DataSource, Shape, item_rng, resolve_path, stream_rng
from netdef.training.data.db import Cursor, detect_backend, open_cursor
from netdef.training.data.images import decode_image
from netdef.training.data.transform import Transformer

__all__ = ["DBDataSource"]


class DBDataSource(DataSource):
    """Batches of transformed Datums from a key-value database."""

    def __init__(self, layer: LayerParameter, phase: str, base_dir: Path | None, *,
                 rank: int = 0, world: int = 1, seed: int | None = None) -> None:
        super().__init__(layer.name, layer.top, phase, rank=rank, world=world)
        p = layer.data_param
        if len(self.tops) not in (1, 2):
            raise DataError(f"layer '{self.name}': a Data layer has 1 or 2 tops (data, label), "
                            f"not {len(self.tops)}")
        self.batch_size = int(p.batch_size)
        if self.batch_size <= 0:
            raise DataError(f"layer '{self.name}': data_param.batch_size must be positive",
                            hint="set data_param { batch_size: N }")
        self.path = resolve_path(p.source, base_dir, what="data_param.source", layer=self.name)
        self.backend = self._backend(layer)
        self.transformer = Transformer(layer.transform_param, phase, base_dir,
                                       item_rng(seed, rank), layer=self.name)
        if p.force_encoded_color:  # legacy spelling of transform_param.force_color
            self.transformer.decode_mode = "color"
        self.cursor: Cursor = open_cursor(self.path, self.backend)
        try:
            if p.rand_skip:
                for _ in range(int(stream_rng(seed).integers(p.rand_skip))):
                    self.cursor.advance()
            first = self._image(self._datum())
            self._item_shape = self.transformer.output_shape(first.shape)
        except BaseException:
            self.cursor.close()
            raise

    def _backend(self, layer: LayerParameter) -> str:
        p = layer.data_param
        found = detect_backend(self.path)
        if not has(p, "backend") and found is not None:
            return found
        want = p.backend.name.lower()
        if found is not None and found != want:
            raise DataError(f"layer '{self.name}': backend is {p.backend.name} but the source "
                            f"looks like {found.upper()}", loc=Loc(str(self.path)),
                            hint=f"set data_param {{ backend: {found.upper()} }}")
        return want

    # ---------------------------------------------------------------- records
    def _datum(self) -> Datum:
        return decode_datum(self.cursor.value(), where=str(self.path))

    def _image(self, datum: Datum) -> np.ndarray:
        if datum.encoded:
            return decode_image(datum.data, self.transformer.decode_mode, where=str(self.path))
        return datum_to_array(datum, where=str(self.path))

    def top_shapes(self) -> dict[str, Shape]:
        shapes = {self.tops[0]: (self.batch_size, *self._item_shape)}
        if len(self.tops) > 1:
            shapes[self.tops[1]] = (self.batch_size,)
        return shapes

    def _read_batch(self) -> dict[str, np.ndarray]:
        images: list[np.ndarray] = []
        labels = np.empty(self.batch_size, np.float32)
        for i in range(self.batch_size):
            datum = self._datum()
            img = self._image(datum)
            if images and img.shape != images[0].shape:
                raise DataError(f"layer '{self.name}': record of shape {img.shape} in a batch "
                                f"of {images[0].shape}", loc=Loc(str(self.path)),
                                hint="all records of a batch must have one size "
                                     "(resize them with convert-imageset)")
            images.append(img)
            labels[i] = datum.label
            self.cursor.advance()
        out = {self.tops[0]: self.transformer.transform_batch(np.stack(images))}
        if len(self.tops) > 1:
            out[self.tops[1]] = labels
        return out

    def _skip_batch(self) -> None:
        for _ in range(self.batch_size):
            self.cursor.advance()

    def close(self) -> None:
        if not self._closed:
            self.cursor.close()
        super().close()
