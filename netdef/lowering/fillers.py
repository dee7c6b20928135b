"""Caffe's weight fillers (``filler.hpp``) on torch tensors, with Caffe's formulas.

fan_in = count / shape[0], fan_out = count / shape[1] (Caffe's convention, so a conv
weight (out, in, kh, kw) has fan_in = in·kh·kw).  Random draws use torch's generator:
the *distributions* match Caffe, the streams cannot (Caffe uses boost's mt19937).
"""
from __future__ import annotations

import math

import torch

from netdef.errors import NetdefError


def _fans(t: torch.Tensor) -> tuple[float, float]:
    count = t.numel()
    fan_in = count / t.shape[0] if t.dim() > 0 and t.shape[0] else count
    fan_out = count / t.shape[1] if t.dim() > 1 and t.shape[1] else count
    return fan_in, fan_out


def _norm(t: torch.Tensor, variance_norm: str) -> float:
    fan_in, fan_out = _fans(t)
    return {"FAN_IN": fan_in, "FAN_OUT": fan_out, "AVERAGE": (fan_in + fan_out) / 2}[variance_norm]


@torch.no_grad()
def fill_blob(t: torch.Tensor, filler, generator: torch.Generator | None = None) -> torch.Tensor:  # noqa: ANN001
    """Fill ``t`` in place as Caffe's ``GetFiller(filler)->Fill(blob)`` would."""
    kind = filler.type
    vn = filler.variance_norm.name
    if kind == "constant":
        t.fill_(filler.value)
    elif kind == "uniform":
        t.uniform_(filler.min, filler.max, generator=generator)
    elif kind == "gaussian":
        t.normal_(filler.mean, filler.std, generator=generator)
        if filler.sparse >= 0:
            if t.dim() < 2:
                raise NetdefError("sparse gaussian filler needs a blob of 2+ dims")
            p = filler.sparse / t.shape[0]
            mask = torch.empty_like(t).bernoulli_(min(max(p, 0.0), 1.0), generator=generator)
            t.mul_(mask)
    elif kind == "positive_unitball":
        t.uniform_(0, 1, generator=generator)
        rows = t.view(t.shape[0], -1) if t.dim() else t.view(1, -1)
        rows.div_(rows.sum(dim=1, keepdim=True))
    elif kind == "xavier":
        scale = math.sqrt(3.0 / _norm(t, vn))
        t.uniform_(-scale, scale, generator=generator)
    elif kind == "msra":
        t.normal_(0.0, math.sqrt(2.0 / _norm(t, vn)), generator=generator)
    elif kind == "bilinear":
        _bilinear(t)
    else:
        raise NetdefError(f"unknown filler type '{kind}'",
                          hint="one of constant, uniform, gaussian, positive_unitball, xavier, "
                               "msra, bilinear")
    return t


def _bilinear(t: torch.Tensor) -> None:
    """Upsampling kernel for Deconvolution (Caffe's BilinearFiller)."""
    if t.dim() != 4 or t.shape[2] != t.shape[3]:
        raise NetdefError("bilinear filler needs a 4-D blob with square kernels")
    k = t.shape[3]
    f = math.ceil(k / 2.0)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    idx = torch.arange(k, dtype=torch.float64)
    w = 1 - (idx / f - c).abs()
    kernel = (w[:, None] * w[None, :]).to(t.dtype)
    t.copy_(kernel.expand_as(t))
