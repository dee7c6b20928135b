"""Caffe ACROSS_CHANNELS LRN: netdef's ``lrn_across_channels`` vs ``F.local_response_norm``.

Why: AlexNet/CaffeNet/GoogLeNet run LRN on large activations; torch's version goes
through ``avg_pool3d`` and an autograd graph of several ops, ours does the channel
window with shifted slice adds and has a closed-form backward.  Shape (10, 96, 55, 55)
is AlexNet's norm1 at batch 10; Caffe's parameters local_size 5, alpha 1e-4, beta 0.75,
k 1.  Forward is timed under ``no_grad``; forward+backward from a fixed random top diff.
Reported: medians of ``--repeats`` runs after ``--warmup`` runs, the two candidates
timed alternately, and the speed-up ratios (torch time / ours).  Results go to tools/bench/results/lrn.json.

    python tools/bench/lrn.py [--device cpu|cuda] [--repeats 21] [--warmup 5] [--threads N]
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F

from _common import write  # tools/bench/_common.py (the script's own directory)
from netdef.lowering.ops import lrn_across_channels

SHAPE = (10, 96, 55, 55)
SIZE, ALPHA, BETA, K = 5, 1e-4, 0.75, 1.0


def _stats(times: list[float]) -> dict[str, float]:
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "repeats": len(times)}


def _interleaved(fns: dict[str, Callable[[], object]], device: str, repeats: int,
                 warmup: int) -> dict[str, dict[str, float]]:
    """Time the candidates alternately (order flipped every round), so that load from
    other processes hits both alike; medians after ``warmup`` untimed rounds."""
    def once(fn: Callable[[], object]) -> float:
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(warmup + repeats):
        for n in (names if r % 2 == 0 else names[::-1]):
            dt = once(fns[n])
            if r >= warmup:
                times[n].append(dt)
    return {n: _stats(ts) for n, ts in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=21)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(SHAPE, generator=gen) * 10).to(args.device)
    dy = torch.randn(SHAPE, generator=gen).to(args.device)

    def ours(t: torch.Tensor) -> torch.Tensor:
        return lrn_across_channels(t, SIZE, ALPHA, BETA, K)

    def theirs(t: torch.Tensor) -> torch.Tensor:
        return F.local_response_norm(t, SIZE, ALPHA, BETA, K)

    def fwd(f):
        def run() -> None:
            with torch.no_grad():
                f(x)
        return run

    def fwd_bwd(f):
        def run() -> None:
            xr = x.detach().requires_grad_()
            f(xr).backward(dy)
        return run

    # Agreement check, reported next to the timings.
    xa, xb = x.detach().requires_grad_(), x.detach().requires_grad_()
    ya, yb = ours(xa), theirs(xb)
    ya.backward(dy)
    yb.backward(dy)
    agree = {"forward_max_abs_diff_over_max": float((ya - yb).abs().max() / yb.abs().max()),
             "grad_max_abs_diff_over_max": float((xa.grad - xb.grad).abs().max() / xb.grad.abs().max())}

    res: dict[str, dict] = {}
    for phase, mk in (("forward", fwd), ("forward_backward", fwd_bwd)):
        res[phase] = _interleaved({"netdef": mk(ours), "torch_local_response_norm": mk(theirs)},
                                  args.device, args.repeats, args.warmup)
        res[phase]["speedup"] = (res[phase]["torch_local_response_norm"]["median_s"]
                                 / res[phase]["netdef"]["median_s"])
    write("lrn", {"shape": list(SHAPE), "params": {"local_size": SIZE, "alpha": ALPHA, "beta": BETA,
                                                   "k": K},
                  "device": args.device, "torch": torch.__version__, "threads": torch.get_num_threads(),
                  "agreement": agree, **res})


if __name__ == "__main__":
    main()
