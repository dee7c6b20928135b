"""BatchNorm, MVN, Scale and Bias with Caffe's semantics."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ._common import canonical_axis

__all__ = ["batch_norm", "mvn", "caffe_scale", "caffe_bias", "scale_param_shape"]


def _bn_view(x: Tensor) -> tuple[Tensor, list[int]]:
    """(N, C, ...) with the statistics taken over every axis but 1; a 1-D blob has C = 1."""
    xv = x.reshape(-1, 1) if x.dim() == 1 else x
    return xv, [d for d in range(xv.dim()) if d != 1]


def batch_norm(x: Tensor, mean_blob: Tensor, var_blob: Tensor, factor_blob: Tensor,
               use_global_stats: bool, moving_average_fraction: float = 0.999, eps: float = 1e-5,
               update_stats: bool = True) -> Tensor:
    """Caffe BatchNormLayer (no affine part: Caffe puts that in a following Scale layer).

    Caffe keeps three blobs: ``mean*s``, ``var*s`` and the factor ``s``.  With global stats
    (the TEST default) it normalises with ``mean_blob/s`` and ``var_blob/s`` (``s == 0``
    gives 0).  Otherwise it uses the batch mean and the biased batch variance over N and
    the spatial dims and, when ``update_stats``, updates the blobs in place like Caffe:
    ``s = s*maf + 1``, ``mean = mean*maf + batch_mean``,
    ``var = var*maf + m/(m-1)*batch_var`` with ``m = count/C`` (factor 1 if ``m == 1``).
    ``eps`` is added to the variance before the square root.
    """
    xv, dims = _bn_view(x)
    shape = [1] * xv.dim()
    shape[1] = xv.shape[1]
    if use_global_stats:
        s = float(factor_blob.reshape(-1)[0])
        sf = 0.0 if s == 0 else 1.0 / s
        mean = (mean_blob.detach() * sf).reshape(shape)
        var = (var_blob.detach() * sf).reshape(shape)
        y = (xv - mean) / torch.sqrt(var + eps)
        return y.reshape(x.shape)
    mean = xv.mean(dims, keepdim=True)
    centred = xv - mean
    var = (centred * centred).mean(dims, keepdim=True)
    if update_stats:
        m = xv.numel() // xv.shape[1]
        corr = m / (m - 1) if m > 1 else 1.0
        with torch.no_grad():
            factor_blob.mul_(moving_average_fraction).add_(1.0)
            mean_blob.mul_(moving_average_fraction).add_(mean.detach().reshape(mean_blob.shape))
            var_blob.mul_(moving_average_fraction).add_(var.detach().reshape(var_blob.shape), alpha=corr)
    y = centred / torch.sqrt(var + eps)
    return y.reshape(x.shape)


class _MVN(torch.autograd.Function):
    """Forward ``(x - mean) / (std + eps)``; backward is Caffe's closed form, which divides
    by ``std + eps`` throughout (so a constant row gets ``(dy - mean(dy)) / eps``, no NaN)."""

    @staticmethod
    def forward(ctx, x2: Tensor, eps: float) -> Tensor:
        centred = x2 - x2.mean(1, keepdim=True)
        std = torch.sqrt((centred * centred).mean(1, keepdim=True)) + eps
        y = centred / std
        ctx.save_for_backward(y, std)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy: Tensor):
        y, std = ctx.saved_tensors
        inner = dy.mean(1, keepdim=True) + y * (y * dy).mean(1, keepdim=True)
        return (dy - inner) / std, None


def mvn(x: Tensor, normalize_variance: bool = True, across_channels: bool = False,
        eps: float = 1e-9) -> Tensor:
    """Caffe MVNLayer: per sample (``across_channels``) or per (sample, channel) mean
    subtraction and, optionally, division by ``std + eps`` (eps added after the sqrt)."""
    num = x.shape[0] if across_channels else x.shape[0] * (x.shape[1] if x.dim() > 1 else 1)
    x2 = x.reshape(num, -1)
    if normalize_variance:
        y = _MVN.apply(x2, float(eps))
    else:
        y = x2 - x2.mean(1, keepdim=True)
    return y.reshape(x.shape)


def scale_param_shape(bottom_shape: Sequence[int], axis: int = 1, num_axes: int = 1) -> tuple[int, ...]:
    """Shape of a learned Scale/Bias blob: ``bottom_shape[axis : axis+num_axes]``
    (``num_axes == -1``: to the end; ``0``: a scalar)."""
    axis = canonical_axis(axis, len(bottom_shape)) if len(bottom_shape) else 0
    if num_axes < -1:
        raise ValueError("num_axes must be non-negative or -1")
    end = len(bottom_shape) if num_axes == -1 else axis + num_axes
    if end > len(bottom_shape):
        raise ValueError("scale blob would extend past the bottom's axes")
    return tuple(int(d) for d in bottom_shape[axis:end])


def _broadcast(p: Tensor, x: Tensor, axis: int) -> Tensor:
    """View ``p`` (shape = x.shape[axis : axis+p.dim()]) so that it broadcasts against x."""
    if p.dim() == 0:
        return p
    axis = canonical_axis(axis, x.dim())
    if tuple(x.shape[axis: axis + p.dim()]) != tuple(p.shape):
        raise ValueError(f"parameter shape {tuple(p.shape)} does not match bottom shape "
                         f"{tuple(x.shape)} from axis {axis}")
    return p.reshape((1,) * axis + tuple(p.shape) + (1,) * (x.dim() - axis - p.dim()))


def caffe_scale(x: Tensor, scale: Tensor, bias: Tensor | None = None, axis: int = 1) -> Tensor:
    """ScaleLayer: ``x * scale (+ bias)`` with scale's shape matching x from ``axis``
    (a 0-D scale is a scalar, for which Caffe ignores ``axis``)."""
    y = x * _broadcast(scale, x, axis)
    if bias is not None:
        y = y + _broadcast(bias, x, axis)
    return y


def caffe_bias(x: Tensor, bias: Tensor, axis: int = 1) -> Tensor:
    """BiasLayer: ``x + bias`` broadcast like Scale."""
    return x + _broadcast(bias, x, axis)
