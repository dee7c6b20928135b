"""Caffe's six solvers (SGD, Nesterov, AdaGrad, RMSProp, AdaDelta, Adam) on torch tensors.

One :meth:`CaffeSolver.step` is Caffe's ``SGDSolver::ApplyUpdate`` after the rate is
known: ``ClipGradients`` (global L2 norm of the *summed* diffs) → ``Normalize``
(÷ iter_size) → ``Regularize`` (L2 ``g += λw`` / L1 ``g += λ·sign(w)``, λ =
weight_decay·decay_mult, skipped when 0) → ``ComputeUpdateValue`` → ``w -= update``.
Each BLAS call of Caffe's CPU code becomes one ``torch._foreach_*`` call over the
parameter list (split only by distinct lr_mult/decay_mult values, because foreach ops
take one ``alpha``), with float32 scalars rounded as Caffe's ``Dtype`` expressions
round them.  The element arithmetic then matches Caffe's to the last bit or within an
ulp: ``caffe_cpu_axpby`` (``y = a·x + b·y``) is ``y *= b; y.add_(x, alpha=a)``, i.e.
``fma(a, x, b·y)``, which is what OpenBLAS computes with FMA, and
``powx(x, 0.5)``/``powx(x, 2)`` are ``sqrt``/``x·x``.

Why not ``torch.optim.SGD``: it keeps ``buf = μ·buf + g`` and steps ``w -= lr·buf``,
so the learning rate sits *outside* the momentum history.  Caffe stores
``h = μ·h + lr·g`` (lr *inside*), so the two agree only while lr is constant; after a
``step``/``multistep`` drop torch rescales the whole accumulated velocity at once
while Caffe decays it gradually, and a Caffe solverstate's history is not a valid
torch momentum buffer.  torch.optim also has no per-parameter lr_mult/decay_mult,
no L1 decay, no Caffe-style clipping before iter_size normalization, and different
Nesterov/AdaDelta/Adam formulas (Caffe's Adam folds the bias correction into the
rate and adds ε to ``sqrt(v)`` uncorrected).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

from netdef.errors import SolverError
from netdef.training.lr_policy import f32

__all__ = ["SOLVER_TYPES", "SolverConfig", "ParamSpec", "ClipInfo", "CaffeSolver"]

log = logging.getLogger(__name__)

SOLVER_TYPES = ("SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam")
_TWO_HISTORIES = ("AdaDelta", "Adam")


@dataclass(frozen=True)
class SolverConfig:
    """The SolverParameter fields an update needs, float fields rounded to float32."""

    type: str = "SGD"
    momentum: float = 0.0
    momentum2: float = 0.999
    delta: float = 1e-8
    rms_decay: float = 0.99
    weight_decay: float = 0.0
    regularization_type: str = "L2"
    clip_gradients: float = -1.0
    iter_size: int = 1

    @classmethod
    def of(cls, source: Any = None) -> "SolverConfig":
        """From a SolverParameter, a mapping, a SolverConfig or None (Caffe defaults).

        A legacy ``solver_type`` enum is not read here: upgrade the SolverParameter
        first (:mod:`netdef.ir.upgrade`), as Caffe does before building a solver.
        """
        if isinstance(source, SolverConfig):
            return source
        get = source.get if isinstance(source, Mapping) else (
            lambda k, d: getattr(source, k, d))
        d = cls()
        cfg = cls(
            type=get("type", d.type),
            momentum=f32(get("momentum", d.momentum)),
            momentum2=f32(get("momentum2", d.momentum2)),
            delta=f32(get("delta", d.delta)),
            rms_decay=f32(get("rms_decay", d.rms_decay)),
            weight_decay=f32(get("weight_decay", d.weight_decay)),
            regularization_type=get("regularization_type", d.regularization_type),
            clip_gradients=f32(get("clip_gradients", d.clip_gradients)),
            iter_size=int(get("iter_size", d.iter_size)),
        )
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Caffe's constructor CHECKs, as SolverErrors instead of aborts."""
        if self.type not in SOLVER_TYPES:
            raise SolverError(f"unknown solver type '{self.type}'",
                              hint="valid types: " + ", ".join(SOLVER_TYPES))
        if self.type in ("AdaGrad", "RMSProp") and self.momentum != 0:
            raise SolverError(f"Momentum cannot be used with {self.type}.",
                              hint="remove 'momentum' (Caffe CHECKs that it is 0)")
        if self.type == "RMSProp" and not 0 <= self.rms_decay < 1:
            raise SolverError("rms_decay should lie between 0 and 1.")
        if self.weight_decay != 0 and self.regularization_type not in ("L1", "L2"):
            raise SolverError(f"Unknown regularization type: {self.regularization_type}",
                              hint="use regularization_type \"L2\" or \"L1\"")
        if self.iter_size < 1:
            raise SolverError(f"iter_size must be >= 1 (got {self.iter_size})")


@dataclass(frozen=True)
class ParamSpec:
    """A learnable blob's ``param { lr_mult decay_mult }`` (Caffe's defaults: 1, 1)."""

    lr_mult: float = 1.0
    decay_mult: float = 1.0


@dataclass(frozen=True)
class ClipInfo:
    """One ``Gradient clipping`` event (float32 values, as Caffe logs them)."""

    l2norm: float
    threshold: float
    scale: float

    def message(self) -> str:
        return (f"Gradient clipping: scaling down gradients (L2 norm {self.l2norm:g} > "
                f"{self.threshold:g}) by scale factor {self.scale:g}")


def _groups(values: Sequence[float]) -> list[tuple[float, list[int]]]:
    """Indices sharing one multiplier, so each foreach call gets a single alpha."""
    out: dict[float, list[int]] = {}
    for i, v in enumerate(values):
        out.setdefault(v, []).append(i)
    return list(out.items())


class CaffeSolver:
    """Caffe's ApplyUpdate for a fixed list of parameters (see module doc).

    ``step(iter, lr)`` consumes ``p.grad`` (the summed gradient of iter_size passes;
    it is used as scratch space, like Caffe's diff) and updates the parameters in
    place.  ``lr`` is the policy's rate for ``iter`` (:mod:`netdef.training.lr_policy`).
    """

    def __init__(self, params: Sequence[torch.Tensor],
                 specs: Sequence[ParamSpec | tuple[float, float]] | None = None,
                 config: Any = None) -> None:
        self.params = list(params)
        self.config = SolverConfig.of(config)
        specs = [ParamSpec() for _ in self.params] if specs is None else specs
        if len(specs) != len(self.params):
            raise SolverError(f"{len(specs)} param specs for {len(self.params)} params")
        specs = [s if isinstance(s, ParamSpec) else ParamSpec(*s) for s in specs]
        self.lr_mults = [f32(s.lr_mult) for s in specs]
        decays = [f32(self.config.weight_decay * f32(s.decay_mult)) for s in specs]
        self._lr_groups = _groups(self.lr_mults)
        self._decay_groups = [(d, idx) for d, idx in _groups(decays) if d != 0]
        copies = 2 if self.config.type in _TWO_HISTORIES else 1
        self._history = [torch.zeros_like(p) for _ in range(copies) for p in self.params]

    # -- state ---------------------------------------------------------------------

    def history(self) -> list[torch.Tensor]:
        """The live history blobs in Caffe's solverstate order.

        One per param (SGD, Nesterov, AdaGrad, RMSProp); Adam: m for every param, then
        v; AdaDelta: squared-gradient history, then squared-update history.
        """
        return self._history

    def load_history(self, blobs: Sequence[Any]) -> None:
        """Copy solverstate history blobs (tensors or arrays, any shape of equal size)."""
        if len(blobs) != len(self._history):
            raise SolverError(
                f"solverstate has {len(blobs)} history blobs, {self.config.type} with "
                f"{len(self.params)} params needs {len(self._history)}",
                hint="the solverstate was written for another net or solver type")
        for i, (h, b) in enumerate(zip(self._history, blobs)):
            src = torch.as_tensor(b)
            if src.numel() != h.numel():
                raise SolverError(f"history blob {i} has {src.numel()} values, "
                                  f"the parameter has {h.numel()}")
            with torch.no_grad():
                h.copy_(src.reshape(h.shape))

    # -- one update ----------------------------------------------------------------

    @torch.no_grad()
    def step(self, iter: int, lr: float) -> ClipInfo | None:
        """Apply one update; returns the clipping event, if any (also logged)."""
        cfg = self.config
        rate = f32(lr)
        grads = self._grads()
        clip = self._clip(grads)
        if cfg.iter_size > 1:
            torch._foreach_mul_(grads, f32(1.0 / cfg.iter_size))
        self._regularize(grads)
        update = getattr(self, "_" + cfg.type.lower())(grads, rate, iter)
        torch._foreach_sub_(self.params, update)
        return clip

    def _grads(self) -> list[torch.Tensor]:
        for p in self.params:
            if p.grad is None:  # Caffe's diff always exists
                p.grad = torch.zeros_like(p)
        return [p.grad for p in self.params]

    def _clip(self, grads: list[torch.Tensor]) -> ClipInfo | None:
        threshold = self.config.clip_gradients
        if threshold < 0 or not grads:
            return None
        sumsq = 0.0  # Caffe: Dtype sum of per-blob sumsq_diff()
        for n in torch.stack(torch._foreach_norm(grads)).double().tolist():
            sumsq = f32(sumsq + f32(n * n))
        l2norm = f32(math.sqrt(sumsq))
        if not l2norm > threshold:
            return None
        info = ClipInfo(l2norm, threshold, f32(threshold / l2norm))
        log.info(info.message())
        torch._foreach_mul_(grads, info.scale)
        return info

    def _regularize(self, grads: list[torch.Tensor]) -> None:
        l1 = self.config.regularization_type == "L1"
        for decay, idx in self._decay_groups:
            g = [grads[i] for i in idx]
            w = [self.params[i] for i in idx]
            torch._foreach_add_(g, torch._foreach_sign(w) if l1 else w, alpha=decay)

    def _axpby_lr(self, hist: list[torch.Tensor], grads: list[torch.Tensor],
                  rate: float, beta: float) -> None:
        """``h = local_rate·g + beta·h`` per lr_mult group (caffe_cpu_axpby)."""
        torch._foreach_mul_(hist, beta)
        for mult, idx in self._lr_groups:
            torch._foreach_add_([hist[i] for i in idx], [grads[i] for i in idx],
                                alpha=f32(rate * mult))

    def _rates(self, rate: float) -> list[float]:
        return [f32(rate * m) for m in self.lr_mults]

    def _sgd(self, g: list[torch.Tensor], rate: float, iter: int) -> list[torch.Tensor]:
        self._axpby_lr(self._history, g, rate, self.config.momentum)
        return self._history

    def _nesterov(self, g: list[torch.Tensor], rate: float, iter: int) -> list[torch.Tensor]:
        mom = self.config.momentum
        update = torch._foreach_mul(self._history, -mom)  # −μ·h_old
        self._axpby_lr(self._history, g, rate, mom)
        torch._foreach_add_(update, self._history, alpha=f32(1.0 + mom))
        return update

    def _adagrad(self, g: list[torch.Tensor], rate: float, iter: int) -> list[torch.Tensor]:
        torch._foreach_addcmul_(self._history, g, g)
        denom = torch._foreach_sqrt(self._history)
        torch._foreach_add_(denom, self.config.delta)
        torch._foreach_div_(g, denom)
        torch._foreach_mul_(g, self._rates(rate))
        return g

    def _rmsprop(self, g: list[torch.Tensor], rate: float, iter: int) -> list[torch.Tensor]:
        decay = self.config.rms_decay
        sq = torch._foreach_mul(g, g)
        torch._foreach_mul_(self._history, decay)
        torch._foreach_add_(self._history, sq, alpha=f32(1.0 - decay))
        denom = torch._foreach_sqrt(self._history)
        torch._foreach_add_(denom, self.config.delta)
        torch._foreach_div_(g, denom)
        torch._foreach_mul_(g, self._rates(rate))
        return g

    def _adadelta(self, g: list[torch.Tensor], rate: float, iter: int) -> list[torch.Tensor]:
        mom, delta, n = self.config.momentum, self.config.delta, len(self.params)
        grad_hist, upd_hist = self._history[:n], self._history[n:]
        sq = torch._foreach_mul(g, g)
        torch._foreach_mul_(grad_hist, mom)
        torch._foreach_add_(grad_hist, sq, alpha=f32(1.0 - mom))
        ratio = torch._foreach_add(upd_hist, delta)
        torch._foreach_div_(ratio, torch._foreach_add(grad_hist, delta))
        torch._foreach_sqrt_(ratio)
        torch._foreach_mul_(g, ratio)
        sq = torch._foreach_mul(g, g)
        torch._foreach_mul_(upd_hist, mom)
        torch._foreach_add_(upd_hist, sq, alpha=f32(1.0 - mom))
        torch._foreach_mul_(g, self._rates(rate))
        return g

    def _adam(self, g: list[torch.Tensor], rate: float, iter: int) -> list[torch.Tensor]:
        b1, b2, n = self.config.momentum, self.config.momentum2, len(self.params)
        m, v = self._history[:n], self._history[n:]
        t = iter + 1
        # C++: pow(float, int) is double; the quotient is rounded to float once.
        correction = f32(math.sqrt(1.0 - math.pow(b2, t)) / (1.0 - math.pow(b1, t)))
        torch._foreach_mul_(m, b1)
        torch._foreach_add_(m, g, alpha=f32(1.0 - b1))
        sq = torch._foreach_mul(g, g)
        torch._foreach_mul_(v, b2)
        torch._foreach_add_(v, sq, alpha=f32(1.0 - b2))
        denom = torch._foreach_sqrt(v)
        torch._foreach_add_(denom, self.config.delta)
        update = torch._foreach_div(m, denom)
        torch._foreach_mul_(update, [f32(r * correction) for r in self._rates(rate)])
        return update
