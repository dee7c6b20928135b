"""Caffe pooling (MAX / AVE / STOCHASTIC) and spatial pyramid pooling.

Caffe's output size is ``ceil((H + 2p - k) / s) + 1`` (or ``floor`` with
``round_mode: FLOOR``), minus one when ``p > 0`` and the last window would start at or
beyond ``H + p``.  With ``p == 0`` nothing is dropped, so ``stride > kernel`` can leave a
last window that starts beyond the image: Caffe then outputs ``-FLT_MAX`` (MAX) or
``0 / pool_size`` with a non-positive ``pool_size`` (AVE: NaN or -0).  Those cases go
through an explicit-padding path that reproduces that arithmetic.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ._common import FLT_MAX, FLT_MIN, IntOrSeq, expand

__all__ = ["pool_output_size", "caffe_pool2d", "max_pool2d", "spp", "spp_pooling_params"]


def pool_output_size(size: int, kernel: int, stride: int, pad: int, round_mode: str = "CEIL") -> int:
    """PoolingLayer::Reshape's output size for one spatial dim (computed in float as Caffe does)."""
    q = float(size + 2 * pad - kernel) / float(stride)
    if round_mode == "CEIL":
        out = int(math.ceil(q)) + 1
    elif round_mode == "FLOOR":
        out = int(math.floor(q)) + 1
    else:
        raise ValueError(f"unknown round_mode {round_mode!r}")
    if pad > 0 and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _torch_out(size: int, k: int, s: int, p: int, ceil_mode: bool) -> int:
    """Output size torch's max/avg_pool2d gives (it always applies the drop rule)."""
    q = (size + 2 * p - k) / s
    out = (math.ceil(q) if ceil_mode else math.floor(q)) + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def _native_ceil_mode(hw: Sequence[int], k: Sequence[int], s: Sequence[int], p: Sequence[int],
                      out: Sequence[int]) -> bool | None:
    """The ceil_mode for which torch's own pooling reproduces Caffe's geometry, or None."""
    if any(pi > ki // 2 for pi, ki in zip(p, k)):
        return None  # torch refuses pad > kernel / 2; Caffe allows pad < kernel
    for cm in (False, True):
        if all(_torch_out(hw[i], k[i], s[i], p[i], cm) == out[i] for i in range(2)):
            return cm
    return None


def _geometry(x: Tensor, method: str, kernel: IntOrSeq | None, stride: IntOrSeq, pad: IntOrSeq,
              round_mode: str, global_pooling: bool):
    if x.dim() != 4:
        raise ValueError("Caffe pooling needs a 4-D (N, C, H, W) input")
    hw = tuple(x.shape[2:])
    if global_pooling:
        k = hw
        s = expand(stride, 2, "stride")
        p = expand(pad, 2, "pad")
        if p != (0, 0) or s != (1, 1):
            raise ValueError("global_pooling needs pad = 0 and stride = 1")
    else:
        if kernel is None:
            raise ValueError("kernel is required unless global_pooling")
        k, s, p = expand(kernel, 2, "kernel"), expand(stride, 2, "stride"), expand(pad, 2, "pad")
    if min(k) <= 0 or min(s) <= 0:
        raise ValueError("kernel and stride must be positive")
    if p != (0, 0):
        if method not in ("MAX", "AVE"):
            raise ValueError("Padding implemented only for average and max pooling.")
        if p[0] >= k[0] or p[1] >= k[1]:
            raise ValueError("pad must be smaller than kernel")
    out = tuple(pool_output_size(hw[i], k[i], s[i], p[i], round_mode) for i in range(2))
    if min(out) <= 0:
        raise ValueError(f"pooling output would be empty: {out}")
    return hw, k, s, p, out


def _pad_needed(hw, k, s, p, out) -> tuple[int, int]:
    """Right/bottom padding so that every Caffe window lies inside the padded tensor."""
    return tuple(max(0, (out[i] - 1) * s[i] + k[i] - hw[i] - p[i]) for i in range(2))


# Under torch.compile the max pool stays ATen's kernel, as an opaque custom op: inductor's
# own max_pool2d_with_indices (fused with the ReLU before it) took 12 ms for CaffeNet's
# pool1 at batch 10 on 2 cores, ATen's channels-last kernel 0.5 ms (plus 0.3 ms ReLU).
@torch.library.custom_op("netdef::max_pool2d", mutates_args=())
def _max_pool2d_op(x: Tensor, kernel: list[int], stride: list[int], pad: list[int],
                   ceil_mode: bool) -> tuple[Tensor, Tensor]:
    return torch.ops.aten.max_pool2d_with_indices(x, kernel, stride, pad, [1, 1], ceil_mode)


@torch.library.custom_op("netdef::max_pool2d_backward", mutates_args=())
def _max_pool2d_backward_op(dy: Tensor, x: Tensor, indices: Tensor, kernel: list[int],
                            stride: list[int], pad: list[int], ceil_mode: bool) -> Tensor:
    return torch.ops.aten.max_pool2d_with_indices_backward(dy, x, kernel, stride, pad, [1, 1],
                                                           ceil_mode, indices)


@_max_pool2d_op.register_fake
def _(x: Tensor, kernel: list[int], stride: list[int], pad: list[int], ceil_mode: bool
      ) -> tuple[Tensor, Tensor]:
    return torch.ops.aten.max_pool2d_with_indices(x, kernel, stride, pad, [1, 1], ceil_mode)


@_max_pool2d_backward_op.register_fake
def _(dy: Tensor, x: Tensor, indices: Tensor, kernel: list[int], stride: list[int],
      pad: list[int], ceil_mode: bool) -> Tensor:
    return torch.ops.aten.max_pool2d_with_indices_backward(dy, x, kernel, stride, pad, [1, 1],
                                                           ceil_mode, indices)


def _max_pool_save(ctx, inputs, output) -> None:  # noqa: ANN001
    x, ctx.kernel, ctx.stride, ctx.pad, ctx.ceil_mode = inputs
    ctx.save_for_backward(x, output[1])
    ctx.set_materialize_grads(False)  # the indices get no diff


def _max_pool_grad(ctx, dy: Tensor, _dindices):  # noqa: ANN001, ANN202
    if dy is None:
        return None, None, None, None, None
    x, indices = ctx.saved_tensors
    return (_max_pool2d_backward_op(dy, x, indices, ctx.kernel, ctx.stride, ctx.pad,
                                    ctx.ceil_mode), None, None, None, None)


_max_pool2d_op.register_autograd(_max_pool_grad, setup_context=_max_pool_save)


def max_pool2d(x: Tensor, kernel: Sequence[int], stride: Sequence[int], pad: Sequence[int],
               ceil_mode: bool) -> Tensor:
    """``F.max_pool2d``; under ``torch.compile`` (not export) ATen's kernel as an opaque op."""
    if torch.compiler.is_compiling() and not torch.compiler.is_exporting() and x.dim() == 4:
        return _max_pool2d_op(x, list(kernel), list(stride), list(pad), bool(ceil_mode))[0]
    return F.max_pool2d(x, kernel, stride, pad, ceil_mode=ceil_mode)


def _max_pool(x: Tensor, hw, k, s, p, out) -> Tensor:
    cm = _native_ceil_mode(hw, k, s, p, out)
    if cm is not None:
        return max_pool2d(x, k, s, p, cm)
    r = _pad_needed(hw, k, s, p, out)
    # -FLT_MAX is Caffe's initial value: a window wholly outside the image yields it.
    xp = F.pad(x, (p[1], r[1], p[0], r[0]), value=-FLT_MAX)
    return F.max_pool2d(xp, k, s)[:, :, : out[0], : out[1]]


def _ave_divisor(size: int, k: int, s: int, p: int, n: int) -> list[float]:
    """Caffe's per-position pool extent: window clipped to size + pad (padding counted)."""
    res = []
    for o in range(n):
        start = o * s - p
        res.append(float(min(start + k, size + p) - start))
    return res


def _ave_pool(x: Tensor, hw, k, s, p, out) -> Tensor:
    cm = _native_ceil_mode(hw, k, s, p, out)
    if cm is not None:
        # torch's divisor rule equals Caffe's whenever the geometry matches.
        return F.avg_pool2d(x, k, s, p, ceil_mode=cm, count_include_pad=True)
    r = _pad_needed(hw, k, s, p, out)
    xp = F.pad(x, (p[1], r[1], p[0], r[0]))
    total = F.avg_pool2d(xp, k, s, divisor_override=1)[:, :, : out[0], : out[1]]
    dh = torch.tensor(_ave_divisor(hw[0], k[0], s[0], p[0], out[0]), dtype=x.dtype, device=x.device)
    dw = torch.tensor(_ave_divisor(hw[1], k[1], s[1], p[1], out[1]), dtype=x.dtype, device=x.device)
    return total / (dh[:, None] * dw[None, :])


def _stochastic_pool(x: Tensor, hw, k, s, out, training: bool,
                     generator: torch.Generator | None) -> Tensor:
    """Caffe's (GPU-only) stochastic pooling; windows start at o*s, clipped to the image."""
    n, c = x.shape[:2]
    r = _pad_needed(hw, k, s, (0, 0), out)
    xp = F.pad(x, (0, r[1], 0, r[0]))
    cols = F.unfold(xp, k, stride=s)  # (N, C*kh*kw, L), window read row-major like Caffe
    oh_all = (xp.shape[2] - k[0]) // s[0] + 1
    ow_all = (xp.shape[3] - k[1]) // s[1] + 1
    win = cols.view(n, c, k[0] * k[1], oh_all, ow_all)[:, :, :, : out[0], : out[1]]
    if not training:
        # TEST: sum(x^2) / (FLT_MIN + sum(x)), Caffe's cumsum starts at FLT_MIN.
        return (win * win).sum(2) / (win.sum(2) + FLT_MIN)
    cums = win.cumsum(2)  # the total is the last running sum, so thres = u*total <= it
    u = torch.rand(cums[:, :, :1].shape, generator=generator, dtype=x.dtype, device=x.device)
    thres = u * cums[:, :, -1:]
    idx = (cums < thres).sum(2, keepdim=True)  # first index whose running sum >= thres
    return win.gather(2, idx.clamp_(max=k[0] * k[1] - 1)).squeeze(2)


def caffe_pool2d(x: Tensor, method: str = "MAX", kernel: IntOrSeq | None = None, stride: IntOrSeq = 1,
                 pad: IntOrSeq = 0, round_mode: str = "CEIL", global_pooling: bool = False,
                 training: bool = False, generator: torch.Generator | None = None) -> Tensor:
    """Caffe's PoolingLayer forward (gradients by autograd match Caffe's Backward_cpu).

    ``kernel``/``stride``/``pad`` are an int or ``(h, w)``.  MAX ties go to the first
    maximum in row-major order, as in Caffe.  STOCHASTIC is GPU-only in Caffe (its CPU
    path is NOT_IMPLEMENTED); this follows the CUDA kernels: TEST returns the
    probability-weighted average ``sum(x^2)/sum(x)``, TRAIN samples one element with
    probability ``x / sum(x)`` (inputs must be non-negative); padding is refused for it.
    """
    method = method.upper()
    if method not in ("MAX", "AVE", "STOCHASTIC"):
        raise ValueError(f"unknown pooling method {method!r}")
    hw, k, s, p, out = _geometry(x, method, kernel, stride, pad, round_mode, global_pooling)
    if method == "MAX":
        return _max_pool(x, hw, k, s, p, out)
    if method == "AVE":
        return _ave_pool(x, hw, k, s, p, out)
    return _stochastic_pool(x, hw, k, s, out, training, generator)


def spp_pooling_params(height: int, width: int, level: int) -> dict[str, tuple[int, int]]:
    """SPPLayer::GetPoolingParam: kernel = ceil(H / 2^level), stride = kernel, pad to cover."""
    bins = 2 ** level
    kh = math.ceil(height / bins)
    kw = math.ceil(width / bins)
    ph = (kh * bins - height + 1) // 2
    pw = (kw * bins - width + 1) // 2
    return {"kernel": (kh, kw), "stride": (kh, kw), "pad": (ph, pw)}


def spp(x: Tensor, pyramid_height: int, method: str = "MAX", training: bool = False,
        generator: torch.Generator | None = None) -> Tensor:
    """Spatial pyramid pooling as Caffe's SPPLayer.

    ``pyramid_height == 1`` is a single pooling whose 4-D output is returned as is;
    otherwise each level's (N, C, h, w) output is flattened to (N, C*h*w) and the levels
    are concatenated along axis 1, level 0 first.
    """
    if pyramid_height < 1:
        raise ValueError("pyramid_height must be >= 1")
    h, w = int(x.shape[2]), int(x.shape[3])
    outs = []
    for level in range(pyramid_height):
        prm = spp_pooling_params(h, w, level)
        y = caffe_pool2d(x, method, prm["kernel"], prm["stride"], prm["pad"],
                         training=training, generator=generator)
        if pyramid_height == 1:
            return y
        outs.append(y.flatten(1))
    return torch.cat(outs, 1)
