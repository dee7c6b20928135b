"""``ImageData`` layer: images named in a list file, decoded with Pillow.

As Caffe's ``ImageDataLayer``: each line is ``<path> <label>`` split at the *last*
space (so paths may contain spaces); the file read is ``root_folder + path`` — a plain
string concatenation, so ``root_folder`` normally ends with ``/``; images are decoded in
colour (3 channels, BGR) or, with ``is_color: false``, gray (1 channel), resized to
``new_height × new_width`` when both are set, then transformed by ``transform_param``.
``shuffle`` shuffles the lines at setup and at every wrap; ``rand_skip: n`` starts at a
random line in ``[0, n)``.  Image paths are taken relative to the working directory first,
then the net's folder.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from netdef.errors import DataError, Loc
from netdef.ir.messages import LayerParameter
from netdef.training.data.base import (DataSource, Shape, item_rng, resolve_path,
                                       stream_rng)
from netdef.training.data.images import read_image
from netdef.training.data.transform import Transformer

__all__ = ["ImageDataSource", "read_image_list"]

_INT = re.compile(r"\s*([+-]?\d+)")


def read_image_list(path: Path) -> list[tuple[str, int]]:
    """``(path, label)`` pairs of a Caffe image list (split at the last space).

    Blank lines are skipped; a line without a label is an error (Caffe would read
    label 0 and a wrong path).
    """
    try:
        text = path.read_text()
    except OSError as e:
        raise DataError(f"cannot read image list: {e.strerror}", loc=Loc(str(path))) from None
    out: list[tuple[str, int]] = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.rstrip()
        if not line.strip():
            continue
        name, sep, label = line.rpartition(" ")
        m = _INT.match(label)
        if not sep or not name or m is None:
            raise DataError(f"expected '<path> <label>', got {line!r}",
                            loc=Loc(str(path), n), hint="one image per line: path, a space, "
                                                        "an integer label")
        out.append((name, int(m.group(1))))
    return out


class ImageDataSource(DataSource):
    """Batches of decoded, resized and transformed image files."""

    def __init__(self, layer: LayerParameter, phase: str, base_dir: Path | None, *,
                 rank: int = 0, world: int = 1, seed: int | None = None) -> None:
        super().__init__(layer.name, layer.top, phase, rank=rank, world=world)
        p = layer.image_data_param
        if len(self.tops) not in (1, 2):
            raise DataError(f"layer '{self.name}': ImageData has 1 or 2 tops (data, label)")
        self.batch_size = int(p.batch_size)
        if self.batch_size <= 0:
            raise DataError(f"layer '{self.name}': image_data_param.batch_size must be positive")
        self.height, self.width = int(p.new_height), int(p.new_width)
        if (self.height > 0) != (self.width > 0):
            raise DataError(f"layer '{self.name}': set both new_height and new_width, or "
                            "neither")
        self.color = bool(p.is_color)
        self.root = p.root_folder
        self.base_dir = base_dir
        self.shuffle = bool(p.shuffle)
        self.rng = stream_rng(seed)
        self.transformer = Transformer(layer.transform_param, phase, base_dir,
                                       item_rng(seed, rank), layer=self.name)
        self.list_path = resolve_path(p.source, base_dir, what="image_data_param.source",
                                      layer=self.name)
        self.lines = read_image_list(self.list_path)
        if not self.lines:
            raise DataError(f"layer '{self.name}': the image list is empty",
                            loc=Loc(str(self.list_path)))
        if self.shuffle:
            self._shuffle()
        self.pos = 0
        if p.rand_skip:
            self.pos = int(self.rng.integers(p.rand_skip))
            if self.pos >= len(self.lines):
                raise DataError(f"layer '{self.name}': rand_skip {p.rand_skip} is beyond the "
                                f"{len(self.lines)} images")
        first = self._load(self.pos)
        self._item_shape = self.transformer.output_shape(first.shape)

    def _shuffle(self) -> None:
        order = self.rng.permutation(len(self.lines))
        self.lines = [self.lines[i] for i in order]

    def _load(self, i: int) -> np.ndarray:
        name = self.root + self.lines[i][0]
        try:
            path = resolve_path(name, self.base_dir, what="image", layer=self.name)
        except DataError as e:
            if self.root and not self.root.endswith(("/", "\\")):
                e.hint = (f"root_folder is prefixed as a plain string (Caffe's rule): did you "
                          f"mean root_folder: \"{self.root}/\"? " + (e.hint or ""))
            raise
        return read_image(path, color=self.color, height=self.height, width=self.width)

    def _next(self) -> None:
        self.pos += 1
        if self.pos >= len(self.lines):
            self.pos = 0
            if self.shuffle:
                self._shuffle()

    def top_shapes(self) -> dict[str, Shape]:
        shapes = {self.tops[0]: (self.batch_size, *self._item_shape)}
        if len(self.tops) > 1:
            shapes[self.tops[1]] = (self.batch_size,)
        return shapes

    def _read_batch(self) -> dict[str, np.ndarray]:
        images: list[np.ndarray] = []
        labels = np.empty(self.batch_size, np.float32)
        for i in range(self.batch_size):
            img = self._load(self.pos)
            if images and img.shape != images[0].shape:
                raise DataError(f"layer '{self.name}': image {self.lines[self.pos][0]!r} is "
                                f"{img.shape[1]}x{img.shape[2]}, the batch's first is "
                                f"{images[0].shape[1]}x{images[0].shape[2]}",
                                hint="set new_height/new_width to resize every image")
            images.append(img)
            labels[i] = self.lines[self.pos][1]
            self._next()
        out = {self.tops[0]: self.transformer.transform_batch(np.stack(images))}
        if len(self.tops) > 1:
            out[self.tops[1]] = labels
        return out

    def _skip_batch(self) -> None:
        for _ in range(self.batch_size):
            self._next()
