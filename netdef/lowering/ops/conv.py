"""Convolution, deconvolution, Im2col and InnerProduct with Caffe's parameter semantics.

Caffe's 2-D conv is F.conv2d (weights (out, in/group, kh, kw), output rounds down);
what differs is the parameter surface: ``axis`` (every dim before the channel axis is
batch), N-D spatial dims, per-dim pad/stride/dilation lists that may hold one value
for all dims.  Deconvolution's weights are (in, out/group, kh, kw) and its output is
``s*(i-1) + d*(k-1) + 1 - 2p``, exactly F.conv_transpose with output_padding 0.
Im2col's rows are ordered (c, kh, kw), the layout F.unfold produces.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from ._common import IntOrSeq, canonical_axis, expand

__all__ = ["caffe_conv", "caffe_deconv", "caffe_im2col", "caffe_inner_product", "conv_output_size",
           "deconv_output_size", "linear"]

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


class _WeightStreamingLinear(torch.autograd.Function):
    """``W·xᵀ + b`` (the transposed output; :func:`linear` takes the view).

    A custom Function because autograd's own backward of that form computes the input
    gradient as ``Wᵀ·gᵀ`` with a transposed weight, which MKL runs 15× slower; here the
    gradients take the forms of ``F.linear``'s backward (``g·W``, ``gᵀ·x``, Σg).  The
    output is returned untransposed so that an in-place layer may write into its view.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:  # noqa: ANN001
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _weight_streaming_t(x, weight, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_t: Tensor):  # noqa: ANN001, ANN205
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad
        gx = torch.mm(grad_t.t(), weight) if need_x else None
        gw = torch.mm(grad_t, x) if need_w else None
        gb = grad_t.sum(1) if (need_b and ctx.has_bias) else None
        return gx, gw, gb


def _weight_streaming_t(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    xt = x.t()
    return torch.mm(weight, xt) if bias is None else torch.addmm(bias.unsqueeze(1), weight, xt)


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear`` for a 2-D ``x``, faster on the CPU when the batch is small.

    With few rows (a batch of 10 against AlexNet's 4096×9216 fc6) the product is bound by
    reading the weight; MKL streams it twice as fast when the weight is the left operand
    (``W·xᵀ``, measured 19 ms vs 35 ms for ``F.linear`` on fc6 here).  The result is the
    transposed view of that product: same values up to summation order (float rounding),
    same shape, column-major strides, which the next element-wise and fc layers read
    as fast.  Elsewhere (CUDA, large batches, 1-row inputs) and inside traced or compiled
    graphs (export, TorchScript, inductor, which choose their own GEMM) this is
    ``F.linear``.
    """
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return F.linear(x, weight, bias)  # graphs keep one op, batch-size independent
    rows = x.shape[0] if x.dim() == 2 else 0
    if x.device.type != "cpu" or not 1 < rows < weight.shape[0] or weight.dim() != 2:
        return F.linear(x, weight, bias)
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                    or (bias is not None and bias.requires_grad)):
        return _WeightStreamingLinear.apply(x, weight, bias).t()
    return _weight_streaming_t(x, weight, bias).t()


def caffe_inner_product(x: Tensor, weight: Tensor, bias: Tensor | None = None, axis: int = 1,
                        transpose: bool = False) -> Tensor:
    """InnerProductLayer: flattens dims from ``axis`` (C-order); weight (out, K), or (K, out)
    with ``transpose: true``; output shape ``x.shape[:axis] + (out,)``."""
    axis = canonical_axis(axis, x.dim())
    lead = tuple(x.shape[:axis])
    xf = x.reshape(lead + (-1,))
    b = None if bias is None else bias.reshape(-1)
    if transpose:
        y = torch.matmul(xf, weight)
        return y if b is None else y + b
    return linear(xf, weight, b)
