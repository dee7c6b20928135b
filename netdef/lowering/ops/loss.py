"""Caffe's loss layers and Accuracy.

Normalization (LossParameter): FULL = outer*inner, VALID = number of non-ignored
labels, BATCH_SIZE = outer (the size of the axes before the class axis), NONE = 1;
the divisor is then ``max(1, normalizer)``.  Legacy ``normalize: true/false`` means
VALID/BATCH_SIZE.  Defaults: VALID for SoftmaxWithLoss and InfogainLoss, BATCH_SIZE for
SigmoidCrossEntropyLoss.  Labels are cast to int by truncation before comparing with
``ignore_label``.  Losses return a 0-D tensor; ``loss_weight`` is the caller's.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ._common import FLT_MIN, LOG_THRESHOLD, canonical_axis

__all__ = ["resolve_normalization", "loss_normalizer", "softmax_with_loss",
           "sigmoid_cross_entropy_loss", "euclidean_loss", "hinge_loss", "infogain_loss",
           "multinomial_logistic_loss", "contrastive_loss", "accuracy"]

_MODES = ("FULL", "VALID", "BATCH_SIZE", "NONE")


def resolve_normalization(normalization: str | None, normalize: bool | None,
                          default: str = "VALID") -> str:
    """Caffe's rule: an explicit ``normalization`` wins, else legacy ``normalize``
    (true: VALID, false: BATCH_SIZE), else the layer's default."""
    if normalization is not None:
        mode = normalization.upper()
    elif normalize is not None:
        mode = "VALID" if normalize else "BATCH_SIZE"
    else:
        mode = default
    if mode not in _MODES:
        raise ValueError(f"unknown normalization {normalization!r}")
    return mode


def loss_normalizer(mode: str, outer: int, inner: int, valid_count: int | None) -> float:
    """LossLayer::get_normalizer (``valid_count`` None means "not counted": all)."""
    if mode == "FULL":
        norm = outer * inner
    elif mode == "VALID":
        norm = outer * inner if valid_count is None else valid_count
    elif mode == "BATCH_SIZE":
        norm = outer
    elif mode == "NONE":
        norm = 1
    else:
        raise ValueError(f"unknown normalization {mode!r}")
    return float(max(1, norm))


def _class_last(x: Tensor, label: Tensor, axis: int):
    """(outer*inner, C) scores and (outer*inner,) int labels, plus outer and inner."""
    axis = canonical_axis(axis, x.dim())
    outer = math.prod(x.shape[:axis])
    inner = math.prod(x.shape[axis + 1:])
    if label.numel() != outer * inner:
        raise ValueError(f"need {outer * inner} labels (outer*inner), got {label.numel()}")
    scores = x.movedim(axis, -1).reshape(outer * inner, x.shape[axis])
    lab = label.detach().reshape(-1).to(torch.long)  # static_cast<int>: truncation
    return scores, lab, outer, inner


def _valid(lab: Tensor, ignore_label: int | None, num_classes: int) -> tuple[Tensor, Tensor]:
    valid = torch.ones_like(lab, dtype=torch.bool) if ignore_label is None else lab != ignore_label
    safe = torch.where(valid, lab, torch.zeros_like(lab))
    if bool(((safe < 0) | (safe >= num_classes)).any()):
        raise ValueError("label out of range [0, num_classes)")
    return valid, safe


def _caffe_log(lp: Tensor, floor: float) -> Tensor:
    """``log(max(p, floor))`` in value, but the gradient of ``log p`` (Caffe's backward
    ignores its own clamp)."""
    return lp + (lp.clamp_min(math.log(floor)) - lp).detach()


def softmax_with_loss(x: Tensor, label: Tensor, axis: int = 1, ignore_label: int | None = None,
                      normalization: str = "VALID") -> tuple[Tensor, Tensor]:
    """SoftmaxWithLossLayer: ``-sum log(max(prob[label], FLT_MIN)) / normalizer`` over
    non-ignored positions; gradient ``(prob - onehot) / normalizer``.  Returns
    ``(loss, prob)``; prob (Caffe's optional second top) carries no gradient."""
    scores, lab, outer, inner = _class_last(x, label, axis)
    valid, safe = _valid(lab, ignore_label, scores.shape[1])
    lp = torch.log_softmax(scores, 1).gather(1, safe[:, None]).squeeze(1)
    nll = -_caffe_log(lp, FLT_MIN) * valid.to(x.dtype)
    count = int(valid.sum()) if ignore_label is not None else None
    loss = nll.sum() / loss_normalizer(normalization, outer, inner, count)
    return loss, torch.softmax(x.detach(), canonical_axis(axis, x.dim()))


def sigmoid_cross_entropy_loss(x: Tensor, target: Tensor, ignore_label: int | None = None,
                               normalization: str = "BATCH_SIZE") -> Tensor:
    """SigmoidCrossEntropyLossLayer, Caffe's overflow-safe form
    ``-(x*(t - [x>=0]) - log(1 + exp(x - 2x[x>=0])))``; outer = N, inner = count/N;
    gradient ``(sigmoid(x) - t) / normalizer`` (0 where ignored)."""
    if x.numel() != target.numel():
        raise ValueError("SigmoidCrossEntropyLoss inputs must have the same count")
    t = target.detach().reshape(x.shape).to(x.dtype)
    pos = (x >= 0).to(x.dtype).detach()
    per = -(x * (t - pos) - torch.log(1.0 + torch.exp(x - 2 * x * pos)))
    count = None
    if ignore_label is not None:
        valid = target.detach().reshape(x.shape).to(torch.long) != ignore_label
        per = per * valid.to(x.dtype)
        count = int(valid.sum())
    outer = x.shape[0] if x.dim() else 1
    inner = x.numel() // max(outer, 1)
    return per.sum() / loss_normalizer(normalization, outer, inner, count)


def euclidean_loss(a: Tensor, b: Tensor) -> Tensor:
    """EuclideanLossLayer: ``sum((a - b)^2) / N / 2`` with N = a.shape[0]."""
    if a.numel() != b.numel():
        raise ValueError("EuclideanLoss inputs must have the same count")
    d = a - b.reshape(a.shape)
    return (d * d).sum() / a.shape[0] / 2.0


def hinge_loss(x: Tensor, label: Tensor, norm: str = "L1") -> Tensor:
    """HingeLossLayer: ``t = +1`` at the label, -1 elsewhere; L1: ``sum max(0, 1 - t*x) / N``,
    L2: ``sum max(0, 1 - t*x)^2 / N``."""
    n = x.shape[0]
    x2 = x.reshape(n, -1)
    lab = label.detach().reshape(-1).to(torch.long)
    sign = torch.full_like(x2, -1.0).scatter_(1, lab[:, None], 1.0)
    margin = torch.relu(1.0 - sign * x2)
    if norm.upper() == "L1":
        return margin.sum() / n
    if norm.upper() == "L2":
        return (margin * margin).sum() / n
    raise ValueError(f"unknown hinge norm {norm!r}")


def infogain_loss(x: Tensor, label: Tensor, infogain: Tensor, axis: int = 1,
                  ignore_label: int | None = None, normalization: str = "VALID") -> tuple[Tensor, Tensor]:
    """InfogainLossLayer (current BVLC form, softmax inside):
    ``-sum_l H[label, l] * log(max(prob_l, 1e-20)) / normalizer``; gradient
    ``(prob * rowsum(H)[label] - H[label]) / normalizer``.  Returns ``(loss, prob)``."""
    scores, lab, outer, inner = _class_last(x, label, axis)
    nc = scores.shape[1]
    h = infogain.detach().reshape(nc, nc).to(x.dtype)
    valid, safe = _valid(lab, ignore_label, nc)
    lp = _caffe_log(torch.log_softmax(scores, 1), LOG_THRESHOLD)
    per = -(h[safe] * lp).sum(1) * valid.to(x.dtype)
    count = int(valid.sum())
    loss = per.sum() / loss_normalizer(normalization, outer, inner, count)
    return loss, torch.softmax(x.detach(), canonical_axis(axis, x.dim()))


def multinomial_logistic_loss(prob: Tensor, label: Tensor) -> Tensor:
    """MultinomialLogisticLossLayer on probabilities: ``-sum log(max(p[label], 1e-20)) / N``;
    gradient ``-1 / (N * max(p, 1e-20))`` at the label even where clamped, like Caffe."""
    n = prob.shape[0]
    p = prob.reshape(n, -1)
    lab = label.detach().reshape(-1).to(torch.long)
    sel = p.gather(1, lab[:, None]).squeeze(1)
    clamped = sel.clamp_min(LOG_THRESHOLD)
    pc = sel + (clamped - sel).detach()  # value of the clamp, gradient of the identity
    return -torch.log(pc).sum() / n


class _Contrastive(torch.autograd.Function):
    """Caffe's ContrastiveLoss backward, including its ``dist + 1e-4`` denominator."""

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, sim: Tensor, margin: float, legacy: bool) -> Tensor:
        diff = a - b
        dist_sq = (diff * diff).sum(1)
        if legacy:
            dissim = torch.clamp(margin - dist_sq, min=0.0)
        else:
            dissim = torch.clamp(margin - torch.sqrt(dist_sq), min=0.0) ** 2
        per = torch.where(sim, dist_sq, dissim)
        ctx.save_for_backward(diff, dist_sq, sim)
        ctx.margin, ctx.legacy = margin, legacy
        return per.sum() / a.shape[0] / 2.0

    @staticmethod
    @once_differentiable
    def backward(ctx, g: Tensor):
        diff, dist_sq, sim = ctx.saved_tensors
        alpha = g / diff.shape[0]
        if ctx.legacy:
            mdist = ctx.margin - dist_sq
            beta = torch.full_like(dist_sq, -1.0) * alpha
        else:
            dist = torch.sqrt(dist_sq)
            mdist = ctx.margin - dist
            beta = -alpha * mdist / (dist + 1e-4)
        dissim = torch.where(mdist > 0, beta, torch.zeros_like(beta))
        coef = torch.where(sim, alpha.expand_as(dist_sq), dissim)
        da = coef[:, None] * diff
        return da, -da, None, None, None


def contrastive_loss(a: Tensor, b: Tensor, similar: Tensor, margin: float = 1.0,
                     legacy_version: bool = False) -> Tensor:
    """ContrastiveLossLayer: similar pairs add ``d^2``, dissimilar ``max(margin - d, 0)^2``
    (legacy: ``max(margin - d^2, 0)``); total ``/ N / 2``.  ``similar`` is truncated to int."""
    n = a.shape[0]
    sim = similar.detach().reshape(-1).to(torch.long) != 0
    a2, b2 = a.reshape(n, -1), b.reshape(n, -1)
    return _Contrastive.apply(a2, b2, sim, float(margin), bool(legacy_version))


def accuracy(x: Tensor, label: Tensor, top_k: int = 1, axis: int = 1,
             ignore_label: int | None = None) -> tuple[Tensor, Tensor]:
    """AccuracyLayer: a position is correct when fewer than ``top_k`` classes score
    ``>=`` the true class's score other than itself (ties count against it).
    Returns ``(accuracy, per_class)`` (per-class: correct / seen, 0 for unseen classes)."""
    scores, lab, _, _ = _class_last(x.detach(), label, axis)
    nc = scores.shape[1]
    valid, safe = _valid(lab, ignore_label, nc)
    true = scores.gather(1, safe[:, None])
    better = (scores >= true).sum(1) - 1
    correct = (better < top_k) & valid
    n_valid = int(valid.sum())
    acc = correct.sum().to(x.dtype) / n_valid if n_valid else x.new_zeros(())
    seen = torch.bincount(safe[valid], minlength=nc).to(x.dtype)
    hit = torch.bincount(safe[correct], minlength=nc).to(x.dtype)
    per_class = torch.where(seen > 0, hit / seen.clamp_min(1), torch.zeros_like(seen))
    return acc.reshape(()), per_class
