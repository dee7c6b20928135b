"""Peak memory of the lowered net, measured (what :mod:`netdef.analysis.memory` predicts).

The whole-graph module from :func:`netdef.lowering.module.build` is called as a whole —
not layer by layer as ``netdef time`` steps it — so autograd keeps and frees exactly
what a training run does.

* **training**: two iterations as the training loop runs them —
  forward; ``loss = Σ loss_weight·top`` over the loss-weighted tops (a net without one
  back-propagates a ones gradient from every output that needs a gradient); backward;
  one Caffe SGD update with momentum 0.9 and weight decay 5e-4
  (:class:`netdef.training.solvers.CaffeSolver`).  The first iteration's update
  allocates the history; the second starts with ``p.grad = None`` (as the loop does)
  and runs with the history alive, the steady state.  The peak is the larger of the two.
  (Unlike the loop, an iteration's outputs are dropped after its update, not when the
  next forward returns; for classification nets they are a few scalars.)
* **inference**: one forward under ``torch.inference_mode()``.

What is counted: the peak of the bytes alive — params, buffers and inputs (alive at
the start) plus everything the passes allocate.  On CUDA that is
``torch.cuda.max_memory_allocated()`` after ``reset_peak_memory_stats()`` (the caching
allocator's block sizes, rounded to 512 B).  On the CPU it is the start bytes plus the
peak of the running sum of the profiler's allocation/free events in time order
(``torch.profiler`` with ``profile_memory=True``: c10's CPU allocator reports every
tensor and oneDNN scratch buffer; memory outside it — Python objects, BLAS thread
buffers — is not counted).
"""
from __future__ import annotations

import gc
from dataclasses import dataclass
from typing import Any, Callable

import torch

from netdef.analysis.net import NetAnalysis
from netdef.errors import NetdefError

__all__ = ["Measured", "measure_training", "measure_inference", "start_bytes"]


@dataclass(frozen=True)
class Measured:
    """One measured peak: bytes alive at the start and at the worst moment."""

    peak_bytes: int
    start_bytes: int  # params + buffers + inputs
    device: str
    backward_from: str = ""  # training: "loss" | "outputs" | "nothing"

    def as_dict(self) -> dict[str, Any]:
        return {"peak_bytes": self.peak_bytes, "start_bytes": self.start_bytes,
                "device": self.device, **({"backward_from": self.backward_from}
                                          if self.backward_from else {})}


def start_bytes(module: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> int:
    """Distinct storages of params, buffers and inputs (shared blobs once)."""
    seen: dict[int, int] = {}
    for t in [*module.parameters(), *module.buffers(), *inputs.values()]:
        if t is not None:
            s = t.untyped_storage()
            seen[s.data_ptr()] = s.nbytes()
    return sum(seen.values())


def measure_inference(module: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> Measured:
    """Peak of one forward under ``torch.inference_mode()`` (see the module doc)."""
    def run() -> None:
        with torch.inference_mode():
            out = module(**inputs)
        del out

    return _measure(module, inputs, run)


def measure_training(module: torch.nn.Module, analysis: NetAnalysis,
                     inputs: dict[str, torch.Tensor]) -> Measured:
    """Peak of two training iterations with a Caffe SGD update (see the module doc)."""
    from netdef.training.solvers import CaffeSolver, SolverConfig

    params, specs = _learnable(module, analysis)
    weights = dict(getattr(module, "netdef_loss_weights", {}))
    state: dict[str, Any] = {}

    def objective(out: dict[str, torch.Tensor]) -> tuple[list, list]:
        roots = [out[t] for t in weights if out[t].requires_grad]
        if roots:
            state["from"] = "loss"
            loss = sum(weights[t] * out[t].sum() for t in weights if out[t].requires_grad)
            return [loss], [None]
        outs = [t for t in out.values() if t.requires_grad]
        state["from"] = "outputs" if outs else "nothing"
        return outs, [torch.ones_like(t) for t in outs]

    def iteration(solver: Any) -> Any:
        for p in params:
            p.grad = None
        out = module(**inputs)
        roots, grads = objective(out)
        if roots:
            torch.autograd.backward(roots, grads)
        del roots, grads
        if solver is None:  # the first update allocates the history
            solver = CaffeSolver(params, specs, SolverConfig(momentum=0.9,
                                                             weight_decay=0.0005))
        solver.step(0, 0.001)
        del out
        return solver

    def run() -> None:
        solver = iteration(None)
        iteration(solver)
        del solver
        for p in params:
            p.grad = None

    m = _measure(module, inputs, run)
    return Measured(m.peak_bytes, m.start_bytes, m.device, state.get("from", "nothing"))


def _learnable(module: torch.nn.Module, analysis: NetAnalysis
               ) -> tuple[list[torch.nn.Parameter], list[tuple[float, float]]]:
    """Each distinct learnable blob once, with its lr/decay multipliers (as the loop)."""
    params, specs = [], []
    for info in analysis.layers:
        if info.defn.is_data or info.is_split or not info.params:
            continue
        sub = getattr(module, info.name)
        for k, p in enumerate(info.params):
            if p.owner is None and info.defn.learnable(info.param, k):
                params.append(sub._parameters[str(k)])
                specs.append((p.lr_mult, p.decay_mult))
    return params, specs


def _measure(module: torch.nn.Module, inputs: dict[str, torch.Tensor],
             run: Callable[[], None]) -> Measured:
    device = next((t.device for t in [*module.parameters(), *inputs.values()]),
                  torch.device("cpu"))
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        run()
        torch.cuda.synchronize(device)
        return Measured(torch.cuda.max_memory_allocated(device), start, str(device))
    if device.type != "cpu":
        raise NetdefError(f"memory is measured on cpu or cuda, not '{device.type}'",
                          hint="pass --device cpu or --device cuda")
    start = start_bytes(module, inputs)
    return Measured(start + cpu_peak(run), start, "cpu")


def cpu_peak(run: Callable[[], None]) -> int:
    """Peak of the running sum of CPU allocation/free events while ``run`` runs.

    Frees of blocks allocated before the profiler started are not reported by it (so
    they never lower the sum; ``run`` should not free what existed before it).
    """
    import warnings

    from torch.profiler import ProfilerActivity, profile

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            run()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]" and e.device_type().name == "CPU")
    total = peak = 0
    for _, n in events:
        total += n
        peak = max(peak, total)
    return peak
