"""TorchScript (``--format torchscript``) and ``torch.export`` (``--format export``) archives.

Both are made from the *generated* plain-torch module (:mod:`netdef.export.pysource`),
not from netdef's own lowered net: that module has no custom autograd Functions (the
fast LRN/MVN ops keep Caffe's closed-form backward that way), no netdef classes and no
runtime geometry checks, so tracing and exporting see only ordinary torch ops, and the
archives load without netdef.  Parameter names in the archives are the generated
module's (``conv1.weight``).

Both are inference graphs: the module is in ``eval()`` (Dropout is the identity,
BatchNorm uses its stored statistics unless the net says otherwise) and the input
shapes are the analysed ones (``--batch``/``--input-shape``).  ``forward`` takes the
Caffe inputs positionally, in the order of the generated module's ``INPUTS``, and
returns the same dict of outputs by Caffe blob name.
"""
from __future__ import annotations

import os
import warnings
from typing import TYPE_CHECKING, Sequence

from netdef.errors import NetdefError
from netdef.io.atomic import atomic_open

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

__all__ = ["example_inputs", "trace", "save_torchscript", "export_program", "save_program"]


def example_inputs(shapes: Sequence[Sequence[int]], seed: int = 0) -> tuple["torch.Tensor", ...]:
    """Inputs of the analysed shapes to trace with: non-negative integers stored as
    float32 (valid as images, labels and indices alike; tracing never depends on values
    in the supported layers)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.randint(0, 2, tuple(s), generator=gen).to(torch.float32) for s in shapes)


def trace(net: "nn.Module", inputs: Sequence["torch.Tensor"]) -> "torch.jit.ScriptModule":
    """``torch.jit.trace`` of the module in eval mode (dict outputs need strict=False)."""
    import torch

    net.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit is deprecated in favour of export
            return torch.jit.trace(net, tuple(inputs), strict=False, check_trace=False)
    except Exception as exc:  # noqa: BLE001 - report any tracer failure as one line
        raise NetdefError(f"TorchScript tracing failed: {type(exc).__name__}: "
                          f"{_first_line(exc)}") from exc


def save_torchscript(net: "nn.Module", inputs: Sequence["torch.Tensor"],
                     path: str | os.PathLike[str]) -> "torch.jit.ScriptModule":
    """Trace ``net`` and write the archive atomically (``torch.jit.load`` reads it)."""
    import torch

    traced = trace(net, inputs)
    with atomic_open(path) as fh, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(traced, fh)
    return traced


def export_program(net: "nn.Module", inputs: Sequence["torch.Tensor"]) -> "torch.export.ExportedProgram":
    """``torch.export.export`` of the module in eval mode, with the analysed shapes."""
    import torch

    net.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.export.export(net, tuple(inputs))
    except Exception as exc:  # noqa: BLE001
        raise NetdefError(f"torch.export failed: {type(exc).__name__}: {_first_line(exc)}") from exc


def save_program(net: "nn.Module", inputs: Sequence["torch.Tensor"],
                 path: str | os.PathLike[str]) -> "torch.export.ExportedProgram":
    """Export ``net`` and write the ``.pt2`` archive atomically (``torch.export.load``)."""
    import torch

    program = export_program(net, inputs)
    with atomic_open(path) as fh:
        torch.export.save(program, fh)
    return program


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "(no message)"
