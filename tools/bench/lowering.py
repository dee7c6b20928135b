"""Lowered-net speed: netdef's fx module vs torchvision's hand-written architectures.

Question: does lowering a net definition cost anything at run time?  The same two
architectures are run (a) as netdef builds them from ``tools/bench/nets/tv_alexnet.net``
and ``tv_vgg16.net`` and (b) as torchvision writes them (``torchvision.models.alexnet`` /
``vgg16``, reproduced here in plain ``torch.nn`` because torchvision is not installed):
same layers, same shapes, the torchvision weights copied into the netdef module and the
eval-mode outputs checked equal before timing.  Goal: netdef/torchvision ≤ 1.02×.

Measured per model and device: ``forward`` (``model.eval()``, ``torch.inference_mode()``)
and ``forward+backward`` (``model.train()``, dropout on in both nets; loss =
``F.cross_entropy`` of the fc8 output against random labels, computed outside both
models; gradients set to ``None`` before each pass), eager and ``torch.compile``d
(default inductor; compile time is spent in the warm-up and reported apart, a
failure is recorded as the reason).  Each figure is the median of ``--repeats``
(default 5) timed calls after the warm-up (1 call eager, 2 compiled), the two
implementations *interleaved* call by call (alternating which goes first), so load
from other processes on the machine hits both alike.  CUDA (when available) is timed
with ``torch.cuda.synchronize()`` after each call, TF32 off.

Batch: 16.  On a small CPU (< 8 cores) the VGG-16 batch is cut (``--vgg-cpu-batch``,
default 1): at batch 16 one VGG-16 forward+backward takes ~70 s on a 2-core machine,
which cannot give medians of 5 for 2 implementations × 2 variants within the
10-minute budget.  Besides the wall-time medians (the figures asked for) the JSON holds
the medians of this process's CPU time and the ratio of the minimum wall times: on a
machine shared with other jobs those two are the steadier estimates.
``--budget-s`` (default 570) bounds the whole run: a measurement whose estimated time
(from its warm-up) would overrun is skipped and recorded with the reason.

The caffemodel-load throughput is not re-measured: it is imported from
``tools/bench/results/caffemodel_load.json`` (``tools/bench/caffemodel_load.py``).

    python tools/bench/lowering.py [--repeats 5] [--models alexnet,vgg16] [--no-compile]

Result JSON: tools/bench/results/lowering.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, RESULTS, Budget, why, write  # noqa: E402

NETS = Path(__file__).resolve().parent / "nets"
GOAL = 1.02


# --------------------------------------------------------------------------- torchvision

class TVAlexNet(nn.Module):
    """``torchvision.models.alexnet`` (torchvision 0.2+), verbatim architecture."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True),
            nn.Dropout(p=dropout), nn.Linear(4096, 4096), nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


VGG_D = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
         512, 512, 512, "M"]


class TVVGG16(nn.Module):
    """``torchvision.models.vgg16`` (configuration "D", no batch norm)."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = 3
        for v in VGG_D:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(c, int(v), kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                c = int(v)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096), nn.ReLU(True), nn.Dropout(p=dropout),
            nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(p=dropout),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


MODELS = {"alexnet": (TVAlexNet, "tv_alexnet.net"), "vgg16": (TVVGG16, "tv_vgg16.net")}


# --------------------------------------------------------------------------- netdef

class NetdefCall(nn.Module):
    """``module(data=x)["fc8"]`` as a one-tensor module (what a user's code calls)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.net = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(data=x)["fc8"]


def netdef_model(net_file: Path, batch: int) -> nn.Module:
    from netdef.analysis import analyze
    from netdef.api import load_net
    from netdef.layers.registry import ShapeContext
    from netdef.lowering.module import build

    loaded = load_net(net_file, phase="TEST")
    analysis = analyze(loaded, ShapeContext(phase="TEST", batch=batch, base_dir=loaded.base_dir))
    return build(analysis, fill=False)


def copy_weights(tv: nn.Module, nd: nn.Module) -> None:
    """torchvision's Conv2d/Linear weights into the netdef layers, in order."""
    from netdef.lowering.weights import layer_blobs

    src = [m for m in tv.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    dst = [blobs for blobs in layer_blobs(nd).values() if blobs]
    assert len(src) == len(dst), (len(src), len(dst))
    with torch.no_grad():
        for m, blobs in zip(src, dst):
            blobs[0].copy_(m.weight)
            blobs[1].copy_(m.bias)


# --------------------------------------------------------------------------- timing

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def forward_fn(model: nn.Module, x: torch.Tensor, device: torch.device) -> Callable[[], None]:
    def run() -> None:
        with torch.inference_mode():
            model(x)
        sync(device)
    return run


def train_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor, params: list[nn.Parameter],
             device: torch.device) -> Callable[[], None]:
    def run() -> None:
        for p in params:
            p.grad = None
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        sync(device)
    return run


class ImplFailed(RuntimeError):
    def __init__(self, impl: str, exc: BaseException) -> None:
        super().__init__(f"{impl}: {why(exc)}")
        self.impl = impl



def clock(fn: Callable[[], None]) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds) of one call."""
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0



def measure(fns: dict[str, Callable[[], None]], repeats: int, warmup: int,
            budget: Budget) -> dict:
    """Warm up each, then time them interleaved; skip (with a reason) over budget."""
    warm: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(warmup):
        for k, fn in fns.items():
            try:
                warm[k].append(clock(fn)[0])
            except Exception as exc:  # noqa: BLE001
                raise ImplFailed(k, exc) from exc
    per_call = sum(v[-1] for v in warm.values())
    need = per_call * repeats
    if need > budget.left:
        return {"skipped": f"time budget: {repeats} interleaved repeats need ~{need:.0f} s, "
                           f"{max(budget.left, 0):.0f} s left", "warmup_s": warm}
    times: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for r in range(repeats):
        for k in (names if r % 2 == 0 else names[::-1]):
            wall, proc = clock(fns[k])
            times[k].append(wall)
            cpu[k].append(proc)
    med = {k: statistics.median(v) for k, v in times.items()}
    cpu_med = {k: statistics.median(v) for k, v in cpu.items()}
    return {"warmup_s": warm, "times_s": times, "cpu_times_s": cpu, "median_s": med,
            "cpu_median_s": cpu_med, "min_s": {k: min(v) for k, v in times.items()},
            "ratio": med["netdef"] / med["torchvision"],
            "ratio_cpu_time": cpu_med["netdef"] / cpu_med["torchvision"],
            "ratio_min": min(times["netdef"]) / min(times["torchvision"])}


def bench_model(name: str, device: torch.device, batch: int, args: argparse.Namespace,
                budget: Budget, results: list, skipped: list, parity: dict,
                variants: list[str]) -> None:
    tv_cls, net = MODELS[name]
    torch.manual_seed(0)
    tv = tv_cls().to(device)
    nd = netdef_model(NETS / net, batch)
    copy_weights(tv.cpu(), nd)
    tv.to(device)
    nd.to(device)
    nd_call = NetdefCall(nd)
    x = torch.randn(batch, 3, 224, 224, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)
    tv.eval()
    nd.eval()
    with torch.inference_mode():
        a, b = tv(x), nd_call(x)
        parity[f"{device.type}/{name}"] = {
            "max_abs_diff": float((a - b).abs().max()),
            "max_abs_output": float(a.abs().max())}
    impls = {"netdef": nd_call, "torchvision": tv}
    for variant in variants:
        models = dict(impls)
        compile_s: dict[str, float] = {}
        if variant == "compiled":
            models = {k: torch.compile(m) for k, m in impls.items()}
        for pass_name in ("forward", "forward+backward"):
            key = f"{device.type}/{name}/{variant}/{pass_name}"
            left = budget.left
            if left < 5:
                skipped.append({"key": key, "reason": "time budget exhausted"})
                continue
            train = pass_name != "forward"
            for m in impls.values():
                m.train(train)
            fns = {k: (train_fn(m, x, y, [p for p in impls[k].parameters() if p.requires_grad],
                                device) if train else forward_fn(m, x, device))
                   for k, m in models.items()}
            warmup = args.warmup + (1 if variant == "compiled" else 0)
            print(f"[{budget.left:5.0f} s left] {key} (batch {batch}) …", file=sys.stderr,
                  flush=True)
            try:
                res = measure(fns, args.repeats, warmup, budget)
            except ImplFailed as exc:
                if variant != "compiled":
                    raise
                skipped.append({"key": key, "reason": f"torch.compile failed for {exc}"})
                continue
            if variant == "compiled":
                compile_s = {k: v[0] - v[-1] for k, v in res["warmup_s"].items()}
            if "skipped" in res:
                skipped.append({"key": key, "reason": res["skipped"],
                                "warmup_s": res["warmup_s"]})
                continue
            entry = {"key": key, "model": name, "device": device.type, "batch": batch,
                     "variant": variant, "pass": pass_name,
                     "netdef_median_s": res["median_s"]["netdef"],
                     "torchvision_median_s": res["median_s"]["torchvision"],
                     "ratio": res["ratio"], "ratio_cpu_time": res["ratio_cpu_time"],
                     "ratio_min": res["ratio_min"],
                     "netdef_cpu_median_s": res["cpu_median_s"]["netdef"],
                     "torchvision_cpu_median_s": res["cpu_median_s"]["torchvision"],
                     "times_s": res["times_s"], "cpu_times_s": res["cpu_times_s"],
                     "warmup_s": res["warmup_s"]}
            if compile_s:
                entry["compile_s_approx"] = compile_s  # first warm-up call minus a steady one
            results.append(entry)
            print(f"    netdef {res['median_s']['netdef']:.4f} s  torchvision "
                  f"{res['median_s']['torchvision']:.4f} s  ratio {res['ratio']:.3f} "
                  f"(CPU time {res['ratio_cpu_time']:.3f}, min {res['ratio_min']:.3f})",
                  file=sys.stderr, flush=True)
    del tv, nd, nd_call, impls, models
    torch._dynamo.reset()  # drop compiled graphs (memory) before the next model
    if device.type == "cuda":
        torch.cuda.empty_cache()


def caffemodel_load() -> dict:
    path = RESULTS / "caffemodel_load.json"
    if not path.is_file():
        return {"source": str(path.relative_to(REPO)), "missing": True}
    data = json.loads(path.read_text())
    keep = ("file_bytes", "params", "repeat", "median_s", "GB_per_s", "google_protobuf_same_file")
    return {"source": str(path.relative_to(REPO)), "produced_by": "tools/bench/caffemodel_load.py",
            **{k: data[k] for k in keep if k in data}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--vgg-cpu-batch", type=int, default=None,
                    help="VGG-16 batch on the CPU (default: 1 with < 8 cores, else --batch)")
    ap.add_argument("--models", default="alexnet,vgg16")
    ap.add_argument("--devices", default=None, help="cpu,cuda (default: cpu + cuda if there)")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--budget-s", type=float, default=570.0)
    ap.add_argument("--out", default="lowering")
    args = ap.parse_args()

    from netdef.lowering.runtime import set_tf32

    set_tf32(False)
    budget = Budget(args.budget_s)
    devices = (args.devices.split(",") if args.devices else
               ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    cores = os.cpu_count() or 1
    vgg_cpu_batch = args.vgg_cpu_batch or (1 if cores < 8 else args.batch)
    load0 = os.getloadavg()
    results: list = []
    skipped: list = []
    parity: dict = {}
    batches: dict = {}
    plan = [(v, d, m) for v in (["eager"] + ([] if args.no_compile else ["compiled"]))
            for d in devices for m in models]
    for variant, dev, name in plan:
        device = torch.device(dev)
        batch = vgg_cpu_batch if (name == "vgg16" and device.type == "cpu") else args.batch
        batches[f"{device.type}/{name}"] = batch
        bench_model(name, device, batch, args, budget, results, skipped, parity, [variant])
    ratios = {r["key"]: round(r["ratio"], 4) for r in results}
    ratios_cpu = {r["key"]: round(r["ratio_cpu_time"], 4) for r in results}
    ratios_min = {r["key"]: round(r["ratio_min"], 4) for r in results}
    data = {
        "question": "netdef-lowered AlexNet/VGG-16 vs torchvision's architectures in plain "
                    "torch.nn: run-time cost of lowering (goal ratio <= 1.02)",
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "tf32": False,
        "config": {"repeats": args.repeats, "warmup_eager": args.warmup,
                   "warmup_compiled": args.warmup + 1, "batches": batches,
                   "interleaved": True, "input": "randn(batch, 3, 224, 224)",
                   "forward": "model.eval(), torch.inference_mode()",
                   "forward+backward": "model.train() (dropout on), F.cross_entropy(fc8, "
                                       "labels).backward(), grads set to None first",
                   "compile": "torch.compile(model) default (inductor); compile time in "
                              "the warm-up, excluded",
                   "budget_s": args.budget_s,
                   "vgg_cpu_batch_reason": (
                       f"{cores} CPU cores: a batch-16 VGG-16 forward+backward takes ~70 s "
                       "here; medians of 5 × 2 implementations × eager/compiled do not fit "
                       "the 10-minute run" if vgg_cpu_batch != args.batch else None)},
        "parity_eval_outputs": parity,
        "results": results,
        "skipped": skipped,
        "ratios_netdef_over_torchvision": ratios,
        "ratios_of_cpu_time_medians": ratios_cpu,
        "ratios_of_minimum_wall_times": ratios_min,
        "goal": GOAL,
        "all_within_goal": bool(ratios) and all(v <= GOAL for v in ratios.values()),
        "caffemodel_load": caffemodel_load(),
        "loadavg_start": load0, "loadavg_end": os.getloadavg(),
        "wall_s": round(time.perf_counter() - budget.t0, 1),
    }
    write(args.out, data)


if __name__ == "__main__":
    main()
