"""Caffe's ``DataTransformer``: crop → mirror → mean subtraction → scale, in float32.

Per item, in Caffe's order of random draws: ``mirror`` (only drawn when set), then the
crop's row and column offsets (random in TRAIN, centred in TEST).  Each output value is
``(x[src] - mean[src]) * scale`` computed in float32, where ``src`` is the *source*
position — so a mean file is subtracted at the crop offset and before the flip, as in
Caffe.  With ``mean_value`` the value of the pixel's channel is subtracted (one value is
used for every channel).

Note: Caffe flips randomly whenever ``mirror: true``, in TEST as well as in TRAIN
(``do_mirror = mirror() && Rand(2)`` does not look at the phase); this does the same.
The RNG streams are numpy's, so the *choices* cannot equal Caffe's boost draws.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from netdef.errors import DataError, Loc
from netdef.io.blobs import read_blobproto
from netdef.ir.messages import TransformationParameter
from netdef.ir.schema import has
from netdef.training.data.base import _who, resolve_path

__all__ = ["Transformer"]

Shape = tuple[int, ...]


class Transformer:
    """Applies one layer's ``transform_param`` to ``(C, H, W)`` images (uint8 or float)."""

    def __init__(self, param: TransformationParameter, phase: str, base_dir: Path | None,
                 rng: np.random.Generator, *, layer: str = "") -> None:
        self.layer = layer
        self.phase = phase
        self.rng = rng
        self.scale = np.float32(param.scale)
        self.mirror = bool(param.mirror)
        self.crop = int(param.crop_size)
        if param.force_color and param.force_gray:
            raise DataError(f"{_who(layer)}cannot set both force_color and force_gray")
        self.decode_mode = "color" if param.force_color else "gray" if param.force_gray \
            else "native"
        self.mean: np.ndarray | None = None
        self.mean_values = np.asarray(param.mean_value, dtype=np.float32)
        if has(param, "mean_file"):
            if self.mean_values.size:
                raise DataError(f"{_who(layer)}cannot specify mean_file and mean_value "
                                "at the same time")
            path = resolve_path(param.mean_file, base_dir, what="mean_file", layer=layer)
            mean = read_blobproto(path)
            if mean.ndim < 3 or math.prod(mean.shape[:-3]) != 1:
                raise DataError(f"mean file holds a blob of shape {mean.shape}, not "
                                "(1, channels, height, width)", loc=Loc(str(path)))
            self.mean = mean.reshape(mean.shape[-3:])
            self.mean_file = str(path)

    # ---------------------------------------------------------------- shapes
    def output_shape(self, shape: Shape) -> Shape:
        """Caffe's ``InferBlobShape``: ``(C, crop, crop)`` or the input's ``(C, H, W)``."""
        c, h, w = shape
        if self.crop:
            if h < self.crop or w < self.crop:
                raise DataError(f"{_who(self.layer)}crop_size {self.crop} is larger than "
                                f"the {h}x{w} image")
            return (c, self.crop, self.crop)
        return (c, h, w)

    def _check(self, shape: Shape) -> None:
        c, h, w = shape
        if c <= 0:
            raise DataError(f"{_who(self.layer)}image with {c} channels")
        self.output_shape(shape)
        if self.mean is not None and self.mean.shape != (c, h, w):
            raise DataError(f"{_who(self.layer)}mean file is {self._fmt(self.mean.shape)} "
                            f"but the data is {self._fmt((c, h, w))}", loc=Loc(self.mean_file),
                            hint="the mean must be computed on images of the same size "
                                 "(before cropping)")
        if self.mean_values.size not in (0, 1, c):
            raise DataError(f"{_who(self.layer)}{self.mean_values.size} mean_value entries "
                            f"for {c} channels", hint="specify either 1 mean_value or as many "
                                                      "as channels")

    @staticmethod
    def _fmt(shape: Shape) -> str:
        return "x".join(str(d) for d in shape)

    # ---------------------------------------------------------------- transform
    def _draw(self, h: int, w: int) -> tuple[bool, int, int]:
        """Random choices for one item, in Caffe's order: mirror, then crop offsets."""
        flip = bool(self.mirror and self.rng.integers(2))
        h_off = w_off = 0
        if self.crop:
            if self.phase == "TRAIN":
                h_off = int(self.rng.integers(h - self.crop + 1))
                w_off = int(self.rng.integers(w - self.crop + 1))
            else:
                h_off, w_off = (h - self.crop) // 2, (w - self.crop) // 2
        return flip, h_off, w_off

    def _apply(self, x: np.ndarray, flip: bool, h_off: int, w_off: int) -> np.ndarray:
        """``x`` is ``(..., C, H, W)``; returns float32 ``(x - mean) * scale``, cropped/flipped."""
        hh, ww = x.shape[-2:]
        ch, cw = (self.crop, self.crop) if self.crop else (hh, ww)
        win = (Ellipsis, slice(None), slice(h_off, h_off + ch), slice(w_off, w_off + cw))
        out = x[win].astype(np.float32)
        if self.mean is not None:
            out = out - self.mean[win]
        elif self.mean_values.size:
            out = out - self.mean_values.reshape(-1, 1, 1)
        out = out * self.scale
        if flip:
            out = out[..., ::-1]
        return np.ascontiguousarray(out, dtype=np.float32)

    def transform(self, img: np.ndarray) -> np.ndarray:
        """One ``(C, H, W)`` image → float32 ``(C, h, w)``."""
        self._check(img.shape)
        return self._apply(img, *self._draw(*img.shape[1:]))

    def transform_batch(self, imgs: np.ndarray) -> np.ndarray:
        """``(N, C, H, W)`` images of one size → float32 ``(N, C, h, w)``.

        Without random choices (no mirror, no TRAIN crop) the whole batch is done at once.
        """
        self._check(imgs.shape[1:])
        h, w = imgs.shape[2:]
        if not self.mirror and not (self.crop and self.phase == "TRAIN"):
            return self._apply(imgs, *self._draw(h, w))
        return np.stack([self._apply(img, *self._draw(h, w)) for img in imgs])
