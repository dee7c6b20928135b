"""netdef's AlexNet, CaffeNet, GoogLeNet and VGG-16 vs the same nets in plain ``torch.nn``.

Issue #9 acceptance.  Question: is a net compiled by netdef faster on the CPU than what a
PyTorch user writes by hand after reading the prototxt?  Goals (ratio of wall-time medians
netdef / plain PyTorch, batch 10): AlexNet and CaffeNet forward+backward <= 0.5, forward
<= 0.7; GoogLeNet and VGG-16 <= 0.9 (both passes); with ``--compile`` better still.

The two implementations
-----------------------
* **netdef**: ``nets/alexnet.net``, ``nets/caffenet.net``, ``nets/vgg16.net`` (the shipped
  deploy nets, batch 10 in their Input layer) and BVLC GoogLeNet from
  ``../shared/caffe/models/bvlc_googlenet/deploy.prototxt``, built as netdef's own
  commands build them (``load_net`` → ``analyze`` → ``build``, weights from Caffe's
  fillers with a seeded ``torch.Generator``).  Everything netdef-specific happens in
  :func:`netdef_side` — the one place to change when netdef gains runtime set-up or
  forward-only paths; it calls ``netdef.lowering.runtime.prepare_host()`` when present
  and puts the module in the layout ``runtime.choose_layout`` picks (channels-last for
  these conv nets on the CPU), converting each call's NCHW input inside the timed call.
* **reference**: ``tools/bench/reference_nets.py`` (``nn.Conv2d``, ``nn.LocalResponseNorm``,
  ``ceil_mode`` max pools, ``nn.ReLU(inplace=True)``, ``nn.Dropout``, ``nn.Softmax``), run as
  a plain user runs it: fresh interpreter, default settings, ``model.eval()`` +
  ``torch.inference_mode()`` for the forward, ``model.train()`` and gradients set to
  ``None`` before each step (``optimizer.zero_grad()``'s default) for forward+backward.

Both get the same weights: the parent builds netdef's module once (same seed as
:func:`netdef_side`), copies its weights into the reference net
(``reference_nets.copy_from_netdef``) and hands the reference worker that ``state_dict``
through a temporary file.  Before timing, parameter counts are checked equal (and equal to
the known totals) and the eval-mode ``prob`` outputs compared (max abs diff <= 1e-4 × max
abs output: LRN is computed differently); a net that fails either is not timed.

Measurement
-----------
Each implementation of each net runs in its **own long-lived worker process**
(``multiprocessing`` *spawn*), so process-wide settings netdef applies (glibc malloc
tuning, thread pools) cannot leak into the baseline.  The parent sends "one call"
messages to the two workers alternately (which one goes first alternates per repeat), so
load from other processes hits both alike; each worker times its own call
(``time.perf_counter`` and ``time.process_time`` — the CPU time of all its threads) and
sends the numbers back; an idle worker blocks on its pipe.  Passes: ``forward`` (eval, no
grad) and ``forward+backward`` (train mode, dropout on, loss = ``(prob * G).sum()`` for a
fixed random ``G`` of shape (batch, 1000)).  Variants: ``eager`` and, unless
``--no-compile``, ``compiled`` (``torch.compile`` default inductor on both sides; compile
time is reported apart — first warm-up call minus the last; a failure is recorded with its
reason).  Warm-up: ``--warmup`` calls eager (default 3: with 1, netdef's first timed
forward+backward still ran 20–35% slower than its later calls), one more compiled;
then ``--repeats`` (default 7) timed calls each.  Reported per (model, variant, pass):
both medians, ratio of medians, ratio of CPU-time medians, ratio of minima, all raw times, the
goal and whether it is met.  ``--budget-s`` bounds the run: a measurement whose estimate
(from its warm-up) would overrun is skipped and recorded.

Caffe's own ``caffe time`` figures for the same nets (SECTION 2, the 3-iteration run, of
``../shared/fixtures/init-logs/*.init.log``) are recorded as ``caffe_fixture_ms`` with
netdef/Caffe ratios: they come from the machine that built the fixtures, not this run.

    python tools/bench/vs_reference.py [--models alexnet,caffenet,googlenet,vgg16]
        [--batch 10] [--repeats 7] [--warmup 3] [--no-compile] [--budget-s 3600]
        [--out vs_reference]

Result JSON: tools/bench/results/vs_reference.json
"""
from __future__ import annotations

import argparse
import gc
import multiprocessing as mp
import os
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, SHARED, Budget, timeit, why, write  # noqa: E402

SEED = 1  # netdef's fillers (torch.Generator), as `netdef time --seed 1`
INPUT_SEED = 2  # the input batch and G
IMPLS = ("netdef", "reference")
PASSES = ("forward", "forward+backward")
PARITY_RTOL = 1e-4  # max |prob diff| <= PARITY_RTOL * max |prob|
GOAL_BATCH = 10


@dataclass(frozen=True)
class Model:
    net: Path  # netdef's net file
    params: int  # known total (both implementations)
    caffe_log: str  # ../shared/fixtures/init-logs/<caffe_log>.init.log
    goals: dict[str, float]  # pass -> max ratio netdef / reference


MODELS = {
    "alexnet": Model(REPO / "nets" / "alexnet.net", 60_965_224, "bvlc_alexnet",
                     {"forward": 0.7, "forward+backward": 0.5}),
    "caffenet": Model(REPO / "nets" / "caffenet.net", 60_965_224, "bvlc_reference_caffenet",
                      {"forward": 0.7, "forward+backward": 0.5}),
    "googlenet": Model(SHARED / "caffe" / "models" / "bvlc_googlenet" / "deploy.prototxt",
                       6_998_552, "bvlc_googlenet", {"forward": 0.9, "forward+backward": 0.9}),
    "vgg16": Model(REPO / "nets" / "vgg16.net", 138_357_544, "vgg16",
                   {"forward": 0.9, "forward+backward": 0.9}),
}


# --------------------------------------------------------------------------- netdef side

_HOST: dict[str, object] = {}  # what netdef's runtime set-up did in this process


def netdef_analysis(name: str, batch: int, phase: str):  # noqa: ANN201 - NetAnalysis
    """``load_net`` → ``analyze`` as netdef's commands do (``--batch`` overrides the Input)."""
    from netdef.analysis import analyze
    from netdef.api import load_net
    from netdef.layers.registry import ShapeContext

    loaded = load_net(MODELS[name].net, phase=phase)
    return analyze(loaded, ShapeContext(phase=phase, batch=batch, base_dir=loaded.base_dir))


def netdef_module(analysis):  # noqa: ANN001, ANN201 - CaffeNet
    """The lowered net, Caffe's fillers drawn from a seeded generator (the parent builds it
    this way too, so the reference gets exactly these weights)."""
    from netdef.lowering.module import build

    return build(analysis, generator=torch.Generator().manual_seed(SEED))


def netdef_side(name: str, batch: int, phase: str, *, compiled: bool = False
                ) -> tuple[Callable[[torch.Tensor], torch.Tensor],
                           Callable[[torch.Tensor, torch.Tensor], None]]:
    """netdef's ``(forward(x) -> prob, train_step(x, G))`` for one net — the ONE place where
    the benchmark decides how netdef runs a net (runtime set-up, grad mode, what happens to
    gradients between steps, compilation).  Runs in the netdef worker only.

    ``phase`` is the phase the net is built in: the worker asks for ``"TEST"`` for the
    forward pass and ``"TRAIN"`` for forward+backward (it uses only that half of the pair).
    """
    from netdef.lowering import runtime

    if not _HOST:
        prepare = getattr(runtime, "prepare_host", None)
        _HOST["prepare_host"] = (prepare() if prepare is not None
                                 else "netdef.lowering.runtime.prepare_host: not present")
    module = netdef_module(netdef_analysis(name, batch, phase))
    data, = module.netdef_inputs
    params = [p for p in module.parameters() if p.requires_grad]
    if phase == "TEST":  # as `netdef run`/`time --forward-only` do: BN/Scale folded (none
        from netdef.lowering.fold import fold_inference  # in these four nets: a no-op)

        module.eval()
        module, _ = fold_inference(module)
    # the layout netdef's commands pick (channels-last for conv nets on the CPU); the
    # input is converted inside each timed call, as `netdef run`/`time`/`train` do
    cpu = torch.device("cpu")
    layout = getattr(runtime, "choose_layout", None)
    channels_last = layout(module, cpu) if layout is not None else False
    _HOST["channels_last"] = channels_last
    # compiled as the commands compile: forward-only (`run`, `time --forward-only`)
    # with the weights frozen in, training steps plain
    net = (runtime.CompiledRunner(module, freeze=phase == "TEST") if compiled
           else module)

    def feed(x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {data: runtime.to_device(x, cpu, channels_last=channels_last)}

    def forward(x: torch.Tensor) -> torch.Tensor:
        module.eval()
        with torch.inference_mode():
            return net(**feed(x))["prob"]

    def train_step(x: torch.Tensor, g: torch.Tensor) -> None:
        module.train()
        for p in params:  # what netdef's training loop does between iterations
            p.grad = None
        loss = (net(**feed(x))["prob"] * g).sum()
        loss.backward()

    return forward, train_step


# --------------------------------------------------------------------------- reference side

def reference_side(model: torch.nn.Module, net: torch.nn.Module
                   ) -> tuple[Callable[[torch.Tensor], torch.Tensor],
                              Callable[[torch.Tensor, torch.Tensor], None]]:
    """The plain-PyTorch user's ``forward(x)`` and training step (``net`` is ``model`` or
    ``torch.compile(model)``)."""
    params = [p for p in model.parameters() if p.requires_grad]

    def forward(x: torch.Tensor) -> torch.Tensor:
        model.eval()
        with torch.inference_mode():
            return net(x)

    def train_step(x: torch.Tensor, g: torch.Tensor) -> None:
        model.train()
        for p in params:  # optimizer.zero_grad() (set_to_none=True)
            p.grad = None
        loss = (net(x) * g).sum()
        loss.backward()

    return forward, train_step


# --------------------------------------------------------------------------- workers

def bench_inputs(batch: int, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(INPUT_SEED)
    return torch.randn((batch, *shape), generator=gen), torch.randn(batch, 1000, generator=gen)



class Worker:
    """One implementation of one net, in its own process; the parent calls its methods."""

    def __init__(self, impl: str, name: str, batch: int, shape: tuple[int, ...],
                 weights: str) -> None:
        torch.manual_seed(0)  # dropout masks
        self.impl, self.name, self.batch = impl, name, batch
        self.x, self.g = bench_inputs(batch, shape)
        self.fn: Callable[[], object] | None = None
        self.key: tuple | None = None
        self.side = None
        if impl == "reference":
            from reference_nets import BUILDERS

            self.model = BUILDERS[name]()
            self.model.load_state_dict(torch.load(weights, weights_only=True))
            self.compiled: torch.nn.Module | None = None

    def info(self) -> dict:
        env = {k: v for k, v in os.environ.items()
               if k.startswith(("OMP_", "MKL_", "KMP_", "MALLOC_", "GLIBC_", "NETDEF_"))
               or k == "LD_PRELOAD"}
        out = {"pid": os.getpid(), "torch": torch.__version__,
               "threads": torch.get_num_threads(),
               "interop_threads": torch.get_num_interop_threads(),
               "mkldnn": torch.backends.mkldnn.is_available(), "env": env}
        if self.impl == "reference":
            out["params"] = sum(p.numel() for p in self.model.parameters())
        else:
            out["host_setup"] = dict(_HOST)
        return out

    def setup(self, pass_name: str, variant: str) -> None:
        compiled = variant == "compiled"
        if self.impl == "netdef":
            phase = "TEST" if pass_name == "forward" else "TRAIN"
            if self.key != (phase, compiled):
                self.fn = self.side = None
                gc.collect()
                self.side = netdef_side(self.name, self.batch, phase, compiled=compiled)
                self.key = (phase, compiled)
            forward, step = self.side
        else:
            if compiled and self.compiled is None:
                self.compiled = torch.compile(self.model)
            forward, step = reference_side(self.model, self.compiled if compiled else self.model)
        x, g = self.x, self.g
        self.fn = (lambda: forward(x)) if pass_name == "forward" else (lambda: step(x, g))

    def call(self, want_output: bool = False) -> tuple[float, float, object]:
        """One call: (wall s, this process's CPU s, the output as an array when asked)."""
        assert self.fn is not None
        c0, t0 = time.process_time(), time.perf_counter()
        out = self.fn()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        arr = out.detach().float().numpy().copy() if want_output and out is not None else None
        del out
        return wall, cpu, arr


def worker_main(conn, impl: str, name: str, batch: int, shape: tuple[int, ...],  # noqa: ANN001
                weights: str) -> None:
    try:
        w = Worker(impl, name, batch, shape, weights)
        conn.send(("ok", None))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        conn.send(("error", why(exc)))
        return
    while True:
        try:
            msg = conn.recv()  # idle: blocked on the pipe
        except EOFError:
            return
        if msg[0] == "stop":
            conn.send(("ok", None))
            return
        try:
            conn.send(("ok", getattr(w, msg[0])(*msg[1:])))
        except BaseException as exc:  # noqa: BLE001
            conn.send(("error", why(exc)))


class WorkerError(RuntimeError):
    def __init__(self, impl: str, what: str) -> None:
        super().__init__(f"{impl}: {what}")
        self.impl = impl


class Pair:
    """The two workers of one net."""

    def __init__(self, name: str, batch: int, shape: tuple[int, ...], weights: str,
                 timeout_s: float) -> None:
        ctx = mp.get_context("spawn")
        self.timeout_s = timeout_s
        self.broken = ""  # why the pair cannot be asked any more (a worker died or hung)
        self.conns, self.procs = {}, {}
        for impl in IMPLS:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=worker_main, args=(child, impl, name, batch, shape, weights),
                               name=f"vs_reference-{impl}-{name}", daemon=True)
            proc.start()
            child.close()
            self.conns[impl], self.procs[impl] = parent, proc
        errors = []
        for impl in IMPLS:
            try:
                self._answer(impl)
            except WorkerError as exc:
                errors.append(exc)
        if errors:
            self.close()
            raise errors[0]

    def _answer(self, impl: str):  # noqa: ANN202
        if self.broken:
            raise WorkerError(impl, f"not asked: {self.broken}")
        conn = self.conns[impl]
        try:
            if not conn.poll(self.timeout_s):
                self.broken = f"{impl} worker gave no answer in {self.timeout_s:.0f} s"
                raise WorkerError(impl, f"no answer in {self.timeout_s:.0f} s")
            status, value = conn.recv()
        except (EOFError, OSError) as exc:
            code = self.procs[impl].exitcode
            self.broken = f"{impl} worker died (exit code {code})"
            raise WorkerError(impl, f"worker died (exit code {code}): {why(exc)}") from None
        if status != "ok":
            raise WorkerError(impl, value)
        return value

    def ask(self, impl: str, *msg):  # noqa: ANN002, ANN201
        if self.broken:
            raise WorkerError(impl, f"not asked: {self.broken}")
        self.conns[impl].send(msg)
        return self._answer(impl)

    def both(self, *msg) -> dict:  # noqa: ANN002
        """Send to both, then collect both answers (for untimed work: set-up, info); the
        first error is raised after both have answered, so no answer is left in a pipe."""
        for impl in IMPLS:
            if self.broken:
                raise WorkerError(impl, f"not asked: {self.broken}")
            self.conns[impl].send(msg)
        answers, errors = {}, []
        for impl in IMPLS:
            try:
                answers[impl] = self._answer(impl)
            except WorkerError as exc:
                errors.append(exc)
        if errors:
            raise errors[0]
        return answers

    def close(self) -> None:
        for impl in IMPLS:
            try:
                self.conns[impl].send(("stop",))
                self.conns[impl].poll(30)
            except (OSError, EOFError, BrokenPipeError):
                pass
            self.procs[impl].join(30)
            if self.procs[impl].is_alive():
                self.procs[impl].terminate()  # our own worker, by its Process handle
                self.procs[impl].join(10)
            self.conns[impl].close()


# --------------------------------------------------------------------------- parent


def prepare_weights(name: str, batch: int, folder: str) -> tuple[str, tuple[int, ...], dict]:
    """Build netdef's module (as :func:`netdef_side` does), copy its weights into the
    reference net, save that ``state_dict``; returns (path, input C×H×W, parameter counts)."""
    from reference_nets import BUILDERS, copy_from_netdef

    analysis = netdef_analysis(name, batch, "TEST")
    shape = next(tuple(int(d) for d in info.top_shapes[0][1:])
                 for info in analysis.layers if info.defn.is_data)
    nd = netdef_module(analysis)
    ref = BUILDERS[name]()
    copied = copy_from_netdef(ref, nd)
    counts = {"netdef": sum(p.numel() for p in nd.parameters()),
              "reference": sum(p.numel() for p in ref.parameters()),
              "copied": copied, "expected": MODELS[name].params}
    counts["equal"] = len({counts["netdef"], counts["reference"], copied,
                           counts["expected"]}) == 1
    path = os.path.join(folder, f"{name}.pt")
    torch.save(ref.state_dict(), path)
    del nd, ref, analysis
    gc.collect()
    return path, shape, counts


def parity(a, b) -> dict:  # noqa: ANN001 - numpy arrays (netdef, reference)
    diff = float(abs(a - b).max())
    peak = float(abs(b).max())
    return {"max_abs_diff": diff, "max_abs_output": peak,
            "prob_min": float(b.min()), "prob_max": float(b.max()),
            "tolerance": PARITY_RTOL * peak, "ok": bool(diff <= PARITY_RTOL * peak)}


def measure(pair: Pair, pass_name: str, variant: str, repeats: int, warmup: int,
            budget: Budget) -> dict:
    """Set up both, warm up (interleaved), then the timed calls, interleaved."""
    pair.both("setup", pass_name, variant)
    want = pass_name == "forward"
    warm: dict[str, list[float]] = {k: [] for k in IMPLS}
    outputs: dict[str, object] = {}
    for i in range(warmup):
        for impl in (IMPLS if i % 2 == 0 else IMPLS[::-1]):
            wall, _, arr = pair.ask(impl, "call", want and i == warmup - 1)
            warm[impl].append(wall)
            if arr is not None:
                outputs[impl] = arr
    res: dict = {"warmup_s": warm}
    if outputs:
        res["parity"] = parity(outputs["netdef"], outputs["reference"])
    need = sum(v[-1] for v in warm.values()) * repeats
    if need > budget.left:
        res["skipped"] = (f"time budget: {repeats} interleaved repeats need ~{need:.0f} s, "
                          f"{max(budget.left, 0):.0f} s left")
        return res
    if "parity" in res and not res["parity"]["ok"]:
        res["skipped"] = "eval outputs disagree (see parity)"
        return res
    times: dict[str, list[float]] = {k: [] for k in IMPLS}
    cpu: dict[str, list[float]] = {k: [] for k in IMPLS}
    first = []
    for r in range(repeats):
        order = IMPLS if r % 2 == 0 else IMPLS[::-1]
        first.append(order[0])
        for impl in order:
            wall, proc, _ = pair.ask(impl, "call", False)
            times[impl].append(wall)
            cpu[impl].append(proc)
    med = {k: statistics.median(v) for k, v in times.items()}
    cpu_med = {k: statistics.median(v) for k, v in cpu.items()}
    mins = {k: min(v) for k, v in times.items()}
    res.update(times_s=times, cpu_times_s=cpu, first_per_repeat=first, median_s=med,
               cpu_median_s=cpu_med, min_s=mins,
               ratio=med["netdef"] / med["reference"],
               ratio_cpu_time=cpu_med["netdef"] / cpu_med["reference"],
               ratio_min=mins["netdef"] / mins["reference"])
    return res


def bench_model(name: str, args: argparse.Namespace, budget: Budget, variants: list[str],
                folder: str, out: dict) -> None:
    model = MODELS[name]
    print(f"[{budget.left:5.0f} s left] {name}: weights, parameter counts …", file=sys.stderr,
          flush=True)
    weights, shape, counts = prepare_weights(name, args.batch, folder)
    out["param_counts"][name] = counts
    if not counts["equal"]:
        out["failures"].append({"model": name, "reason": f"parameter counts differ: {counts}"})
        return
    pair = Pair(name, args.batch, shape, weights, args.call_timeout_s)
    try:
        eager_median: dict[str, float] = {}
        for variant in variants:
            for pass_name in PASSES:
                key = f"{name}/{variant}/{pass_name}"
                if budget.left < 5:
                    out["skipped"].append({"key": key, "reason": "time budget exhausted"})
                    continue
                warmup = args.warmup + (1 if variant == "compiled" else 0)
                print(f"[{budget.left:5.0f} s left] {key} (batch {args.batch}) …",
                      file=sys.stderr, flush=True)
                try:
                    res = measure(pair, pass_name, variant, args.repeats, warmup, budget)
                except WorkerError as exc:
                    if variant != "compiled":
                        raise
                    out["failures"].append({"key": key, "impl": exc.impl,
                                            "reason": f"torch.compile failed: {exc}"})
                    continue
                if "parity" in res:
                    out["parity_eval_outputs"][f"{name}/{variant}"] = res["parity"]
                if "skipped" in res:
                    out["skipped"].append({"key": key, "reason": res["skipped"],
                                           "warmup_s": res["warmup_s"]})
                    if variant == "eager" and pass_name == "forward" and "parity" in res \
                            and not res["parity"]["ok"]:
                        out["failures"].append({"model": name, "reason": "parity failed: "
                                                "not timed", "parity": res["parity"]})
                        return
                    continue
                entry = make_entry(name, variant, pass_name, args.batch, res, eager_median,
                                   out["caffe_fixture_ms"].get(name))
                out["results"].append(entry)
                if variant == "eager":
                    eager_median[pass_name] = res["median_s"]["netdef"]
                print(f"    netdef {res['median_s']['netdef']:.4f} s  reference "
                      f"{res['median_s']['reference']:.4f} s  ratio {res['ratio']:.3f} "
                      f"(CPU time {res['ratio_cpu_time']:.3f}, min {res['ratio_min']:.3f})",
                      file=sys.stderr, flush=True)
        out["workers"][name] = pair.both("info")
    finally:
        pair.close()
        os.unlink(weights)


def make_entry(name: str, variant: str, pass_name: str, batch: int, res: dict,
               eager_median: dict[str, float], caffe: dict | None) -> dict:
    goal = MODELS[name].goals[pass_name]
    entry = {"key": f"{name}/{variant}/{pass_name}", "model": name, "variant": variant,
             "pass": pass_name, "batch": batch,
             "netdef_median_s": res["median_s"]["netdef"],
             "reference_median_s": res["median_s"]["reference"],
             "ratio": res["ratio"], "ratio_cpu_time": res["ratio_cpu_time"],
             "ratio_min": res["ratio_min"],
             "netdef_cpu_median_s": res["cpu_median_s"]["netdef"],
             "reference_cpu_median_s": res["cpu_median_s"]["reference"],
             "netdef_min_s": res["min_s"]["netdef"], "reference_min_s": res["min_s"]["reference"],
             "times_s": res["times_s"], "cpu_times_s": res["cpu_times_s"],
             "first_per_repeat": res["first_per_repeat"], "warmup_s": res["warmup_s"],
             "goal": {"max_ratio": goal, "met": res["ratio"] <= goal,
                      "applies": batch == GOAL_BATCH}}
    if variant == "compiled":
        # the first warm-up call compiles; minus a steady (last warm-up) call
        entry["compile_s_approx"] = {k: v[0] - v[-1] for k, v in res["warmup_s"].items()}
        if pass_name in eager_median:
            r = res["median_s"]["netdef"] / eager_median[pass_name]
            entry["goal"]["better_still"] = {"netdef_compiled_over_netdef_eager": r,
                                             "met": r < 1.0}
    if caffe and "missing" not in caffe:
        ms = caffe.get("forward_ms" if pass_name == "forward" else "forward_backward_ms")
        if ms and caffe.get("batch") == batch:
            entry["netdef_over_caffe_fixture"] = res["median_s"]["netdef"] * 1e3 / ms
            entry["reference_over_caffe_fixture"] = res["median_s"]["reference"] * 1e3 / ms
        else:
            entry["netdef_over_caffe_fixture"] = None
            entry["caffe_fixture_not_compared"] = (f"fixture batch {caffe.get('batch')}, "
                                                   f"this run batch {batch}")
    return entry


# --------------------------------------------------------------------------- Caffe fixtures

def caffe_fixture(name: str) -> dict:
    """``caffe time`` averages from SECTION 2 (the 3-iteration run) of the fixture log."""
    path = SHARED / "fixtures" / "init-logs" / f"{MODELS[name].caffe_log}.init.log"
    if not path.is_file():
        return {"source": str(path), "missing": True}
    text = path.read_text()
    head, _, sec2 = text.partition("SECTION 2")

    def num(pattern: str) -> float | None:
        m = re.search(pattern, sec2)
        return float(m.group(1)) if m else None

    batch = re.search(r"Top shape: (\d+) ", head)
    phase = "TEST" if "-phase TEST" in text.splitlines()[2] else "TRAIN (caffe time default)"
    return {"source": str(path.relative_to(SHARED.parent)) if path.is_relative_to(SHARED.parent)
            else str(path),
            "forward_ms": num(r"Average Forward pass: ([0-9.eE+-]+) ms"),
            "backward_ms": num(r"Average Backward pass: ([0-9.eE+-]+) ms"),
            "forward_backward_ms": num(r"Average Forward-Backward: ([0-9.eE+-]+) ms"),
            "iterations": int(num(r"Testing for (\d+) iterations") or 0) or None,
            "batch": int(batch.group(1)) if batch else None, "phase": phase,
            "build": text.splitlines()[0].lstrip("# ")}


# --------------------------------------------------------------------------- report

def table(results: list[dict], skipped: list[dict], failures: list[dict]) -> str:
    head = (f"{'model':<10} {'variant':<8} {'pass':<16} {'netdef s':>9} {'ref s':>9} "
            f"{'ratio':>6} {'cpu':>6} {'min':>6} {'goal':>5} {'met':>4} {'caffe ms':>9} "
            f"{'nd/caffe':>8}")
    lines = [head, "-" * len(head)]
    caffe_ms = {}
    for r in results:
        nd_caffe = r.get("netdef_over_caffe_fixture")
        if nd_caffe:
            caffe_ms[r["key"]] = r["netdef_median_s"] * 1e3 / nd_caffe
        g = r["goal"]
        met = ("yes" if g["met"] else "NO") if g["applies"] else "n/a"
        lines.append(
            f"{r['model']:<10} {r['variant']:<8} {r['pass']:<16} {r['netdef_median_s']:>9.4f} "
            f"{r['reference_median_s']:>9.4f} {r['ratio']:>6.3f} {r['ratio_cpu_time']:>6.3f} "
            f"{r['ratio_min']:>6.3f} {g['max_ratio']:>5.2f} {met:>4} "
            + (f"{caffe_ms[r['key']]:>9.1f} {nd_caffe:>8.3f}" if nd_caffe
               else f"{'-':>9} {'-':>8}"))
    if any(not r["goal"]["applies"] for r in results):
        lines.append(f"(goals apply at batch {GOAL_BATCH})")
    for s in skipped:
        lines.append(f"{s['key']:<36} skipped: {s['reason']}")
    for f in failures:
        lines.append(f"{f.get('key', f.get('model'))}: FAILED: {f['reason']}")
    return "\n".join(lines)


def machine_calibration() -> dict[str, float]:
    """What bounds these nets on this machine, measured once before the workers start:
    a channels-last 3x3 convolution's GFLOP/s (the convolutions run at about this on
    both sides, so the ratios depend on how much of the time is *not* convolution) and
    the copy bandwidth (what fc6/fc7's GEMMs at batch 10 are bound by)."""
    x = torch.randn(10, 64, 56, 56).contiguous(memory_format=torch.channels_last)
    w = torch.randn(64, 64, 3, 3).contiguous(memory_format=torch.channels_last)
    a = torch.randn(50_000_000)
    b = torch.empty_like(a)

    with torch.inference_mode():
        conv = timeit(lambda: torch.nn.functional.conv2d(x, w, padding=1), 7)["min_s"]
        copy = timeit(lambda: b.copy_(a), 7)["min_s"]
    return {"conv3x3_gflops": round(2 * 10 * 64 * 64 * 9 * 56 * 56 / conv / 1e9, 1),
            "copy_gb_per_s": round(2 * a.numel() * 4 / copy / 1e9, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="alexnet,caffenet,googlenet,vgg16")
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=3, help="eager warm-up calls (compiled: +1)")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--budget-s", type=float, default=3600.0)
    ap.add_argument("--call-timeout-s", type=float, default=1800.0,
                    help="give up on a worker that does not answer within this")
    ap.add_argument("--out", default="vs_reference")
    args = ap.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        ap.error(f"unknown model(s) {', '.join(unknown)} (use {', '.join(MODELS)})")
    if args.repeats < 1 or args.warmup < 1 or args.batch < 1:
        ap.error("--repeats, --warmup and --batch must be >= 1")
    for m in models:
        if not MODELS[m].net.is_file():
            ap.error(f"{m}: net file {MODELS[m].net} not found"
                     + (" (GoogLeNet comes from ../shared, BVLC's Caffe checkout beside this "
                        "repository; run without it: --models alexnet,caffenet,vgg16)"
                        if m == "googlenet" else ""))

    budget = Budget(args.budget_s)
    load0 = os.getloadavg()
    calibration = machine_calibration()
    variants = ["eager"] + ([] if args.no_compile else ["compiled"])
    out: dict = {"param_counts": {}, "parity_eval_outputs": {}, "results": [], "skipped": [],
                 "failures": [], "workers": {},
                 "caffe_fixture_ms": {m: caffe_fixture(m) for m in models}}
    with tempfile.TemporaryDirectory(prefix="vs_reference-") as folder:
        for name in models:
            try:
                bench_model(name, args, budget, variants, folder, out)
            except Exception as exc:  # noqa: BLE001 - record, go on with the next net
                out["failures"].append({"model": name, "reason": why(exc)})
                print(f"    {name} failed: {why(exc)}", file=sys.stderr, flush=True)
            gc.collect()
    results = out["results"]
    applies = [r for r in results if r["goal"]["applies"]]
    data = {
        "question": "netdef's AlexNet, CaffeNet, GoogLeNet and VGG-16 vs the same nets written "
                    "in plain torch.nn, CPU (issue #9: forward+backward <= 0.5x and forward <= "
                    "0.7x for AlexNet/CaffeNet, <= 0.9x for GoogLeNet/VGG-16, compiled better "
                    "still)",
        "torch": torch.__version__, "threads_parent": torch.get_num_threads(),
        "config": {
            "models": models, "batch": args.batch, "repeats": args.repeats,
            "warmup_eager": args.warmup, "warmup_compiled": args.warmup + 1,
            "variants": variants, "budget_s": args.budget_s,
            "processes": "one spawned worker per implementation per net; the parent sends "
                         "one-call messages alternately (first alternates per repeat); each "
                         "worker times its own call (perf_counter, process_time)",
            "weights": f"netdef's Caffe fillers, torch.Generator seed {SEED}, copied into the "
                       "reference (reference_nets.copy_from_netdef)",
            "input": f"randn(batch, C, H, W) of the net's Input shape, seed {INPUT_SEED}",
            "forward": "eval mode, torch.inference_mode(); netdef: as netdef_side decides "
                       "(net built in phase TEST)",
            "forward+backward": "train mode (dropout on), loss = (prob * G).sum(), G = "
                                "randn(batch, 1000); reference: grads set to None first "
                                "(optimizer.zero_grad() default); netdef: as netdef_side "
                                "decides (net built in phase TRAIN)",
            "compile": "torch.compile default (inductor) on both; compile time ~ first warm-up "
                       "call minus the last, excluded from the medians",
            "parity": f"eval prob: max abs diff <= {PARITY_RTOL} x max abs prob (LRN is "
                      "computed differently)"},
        "param_counts": out["param_counts"],
        "parity_eval_outputs": out["parity_eval_outputs"],
        "results": results,
        "skipped": out["skipped"],
        "failures": out["failures"],
        "ratios_netdef_over_reference": {r["key"]: round(r["ratio"], 4) for r in results},
        "ratios_of_cpu_time_medians": {r["key"]: round(r["ratio_cpu_time"], 4) for r in results},
        "ratios_of_minimum_wall_times": {r["key"]: round(r["ratio_min"], 4) for r in results},
        "goals": {m: MODELS[m].goals for m in models},
        "goals_note": f"ratio of wall-time medians netdef / plain torch.nn at batch "
                      f"{GOAL_BATCH} ('applies' is false at another batch); compiled entries "
                      "compare compiled netdef with compiled reference against the same "
                      "limit, and 'better_still' compares compiled netdef with eager netdef",
        "goals_met": {r["key"]: r["goal"]["met"] for r in results},
        "all_goals_met": (bool(applies) and not out["failures"] and not out["skipped"]
                          and all(r["goal"]["met"] for r in applies)),
        "caffe_fixture_ms": out["caffe_fixture_ms"],
        "caffe_fixture_note": "BVLC Caffe's `caffe time` averages (SECTION 2, 3 iterations) "
                              "from ../shared/fixtures/init-logs: measured on the machine that "
                              "built the fixtures (its header: 2 cores, OpenBLAS; other jobs "
                              "may have shared it), NOT in this run — rough figures only. "
                              "Caffe's Forward-Backward runs every layer's Backward of the "
                              "deploy net (no loss layer); AlexNet/CaffeNet/GoogLeNet in phase "
                              "TRAIN (dropout on), VGG-16 in phase TEST",
        "netdef_over_caffe_fixture": {r["key"]: (round(r["netdef_over_caffe_fixture"], 4)
                                                 if r.get("netdef_over_caffe_fixture") else None)
                                      for r in results if "netdef_over_caffe_fixture" in r},
        "workers": out["workers"],
        "machine_calibration": calibration,
        "loadavg_start": load0, "loadavg_end": os.getloadavg(),
        "wall_s": round(time.perf_counter() - budget.t0, 1),
    }
    write(args.out, data)
    print(table(results, out["skipped"], out["failures"]), file=sys.stderr)


if __name__ == "__main__":
    main()
