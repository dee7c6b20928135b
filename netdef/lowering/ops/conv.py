"""Convolution, deconvolution, Im2col and InnerProduct with Caffe's parameter semantics.

Caffe's 2-D conv is F.conv2d (weights (out, in/group, kh, kw), output rounds down);
what differs is the parameter surface: ``axis`` (every dim before the channel axis is
batch), N-D spatial dims, per-dim pad/stride/dilation lists that may hold one value
for all dims.  Deconvolution's weights are (in, out/group, kh, kw) and its output is
``s*(i-1) + d*(k-1) + 1 - 2p``, exactly F.conv_transpose with output_padding 0.
Im2col's rows are ordered (c, kh, kw), the layout F.unfold produces.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ._common import IntOrSeq, canonical_axis, expand
from .gemm import linear, linear_packed, pack_weight

__all__ = ["caffe_conv", "caffe_deconv", "caffe_im2col", "caffe_inner_product", "conv_output_size",
           "deconv_output_size", "linear", "linear_packed", "pack_weight"]

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_DECONV = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def conv_output_size(size: int, kernel: int, stride: int = 1, pad: int = 0, dilation: int = 1) -> int:
    """ConvolutionLayer::compute_output_shape (integer division: rounds down)."""
    return (size + 2 * pad - (dilation * (kernel - 1) + 1)) // stride + 1


def deconv_output_size(size: int, kernel: int, stride: int = 1, pad: int = 0, dilation: int = 1) -> int:
    """DeconvolutionLayer::compute_output_shape."""
    return stride * (size - 1) + dilation * (kernel - 1) + 1 - 2 * pad


def _to_batch(x: Tensor, axis: int, nsp: int) -> tuple[Tensor, tuple[int, ...]]:
    axis = canonical_axis(axis, x.dim())
    if x.dim() != axis + 1 + nsp:
        raise ValueError(f"input has {x.dim()} axes; channel axis {axis} + {nsp} spatial dims expected")
    lead = tuple(x.shape[:axis])
    return x.reshape((-1,) + tuple(x.shape[axis:])), lead


def _conv_like(table, x: Tensor, weight: Tensor, bias: Tensor | None, stride: IntOrSeq, pad: IntOrSeq,
               dilation: IntOrSeq, group: int, axis: int) -> Tensor:
    nsp = weight.dim() - 2
    if nsp not in table:
        raise NotImplementedError(f"{nsp} spatial dims: only 1-3 are supported")
    xb, lead = _to_batch(x, axis, nsp)
    s, p, d = expand(stride, nsp, "stride"), expand(pad, nsp, "pad"), expand(dilation, nsp, "dilation")
    y = table[nsp](xb, weight, bias, stride=s, padding=p, dilation=d, groups=group)
    return y.reshape(lead + tuple(y.shape[1:]))


def caffe_conv(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride: IntOrSeq = 1,
               pad: IntOrSeq = 0, dilation: IntOrSeq = 1, group: int = 1, axis: int = 1) -> Tensor:
    """ConvolutionLayer: weight (out, in/group, *kernel); dims before ``axis`` are batch."""
    return _conv_like(_CONV, x, weight, bias, stride, pad, dilation, group, axis)


def caffe_deconv(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride: IntOrSeq = 1,
                 pad: IntOrSeq = 0, dilation: IntOrSeq = 1, group: int = 1, axis: int = 1) -> Tensor:
    """DeconvolutionLayer: weight (in, out/group, *kernel), Caffe's transposed-conv size rule."""
    return _conv_like(_DECONV, x, weight, bias, stride, pad, dilation, group, axis)


def caffe_im2col(x: Tensor, kernel: IntOrSeq, stride: IntOrSeq = 1, pad: IntOrSeq = 0,
                 dilation: IntOrSeq = 1) -> Tensor:
    """Im2colLayer on (N, C, H, W): (N, C*kh*kw, H_out, W_out), rows ordered (c, kh, kw)."""
    if x.dim() != 4:
        raise NotImplementedError("only 2-D Im2col is supported")
    k, s = expand(kernel, 2, "kernel"), expand(stride, 2, "stride")
    p, d = expand(pad, 2, "pad"), expand(dilation, 2, "dilation")
    oh = conv_output_size(x.shape[2], k[0], s[0], p[0], d[0])
    ow = conv_output_size(x.shape[3], k[1], s[1], p[1], d[1])
    cols = F.unfold(x, k, dilation=d, padding=p, stride=s)
    return cols.reshape(x.shape[0], -1, oh, ow)


def caffe_inner_product(x: Tensor, weight: Tensor, bias: Tensor | None = None, axis: int = 1,
                        transpose: bool = False) -> Tensor:
    """InnerProductLayer: flattens dims from ``axis`` (C-order); weight (out, K), or (K, out)
    with ``transpose: true``; output shape ``x.shape[:axis] + (out,)``."""
    axis = canonical_axis(axis, x.dim())
    lead = tuple(x.shape[:axis])
    xf = x.reshape(lead + (-1,))
    b = None if bias is None else bias.reshape(-1)
    return linear(xf, weight.t() if transpose else weight, b)
