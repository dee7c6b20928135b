"""Caffe LRN: ACROSS_CHANNELS (custom ops with a closed-form backward; a fusible forward
under torch.compile) and WITHIN_CHANNEL.

ACROSS_CHANNELS: ``scale = k + alpha/n * sum_{n channels, zero padded} x^2``,
``y = x * scale^-beta``.  The channel-window sum is done with ``n`` shifted slice adds
(exact and much cheaper than ``avg_pool3d``, which ``F.local_response_norm`` uses), and
the backward is Caffe's closed form
``dx = dy * scale^-beta - 2*alpha*beta/n * x * sum_window(dy * y / scale)``.

WITHIN_CHANNEL (Caffe builds it from Power, AVE Pooling, Power, Eltwise PROD layers):
``y = x * (1 + alpha * avgpool_{n x n, pad (n-1)/2}(x^2))^-beta``.  ``k`` is *not* used
(the inner Power layer has shift 1), and since the pool divisor is always ``n^2`` here
this is ``(1 + alpha/n^2 * sum_{n x n zero padded} x^2)^-beta``.
Caffe refuses even ``local_size`` (CHECK in LRNLayer::LayerSetUp).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["lrn", "lrn_across_channels", "lrn_within_channel", "channel_window_sum"]


def channel_window_sum(t: Tensor, size: int) -> Tensor:
    """Sum over a centred window of ``size`` (odd) channels along dim 1, zero padded."""
    half = (size - 1) // 2
    out = t.clone()
    c = t.shape[1]
    for d in range(1, min(half, c - 1) + 1):
        out[:, d:] += t[:, : c - d]
        out[:, : c - d] += t[:, d:]
    return out


def _neg_pow_(scale: Tensor, beta: float) -> Tensor:
    """scale^-beta in place; common betas use sqrt/rsqrt, several times cheaper than pow."""
    if beta == 0.75:
        root = torch.sqrt(scale)
        return scale.mul_(root).rsqrt_()
    if beta == 0.5:
        return scale.rsqrt_()
    if beta == 1.0:
        return scale.reciprocal_()
    return scale.pow_(-beta)


def _scale(x: Tensor, size: int, alpha: float, k: float) -> Tensor:
    """Caffe's scale_ blob: k + alpha/size * (channel-window sum of x^2)."""
    sq = x * x
    scale = channel_window_sum(sq, size)
    del sq
    return scale.mul_(alpha / size).add_(k)


# ACROSS_CHANNELS as custom ops: eager calls run them directly; under torch.compile the
# backward stays this opaque op (the forward is inductor's, see _FusibleLRN below).
# Measured (AlexNet, batch 10, 2 cores): inductor's own lowering of F.local_response_norm
# (an average pool over a padded channel axis) took 27 ms forward and 46 ms backward for
# the two LRN layers, against ~6 ms here.
@torch.library.custom_op("netdef::lrn_across", mutates_args=())
def _lrn_across_op(x: Tensor, size: int, alpha: float, beta: float, k: float) -> Tensor:
    """Inference: no saved tensors, the scale buffer becomes the output."""
    x3 = x.reshape(x.shape[0], x.shape[1], -1)
    return _neg_pow_(_scale(x3, size, alpha, k), beta).mul_(x3).reshape(x.shape)


@torch.library.custom_op("netdef::lrn_across_train", mutates_args=())
def _lrn_across_train_op(x: Tensor, size: int, alpha: float, beta: float, k: float
                         ) -> tuple[Tensor, Tensor, Tensor]:
    """Training: ``(top, scale, scale^-beta)``, the last two kept for the backward."""
    x3 = x.reshape(x.shape[0], x.shape[1], -1)
    scale = _scale(x3, size, alpha, k)
    scale_pow = _neg_pow_(scale.clone(), beta)
    return (x3 * scale_pow).reshape(x.shape), scale, scale_pow


@torch.library.custom_op("netdef::lrn_across_backward", mutates_args=())
def _lrn_across_backward_op(dy: Tensor, x: Tensor, scale: Tensor, scale_pow: Tensor,
                            size: int, coef: float) -> Tensor:
    """``dx = dy·scale^-beta − coef·x·window_sum(dy·top/scale)``, coef = 2·alpha·beta/n."""
    shape = x.shape
    x3, dy3 = x.reshape(shape[0], shape[1], -1), dy.reshape(shape[0], shape[1], -1)
    ratio = torch.mul(dy3, x3, out=torch.empty_like(x3))  # x's layout, whatever dy's
    ratio.mul_(scale_pow).div_(scale)  # dy * top / scale
    acc = channel_window_sum(ratio, size)  # odd window: its transpose is itself
    del ratio
    return acc.mul_(x3).mul_(-coef).addcmul_(dy3, scale_pow).reshape(shape)


@_lrn_across_op.register_fake
def _(x: Tensor, size: int, alpha: float, beta: float, k: float) -> Tensor:
    return torch.empty_like(x)


@_lrn_across_train_op.register_fake
def _(x: Tensor, size: int, alpha: float, beta: float, k: float
      ) -> tuple[Tensor, Tensor, Tensor]:
    flat = torch.empty_like(x).reshape(x.shape[0], x.shape[1], -1)  # x's strides, as real
    return torch.empty_like(x), flat, torch.empty_like(flat)


@_lrn_across_backward_op.register_fake
def _(dy: Tensor, x: Tensor, scale: Tensor, scale_pow: Tensor, size: int, coef: float
      ) -> Tensor:
    return torch.empty_like(x)


def _lrn_save(ctx, inputs, output) -> None:  # noqa: ANN001
    x, size, alpha, beta, _ = inputs
    _, scale, scale_pow = output
    ctx.save_for_backward(x, scale, scale_pow)
    ctx.size, ctx.coef = size, 2.0 * alpha * beta / size
    ctx.set_materialize_grads(False)  # no zero-filled diffs for the two internal outputs


def _lrn_grad(ctx, dy: Tensor, _dscale, _dpow):  # noqa: ANN001, ANN202
    if dy is None:  # the top's diff is undefined (not materialised): so is x's
        return None, None, None, None, None
    x, scale, scale_pow = ctx.saved_tensors
    dx = _lrn_across_backward_op(dy, x, scale, scale_pow, ctx.size, ctx.coef)
    return dx, None, None, None, None


_lrn_across_train_op.register_autograd(_lrn_grad, setup_context=_lrn_save)


# Under torch.compile the forward goes to inductor as plain tensor ops, which it fuses
# into one kernel (x -> top, scale, scale^-beta).  The channel window is summed from
# unpadded shifted slices, the edge channels apart: a zero-padded window makes inductor
# guard every lane of the channel loop with int64 masks, which in channels-last
# (channels innermost) ran slower than the eager op.  Measured (2 cores, channels-last,
# medians of 31): forward 10x96x55x55 4.7 -> 1.5 ms, 10x192x56x56 25 -> 3.8 ms; forward +
# backward 13.4 -> 10.1 ms and 33.7 -> 22.5 ms.  The backward stays the opaque op above:
# inductor's kernel for the windowed closed form (or for autograd's slice_scatter
# derivative) recomputed the ratio per tap and transposed through an NCHW concat buffer.
def _window_sum_fusible(t: Tensor, size: int) -> Tensor:
    """:func:`channel_window_sum` from out-of-place slices (no padding, no in-place)."""
    half = (size - 1) // 2
    c = t.shape[1]

    def span(lo: int, hi: int) -> Tensor:  # sum of channels [lo, hi), kept as one channel
        acc = t[:, lo:lo + 1]
        for j in range(lo + 1, hi):
            acc = acc + t[:, j:j + 1]
        return acc

    if c <= 2 * half:
        parts = [span(max(0, i - half), min(c, i + half + 1)) for i in range(c)]
    else:
        inner = t[:, 0:c - 2 * half]
        for d in range(1, size):
            inner = inner + t[:, d:d + c - 2 * half]
        parts = [*(span(0, i + half + 1) for i in range(half)), inner,
                 *(span(i - half, c) for i in range(c - half, c))]
    return torch.cat(parts, 1)


def _scale_fusible(x: Tensor, size: int, alpha: float, k: float) -> Tensor:
    return _window_sum_fusible(x * x, size) * (alpha / size) + k


def _neg_pow(scale: Tensor, beta: float) -> Tensor:
    """scale^-beta out of place (sqrt/rsqrt for the common betas, as :func:`_neg_pow_`)."""
    if beta == 0.75:
        return torch.rsqrt(scale * torch.sqrt(scale))
    if beta == 0.5:
        return torch.rsqrt(scale)
    if beta == 1.0:
        return torch.reciprocal(scale)
    return torch.pow(scale, -beta)


class _FusibleLRN(torch.autograd.Function):
    """ACROSS_CHANNELS LRN for training under inductor: the forward as fusible tensor ops
    (one kernel writing the top and the two blobs the backward needs), the backward
    netdef's opaque op (inductor's kernel for the windowed backward ran slower than it)."""

    @staticmethod
    def forward(ctx, x: Tensor, size: int, alpha: float, beta: float, k: float  # noqa: ANN001
                ) -> Tensor:
        scale = _scale_fusible(x, size, alpha, k)
        scale_pow = _neg_pow(scale, beta)
        ctx.save_for_backward(x, scale, scale_pow)
        ctx.size, ctx.coef = size, 2.0 * alpha * beta / size
        return x * scale_pow

    @staticmethod
    def backward(ctx, dy: Tensor):  # noqa: ANN001, ANN205
        x, scale, scale_pow = ctx.saved_tensors
        n, c = x.shape[0], x.shape[1]
        dx = _lrn_across_backward_op(dy, x, scale.reshape(n, c, -1),
                                     scale_pow.reshape(n, c, -1), ctx.size, ctx.coef)
        return dx, None, None, None, None


def _check_size(local_size: int) -> None:
    if local_size < 1 or local_size % 2 != 1:
        raise ValueError("LRN only supports odd values for local_size")


def lrn_across_channels(x: Tensor, local_size: int = 5, alpha: float = 1.0, beta: float = 0.75,
                        k: float = 1.0) -> Tensor:
    """Caffe ACROSS_CHANNELS LRN on an (N, C, ...) tensor; alpha is divided by local_size."""
    _check_size(local_size)
    if x.dim() < 2:
        raise ValueError("LRN needs an (N, C, ...) input")
    if torch.jit.is_tracing() or torch.compiler.is_exporting():
        # portable graphs (TorchScript, torch.export, ONNX) get standard ops:
        # F.local_response_norm's formula is the same (avg of x² over the zero-padded
        # window · alpha + k)
        shape = x.shape
        x3 = x.reshape(shape[0], shape[1], -1)
        return F.local_response_norm(x3, local_size, alpha, beta, k).reshape(shape)
    args = (int(local_size), float(alpha), float(beta), float(k))
    if torch.compiler.is_compiling():
        if torch.is_grad_enabled() and x.requires_grad:
            return _FusibleLRN.apply(x, *args)
        return x * _neg_pow(_scale_fusible(x, args[0], args[1], args[3]), args[2])
    if torch.is_grad_enabled() and x.requires_grad:
        return _lrn_across_train_op(x, *args)[0]
    return _lrn_across_op(x, *args)


def lrn_within_channel(x: Tensor, local_size: int = 5, alpha: float = 1.0, beta: float = 0.75) -> Tensor:
    """Caffe WITHIN_CHANNEL LRN on (N, C, H, W): ``x * (1 + alpha * avg_{n x n}(x^2))^-beta``."""
    _check_size(local_size)
    if x.dim() != 4:
        raise ValueError("WITHIN_CHANNEL LRN needs a 4-D (N, C, H, W) input")
    pad = (local_size - 1) // 2
    pooled = F.avg_pool2d(x * x, local_size, 1, pad, ceil_mode=True, count_include_pad=True)
    return x * torch.pow(pooled * alpha + 1.0, -beta)


def lrn(x: Tensor, local_size: int = 5, alpha: float = 1.0, beta: float = 0.75, k: float = 1.0,
        norm_region: str = "ACROSS_CHANNELS") -> Tensor:
    """Caffe LRNLayer with LRNParameter semantics (defaults as in caffe.proto)."""
    if norm_region == "ACROSS_CHANNELS":
        return lrn_across_channels(x, local_size, alpha, beta, k)
    if norm_region == "WITHIN_CHANNEL":
        return lrn_within_channel(x, local_size, alpha, beta)
    raise ValueError(f"unknown norm_region {norm_region!r}")
