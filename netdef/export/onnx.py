"""ONNX export (``--format onnx``) of the generated plain-torch module.

``torch.onnx.export`` with the TorchScript-based exporter (``dynamo=False``: the dynamo
exporter needs ``onnxscript``, which netdef does not depend on), fixed input shapes
(the analysed ones), inputs and outputs named after the Caffe blobs, then
``onnx.checker.check_model(full_check=True)``, and an atomic write.

Caffe numerics in ONNX terms:

* LRN ACROSS_CHANNELS becomes one ONNX ``LRN`` node: ``size = local_size``,
  ``alpha``, ``beta``, ``bias = k`` — ONNX, like Caffe, divides alpha by size:
  ``y = x / (bias + alpha/size * sum x^2)^beta``.  (While exporting, each generated
  ``LRN`` helper, or ``nn.LocalResponseNorm``, is swapped for a module whose autograd
  Function carries that ONNX symbolic; tracing would otherwise record pads and adds.)
* Pooling on Caffe's ceil grid is ``MaxPool``/``AveragePool`` with ``ceil_mode=1``,
  whose output size onnxruntime computes as torch and Caffe do.  Where Caffe (and torch)
  additionally drop a last window that would start in the padding, ONNX's shape
  inference disagrees with the runtime, so those few layers are exported with explicit
  padding instead (a ``Pad`` with -FLT_MAX then a floor-mode ``MaxPool`` and ``Slice``;
  for AVE, zero padding, ``AveragePool`` and Caffe's divisor as a constant ``Mul``).
* ArgMax uses ``TopK`` on the flipped input (TopK ranks ties lower index first, so
  the larger original index wins, Caffe's order) instead of the stable sort.
* Dropout disappears (eval mode); BatchNorm is ``BatchNormalization``.
"""
from __future__ import annotations

import contextlib
import io
import math
import os
import warnings
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from netdef.errors import NetdefError
from netdef.io.atomic import atomic_write

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

    from netdef.export.pysource import GeneratedSource

__all__ = ["DEFAULT_OPSET", "export_onnx", "onnx_ready"]

DEFAULT_OPSET = 17
FLT_MAX = 3.4028234663852886e38


def _require_onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise NetdefError("ONNX export needs the 'onnx' package",
                          hint="pip install 'netdef[export]' (onnx and onnxruntime)") from None
    return onnx


def _classes() -> dict[str, type]:
    """The export-time torch classes (defined lazily: importing netdef never imports torch)."""
    if _CLASSES:
        return _CLASSES
    import torch
    import torch.nn.functional as F
    from torch import nn

    class _LRNFunction(torch.autograd.Function):
        """Caffe/torch LRN in value; one ONNX ``LRN`` node when exported."""

        @staticmethod
        def forward(ctx, x, size, alpha, beta, k):  # noqa: ANN001, ANN205
            return F.local_response_norm(x, size, alpha, beta, k)

        @staticmethod
        def symbolic(g, x, size, alpha, beta, k):  # noqa: ANN001, ANN205
            return g.op("LRN", x, size_i=int(size), alpha_f=float(alpha), beta_f=float(beta),
                        bias_f=float(k))

    class OnnxLRN(nn.Module):
        def __init__(self, lrn: nn.Module) -> None:  # nn.LocalResponseNorm or the helper
            super().__init__()
            self.size, self.alpha, self.beta, self.k = lrn.size, lrn.alpha, lrn.beta, lrn.k

        def forward(self, x):  # noqa: ANN001, ANN201
            return _LRNFunction.apply(x, self.size, self.alpha, self.beta, self.k)

    class PaddedMaxPool(nn.Module):
        """Caffe's MAX grid by explicit -FLT_MAX padding and a floor-mode pool."""

        def __init__(self, kernel, stride, pad, extra, out) -> None:  # noqa: ANN001
            super().__init__()
            self.kernel, self.stride, self.pad, self.extra, self.out = kernel, stride, pad, extra, out

        def forward(self, x):  # noqa: ANN001, ANN201
            p, e = self.pad, self.extra
            x = F.pad(x, (p[1], e[1], p[0], e[0]), value=-FLT_MAX)
            return F.max_pool2d(x, self.kernel, self.stride)[:, :, : self.out[0], : self.out[1]]

    class PaddedAvgPool(nn.Module):
        """Caffe's AVE grid by zero padding, a floor-mode pool and Caffe's divisor."""

        def __init__(self, size, kernel, stride, pad, extra, out) -> None:  # noqa: ANN001
            super().__init__()
            self.kernel, self.stride, self.pad, self.extra, self.out = kernel, stride, pad, extra, out
            ext = [[float(min(i * s - p + k, n + p) - (i * s - p)) for i in range(o)]
                   for n, k, s, p, o in zip(size, kernel, stride, pad, out)]
            div = torch.tensor(ext[0])[:, None] * torch.tensor(ext[1])[None, :]
            self.register_buffer("rescale", (kernel[0] * kernel[1]) / div, persistent=False)

        def forward(self, x):  # noqa: ANN001, ANN201
            p, e = self.pad, self.extra
            x = F.pad(x, (p[1], e[1], p[0], e[0]))
            y = F.avg_pool2d(x, self.kernel, self.stride)[:, :, : self.out[0], : self.out[1]]
            return y * self.rescale

    class OnnxArgMax(nn.Module):
        """The generated ArgMax with ``topk`` (ONNX TopK) instead of a stable sort: TopK
        ranks equal values lower index first, so on the flipped input the larger original
        index comes first, Caffe's order."""

        def __init__(self, top_k: int, out_max_val: bool, axis: int | None) -> None:
            super().__init__()
            self.top_k, self.out_max_val, self.axis = top_k, out_max_val, axis

        def _topk(self, v):  # noqa: ANN001, ANN202
            n = v.shape[-1]
            vals, idx = torch.topk(v.flip(-1), self.top_k, dim=-1, largest=True, sorted=True)
            return vals, (n - 1 - idx)

        def forward(self, x):  # noqa: ANN001, ANN201
            if self.axis is not None:
                last = x.dim() - 1  # explicit: the exporter mistranslates movedim(-1)
                vals, idx = self._topk(x.movedim(self.axis, last))
                out = vals if self.out_max_val else idx.to(x.dtype)
                return out.movedim(last, self.axis)
            n = x.shape[0]
            vals, idx = self._topk(x.reshape(n, -1))
            parts = [idx.to(x.dtype)] + ([vals] if self.out_max_val else [])
            shape = [n, len(parts), self.top_k] + [1] * max(0, x.dim() - 3)
            return torch.stack(parts, 1).reshape(shape)

    class TupleOutputs(nn.Module):
        """The generated module with its dict of outputs as a tuple (ONNX output order)."""

        def __init__(self, net: nn.Module, names: Sequence[str]) -> None:
            super().__init__()
            self.net, self.names = net, tuple(names)

        def forward(self, *xs):  # noqa: ANN002, ANN201
            out = self.net(*xs)
            return tuple(out[n] for n in self.names)

    _CLASSES.update(OnnxLRN=OnnxLRN, OnnxArgMax=OnnxArgMax, PaddedMaxPool=PaddedMaxPool, PaddedAvgPool=PaddedAvgPool,
                    TupleOutputs=TupleOutputs)
    return _CLASSES


_CLASSES: dict[str, type] = {}


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _naive_ceil(n: int, k: int, s: int, p: int) -> int:
    return math.ceil((n + 2 * p - k) / s) + 1


def _pool_swap(mod: "nn.Module", in_shape: Sequence[int] | None) -> "nn.Module | None":
    """A replacement for a ceil-mode pool whose grid ONNX's shape inference gets wrong
    (Caffe's/torch's rule drops the last window, ONNX's does not), else None."""
    from torch import nn

    if in_shape is None or len(in_shape) != 4 or not getattr(mod, "ceil_mode", False):
        return None
    if not isinstance(mod, (nn.MaxPool2d, nn.AvgPool2d)):
        return None
    k, s, p = _pair(mod.kernel_size), _pair(mod.stride), _pair(mod.padding)
    hw = (int(in_shape[2]), int(in_shape[3]))
    out = []
    for i in range(2):
        o = _naive_ceil(hw[i], k[i], s[i], p[i])
        if (o - 1) * s[i] >= hw[i] + p[i]:
            o -= 1
        out.append(o)
    if all(out[i] == _naive_ceil(hw[i], k[i], s[i], p[i]) for i in range(2)):
        return None  # no dropped window: ceil_mode=1 means the same in ONNX
    extra = tuple(max(0, (out[i] - 1) * s[i] + k[i] - hw[i] - p[i]) for i in range(2))
    cls = _classes()
    if isinstance(mod, nn.MaxPool2d):
        return cls["PaddedMaxPool"](k, s, p, extra, tuple(out))
    return cls["PaddedAvgPool"](hw, k, s, p, extra, tuple(out))


@contextlib.contextmanager
def onnx_ready(net: "nn.Module", gen: "GeneratedSource") -> Iterator["nn.Module"]:
    """``net`` with its LRN and drop-rule pooling layers swapped for their ONNX forms
    (restored afterwards); yields the module to export (tuple outputs)."""
    from torch import nn

    cls = _classes()
    shapes = {attr: gen.layer_bottom_shapes.get(attr) for attr in gen.attributes.values()}
    swapped: list[tuple[str, nn.Module]] = []
    try:
        for attr, bottoms in shapes.items():
            mod = getattr(net, attr, None)
            new = None
            if isinstance(mod, nn.LocalResponseNorm) or (
                    type(mod).__name__ == "LRN" and hasattr(mod, "beta")):  # generated helper
                new = cls["OnnxLRN"](mod)
            elif isinstance(mod, (nn.MaxPool2d, nn.AvgPool2d)):
                new = _pool_swap(mod, bottoms[0] if bottoms else None)
            elif type(mod).__name__ == "ArgMax" and hasattr(mod, "top_k"):  # generated helper
                new = cls["OnnxArgMax"](mod.top_k, mod.out_max_val, mod.axis)
            if new is not None:
                swapped.append((attr, mod))
                setattr(net, attr, new)
        yield cls["TupleOutputs"](net, gen.outputs).eval()
    finally:
        for attr, mod in swapped:
            setattr(net, attr, mod)


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """Silence file descriptor 1 while exporting: on a failure the exporter's C++ side
    prints the whole TorchScript graph there, and the CLI reports errors in one line."""
    import sys
    import tempfile

    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # no real stdout (captured, embedded)
        yield
        return
    sys.stdout.flush()
    saved = os.dup(fd)
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), fd)
            try:
                yield
            finally:
                os.dup2(saved, fd)
    finally:
        os.close(saved)


def export_onnx(net: "nn.Module", gen: "GeneratedSource", inputs: Sequence["torch.Tensor"],
                path: str | os.PathLike[str], *, opset: int = DEFAULT_OPSET) -> None:
    """Export (inputs: example tensors of the analysed shapes), check, write atomically."""
    import torch

    onnx = _require_onnx()
    if opset < 10:
        raise NetdefError(f"--opset {opset} is too old: Caffe's ceil-mode pooling needs "
                          "ONNX opset 10 or later")
    buf = io.BytesIO()
    net.eval()
    with onnx_ready(net, gen) as model, torch.no_grad(), warnings.catch_warnings(), \
            _quiet_stdout():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(model, tuple(inputs), buf, input_names=list(gen.inputs),
                              output_names=list(gen.outputs), opset_version=opset,
                              dynamo=False, do_constant_folding=True)
        except Exception as exc:  # noqa: BLE001 - one line for the CLI
            text = str(exc).strip().splitlines()
            raise NetdefError(f"ONNX export failed: {type(exc).__name__}: "
                              f"{text[0] if text else ''}") from exc
    data = buf.getvalue()
    try:  # bytes: checked as serialized, no second copy of the weights
        onnx.checker.check_model(data, full_check=True)
    except Exception as exc:  # noqa: BLE001
        raise NetdefError(f"the exported ONNX model does not pass onnx.checker: "
                          f"{str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}") from exc
    atomic_write(path, data)
