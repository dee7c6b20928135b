"""Kernel / stride / pad / dilation, read once for every spatial layer.

Convolution, Deconvolution, Im2col (``ConvolutionParameter``), Pooling and SPP
(``PoolingParameter``) all describe a sliding window.  Caffe spells it several ways
(repeated ``kernel_size`` once or per axis, ``kernel_h``/``kernel_w``, ``pad`` or
``pad_h``/``pad_w`` …) and conv and pooling differ in rounding.  Reading it in one
tested place keeps the two rules from drifting apart (see design-notes: TVM's
frontend got pooling's ``round_mode`` silently wrong).

Rules (from Caffe's ``BaseConvolutionLayer`` and ``PoolingLayer``):

* conv:    ``out = floor((in + 2p - (d(k-1)+1)) / s) + 1``
* deconv:  ``out = s(in-1) + d(k-1)+1 - 2p``
* pooling: ``out = ceil((in + 2p - k) / s) + 1`` (``round_mode: FLOOR`` → floor); then,
  when *any* pad is non-zero, ``out -= 1`` if the last window would start at or
  beyond ``in + p`` (so no window lies wholly in the padding).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from netdef.errors import ShapeError
from netdef.ir.schema import has


@dataclass(frozen=True)
class Window:
    """One sliding-window geometry, one entry per spatial axis."""

    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    pad: tuple[int, ...]
    dilation: tuple[int, ...]

    @property
    def extent(self) -> tuple[int, ...]:
        """Input span of one dilated kernel window."""
        return tuple(d * (k - 1) + 1 for k, d in zip(self.kernel, self.dilation))


def _per_axis(values: Sequence[int], n: int, default: int, what: str,
              where: str) -> tuple[int, ...]:
    """Caffe's 'once, or once per spatial dimension' for a repeated field."""
    if not values:
        return (default,) * n
    if len(values) == 1:
        return (int(values[0]),) * n
    if len(values) != n:
        raise ShapeError(f"{where}: {what} must be specified once, or once per spatial "
                         f"dimension ({n}), got {len(values)} values",
                         hint=f"give one {what} or {n}")
    return tuple(int(v) for v in values)


def _hw_pair(p: Any, name: str, repeated: str, n: int, default: int,
             where: str) -> tuple[int, ...] | None:
    """``<name>_h``/``<name>_w`` when either is set (2-D only), else None."""
    if not (has(p, f"{name}_h") or has(p, f"{name}_w")):
        return None
    if n != 2:
        raise ShapeError(f"{where}: {name}_h & {name}_w can only be used for 2-D "
                         f"windows, the input has {n} spatial axes",
                         hint=f"use the repeated '{repeated}' field instead")
    if getattr(p, repeated):
        raise ShapeError(f"{where}: either {repeated} or {name}_h/{name}_w should be "
                         "specified; not both", hint=f"remove '{repeated}'")
    h = getattr(p, f"{name}_h") if has(p, f"{name}_h") else default
    w = getattr(p, f"{name}_w") if has(p, f"{name}_w") else default
    return (int(h), int(w))


def conv_window(p: Any, n_spatial: int, where: str) -> Window:
    """Geometry of a ``ConvolutionParameter`` over ``n_spatial`` axes (conv/deconv/im2col)."""
    if n_spatial < 0:
        raise ShapeError(f"{where}: the input has fewer axes than the channel axis + 1")
    kernel = _hw_pair(p, "kernel", "kernel_size", n_spatial, 0, where)
    if kernel is None:
        if not p.kernel_size:
            raise ShapeError(f"{where}: no kernel size",
                             hint="set kernel_size (or kernel_h and kernel_w)")
        kernel = _per_axis(p.kernel_size, n_spatial, 0, "kernel_size", where)
    if any(k <= 0 for k in kernel):
        raise ShapeError(f"{where}: filter dimensions must be nonzero, got {kernel}",
                         hint="set both kernel_h and kernel_w" if len(kernel) == 2 else None)
    stride = _hw_pair(p, "stride", "stride", n_spatial, 0, where) \
        or _per_axis(p.stride, n_spatial, 1, "stride", where)
    pad = _hw_pair(p, "pad", "pad", n_spatial, 0, where) \
        or _per_axis(p.pad, n_spatial, 0, "pad", where)
    dilation = _per_axis(p.dilation, n_spatial, 1, "dilation", where)
    if any(s <= 0 for s in stride) or any(d <= 0 for d in dilation):
        raise ShapeError(f"{where}: stride and dilation must be positive "
                         f"(stride {stride}, dilation {dilation})",
                         hint="set both stride_h and stride_w" if has(p, "stride_h")
                         or has(p, "stride_w") else None)
    return Window(kernel, stride, pad, dilation)


def pool_window(p: Any, hw: Sequence[int], where: str) -> Window:
    """Geometry of a ``PoolingParameter`` on an input of spatial size ``hw`` (H, W)."""
    if p.global_pooling:
        if has(p, "kernel_size") or has(p, "kernel_h") or has(p, "kernel_w"):
            raise ShapeError(f"{where}: with global_pooling: true the filter size cannot "
                             "be specified", hint="remove kernel_size/kernel_h/kernel_w")
        kernel = (int(hw[0]), int(hw[1]))
    else:
        both_hw = has(p, "kernel_h") and has(p, "kernel_w")
        if has(p, "kernel_size") == both_hw:
            raise ShapeError(f"{where}: filter size is kernel_size OR kernel_h and "
                             "kernel_w; not both" if both_hw else
                             f"{where}: no kernel size (non-square filters need both "
                             "kernel_h and kernel_w)", hint="set kernel_size")
        kernel = (p.kernel_size,) * 2 if has(p, "kernel_size") else (p.kernel_h, p.kernel_w)
        if any(k <= 0 for k in kernel):
            raise ShapeError(f"{where}: filter dimensions must be greater than 0, got {kernel}")
    pad = _pool_pair(p, "pad", where)
    stride = _pool_pair(p, "stride", where)
    if p.global_pooling and (any(pad) or any(s != 1 for s in stride)):
        raise ShapeError(f"{where}: with global_pooling: true only pad = 0 and stride = 1")
    if any(s <= 0 for s in stride):
        raise ShapeError(f"{where}: stride must be positive, got {stride}")
    if any(pad):
        if p.pool.name not in ("MAX", "AVE"):
            raise ShapeError(f"{where}: padding is implemented only for average and max pooling")
        if any(pd >= k for pd, k in zip(pad, kernel)):
            raise ShapeError(f"{where}: pad {pad} must be smaller than the kernel {kernel}")
    return Window(kernel, stride, pad, (1, 1))


def _pool_pair(p: Any, name: str, where: str) -> tuple[int, int]:
    """Pooling's scalar ``pad``/``stride`` or the pair ``_h``/``_w`` (both required)."""
    h, w = has(p, f"{name}_h"), has(p, f"{name}_w")
    if h or w:
        if has(p, name) or not (h and w):
            raise ShapeError(f"{where}: {name} is {name} OR {name}_h and {name}_w are required",
                             hint=f"set both {name}_h and {name}_w, or only {name}")
        return (int(getattr(p, f"{name}_h")), int(getattr(p, f"{name}_w")))
    v = int(getattr(p, name))
    return (v, v)


def conv_out(size: int, kernel: int, stride: int = 1, pad: int = 0, dilation: int = 1) -> int:
    """Convolution output length (rounds down); ValueError if the window does not fit."""
    extent = dilation * (kernel - 1) + 1
    if size + 2 * pad < extent:
        raise ValueError(f"kernel extent {extent} exceeds the padded input {size + 2 * pad}")
    return (size + 2 * pad - extent) // stride + 1


def deconv_out(size: int, kernel: int, stride: int = 1, pad: int = 0, dilation: int = 1) -> int:
    """Deconvolution output length: the input length of the matching convolution."""
    out = stride * (size - 1) + dilation * (kernel - 1) + 1 - 2 * pad
    if out <= 0:
        raise ValueError(f"output length {out} is not positive (pad {pad} too large)")
    return out


def pool_out(size: int, kernel: int, stride: int = 1, pad: int = 0, *,
             ceil_mode: bool = True, clip: bool | None = None) -> int:
    """Pooling output length, Caffe's rule (module doc).

    ``clip`` defaults to ``pad > 0``; Caffe applies it on both axes when *either* pad
    is non-zero, which :func:`pool_shape` passes explicitly.
    """
    if size + 2 * pad < kernel:
        raise ValueError(f"kernel {kernel} exceeds the padded input {size + 2 * pad}")
    span = size + 2 * pad - kernel
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if (pad > 0 if clip is None else clip) and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def conv_shape(spatial: Sequence[int], w: Window, where: str, *,
               deconv: bool = False) -> tuple[int, ...]:
    """Output spatial dims of a convolution (or deconvolution) window."""
    fn = deconv_out if deconv else conv_out
    out = []
    for i, (n, k, s, p, d) in enumerate(zip(spatial, w.kernel, w.stride, w.pad, w.dilation)):
        try:
            out.append(fn(int(n), k, s, p, d))
        except ValueError as e:
            raise ShapeError(f"{where}: spatial axis {i} (size {n}): {e}",
                             hint="check the input size, kernel, pad and dilation") from None
    return tuple(out)


def pool_shape(hw: Sequence[int], w: Window, ceil_mode: bool, where: str) -> tuple[int, int]:
    """Output (H, W) of a pooling window (Caffe clips both axes if any pad is set)."""
    clip = any(w.pad)
    out = []
    for i, (n, k, s, p) in enumerate(zip(hw, w.kernel, w.stride, w.pad)):
        try:
            out.append(pool_out(int(n), k, s, p, ceil_mode=ceil_mode, clip=clip))
        except ValueError as e:
            raise ShapeError(f"{where}: {'HW'[i]} (size {n}): {e}",
                             hint="check the input size or use a smaller kernel") from None
    return (out[0], out[1])


def describe(values: Sequence[int], sep: str = "×") -> str:
    """``(3, 3)`` → ``3``, ``(3, 1)`` → ``3×1``: short form for summaries."""
    if len(set(values)) == 1:
        return str(values[0])
    return sep.join(str(v) for v in values)
