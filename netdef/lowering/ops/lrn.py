"""Caffe LRN: ACROSS_CHANNELS (fast custom autograd) and WITHIN_CHANNEL.

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
from torch.autograd.function import once_differentiable

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


class _LRNAcross(torch.autograd.Function):
    """(N, C, M) in, same out.  Large temporaries are few and reused in place: each fresh
    46 MB buffer costs page faults that rival the arithmetic."""

    @staticmethod
    def forward(ctx, x: Tensor, size: int, alpha: float, beta: float, k: float) -> Tensor:
        scale = _scale(x, size, alpha, k)
        ctx.size, ctx.coef = size, 2.0 * alpha * beta / size
        scale_pow = _neg_pow_(scale.clone(), beta)
        ctx.save_for_backward(x, scale, scale_pow)
        return x * scale_pow

    @staticmethod
    @once_differentiable
    def backward(ctx, dy: Tensor):
        x, scale, scale_pow = ctx.saved_tensors
        ratio = dy * x
        ratio.mul_(scale_pow).div_(scale)  # dy * top / scale
        acc = channel_window_sum(ratio, ctx.size)  # odd window: its transpose is itself
        del ratio
        dx = acc.mul_(x).mul_(-ctx.coef).addcmul_(dy, scale_pow)
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
    shape = x.shape
    x3 = x.reshape(shape[0], shape[1], -1)
    if torch.compiler.is_compiling():
        # Under inductor the in-place form below gets fused into the following max pool,
        # recomputing the window sum per pooling tap (measured: AlexNet's two norm+pool
        # kernels 330 ms vs 31 ms for all of the plain net's); F.local_response_norm's
        # formula (the same: avg of x² over the zero-padded window · alpha + k) compiles well.
        return F.local_response_norm(x3, local_size, alpha, beta, k).reshape(shape)
    if torch.is_grad_enabled() and x.requires_grad:
        y = _LRNAcross.apply(x3, local_size, float(alpha), float(beta), float(k))
    else:  # inference: no saved tensors, the scale buffer becomes the output
        y = _neg_pow_(_scale(x3, local_size, float(alpha), float(k)), float(beta)).mul_(x3)
    return y.reshape(shape)


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
