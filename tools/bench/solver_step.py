"""Optimizer-only step time: netdef's Caffe SGD vs ``torch.optim.SGD(foreach=True)``.

Why: CaffeSolver keeps Caffe's exact order of float32 operations (lr inside the
momentum history, per-param lr_mult/decay_mult), and must still cost no more than
torch's own fused-list SGD (goal: ≤ 1.1×).  Parameters are AlexNet-sized (~61M
floats) and the small digits net (3658 floats, where per-call overhead dominates);
gradients are random and fixed, the forward/backward pass is not timed.

    python tools/bench/solver_step.py [--device cpu|cuda] [--out PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import torch

from netdef.training.solvers import CaffeSolver

NETS = {
    "alexnet": [(96, 3, 11, 11), (96,), (256, 48, 5, 5), (256,), (384, 256, 3, 3), (384,),
                (384, 192, 3, 3), (384,), (256, 192, 3, 3), (256,), (4096, 9216), (4096,),
                (4096, 4096), (4096,), (1000, 4096), (1000,)],
    "digits": [(8, 1, 3, 3), (8,), (16, 8, 3, 3), (16,), (32, 64), (32,), (10, 32), (10,)],
}
REPEATS = {"alexnet": 21, "digits": 500}
LR, MOMENTUM, DECAY = 0.01, 0.9, 5e-4


def _tensors(shapes: list[tuple[int, ...]], device: str, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for s in shapes:
        p = (torch.randn(s, generator=gen) * 0.01).to(device)
        p.grad = (torch.randn(s, generator=gen) * 1e-3).to(device)
        out.append(p)
    return out


def _timer(device: str) -> Callable[[Callable[[], None]], float]:
    def run(fn: Callable[[], None]) -> float:
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0
    return run


def bench(net: str, specs_kind: str, device: str, warmup: int = 3) -> dict:
    shapes = NETS[net]
    ours = _tensors(shapes, device, 0)
    theirs = _tensors(shapes, device, 0)
    if specs_kind == "caffe":  # weights lr 1 decay 1, biases lr 2 decay 0
        specs = [(1.0, 1.0) if len(s) > 1 else (2.0, 0.0) for s in shapes]
    else:  # what torch's single param group does
        specs = [(1.0, 1.0)] * len(shapes)
    solver = CaffeSolver(ours, specs, dict(type="SGD", momentum=MOMENTUM, weight_decay=DECAY))
    opt = torch.optim.SGD(theirs, lr=LR, momentum=MOMENTUM, weight_decay=DECAY, foreach=True)
    timed = _timer(device)
    it = [0]

    def ours_step() -> None:
        solver.step(it[0], LR)
        it[0] += 1

    for _ in range(warmup):
        ours_step()
        opt.step()
    t_ours, t_torch = [], []
    with torch.no_grad():
        for _ in range(REPEATS[net]):  # alternate, so drift hits both alike
            t_ours.append(timed(ours_step))
            t_torch.append(timed(opt.step))
    med_ours, med_torch = statistics.median(t_ours), statistics.median(t_torch)
    return {
        "net": net, "specs": specs_kind, "device": device,
        "tensors": len(shapes), "floats": sum(p.numel() for p in ours),
        "repeats": REPEATS[net], "warmup": warmup,
        "netdef_ms": round(med_ours * 1e3, 4), "torch_ms": round(med_torch * 1e3, 4),
        "ratio": round(med_ours / med_torch, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "solver_step.json"))
    args = ap.parse_args()
    results = [bench(net, specs, args.device)
               for net in NETS for specs in ("caffe", "uniform")]
    report = {
        "what": "median optimizer step time, netdef CaffeSolver(SGD) vs "
                "torch.optim.SGD(momentum=0.9, weight_decay=5e-4, foreach=True)",
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "machine": platform.machine(), "processor": platform.processor() or None,
        "cuda_device": torch.cuda.get_device_name() if args.device == "cuda" else None,
        "load_average_1min": round(os.getloadavg()[0], 2),  # shared machines are noisy
        "results": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    for r in results:
        print(f"{r['net']:8s} {r['specs']:8s} netdef {r['netdef_ms']:9.3f} ms  "
              f"torch {r['torch_ms']:9.3f} ms  ratio {r['ratio']:.3f}")


if __name__ == "__main__":
    main()
