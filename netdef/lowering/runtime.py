"""Running a lowered net: devices, dtypes, memory format, TF32, timers, and pycaffe-style
image preprocessing (shared by ``netdef run``, ``netdef time`` and the benchmarks).

Devices and numerics
--------------------
* :func:`pick_device`: ``--device`` when given (``cpu``, ``cuda``, ``cuda:1`` …), else
  CUDA when ``torch.cuda.is_available()``, else the CPU.  Asking for CUDA without it is a
  :class:`~netdef.errors.NetdefError` (one line, exit 2).
* :func:`set_tf32`: TF32 is **off** by default (``torch.backends.cuda.matmul.allow_tf32``
  and ``torch.backends.cudnn.allow_tf32`` both ``False``) so CUDA results keep float32
  precision, as Caffe's do; ``--tf32`` turns both on.
* :func:`autocast`: ``--dtype float32`` runs as built; ``bfloat16``/``float16`` run the
  forward under ``torch.autocast(device_type, dtype)`` (parameters stay float32;
  bfloat16 on the CPU is supported, float16 on the CPU where the torch build has it).
* :func:`to_channels_last`: ``module.to(memory_format=torch.channels_last)``; 4-D inputs
  are converted by :func:`to_device`.
* :class:`Timer`: wall time with ``time.perf_counter`` on the CPU; on CUDA a pair of
  ``torch.cuda.Event(enable_timing=True)`` read after a synchronize (GPU time, as Caffe's
  GPU ``Timer`` measures it).

Image preprocessing (pycaffe's ``caffe.io.Transformer``)
-------------------------------------------------------
:func:`load_image` is ``caffe.io.load_image``: an ``H×W×C`` float32 array in ``[0, 1]``
(8-bit / 255, 16-bit / 65535), **RGB** order; gray files are tiled to 3 channels for a
colour net, colour files become gray for a 1-channel net with skimage's ``rgb2gray``
weights (0.2125 R + 0.7154 G + 0.0721 B); alpha is dropped.  :func:`preprocess` then
applies ``Transformer.preprocess`` in its order:

1. resize to the input blob's ``H×W`` when the size differs (Pillow's bilinear filter on
   float32 data, per channel; pycaffe uses skimage's order-1 resize — same geometry
   when enlarging, Pillow widens the filter (antialiasing) when shrinking);
2. transpose ``H×W×C → C×H×W``;
3. channel swap RGB → BGR (on by default for 3-channel nets; ``swap=False`` keeps RGB);
4. ``× raw_scale`` (default **255**: Caffe's models expect 0..255 pixels);
5. ``− mean`` (per channel, or a per-pixel ``C×H×W`` mean; a mean file whose ``H×W``
   differs from the blob's is averaged to one value per channel, as pycaffe's
   classification example does with ``mean.mean(1).mean(1)``);
6. ``× input_scale`` (``--scale``; none by default).

The mean is in the net's channel order (BGR for Caffe's ImageNet models), in the
``raw_scale`` domain, exactly as ``Transformer.set_mean`` expects it.
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from netdef.errors import DataError, Loc, NetdefError

__all__ = [
    "DTYPES", "prepare_host", "prepare_device", "pick_device", "set_tf32", "parse_dtype",
    "autocast", "to_channels_last", "channels_last_pays", "choose_layout",
    "to_device", "synchronize", "Timer", "load_image", "resize_image", "load_mean",
    "fit_mean", "Preprocess", "preprocess", "read_array", "CompiledRunner",
]

DTYPES = ("float32", "bfloat16", "float16")
RGB2GRAY = (0.2125, 0.7154, 0.0721)  # skimage.color.rgb2gray (pycaffe's as_grey)


# --------------------------------------------------------------------------- host memory

_HOST_PREPARED: dict[str, object] = {}
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc <malloc.h>


def prepare_host() -> dict[str, object]:
    """Keep freed CPU tensors' pages for reuse instead of handing them back to the kernel.

    PyTorch's CPU allocator is glibc ``malloc``, which serves blocks above 32 MiB with a
    fresh ``mmap`` and ``munmap``s them on free.  A training step allocates the same large
    tensors every iteration (AlexNet's fc6 gradient is 151 MB), so each one is page-faulted
    and zeroed by the kernel again: measured here, a 151 MB ``mm`` output costs 80 ms fresh
    and 23 ms in reused memory.  ``mallopt(M_MMAP_MAX, 0)`` serves every block from the
    heap and a high ``M_TRIM_THRESHOLD`` keeps freed pages — what a caching allocator does
    (PyTorch's CUDA allocator, or jemalloc/tcmalloc preloaded as PyTorch's CPU tuning guide
    suggests) with glibc's own switches, no preload.  The process keeps its peak footprint
    until it exits, which is what a run/time/train command wants.

    Called by ``netdef run/time/train/test``; a library user opts in by calling it.  Idempotent;
    a no-op (reported) on a C library without ``mallopt`` or when ``NETDEF_HOST_ALLOCATOR``
    is ``system``.  Returns what was done (recorded by the benchmarks).
    """
    if _HOST_PREPARED:
        return dict(_HOST_PREPARED)
    if os.environ.get("NETDEF_HOST_ALLOCATOR", "").lower() == "system":
        _HOST_PREPARED.update(allocator="system", reason="NETDEF_HOST_ALLOCATOR=system")
        return dict(_HOST_PREPARED)
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError) as exc:
        _HOST_PREPARED.update(allocator="system", reason=f"no mallopt: {exc}")
        return dict(_HOST_PREPARED)
    ok = bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
    _HOST_PREPARED.update(allocator="glibc heap, no mmap, no trim" if ok else "system",
                          reason="mallopt" if ok else "mallopt refused")
    return dict(_HOST_PREPARED)


def prepare_device(device) -> dict[str, object]:  # noqa: ANN001
    """What ``run``/``time``/``train`` set up for ``device``: on the CPU
    :func:`prepare_host`; on CUDA cuDNN's benchmark mode (Caffe nets have fixed shapes, so
    the per-shape algorithm search is paid once, in the warm-up)."""
    if getattr(device, "type", str(device)) == "cuda":
        import torch

        torch.backends.cudnn.benchmark = True
        return {"cudnn_benchmark": True}
    return prepare_host()


# --------------------------------------------------------------------------- devices

def pick_device(name: str | None = None):  # noqa: ANN201 - torch.device
    """``name`` (``cpu``, ``cuda``, ``cuda:N``, ``mps`` …) or CUDA when available, else CPU."""
    import torch

    if not name:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise NetdefError(f"unknown device '{name}' (use cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise NetdefError(f"device '{name}': CUDA is not available on this machine "
                              "(use --device cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise NetdefError(f"device '{name}': only {torch.cuda.device_count()} CUDA "
                              "device(s) here")
    return dev


def set_tf32(enabled: bool = False) -> None:
    """TF32 matmuls/convolutions on Ampere+ GPUs: off unless asked (float32 precision)."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = bool(enabled)
    torch.backends.cudnn.allow_tf32 = bool(enabled)


def parse_dtype(name: str | None):  # noqa: ANN201 - torch.dtype | None
    """``float32`` → ``None`` (no autocast); ``bfloat16``/``float16`` → the torch dtype."""
    import torch

    if name in (None, "", "float32", "fp32", "float"):
        return None
    table = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16, "half": torch.float16}
    if name not in table:
        raise NetdefError(f"unknown dtype '{name}' (use {', '.join(DTYPES)})")
    return table[name]


def autocast(device, dtype) -> contextlib.AbstractContextManager:  # noqa: ANN001
    """``torch.autocast(device.type, dtype)``, or a no-op for float32 (``dtype`` None)."""
    import torch

    if dtype is None:
        return contextlib.nullcontext()
    try:
        return torch.autocast(device_type=device.type, dtype=dtype)
    except (RuntimeError, ValueError) as exc:  # e.g. an unsupported dtype on this device
        raise NetdefError(f"--dtype {str(dtype).replace('torch.', '')} on {device}: "
                          f"{str(exc).splitlines()[0]}") from None


def to_channels_last(module):  # noqa: ANN001, ANN201
    """The module with 4-D parameters/buffers in ``torch.channels_last`` layout."""
    import torch

    return module.to(memory_format=torch.channels_last)


def channels_last_pays(module, device) -> bool:  # noqa: ANN001
    """netdef's default layout choice: channels-last on the CPU for nets with a 2-D
    convolution (a 4-D learnable blob), NCHW elsewhere.

    Why: PyTorch's CPU kernels are faster in NHWC where Caffe nets spend their non-GEMM
    time — measured with torch 2.13 on a 2-core AVX-512 EPYC (``tools/bench/layout.py``,
    batch 10): AlexNet's pool1 max pool 8.2 ms NCHW vs 0.59 ms NHWC, its convolutions
    2–11% faster, LRN and ReLU equal; whole nets NHWC/NCHW: AlexNet forward 0.73,
    forward+backward 0.88, CaffeNet 0.71 / 0.85, GoogLeNet 0.44 / 0.72.  On CUDA it is
    left to ``--channels-last`` (not measured: no GPU was available to this project).
    """
    if getattr(device, "type", str(device)) != "cpu":
        return False
    return any(p.dim() == 4 for p in module.parameters())


def choose_layout(module, device, choice: bool | None = None) -> bool:  # noqa: ANN001
    """Put ``module`` in channels-last layout when ``choice`` says so (``--channels-last`` /
    ``--no-channels-last``) or, with no choice, when :func:`channels_last_pays`; returns
    whether it did (pass it on to :func:`to_device` for the inputs)."""
    use = channels_last_pays(module, device) if choice is None else bool(choice)
    if use:
        to_channels_last(module)
    return use


def to_device(t, device, *, channels_last: bool = False):  # noqa: ANN001, ANN201
    """A tensor on ``device`` (4-D floating tensors in channels-last layout when asked)."""
    import torch

    t = t.to(device, non_blocking=True)
    if channels_last and t.dim() == 4 and t.is_floating_point():
        t = t.contiguous(memory_format=torch.channels_last)
    return t


def synchronize(device) -> None:  # noqa: ANN001
    """Wait for queued GPU work (no-op on the CPU)."""
    import torch

    if getattr(device, "type", str(device)).startswith("cuda"):
        torch.cuda.synchronize(device)


class Timer:
    """Caffe's ``Timer``: ``start()``/``stop()``, elapsed milliseconds.

    CPU: ``time.perf_counter``.  CUDA: two ``torch.cuda.Event(enable_timing=True)``
    recorded on the current stream; :meth:`ms` synchronizes on the stop event, so many
    timers can be recorded during an iteration and read once after it (no per-layer
    synchronization inside the timed region).
    """

    __slots__ = ("cuda", "_t0", "_t1", "_e0", "_e1")

    def __init__(self, device=None) -> None:  # noqa: ANN001
        self.cuda = getattr(device, "type", None) == "cuda"
        self._t0 = self._t1 = 0.0
        if self.cuda:
            import torch

            self._e0 = torch.cuda.Event(enable_timing=True)
            self._e1 = torch.cuda.Event(enable_timing=True)

    def start(self) -> None:
        if self.cuda:
            self._e0.record()
        else:
            self._t0 = time.perf_counter()

    def stop(self) -> None:
        if self.cuda:
            self._e1.record()
        else:
            self._t1 = time.perf_counter()

    def ms(self) -> float:
        if self.cuda:
            self._e1.synchronize()
            return float(self._e0.elapsed_time(self._e1))
        return (self._t1 - self._t0) * 1e3


# --------------------------------------------------------------------------- inputs

def read_array(path: str | os.PathLike[str]) -> np.ndarray:
    """A ``.npy`` file as an array (no pickles)."""
    name = os.fspath(path)
    try:
        arr = np.load(name, allow_pickle=False)
    except FileNotFoundError:
        raise DataError("no such file", loc=Loc(name)) from None
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read .npy array: {str(e).splitlines()[0]}",
                        loc=Loc(name)) from None
    if not isinstance(arr, np.ndarray):
        raise DataError("not a .npy array (an .npz archive?)", loc=Loc(name))
    return arr


def load_image(path: str | os.PathLike[str], color: bool = True) -> np.ndarray:
    """``caffe.io.load_image``: ``H×W×3`` RGB (or ``H×W×1`` gray) float32 in ``[0, 1]``."""
    from PIL import Image, UnidentifiedImageError

    name = os.fspath(path)
    if not Path(name).is_file():
        raise DataError("no such file", loc=Loc(name))
    try:
        with Image.open(name) as im:
            im.load()
            arr = _image_float(im)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        if isinstance(e, UnidentifiedImageError):
            why = "not an image Pillow can read"
            if name.lower().endswith(".npz"):
                why += " (an .npz archive: give one array as .npy)"
        else:
            why = (str(e).splitlines() or [type(e).__name__])[0]
        raise DataError(f"cannot read image: {why}", loc=Loc(name)) from None
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.shape[2] in (2, 4):  # drop alpha (LA / RGBA)
        arr = arr[:, :, :arr.shape[2] - 1]
    if color and arr.shape[2] == 1:
        arr = np.tile(arr, (1, 1, 3))
    elif not color and arr.shape[2] == 3:
        w = np.asarray(RGB2GRAY, np.float32)
        arr = (arr @ w)[:, :, None]
    return np.ascontiguousarray(arr, dtype=np.float32)


def _image_float(im) -> np.ndarray:  # noqa: ANN001 - PIL.Image.Image
    """skimage's ``img_as_float`` of what the file holds: ``[0, 1]`` by the integer range."""
    mode = im.mode
    if mode == "F":
        return np.asarray(im, dtype=np.float32)
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        return np.asarray(im).astype(np.float32) / np.float32(65535)
    if mode in ("1", "L"):
        return np.asarray(im.convert("L"), dtype=np.float32) / np.float32(255)
    if mode in ("LA", "La"):
        return np.asarray(im.convert("LA"), dtype=np.float32) / np.float32(255)
    if mode in ("RGBA", "RGBa", "PA") or (mode == "P" and "transparency" in im.info):
        return np.asarray(im.convert("RGBA"), dtype=np.float32) / np.float32(255)
    return np.asarray(im.convert("RGB"), dtype=np.float32) / np.float32(255)


def resize_image(im: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """``caffe.io.resize_image`` (order 1): ``H×W×C`` float32 → ``size[0]×size[1]×C``.

    Bilinear with Pillow on float32 (mode ``F``) per channel; a constant image stays
    constant (pycaffe's special case)."""
    from PIL import Image

    h, w = int(size[0]), int(size[1])
    im = np.asarray(im, dtype=np.float32)
    if im.shape[:2] == (h, w):
        return im.copy()
    lo, hi = float(im.min()), float(im.max())
    if not hi > lo:
        return np.full((h, w, im.shape[2]), lo, np.float32)
    out = np.empty((h, w, im.shape[2]), np.float32)
    bilinear = getattr(Image, "Resampling", Image).BILINEAR
    for c in range(im.shape[2]):
        plane = Image.fromarray(np.ascontiguousarray(im[:, :, c]), mode="F")
        out[:, :, c] = np.asarray(plane.resize((w, h), bilinear), dtype=np.float32)
    return out


def load_mean(path: str | os.PathLike[str]) -> np.ndarray:
    """A mean file: Caffe's ``.binaryproto`` (``compute_image_mean``) or a ``.npy`` array;
    ``(1, C, H, W)`` is squeezed to ``(C, H, W)``."""
    name = os.fspath(path)
    if not Path(name).is_file():
        raise DataError("no such mean file", loc=Loc(name))
    if name.endswith(".npy"):
        arr = read_array(name)
    else:
        from netdef.io.blobs import read_blobproto

        arr = read_blobproto(name)
    arr = np.asarray(arr, dtype=np.float32)
    while arr.ndim > 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim not in (1, 2, 3):
        raise DataError(f"mean of shape {arr.shape}: expected (C,), (C, H, W) or "
                        "(1, C, H, W)", loc=Loc(name))
    return arr


def fit_mean(mean: np.ndarray, shape: Sequence[int], *, where: str | None = None
             ) -> tuple[np.ndarray, str | None]:
    """The mean as an array broadcastable to ``shape`` = ``(C, H, W)``, and a note when it
    was averaged to one value per channel (``H×W`` differs from the blob's)."""
    c = int(shape[0])
    mean = np.asarray(mean, dtype=np.float32)
    if mean.ndim == 2:
        mean = mean[None]
    if mean.ndim == 1:
        if mean.shape[0] == 1:
            return np.full((c, 1, 1), mean[0], np.float32), None
        if mean.shape[0] != c:
            raise DataError(f"the mean has {mean.shape[0]} channel value(s), the input blob "
                            f"{c} channel(s)", loc=Loc(where) if where else None)
        return mean.reshape(c, 1, 1), None
    if mean.shape[0] != c:
        raise DataError(f"the mean has {mean.shape[0]} channel(s), the input blob {c}",
                        loc=Loc(where) if where else None)
    if tuple(mean.shape[1:]) == tuple(int(d) for d in shape[1:]):
        return mean, None
    note = (f"mean {mean.shape[1]}x{mean.shape[2]} differs from the input "
            f"{shape[1]}x{shape[2]}: using its per-channel average")
    return mean.reshape(c, -1).mean(axis=1).astype(np.float32).reshape(c, 1, 1), note


@dataclass(frozen=True)
class Preprocess:
    """``caffe.io.Transformer`` settings for one input blob (defaults: Caffe's models)."""

    raw_scale: float | None = 255.0
    swap: bool = True  # RGB -> BGR for 3-channel blobs
    mean: np.ndarray | None = None  # broadcastable to (C, H, W); see fit_mean
    input_scale: float | None = None


def preprocess(image: np.ndarray, shape: Sequence[int], pre: Preprocess = Preprocess()
               ) -> np.ndarray:
    """``Transformer.preprocess``: ``H×W×C`` float image → ``C×H×W`` float32 blob data.

    ``shape`` is the input blob's ``(C, H, W)`` (see the module doc for the steps)."""
    c, h, w = (int(d) for d in shape)
    x = np.asarray(image, dtype=np.float32)
    if x.ndim == 2:
        x = x[:, :, None]
    if x.shape[2] != c:
        raise DataError(f"the image has {x.shape[2]} channel(s), the input blob {c}")
    if x.shape[:2] != (h, w):
        x = resize_image(x, (h, w))
    x = x.transpose(2, 0, 1)
    if pre.swap and c == 3:
        x = x[::-1]
    x = np.array(x, dtype=np.float32)  # a fresh C-contiguous copy
    if pre.raw_scale is not None:
        x *= np.float32(pre.raw_scale)
    if pre.mean is not None:
        x -= pre.mean
    if pre.input_scale is not None:
        x *= np.float32(pre.input_scale)
    return x



# --------------------------------------------------------------------------- torch.compile

class CompiledRunner:
    """``torch.compile(module)`` (inductor) behind the module's own call signature.

    The compile happens on the first call (the warm-up).  When it fails — most often no
    C++ compiler for inductor's CPU kernels, or an op the compiler cannot take — the
    runner says so once in one line through ``log`` and runs the eager module from then
    on, so ``--compile`` never costs a user their run.  ``reason`` holds why (None: compiled).

    ``freeze``: inference with fixed weights (``run``, ``time --forward-only``): inductor
    folds the weights in as constants, prepacks them for oneDNN and fuses Convolution +
    ReLU into ``mkldnn::_convolution_pointwise``; InnerProduct layers run on a oneDNN-
    blocked copy of their weight (:meth:`LayerModule.freeze_weights`, made here).  Never
    for training or for test nets sharing a training net's weights: a frozen graph does
    not see weight updates.  The setting is inductor's global ``config.freezing``,
    patched around each call (the compile happens inside the first): torch 2.13 ignores
    ``torch.compile(options={"freezing": True})`` — the graph kept its weights as inputs
    and no fusion ran.
    """

    def __init__(self, module, log=None, *, freeze: bool = False,  # noqa: ANN001
                 **options) -> None:
        import torch

        self.module = module
        self.freeze = freeze
        if freeze:
            from netdef.lowering.module import LayerModule

            for layer in module.modules():
                if isinstance(layer, LayerModule):
                    layer.freeze_weights()
        self.options = options
        self.compiled = torch.compile(module, **options)
        self.reason: str | None = None
        self.log = log or (lambda line: print(line, file=__import__("sys").stderr))

    def _compiler_settings(self) -> contextlib.AbstractContextManager:
        if not self.freeze:
            return contextlib.nullcontext()
        import torch._inductor.config as inductor_config

        return inductor_config.patch(freezing=True)

    @property
    def active(self) -> bool:
        return self.reason is None

    def __call__(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN204
        if self.reason is None:
            try:
                with self._compiler_settings():
                    return self.compiled(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - the compiler's failure types vary
                if type(exc).__name__ == "TorchRuntimeError":
                    # the net's own error met while tracing: raise it as eager words it
                    return self.module(*args, **kwargs)
                if not _is_compiler_failure(exc):
                    raise
                self.reason = _first_line(exc)
                self.log(f"netdef: --compile unavailable ({self.reason}); running eager")
        return self.module(*args, **kwargs)


def _is_compiler_failure(exc: BaseException) -> bool:
    """An exception raised by dynamo/inductor themselves (not by the net's own ops:
    dynamo reports those — shape errors met while tracing — as ``TorchRuntimeError``)."""
    if type(exc).__name__ == "TorchRuntimeError":
        return False
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        mod = type(e).__module__ or ""
        if mod.startswith(("torch._dynamo", "torch._inductor", "torch._subclasses")) or \
                isinstance(e, (OSError, ImportError)):
            return True
        e = e.__cause__ or e.__context__
    return False


def _first_line(exc: BaseException) -> str:
    cause = exc
    while True:  # the innermost error: chained causes, dynamo's wrapped backend failure
        inner = cause.__cause__ or getattr(cause, "inner_exception", None)
        if not isinstance(inner, BaseException) or inner is cause:
            break
        cause = inner
    lines = [ln.strip() for ln in str(cause).splitlines() if ln.strip()]
    text = lines[0] if lines else type(cause).__name__
    return f"{type(cause).__name__}: {text}"[:200]
