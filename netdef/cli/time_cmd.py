"""``netdef time``: Caffe's ``caffe time`` — per-layer forward and backward timings.

What it does, as ``tools/caffe.cpp``'s ``time()`` does:

1. build the net (default phase TRAIN, as ``caffe time``), random inputs for every data
   top: integer labels in ``[0, classes)`` for the label bottoms of SoftmaxWithLoss,
   Accuracy, MultinomialLogisticLoss, InfogainLoss and HingeLoss (classes = the
   prediction's class axis), 0/1 for ContrastiveLoss' similarity, indices in
   ``[0, input_dim)`` for Embed, uniform ``[0, 1)`` for SigmoidCrossEntropyLoss targets
   and InfogainLoss' matrix, standard normal otherwise (``--seed``);
2. one untimed forward (``Performing Forward``, ``Initial loss``) and backward
   (``Performing Backward``): the warm-up (``--warmup`` N passes in all);
3. ``--iterations`` timed passes: every layer's Forward in net order, then every layer's
   Backward in reverse order, each timed on its own; the summary Caffe prints.

**Per-layer backward** (Caffe times each ``Layer::Backward`` call): the net runs layer
by layer as :func:`netdef.lowering.module.run_layers` does, and each bottom a layer
reads is a *detached leaf* of its producer's top (``requires_grad`` exactly when
Caffe's ``bottom_need_backward`` says so).  So each layer owns a one-layer autograd
graph, and its backward is one ``torch.autograd.backward(tops, top_diffs)`` call, timed
on its own: it fills the parameter gradients (accumulated, as Caffe's diffs are) and the
leaves' ``.grad`` — the bottom diffs, which become the producer's top diffs.  Top diffs
of loss tops are the loss weight (Caffe's ``loss_weight`` diff); a top nobody
back-propagates into gets zeros (Caffe leaves the diff as it was), so parameter
gradients are still computed — as in Caffe, a net without a loss times only its
parameter gradients.  Split layers sum their tops' diffs (one leaf, several roots).
``--forward-only`` runs under ``torch.inference_mode()`` without leaves.

Timers (:class:`netdef.lowering.runtime.Timer`): ``time.perf_counter`` on the CPU;
``torch.cuda.Event`` pairs on CUDA, read after each iteration (one synchronize per
iteration, none per layer).  Times are float milliseconds printed with C++'s default
6 significant digits (Caffe's CPU timer truncates to whole µs/ms).  Output lines are
Caffe's without the glog prefix; layer names right-aligned in 10 columns, then a TAB.
"""
from __future__ import annotations

import argparse
import sys

from netdef.cli.common import add_shape_args, add_state_args
from netdef.errors import NetdefError

# label bottom (index 1) of these loss layers: integer classes along the class axis
LABEL_CONSUMERS = {"SoftmaxWithLoss": "softmax_param", "Accuracy": "accuracy_param",
                   "InfogainLoss": "infogain_loss_param", "MultinomialLogisticLoss": None,
                   "HingeLoss": None}


def add_arguments(p: argparse.ArgumentParser) -> None:
    from netdef.cli.run_cmd import add_device_args

    p.add_argument("file", help="a .net/.prototxt net")
    p.add_argument("--iterations", type=int, default=50, metavar="N",
                   help="timed iterations (default 50, as caffe time)")
    p.add_argument("--warmup", type=int, default=1, metavar="N",
                   help="untimed passes before timing (default 1, as caffe time)")
    p.add_argument("--forward-only", action="store_true",
                   help="time forward passes only (inference mode)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    p.add_argument("--memory", action="store_true",
                   help="measure the peak memory of a whole-graph training iteration and "
                        "of an inference forward instead, against the report's prediction")
    add_device_args(p)
    add_state_args(p)
    add_shape_args(p)


def run(args: argparse.Namespace) -> int:
    import torch

    from netdef.cli.report_cmd import analyze_from_args
    from netdef.lowering import runtime as rt
    from netdef.lowering.module import build

    if args.memory:
        from netdef.cli.time_memory import run as run_memory

        return run_memory(args)
    if args.iterations < 1:
        raise NetdefError("--iterations must be >= 1")
    if args.warmup < 0:
        raise NetdefError("--warmup must be >= 0")
    device = rt.pick_device(args.device)
    dtype = rt.parse_dtype(args.dtype)
    rt.set_tf32(args.tf32)
    rt.prepare_device(device)
    analysis = analyze_from_args(args)
    gen = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    module = build(analysis, generator=gen)
    module.to(device)
    channels_last = rt.choose_layout(module, device, args.channels_last)
    inputs = {name: rt.to_device(t, device, channels_last=channels_last)
              for name, t in random_inputs(analysis, gen).items()}
    if args.forward_only and not args.no_fold:
        from netdef.lowering.fold import fold_inference

        module, _ = fold_inference(module)  # eval mode (TEST) only; folded layers pass through
    if args.compile:
        bench = WholeNet(module, analysis, inputs, device, dtype, backward=not args.forward_only)
    else:
        bench = StepNet(module, analysis, inputs, device, dtype, backward=not args.forward_only)
    out = sys.stdout

    def log(line: str) -> None:
        out.write(line + "\n")
        out.flush()

    log("Use CPU." if device.type == "cpu" else
        f"Use GPU with device ID {device.index or 0}" if device.type == "cuda" else
        f"Use {device}.")
    log("Performing Forward")
    log(f"Initial loss: {_g(bench.forward())}")
    if bench.backward_on:
        log("Performing Backward")
        bench.backward()
    for _ in range(args.warmup - 1):
        bench.forward()
        if bench.backward_on:
            bench.backward()
    rt.synchronize(device)
    result = bench.benchmark(args.iterations, log)
    n = args.iterations
    if args.compile:
        log("Average time per layer: not measured (--compile runs the net as one graph)")
    else:
        log("Average time per layer: ")
    for info, f_ms, b_ms in zip(analysis.layers, result.forward, result.backward):
        if args.compile:
            break
        log(f"{info.name:>10}\tforward: {_g(f_ms / n)} ms.")
        if bench.backward_on:
            log(f"{info.name:>10}\tbackward: {_g(b_ms / n)} ms.")
    log(f"Average Forward pass: {_g(result.forward_total / n)} ms.")
    if bench.backward_on:
        log(f"Average Backward pass: {_g(result.backward_total / n)} ms.")
        log(f"Average Forward-Backward: {_g(result.total / n)} ms.")
    log(f"Total Time: {_g(result.total)} ms.")
    log("*** Benchmark ends ***")
    return 0


def _g(v: float) -> str:
    """C++ ``ostream << double`` with the default precision (6 significant digits)."""
    return "%g" % v


# --------------------------------------------------------------------------- inputs

def random_inputs(analysis, gen):  # noqa: ANN001, ANN201 - dict[str, torch.Tensor]
    """Random CPU float32 tensors for every data top (see the module doc for the rules)."""
    import torch

    consumers = _data_consumers(analysis)
    out = {}
    for info in analysis.layers:
        if not info.defn.is_data:
            continue
        for top, shape in zip(info.tops, info.top_shapes):
            kind, high = _input_kind(consumers.get(top, []))
            shape = tuple(int(d) for d in shape)
            if kind == "int":
                t = torch.randint(0, max(1, high), shape, generator=gen).to(torch.float32)
            elif kind == "unit":
                t = torch.rand(shape, generator=gen)
            else:
                t = torch.randn(shape, generator=gen)
            out[top] = t
    return out


def _data_consumers(analysis):  # noqa: ANN001, ANN202
    """Data top → [(consumer LayerInfo, bottom index)], looking through Split layers."""
    origin: dict[str, str] = {}
    found: dict[str, list] = {}
    for info in analysis.layers:
        if info.defn.is_data:
            for t in info.tops:
                origin[t] = t
            continue
        srcs = [origin.get(b) for b in info.bottoms]
        for j, src in enumerate(srcs):
            if src is not None and not info.is_split:
                found.setdefault(src, []).append((info, j))
        for t in info.tops:
            origin.pop(t, None)
        if info.is_split and srcs and srcs[0] is not None:
            for t in info.tops:
                origin[t] = srcs[0]
    return found


def _input_kind(consumers) -> tuple[str, int]:  # noqa: ANN001
    highs: list[int] = []
    unit = False
    for info, j in consumers:
        if info.type in LABEL_CONSUMERS and j == 1:
            highs.append(_classes(info))
        elif info.type == "ContrastiveLoss" and j == 2:
            highs.append(2)
        elif info.type == "Embed" and j == 0:
            highs.append(int(info.param.embed_param.input_dim))
        elif (info.type == "SigmoidCrossEntropyLoss" and j == 1) or (
                info.type == "InfogainLoss" and j == 2):
            unit = True
    if highs:
        return "int", min(highs)
    return ("unit", 0) if unit else ("normal", 0)


def _classes(info) -> int:  # noqa: ANN001
    pred = tuple(int(d) for d in info.bottom_shapes[0])
    if not pred:
        return 1
    field = LABEL_CONSUMERS[info.type]
    axis = int(getattr(getattr(info.param, field), "axis", 1)) if field else 1
    axis = axis + len(pred) if axis < 0 else axis
    if not 0 <= axis < len(pred):
        axis = min(1, len(pred) - 1)
    return max(1, pred[axis])


# --------------------------------------------------------------------------- stepping

class _Result:
    def __init__(self, n_layers: int) -> None:
        self.forward = [0.0] * n_layers
        self.backward = [0.0] * n_layers
        self.forward_total = 0.0
        self.backward_total = 0.0
        self.total = 0.0


class StepNet:
    """Caffe's per-layer Forward/Backward over a lowered net (see the module doc)."""

    def __init__(self, module, analysis, inputs, device, dtype, *,  # noqa: ANN001
                 backward: bool = True) -> None:
        from netdef.lowering import runtime as rt

        self.analysis = analysis
        self.layers = analysis.layers
        self.inputs = inputs
        self.device = device
        self.dtype = dtype
        self.backward_on = backward
        children = dict(module.named_children())
        self.fns = [None if (info.defn.is_data or info.is_split) else children[info.name]
                    for info in self.layers]
        # where each bottom comes from: (producer layer index, top index), in-place aware
        where: dict[str, tuple[int, int]] = {}
        self.src: list[list[tuple[int, int]]] = []
        self.consumers: dict[tuple[int, int], list[tuple[int, int]]] = {}
        for i, info in enumerate(self.layers):
            srcs = [where[b] for b in info.bottoms]
            self.src.append(srcs)
            for j, s in enumerate(srcs):
                self.consumers.setdefault(s, []).append((i, j))
            for k, t in enumerate(info.tops):
                where[t] = (i, k)
        self.tops: list[list] = [[] for _ in self.layers]
        self.leaves: list[list] = [[] for _ in self.layers]
        self.const_grads: dict[tuple[int, int], object] = {}
        n = len(self.layers)
        self.f_timers = [rt.Timer(device) for _ in range(n)]
        self.b_timers = [rt.Timer(device) for _ in range(n)]
        self.pass_timers = [rt.Timer(device) for _ in range(3)]  # forward, backward, iteration

    # one pass -------------------------------------------------------------------------
    def forward(self, timers=None) -> float:  # noqa: ANN001
        """Every layer's forward; returns Σ loss_weight·top (Caffe's loss)."""
        import torch

        from netdef.lowering import runtime as rt

        # drop the last pass's tops and graphs first (peak memory: one pass, as Caffe's)
        self.tops = [[] for _ in self.layers]
        self.leaves = [[] for _ in self.layers]
        grad_mode = torch.enable_grad() if self.backward_on else torch.inference_mode()
        with grad_mode, rt.autocast(self.device, self.dtype):
            for i, info in enumerate(self.layers):
                args = self._bottoms(i, info)
                if timers:
                    timers[i].start()
                if info.defn.is_data:
                    tops = [self.inputs[t] for t in info.tops]
                elif info.is_split:
                    tops = [args[0]] * len(info.tops)
                else:
                    res = self.fns[i](*args)
                    tops = list(res) if isinstance(res, (tuple, list)) else [res]
                if timers:
                    timers[i].stop()
                self.tops[i] = tops
        if timers:
            return 0.0
        loss = 0.0
        for i, info in enumerate(self.layers):
            for t, w in zip(self.tops[i], info.loss_weights):
                if w:
                    loss += float(w) * float(t.detach().float().sum())
        return loss

    def _bottoms(self, i: int, info) -> list:  # noqa: ANN001
        args = [self.tops[p][k] for p, k in self.src[i]]
        if not self.backward_on:
            return args
        leaves = []
        for j, x in enumerate(args):
            need = bool(info.bottom_need_backward[j]) if j < len(info.bottom_need_backward) \
                else False
            leaf = x.detach()
            if need and leaf.is_floating_point():
                leaf.requires_grad_(True)
            leaves.append(leaf)
        self.leaves[i] = leaves
        return leaves

    def backward(self, timers=None) -> None:  # noqa: ANN001
        """Every layer's backward in reverse order (one autograd call per layer)."""
        import torch

        for i in range(len(self.layers) - 1, -1, -1):
            roots, grads = self._roots(i)
            if timers:
                timers[i].start()
            if roots:
                torch.autograd.backward(roots, grads)
            if timers:
                timers[i].stop()

    def _roots(self, i: int) -> tuple[list, list]:
        import torch

        info = self.layers[i]
        roots, grads = [], []
        if info.defn.is_data:
            return roots, grads
        for k, t in enumerate(self.tops[i]):
            if not (isinstance(t, torch.Tensor) and t.requires_grad):
                continue
            g = None
            for ci, cj in self.consumers.get((i, k), ()):
                leaves = self.leaves[ci]
                cg = leaves[cj].grad if cj < len(leaves) else None
                if cg is not None:
                    g = cg if g is None else g + cg
            if g is None:
                g = self._const_grad(i, k, t)
            roots.append(t)
            grads.append(g)
        return roots, grads

    def _const_grad(self, i: int, k: int, t):  # noqa: ANN001, ANN202
        import torch

        g = self.const_grads.get((i, k))
        if g is None or g.shape != t.shape or g.dtype != t.dtype:
            w = self.layers[i].loss_weights[k] if k < len(self.layers[i].loss_weights) else 0
            g = (torch.full_like(t, float(w)) if w else torch.zeros_like(t)).detach()
            self.const_grads[(i, k)] = g
        return g

    # the benchmark ----------------------------------------------------------------------
    def benchmark(self, iterations: int, log) -> _Result:  # noqa: ANN001
        from netdef.lowering import runtime as rt

        res = _Result(len(self.layers))
        fwd, bwd, it = self.pass_timers
        total = rt.Timer(self.device)
        log("*** Benchmark begins ***")
        log(f"Testing for {iterations} iterations.")
        total.start()
        for j in range(iterations):
            it.start()
            fwd.start()
            self.forward(self.f_timers)
            fwd.stop()
            if self.backward_on:
                bwd.start()
                self.backward(self.b_timers)
                bwd.stop()
            it.stop()
            res.forward_total += fwd.ms()
            for i, tm in enumerate(self.f_timers):
                res.forward[i] += tm.ms()
            if self.backward_on:
                res.backward_total += bwd.ms()
                for i, tm in enumerate(self.b_timers):
                    res.backward[i] += tm.ms()
            what = "forward-backward" if self.backward_on else "forward"
            log(f"Iteration: {j + 1} {what} time: {_g(it.ms())} ms.")
        total.stop()
        res.total = total.ms()
        return res


class WholeNet:
    """``--compile``: the whole net as one ``torch.compile``d graph (inductor fuses across
    layers, so per-layer times do not exist).  Forward is ``module(**inputs)``; backward
    is one ``torch.autograd.backward`` from the loss tops (their loss weight as diff) and,
    for a net without a loss, from its outputs with zero diffs, as :class:`StepNet` does.
    The first pass (Caffe's untimed warm-up) compiles; the compile time is logged."""

    def __init__(self, module, analysis, inputs, device, dtype, *,  # noqa: ANN001
                 backward: bool = True) -> None:
        import time

        from netdef.lowering import runtime as rt

        self.module, self.analysis, self.inputs = module, analysis, inputs
        self.device, self.dtype, self.backward_on = device, dtype, backward
        self.runner = rt.CompiledRunner(module, log=lambda line: print(line, file=sys.stderr),
                                        freeze=not backward)  # forward-only: inference
        self.outputs: dict = {}
        self.layers = analysis.layers
        self.f_timers: list = []  # no per-layer times: one graph
        self.b_timers: list = []
        self.pass_timers = [rt.Timer(device) for _ in range(3)]
        self._clock = time.perf_counter
        self._compiled_in: float | None = None

    def forward(self, timers=None) -> float:  # noqa: ANN001 - StepNet's signature
        import torch

        from netdef.lowering import runtime as rt

        grad_mode = torch.enable_grad() if self.backward_on else torch.inference_mode()
        t0 = self._clock()
        with grad_mode, rt.autocast(self.device, self.dtype):
            self.outputs = self.runner(**self.inputs)
        if self._compiled_in is None:
            self._compiled_in = self._clock() - t0
            state = "compiled" if self.runner.active else "eager fallback"
            print(f"netdef: first forward ({state}) took {self._compiled_in:.1f} s",
                  file=sys.stderr)
        weights = self.module.netdef_loss_weights
        return sum(float(w) * float(self.outputs[t].detach().float().sum())
                   for t, w in weights.items())

    def backward(self, timers=None) -> None:  # noqa: ANN001 - StepNet's signature
        import torch

        roots, grads = [], []
        weights = self.module.netdef_loss_weights
        for name, t in self.outputs.items():
            if isinstance(t, torch.Tensor) and t.requires_grad:
                w = weights.get(name, 0.0)
                roots.append(t)
                grads.append(torch.full_like(t, float(w)) if w else torch.zeros_like(t))
        for p in self.module.parameters():
            p.grad = None
        if roots:
            torch.autograd.backward(roots, grads)

    benchmark = StepNet.benchmark  # the same loop; no per-layer timers to read
