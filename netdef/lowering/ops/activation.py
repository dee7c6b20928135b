"""Caffe's element-wise ("neuron") layers and Dropout.

Where Caffe's closed-form backward is the exact derivative, autograd reproduces it; the
docstrings note the few places where a formula was chosen to keep Caffe's gradient at
a kink (ReLU/PReLU at 0, Clip at its bounds, BNLL at 0, Power with a constant output).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["relu", "caffe_relu", "caffe_prelu", "caffe_elu", "caffe_power", "caffe_exp",
           "caffe_log", "caffe_bnll", "caffe_threshold", "caffe_swish", "caffe_clip",
           "caffe_absval", "caffe_sigmoid", "caffe_tanh", "caffe_dropout"]


# ReLU's backward as an opaque op for training under torch.compile.  Inductor's
# partitioner otherwise saves a bool mask (y <= 0) for the backward where the relu'd
# blob is not itself saved (the branches of GoogLeNet's concats), and its CPU kernels
# store that mask ~20x slower than the ReLU itself (10x480x28x28, 2 cores: 18.9 ms
# against 0.8 ms).  The forward stays plain (inductor fuses it into the concat or the
# next LRN); the backward reads the top, as Caffe's does (top > 0 iff bottom > 0).
@torch.library.custom_op("netdef::relu_backward", mutates_args=())
def _relu_backward_op(dy: Tensor, y: Tensor) -> Tensor:
    return torch.ops.aten.threshold_backward(dy, y, 0.0)


@_relu_backward_op.register_fake
def _(dy: Tensor, y: Tensor) -> Tensor:
    return torch.empty_like(y)


class _ReluKeepTop(torch.autograd.Function):
    """ReLU for inductor to fuse, keeping its top for the opaque backward."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # noqa: ANN001
        y = torch.relu(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, dy: Tensor) -> Tensor:  # noqa: ANN001
        y, = ctx.saved_tensors
        return _relu_backward_op(dy, y)


def relu(x: Tensor, inplace: bool = False) -> Tensor:
    """``max(x, 0)``: in place when asked (Caffe's in-place ReLU); under ``torch.compile``
    out of place (inductor fuses it), with :class:`_ReluKeepTop` when a gradient is kept."""
    if torch.compiler.is_compiling():
        if torch.is_grad_enabled() and x.requires_grad and not torch.compiler.is_exporting():
            return _ReluKeepTop.apply(x)
        return torch.relu(x)
    return torch.relu_(x) if inplace else torch.relu(x)


def caffe_relu(x: Tensor, negative_slope: float = 0.0) -> Tensor:
    """ReLU / leaky ReLU: ``max(x,0) + ns*min(x,0)``; gradient at 0 is ``ns`` as in Caffe."""
    if negative_slope == 0.0:
        return relu(x)
    return torch.where(x > 0, x, x * negative_slope)


def caffe_prelu(x: Tensor, slope: Tensor, channel_shared: bool = False) -> Tensor:
    """PReLU: per-channel (axis 1) or one shared slope; ``x <= 0`` takes the slope branch."""
    if x.dim() < 2:
        raise ValueError("PReLU needs an input with at least 2 axes")
    if channel_shared:
        a = slope.reshape(())
    else:
        if slope.numel() != x.shape[1]:
            raise ValueError("PReLU slope must have one value per channel")
        a = slope.reshape((1, -1) + (1,) * (x.dim() - 2))
    return torch.where(x > 0, x, x * a)


def caffe_elu(x: Tensor, alpha: float = 1.0) -> Tensor:
    """ELU: ``x`` for x > 0 else ``alpha*(exp(x)-1)`` (gradient ``y + alpha`` there)."""
    return F.elu(x, alpha)


def _constant_like(x: Tensor, value: float) -> Tensor:
    """A constant output that still has a (zero) gradient path to ``x``, as Caffe's diff is 0."""
    return torch.where(torch.ones_like(x, dtype=torch.bool), torch.full_like(x, value), x)


def caffe_power(x: Tensor, power: float = 1.0, scale: float = 1.0, shift: float = 0.0) -> Tensor:
    """Power: ``(shift + scale*x)^power``; with ``power == 0`` or ``scale == 0`` the output is
    the constant ``shift^power`` (1 for power 0) with zero gradient, as Caffe special-cases."""
    if power == 0.0:
        return _constant_like(x, 1.0)
    if scale == 0.0:
        return _constant_like(x, float(torch.pow(torch.tensor(shift, dtype=torch.float64), power)))
    base = x if scale == 1.0 else x * scale
    if shift != 0.0:
        base = base + shift
    if power == 1.0:
        return base
    return torch.pow(base, power)


def caffe_exp(x: Tensor, base: float = -1.0, scale: float = 1.0, shift: float = 0.0) -> Tensor:
    """Exp: ``base^(shift + scale*x)``, ``base == -1`` meaning e; computed like Caffe as
    ``outer * exp(inner * x)`` with ``inner = ln(base)*scale``, ``outer = base^shift``."""
    if base != -1.0 and base <= 0:
        raise ValueError("base must be strictly positive (or -1 for e)")
    log_base = 1.0 if base == -1.0 else math.log(base)
    inner = log_base * scale
    outer = 1.0 if shift == 0.0 else (math.exp(shift) if base == -1.0 else math.pow(base, shift))
    y = torch.exp(x if inner == 1.0 else x * inner)
    return y if outer == 1.0 else y * outer


def caffe_log(x: Tensor, base: float = -1.0, scale: float = 1.0, shift: float = 0.0) -> Tensor:
    """Log: ``log_base(shift + scale*x)``, ``base == -1`` meaning e."""
    if base != -1.0 and base <= 0:
        raise ValueError("base must be strictly positive (or -1 for e)")
    base_scale = 1.0 if base == -1.0 else 1.0 / math.log(base)
    t = x if scale == 1.0 else x * scale
    if shift != 0.0:
        t = t + shift
    y = torch.log(t)
    return y if base_scale == 1.0 else y * base_scale


def caffe_bnll(x: Tensor) -> Tensor:
    """BNLL: ``log(1 + exp(x))`` in Caffe's overflow-safe form; gradient sigmoid(x) (0.5 at 0)."""
    return F.softplus(x)


def caffe_threshold(x: Tensor, threshold: float = 0.0) -> Tensor:
    """Threshold: 1 where ``x > threshold`` else 0; Caffe has no backward for it."""
    return (x.detach() > threshold).to(x.dtype)


def caffe_swish(x: Tensor, beta: float = 1.0) -> Tensor:
    """Swish: ``x * sigmoid(beta*x)``."""
    return x * torch.sigmoid(x * beta if beta != 1.0 else x)


def caffe_clip(x: Tensor, min: float, max: float) -> Tensor:  # noqa: A002 - Caffe's names
    """Clip to ``[min, max]``; gradient passes where ``min <= x <= max`` (bounds included)."""
    return torch.clamp(x, min, max)


def caffe_absval(x: Tensor) -> Tensor:
    """AbsVal: ``|x|``, gradient ``sign(x)`` (0 at 0)."""
    return torch.abs(x)


def caffe_sigmoid(x: Tensor) -> Tensor:
    """Sigmoid (Caffe evaluates ``0.5*tanh(0.5x) + 0.5``; equal to float rounding)."""
    return torch.sigmoid(x)


def caffe_tanh(x: Tensor) -> Tensor:
    """TanH."""
    return torch.tanh(x)


def caffe_dropout(x: Tensor, dropout_ratio: float = 0.5, training: bool = False,
                  generator: torch.Generator | None = None) -> Tensor:
    """Dropout: TRAIN keeps each unit with probability ``1 - ratio`` and scales kept units by
    ``1/(1 - ratio)``; TEST is the identity (no scaling).

    Without a ``generator`` this is ``F.dropout`` (one fused Bernoulli draw; it computes
    ``x * (mask / keep)``, equal to Caffe's ``x * mask * scale`` for a 0/1 mask); with one,
    the mask comes from ``generator`` (``F.dropout`` takes none)."""
    if not training:
        return x
    if not 0.0 <= dropout_ratio < 1.0:
        raise ValueError("dropout_ratio must be in [0, 1)")
    if generator is None:
        return F.dropout(x, dropout_ratio, training=True)
    keep = 1.0 - dropout_ratio
    mask = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device) < keep
    return x * mask.to(x.dtype) * (1.0 / keep)
