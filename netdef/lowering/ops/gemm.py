"""InnerProduct's GEMMs on the CPU through oneDNN instead of MKL.

Why: ``F.linear`` runs MKL's sgemm, which on this project's 2-core AMD EPYC (AVX-512)
streams a batch-10 fc6 weight (4096×9216) at 8.5 GB/s of its 43; oneDNN's matmul
(``torch.ops.mkldnn._linear_pointwise``, the dense-weight op inductor's CPU fusions
emit) reaches the bandwidth: fc6 forward 17 → 5.1 ms, the input gradient 18 → 5.2 ms,
the weight gradient 15 → 5.5 ms; forward+backward 2.1–3.1× for AlexNet/VGG's fc layers
at batches 10–256, 1.1–1.9× for LeNet's ip1 (``tools/bench/gemm.py``; one-row inputs
use it only for large weights, :func:`netdef.layers.families.common.onednn_gemm`).  The
backward is written out (``g·W``, ``gᵀ·x``, Σg: the formulas of ``F.linear``'s
backward) because the op has no autograd formula.

Elsewhere — CUDA, non-float32 or autocast (whose casting rules only ``F.linear``
follows), tiny weights (where oneDNN's ~10 µs call overhead loses), traced or exported
graphs (which keep one portable op), builds without oneDNN — this is ``F.linear``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from netdef.layers.families.common import onednn_gemm

__all__ = ["linear", "linear_packed", "mm", "mm_t", "onednn_linear_available", "pack_weight"]


def _probe() -> bool:
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        out = torch.ops.mkldnn._linear_pointwise(torch.ones(2, 3), torch.ones(4, 3), None,
                                                 "none", [], "")
        return bool(torch.equal(out, torch.full((2, 4), 3.0)))
    except (AttributeError, RuntimeError):
        return False


_ONEDNN = _probe()  # once, at import: a plain bool that compiled graphs can guard on


def onednn_linear_available() -> bool:
    """Whether this torch build has oneDNN's dense matmul op."""
    return _ONEDNN


# ``a · b_tᵀ (+ bias)`` by oneDNN as a custom op: eager calls pay one dispatch, and under
# ``torch.compile`` inductor keeps it as an extern kernel (its own lowering of
# ``F.linear`` is MKL's mm again) while fusing the element-wise work around it.
@torch.library.custom_op("netdef::mm_t", mutates_args=())
def mm_t(a: Tensor, b_t: Tensor, bias: Tensor | None = None) -> Tensor:
    """``a · b_tᵀ (+ bias)``; ``b_t`` may be a transposed view (oneDNN reads its strides)."""
    return torch.ops.mkldnn._linear_pointwise(a.contiguous(), b_t, bias, "none", [], "")


@mm_t.register_fake
def _mm_t_shape(a: Tensor, b_t: Tensor, bias: Tensor | None = None) -> Tensor:
    return a.new_empty(a.shape[0], b_t.shape[0])


@torch.library.custom_op("netdef::mm", mutates_args=())
def mm(a: Tensor, b: Tensor) -> Tensor:
    """``a · b`` by oneDNN, the backward's GEMMs.  ``b`` is made row-major and its
    transposed view taken inside the op: a compiled graph may hand it a column-major
    ``x`` (or a materialised ``xᵀ``), with which oneDNN ran fc6's weight gradient 2.4–4×
    slower; the copy of a (batch × K) activation is small."""
    return torch.ops.mkldnn._linear_pointwise(a.contiguous(), b.contiguous().t(), None,
                                              "none", [], "")


@mm.register_fake
def _mm_shape(a: Tensor, b: Tensor) -> Tensor:
    return a.new_empty(a.shape[0], b.shape[1])


def _mm_t_save(ctx, inputs, output) -> None:  # noqa: ANN001
    a, b_t, *rest = inputs
    ctx.save_for_backward(a, b_t)
    ctx.has_bias = bool(rest) and rest[0] is not None


def _mm_t_grad(ctx, grad: Tensor):  # noqa: ANN001, ANN202
    """``F.linear``'s backward formulas: ``g·W``, ``gᵀ·x``, Σg (each a oneDNN GEMM)."""
    a, b_t = ctx.saved_tensors
    need_a, need_b, *need_bias = ctx.needs_input_grad
    grad = grad.contiguous()
    ga = mm(grad, b_t) if need_a else None  # g·W
    gb = mm(grad.t(), a) if need_b else None  # gᵀ·x
    gbias = grad.sum(0) if (any(need_bias) and ctx.has_bias) else None
    return ga, gb, gbias


mm_t.register_autograd(_mm_t_grad, setup_context=_mm_t_save)


def _fast(x: Tensor, weight: Tensor, bias: Tensor | None) -> bool:
    if torch.jit.is_tracing() or torch.compiler.is_exporting():
        return False  # portable graphs keep F.linear (and a traced numel() is a tensor)
    return (_ONEDNN and x.device.type == "cpu" and x.dim() == 2 and weight.dim() == 2
            and x.dtype == weight.dtype == torch.float32
            and (bias is None or bias.dtype == torch.float32)
            and onednn_gemm(x.shape[0], weight.shape[0] * weight.shape[1])
            and not torch.is_autocast_enabled("cpu"))


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear(x, weight, bias)`` for a 2-D ``x``: same values up to summation order,
    a contiguous (rows, out) result; oneDNN on the CPU where that is faster (module doc)."""
    return mm_t(x, weight, bias) if _fast(x, weight, bias) else F.linear(x, weight, bias)


# Frozen inference: oneDNN's blocked copy of the weight (``_reorder_linear_weight``, the
# packing inductor's own oneDNN linear fusion uses; for these weights inductor's frozen
# F.linear takes MKL's packed GEMM, 2.7x slower than oneDNN on the project's EPYC).
# Measured (batch 10, 2 cores, medians of 15): fc6 4096x9216 10.4 -> 7.4 ms, fc7 4.7 ->
# 3.4 ms, VGG's fc6 4096x25088 27.4 -> 19.1 ms.
def pack_weight(weight: Tensor, rows: int) -> Tensor | None:
    """The blocked (out, in) weight for :func:`linear_packed` at ``rows`` rows, or None
    where :func:`linear` would not take oneDNN's GEMM."""
    if not (_ONEDNN and weight.device.type == "cpu" and weight.dim() == 2
            and weight.dtype == torch.float32 and rows > 0
            and onednn_gemm(rows, weight.shape[0] * weight.shape[1])):
        return None
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), rows)


def linear_packed(x: Tensor, packed: Tensor, bias: Tensor | None = None) -> Tensor:
    """``x · Wᵀ (+ bias)`` with :func:`pack_weight`'s copy of ``W`` (inference only)."""
    return torch.ops.mkldnn._linear_pointwise(x.contiguous(), packed, bias, "none", [], "")
