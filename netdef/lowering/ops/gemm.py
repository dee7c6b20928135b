"""InnerProduct's GEMMs on the CPU through oneDNN instead of MKL.

Why: ``F.linear`` runs MKL's sgemm, which on this project's 2-core AMD EPYC (AVX-512)
streams a batch-10 fc6 weight (4096×9216) at 8.5 GB/s of its 43; oneDNN's matmul
(``torch.ops.mkldnn._linear_pointwise``, the dense-weight op inductor's CPU fusions
emit) reaches the bandwidth: fc6 forward 17 → 5.1 ms, the input gradient 18 → 5.2 ms,
the weight gradient 15 → 5.5 ms, and 2–3× at batches 1–256 and on LeNet-sized layers
(``tools/bench/gemm.py``).  The backward is written out (``g·W``, ``gᵀ·x``, Σg: the
formulas of ``F.linear``'s backward) because the op has no autograd formula.

Elsewhere — CUDA, non-float32 or autocast (whose casting rules only ``F.linear``
follows), tiny weights (where oneDNN's ~10 µs call overhead loses), traced or compiled
graphs (which keep one portable op), builds without oneDNN — this is ``F.linear``.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from netdef.layers.families.common import ONEDNN_GEMM_MIN_WEIGHT as MIN_WEIGHT

__all__ = ["linear", "onednn_linear_available"]


@functools.cache
def onednn_linear_available() -> bool:
    """Whether this torch build has oneDNN's dense matmul op."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        op = torch.ops.mkldnn._linear_pointwise
        x = torch.ones(2, 3)
        return bool(torch.equal(op(x, torch.ones(4, 3), None, "none", [], ""),
                                torch.full((2, 4), 3.0)))
    except (AttributeError, RuntimeError):
        return False


def _mm_t(a: Tensor, b_t: Tensor, bias: Tensor | None = None) -> Tensor:
    """``a · b_tᵀ (+ bias)`` by oneDNN; ``b_t`` may be a transposed view (no copy)."""
    return torch.ops.mkldnn._linear_pointwise(a, b_t, bias, "none", [], "")


class _OneDNNLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:  # noqa: ANN001
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _mm_t(x, weight, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):  # noqa: ANN001, ANN205
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad
        grad = grad.contiguous()
        gx = _mm_t(grad, weight.t()) if need_x else None
        gw = _mm_t(grad.t(), x.t()) if need_w else None
        gb = grad.sum(0) if (need_b and ctx.has_bias) else None
        return gx, gw, gb


def _fast(x: Tensor, weight: Tensor, bias: Tensor | None) -> bool:
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return False  # first: a traced numel() or shape is a tensor, not a bool
    return (x.device.type == "cpu" and x.dim() == 2 and weight.dim() == 2
            and x.dtype == weight.dtype == torch.float32
            and (bias is None or bias.dtype == torch.float32)
            and weight.numel() >= MIN_WEIGHT and x.shape[0] > 0
            and not torch.is_autocast_enabled("cpu") and onednn_linear_available())


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear(x, weight, bias)`` for a 2-D ``x``: same values up to summation order,
    a contiguous (rows, out) result; oneDNN on the CPU where that is faster (module doc)."""
    if not _fast(x, weight, bias):
        return F.linear(x, weight, bias)
    x = x.contiguous()
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                    or (bias is not None and bias.requires_grad)):
        return _OneDNNLinear.apply(x, weight, bias)
    return _mm_t(x, weight, bias)
