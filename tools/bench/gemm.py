"""InnerProduct's GEMMs: netdef's ``linear`` (oneDNN on the CPU) vs ``F.linear`` (MKL).

Question: is oneDNN's matmul (``torch.ops.mkldnn._linear_pointwise``) faster than the
MKL sgemm behind ``F.linear`` for the fully connected layers of Caffe nets, forward and
backward, at the batches people run?  Shapes: AlexNet/VGG fc6 (4096×9216, 4096×25088),
fc7 (4096×4096), fc8 (1000×4096), LeNet ip1 (500×800); batches 1, 10, 64, 256.
Forward under ``inference_mode``; forward+backward from a fixed random top diff with
the weight, bias and input requiring gradients (what a training step does).  The two
are timed alternately (order flipped every round), medians of ``--repeats`` after
``--warmup`` rounds, ``prepare_host()`` first as the commands do; both results are
checked against each other (max |diff| / max |F.linear|).  Results:
tools/bench/results/gemm.json.

    python tools/bench/gemm.py [--repeats 9] [--warmup 2]
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from _common import write  # tools/bench/_common.py (the script's own directory)
from layout import interleaved
from netdef.lowering import runtime as rt
from netdef.lowering.ops.gemm import linear, onednn_linear_available

SHAPES = {"fc6 alexnet": (4096, 9216), "fc6 vgg": (4096, 25088), "fc7": (4096, 4096),
          "fc8": (1000, 4096), "lenet ip1": (500, 800)}
BATCHES = (1, 10, 64, 256)


def case(out: int, k: int, rows: int, pass_name: str) -> dict:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(rows, k, generator=g)
    w = torch.randn(out, k, generator=g) / k ** 0.5
    b = torch.randn(out, generator=g)
    gy = torch.randn(rows, out, generator=g)

    def make(fn):  # noqa: ANN001, ANN202
        if pass_name == "forward":
            def fwd() -> torch.Tensor:
                with torch.inference_mode():
                    return fn(x, w, b)
            return fwd
        leaves = [t.clone().requires_grad_() for t in (x, w, b)]

        def step() -> torch.Tensor:
            for t in leaves:
                t.grad = None
            fn(*leaves).backward(gy)
            return leaves[1].grad
        return step

    fns = {"netdef": make(linear), "F.linear": make(F.linear)}
    a, ref = fns["netdef"](), fns["F.linear"]()
    med = interleaved(fns, ARGS.repeats, ARGS.warmup)
    return {"netdef_ms": med["netdef"] * 1e3, "f_linear_ms": med["F.linear"] * 1e3,
            "speedup": med["F.linear"] / med["netdef"],
            "max_abs_diff_rel": float((a - ref).abs().max() / ref.abs().max())}


def main() -> None:
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--warmup", type=int, default=2)
    ARGS = ap.parse_args()
    host = rt.prepare_host()
    results = {}
    for name, (out, k) in SHAPES.items():
        for rows in BATCHES:
            for pass_name in ("forward", "forward+backward"):
                key = f"{name} {out}x{k} batch {rows} {pass_name}"
                results[key] = case(out, k, rows, pass_name)
                print(f"{key:48s} {results[key]}", flush=True)
    write("gemm", {"torch": torch.__version__, "threads": torch.get_num_threads(),
                   "onednn_linear_available": onednn_linear_available(),
                   "repeats": ARGS.repeats, "warmup": ARGS.warmup, "host_setup": host,
                   "results": results})


ARGS: argparse.Namespace


if __name__ == "__main__":
    main()
