"""Image decoding and resizing as Caffe does it with OpenCV, but with Pillow and numpy.

Caffe keeps images as OpenCV ``cv::Mat``: 8-bit, **BGR** channel order.  Here an image is a
uint8 array ``(C, H, W)`` in that same order (C = 3 colour, 1 gray), so a Datum or a
transformed blob built from it has the layout Caffe gives.

Close to OpenCV, not always bit-identical (the reference Caffe here was built without
OpenCV, so nothing could be compared): JPEG decoding uses libjpeg through Pillow (as
OpenCV does); a gray JPEG read is the decoder's luma (``draft("L")``, like
``IMREAD_GRAYSCALE``); colour→gray of other formats uses Pillow's ITU-R 601 weights (the
same weights, rounding may differ by one); resizing is bilinear with OpenCV's
``INTER_LINEAR`` geometry (half-pixel centres, clamped edges, no antialiasing).
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from netdef.errors import DataError, Loc

__all__ = ["decode_image", "read_image", "resize_bilinear", "encode_image", "GRAY_MODES"]

# Pillow modes that OpenCV's IMREAD_ANYCOLOR keeps single-channel.
GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "F", "I;16", "I;16B", "I;16L", "I;16N"})


def decode_image(raw: bytes, mode: str = "color", *, where: str | None = None) -> np.ndarray:
    """Decode encoded image bytes to uint8 ``(C, H, W)`` BGR/gray.

    ``mode``: ``"color"`` (``IMREAD_COLOR``, 3 channels), ``"gray"`` (``IMREAD_GRAYSCALE``)
    or ``"native"`` (``IMREAD_ANYCOLOR``: what the file holds, gray or colour).
    """
    from PIL import Image

    try:
        with Image.open(io.BytesIO(bytes(raw))) as im:
            return _to_array(im, mode)
    except DataError:
        raise
    except Exception as e:  # Pillow raises many types for bad data
        raise DataError(f"cannot decode image: {e}", loc=Loc(where),
                        hint="the file is not an image Pillow can read") from None


def _to_array(im: "object", mode: str) -> np.ndarray:
    from PIL import Image

    assert isinstance(im, Image.Image)
    gray = mode == "gray" or (mode == "native" and im.mode in GRAY_MODES)
    if gray:
        if im.format == "JPEG":
            im.draft("L", im.size)  # libjpeg outputs its luma plane, as OpenCV asks it to
        if im.mode.startswith("I;16") or im.mode == "I":
            arr = np.asarray(im).astype(np.uint32) >> 8  # OpenCV: 16-bit → 8-bit by >> 8
            return arr.astype(np.uint8)[None].copy()
        return np.asarray(im.convert("L"), dtype=np.uint8)[None].copy()
    rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    return np.ascontiguousarray(rgb[:, :, ::-1].transpose(2, 0, 1))


def read_image(path: str | os.PathLike[str], *, color: bool = True, height: int = 0,
               width: int = 0) -> np.ndarray:
    """Caffe's ``ReadImageToCVMat``: decode a file, then resize when both sizes are > 0."""
    name = os.fspath(path)
    try:
        raw = Path(name).read_bytes()
    except OSError as e:
        raise DataError(f"could not open or find image: {e.strerror}", loc=Loc(name)) from None
    img = decode_image(raw, "color" if color else "gray", where=name)
    if height > 0 and width > 0:
        img = resize_bilinear(img, height, width)
    return img


def _axis_weights(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index pairs and weights of OpenCV's INTER_LINEAR along one axis."""
    scale = src / dst
    f = (np.arange(dst, dtype=np.float64) + 0.5) * scale - 0.5
    i0 = np.floor(f).astype(np.int64)
    frac = f - i0
    low = i0 < 0
    i0[low], frac[low] = 0, 0.0
    high = i0 >= src - 1
    i0[high], frac[high] = src - 1, 0.0
    i1 = np.minimum(i0 + 1, src - 1)
    return i0, i1, frac


def resize_bilinear(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize ``(C, H, W)`` uint8 to ``(C, height, width)`` like ``cv::resize`` (INTER_LINEAR)."""
    c, h, w = img.shape
    if (h, w) == (height, width):
        return img.copy()
    y0, y1, fy = _axis_weights(h, height)
    x0, x1, fx = _axis_weights(w, width)
    src = img.astype(np.float64)
    rows = src[:, y0, :] * (1 - fy)[None, :, None] + src[:, y1, :] * fy[None, :, None]
    out = rows[:, :, x0] * (1 - fx) + rows[:, :, x1] * fx
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


_FORMATS = {"jpg": "JPEG", "jpeg": "JPEG", "jpe": "JPEG", "png": "PNG", "bmp": "BMP",
            "tif": "TIFF", "tiff": "TIFF", "ppm": "PPM", "pgm": "PPM", "pbm": "PPM",
            "webp": "WEBP"}


def encode_image(img: np.ndarray, ext: str) -> bytes:
    """``cv::imencode("." + ext, img)``: BGR/gray ``(C, H, W)`` uint8 → file bytes."""
    fmt = _FORMATS.get(ext.lower().lstrip("."))
    if fmt is None:
        raise DataError(f"cannot encode images as '{ext}'",
                        hint="use one of " + ", ".join(sorted(_FORMATS)))
    from PIL import Image

    arr = np.asarray(img, dtype=np.uint8)
    pil = Image.fromarray(arr[0]) if arr.shape[0] == 1 else \
        Image.fromarray(np.ascontiguousarray(arr[::-1].transpose(1, 2, 0)))
    buf = io.BytesIO()
    opts = {"quality": 95} if fmt == "JPEG" else {}  # OpenCV's default JPEG quality
    pil.save(buf, format=fmt, **opts)
    return buf.getvalue()
