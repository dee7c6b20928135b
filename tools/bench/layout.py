"""NCHW vs channels-last (NHWC) on the CPU: why netdef picks channels-last by default.

Question: for the ops Caffe nets spend their time in, and for whole netdef-lowered nets,
which memory layout is faster with this torch build on this CPU?  ``netdef run``,
``time`` and ``train`` use the answer (``netdef.lowering.runtime.channels_last_pays``).

* **ops**: AlexNet's conv1 (11×11/4), conv2 (5×5, 2 groups), pool1 (MAX 3/2, ceil mode),
  norm1 (netdef's LRN), relu — forward (inference mode) and forward+backward (from a
  fixed random top diff), each on the same values in both layouts;
* **nets**: the shipped ``nets/alexnet.net``/``caffenet.net`` and BVLC GoogLeNet, built by
  netdef (``build`` + ``choose_layout(module, cpu, flag)``), forward (TEST phase, inference
  mode) and forward+backward (TRAIN phase, loss ``(prob * G).sum()``), the input converted
  inside each timed call as the commands do.

The two layouts are timed alternately (order flipped every round), medians of
``--repeats`` after ``--warmup`` untimed rounds; reported: both medians and the ratio
NHWC/NCHW (below 1: channels-last is faster), and that both layouts' outputs agree.
``prepare_host()`` is applied first (as the commands do).  Results:
tools/bench/results/layout.json.

    python tools/bench/layout.py [--batch 10] [--repeats 7] [--warmup 2] [--nets alexnet,caffenet,googlenet]
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F

from _common import SHARED, REPO, write  # tools/bench/_common.py (the script's own directory)
from netdef.lowering import runtime as rt
from netdef.lowering.ops import lrn_across_channels

CPU = torch.device("cpu")
NETS = {"alexnet": REPO / "nets" / "alexnet.net", "caffenet": REPO / "nets" / "caffenet.net",
        "googlenet": SHARED / "caffe" / "models" / "bvlc_googlenet" / "deploy.prototxt",
        "vgg16": REPO / "nets" / "vgg16.net"}


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int
                ) -> dict[str, float]:
    """Median seconds per candidate, timed alternately (order flipped every round)."""
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(warmup + repeats):
        for n in (names if r % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            fns[n]()
            if r >= warmup:
                times[n].append(time.perf_counter() - t0)
    return {n: statistics.median(t) for n, t in times.items()}


def _entry(med: dict[str, float], agree: float) -> dict[str, float]:
    return {"nchw_ms": med["nchw"] * 1e3, "nhwc_ms": med["nhwc"] * 1e3,
            "nhwc_over_nchw": med["nhwc"] / med["nchw"], "max_abs_diff_rel": agree}


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def op_cases(batch: int) -> dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], tuple]]:
    g = torch.Generator().manual_seed(0)
    w1 = torch.randn(96, 3, 11, 11, generator=g) * 0.01
    w2 = torch.randn(256, 48, 5, 5, generator=g) * 0.01
    return {
        "conv1 11x11/4": (lambda x, w=w1: F.conv2d(x, w, stride=4), (batch, 3, 227, 227), w1),
        "conv2 5x5 group 2": (lambda x, w=w2: F.conv2d(x, w, padding=2, groups=2),
                              (batch, 96, 27, 27), w2),
        "pool1 max 3/2": (lambda x: F.max_pool2d(x, 3, 2, ceil_mode=True), (batch, 96, 55, 55),
                          None),
        "norm1 lrn 5": (lambda x: lrn_across_channels(x, 5, 1e-4, 0.75, 1.0),
                        (batch, 96, 55, 55), None),
        "relu": (lambda x: F.relu(x), (batch, 96, 55, 55), None),
    }


def bench_ops(batch: int, repeats: int, warmup: int) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for name, (fn, shape, weight) in op_cases(batch).items():
        g = torch.Generator().manual_seed(1)
        x = torch.randn(*shape, generator=g)
        xs = {"nchw": x, "nhwc": x.contiguous(memory_format=torch.channels_last)}
        if weight is not None:
            weight.requires_grad_(True)
        for pass_name in ("forward", "forward+backward"):
            def make(layout: str, pass_name: str = pass_name) -> Callable[[], torch.Tensor]:
                def call() -> torch.Tensor:
                    if pass_name == "forward":
                        with torch.inference_mode():
                            return fn(xs[layout])
                    # conv1 reads the data, which needs no gradient in a net
                    xin = xs[layout].detach().requires_grad_(not name.startswith("conv1"))
                    if weight is not None:
                        weight.grad = None  # the weight gradient as a step computes it
                    y = fn(xin)
                    y.backward(torch.ones_like(y))
                    return xin.grad if xin.requires_grad else weight.grad
                return call
            fns = {lay: make(lay) for lay in ("nchw", "nhwc")}
            agree = _rel(fns["nhwc"](), fns["nchw"]())
            out[f"{name} {pass_name}"] = _entry(interleaved(fns, repeats, warmup), agree)
            print(f"{name:20s} {pass_name:17s} {out[f'{name} {pass_name}']}", flush=True)
    return out


def net_pair(path, batch: int, phase: str) -> dict[str, Callable[[], torch.Tensor]]:  # noqa: ANN001
    from netdef.analysis import analyze
    from netdef.api import load_net
    from netdef.layers.registry import ShapeContext
    from netdef.lowering.module import build

    loaded = load_net(path, phase=phase)
    analysis = analyze(loaded, ShapeContext(phase=phase, batch=batch, base_dir=loaded.base_dir))
    g = torch.Generator().manual_seed(2)
    x = torch.rand(*analysis.blobs[analysis.inputs[0]], generator=g)
    grad = torch.rand(batch, 1000, generator=g)
    fns = {}
    for layout in ("nchw", "nhwc"):
        module = build(analysis, generator=torch.Generator().manual_seed(3))
        cl = rt.choose_layout(module, CPU, layout == "nhwc")
        data, = module.netdef_inputs
        module.train(phase == "TRAIN")

        def call(module=module, cl=cl, data=data) -> torch.Tensor:  # noqa: ANN001
            feed = {data: rt.to_device(x, CPU, channels_last=cl)}
            if phase == "TEST":
                with torch.inference_mode():
                    return module(**feed)["prob"]
            for p in module.parameters():
                p.grad = None
            torch.manual_seed(4)  # the same dropout masks in both layouts
            prob = module(**feed)["prob"]
            (prob * grad).sum().backward()
            return prob.detach()
        fns[layout] = call
    return fns


def bench_nets(names: list[str], batch: int, repeats: int, warmup: int) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for name in names:
        if not NETS[name].is_file():
            out[name] = {"skipped": f"{NETS[name]} not present"}
            continue
        for phase, pass_name in (("TEST", "forward"), ("TRAIN", "forward+backward")):
            fns = net_pair(NETS[name], batch, phase)
            agree = _rel(fns["nhwc"](), fns["nchw"]())
            out[f"{name} {pass_name}"] = _entry(interleaved(fns, repeats, warmup), agree)
            print(f"{name:10s} {pass_name:17s} {out[f'{name} {pass_name}']}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--nets", default="alexnet,caffenet,googlenet")
    args = ap.parse_args()
    host = rt.prepare_host()
    ops = bench_ops(args.batch, args.repeats, args.warmup)
    nets = bench_nets([n for n in args.nets.split(",") if n], args.batch, args.repeats,
                      args.warmup)
    write("layout", {"torch": torch.__version__, "threads": torch.get_num_threads(),
                     "batch": args.batch, "repeats": args.repeats, "warmup": args.warmup,
                     "host_setup": host, "ops": ops, "nets": nets})


if __name__ == "__main__":
    main()
