"""Caffe's training loop: ``Solver::Solve`` / ``Step`` / ``Test`` / ``Snapshot`` / ``Restore``.

The order of events and every log line follow Caffe's solver.cpp and sgd_solver.cpp so
that loss curves, test outputs and printed digits equal real Caffe's (see
``../shared/fixtures/train``): per iteration ``[test] → iter_size × forward/backward →
smoothed loss → display → lr → clip → update → ++iter → [snapshot]``; after the loop a
final snapshot, an extra forward pass and a final test.  Numbers print like C++
``ostream << float`` (``%g``).  Snapshots are atomic; SIGINT snapshots and stops,
SIGHUP snapshots and goes on (Caffe's defaults for ``-sigint_effect``/``-sighup_effect``).
"""
from __future__ import annotations

import json
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TextIO

import numpy as np
import torch

from netdef.errors import SolverError
from netdef.ir.messages import SolverParameter
from netdef.ir.schema import has
from netdef.training.lr_policy import LearningRate, f32
from netdef.training.nets import CompiledNet
from netdef.training.smoothing import SmoothedLoss, iteration_loss
from netdef.training.solvers import CaffeSolver


def g(v: float) -> str:
    """C++ ``ostream << float`` with the default precision."""
    return "%g" % float(v)


@dataclass
class Curve:
    """Exact per-iteration values (float32 as Python floats) for plots and resume checks."""

    iterations: list[dict] = field(default_factory=list)
    tests: list[dict] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps({"iterations": self.iterations, "tests": self.tests})


class Trainer:
    """One Caffe solver run over compiled nets (see module doc)."""

    def __init__(self, param: SolverParameter, train: CompiledNet, tests: list[CompiledNet], *,
                 out: TextIO | None = None, rank: int = 0, world: int = 1,
                 reduce_grads: Callable[[list[torch.Tensor]], None] | None = None,
                 reduce_outputs: Callable[..., tuple[list[float], dict[str, torch.Tensor]]]
                 | None = None,
                 progress: bool = False) -> None:
        self.param = param
        self.train = train
        self.tests = tests
        self.out = out or sys.stdout
        self.rank = rank
        self.world = world
        self.reduce_grads = reduce_grads
        # data parallel: (sub-batch losses, train outputs[, grads=]) -> their means over
        # the ranks; in a step it gets the gradients too (it may average them in the same
        # collective) and runs before reduce_grads (netdef.training.distributed)
        self.reduce_outputs = reduce_outputs
        self.iter = 0
        self.curve = Curve()
        self.requested: str | None = None  # "stop" | "snapshot" from a signal
        self.params, specs = self._learnable()
        self.solver = CaffeSolver(self.params, specs, param)
        self.lr = LearningRate(param)
        self._batches_read = 0  # train batches consumed (for exact resume)
        self._test_batches = [0] * len(tests)  # test batches consumed, per test net
        self._progress = progress

    # ------------------------------------------------------------------ set-up
    def _learnable(self) -> tuple[list[torch.nn.Parameter], list[tuple[float, float]]]:
        """Each distinct learnable tensor once, with its owner's lr/decay multipliers."""
        params: list[torch.nn.Parameter] = []
        specs: list[tuple[float, float]] = []
        module = self.train.module
        for info in self.train.analysis.layers:
            if info.defn.is_data or info.is_split or not info.params:
                continue
            sub = getattr(module, info.name)
            for k, p in enumerate(info.params):
                if p.owner is not None or not info.defn.learnable(info.param, k):
                    continue
                params.append(sub._parameters[str(k)])
                specs.append((p.lr_mult, p.decay_mult))
        return params, specs

    def log(self, line: str) -> None:
        if self.rank == 0:
            self.out.write(line + "\n")
            self.out.flush()

    # ------------------------------------------------------------------ public
    def solve(self, resume: str | None = None) -> None:
        """``Solver::Solve``: restore, step to max_iter, final snapshot/forward/test."""
        p = self.param
        self.log(f"Solving {self.train.analysis.name}")
        self.log(f"Learning Rate Policy: {p.lr_policy}")
        if resume:
            self.log(f"Restoring previous solver status from {resume}")
            self.restore(resume)
        with _signals(self):
            self.step(p.max_iter - self.iter)
        if p.snapshot_after_train and (not p.snapshot or self.iter % p.snapshot != 0):
            self.snapshot()
        if self.requested == "stop":
            self.log("Optimization stopped early.")
            return
        if p.display and self.iter % p.display == 0:
            with torch.no_grad():
                _, loss = self.train.forward()
            self._batches_read += 1
            losses = [float(loss)]
            if self.reduce_outputs is not None:
                losses, _ = self.reduce_outputs(losses, {})
            value = self._smoothed.update(losses[0], self.iter)
            self.log(f"Iteration {self.iter}, loss = {g(value)}")
            self.curve.iterations.append({"iter": self.iter, "final_forward_loss": losses[0]})
        if p.test_interval and self.iter % p.test_interval == 0:
            self.test_all()
        self.log("Optimization Done.")
        self.write_curve()

    def step(self, iters: int) -> None:
        """``Solver::Step``: ``iters`` training iterations."""
        p = self.param
        start_iter = self.iter
        stop_iter = self.iter + iters
        self._smoothed = SmoothedLoss(max(p.average_loss, 1), start_iter)
        timer, last = time.perf_counter(), self.iter
        bar = _Progress(self.iter, p.max_iter) if self._progress and self.rank == 0 else None
        while self.iter < stop_iter:
            for prm in self.params:
                prm.grad = None
            if (p.test_interval and self.iter % p.test_interval == 0
                    and (self.iter > 0 or p.test_initialization)):
                self.test_all()
                if self.requested == "stop":
                    break
            display = bool(p.display) and self.iter % p.display == 0
            sub_losses = []
            outputs: dict[str, torch.Tensor] = {}
            for _ in range(max(p.iter_size, 1)):
                outputs, loss = self.train.forward()
                loss.backward()
                self._batches_read += 1
                sub_losses.append(loss.item())
            if self.reduce_outputs is not None:
                sub_losses, outputs = self.reduce_outputs(sub_losses, outputs,
                                                          grads=[q.grad for q in self.params])
            if self.reduce_grads is not None:
                self.reduce_grads([q.grad for q in self.params])
            loss_value = iteration_loss(sub_losses)
            smoothed = self._smoothed.update(loss_value, self.iter)
            record = {"iter": self.iter, "loss": loss_value, "smoothed_loss": smoothed}
            if display:
                lapse = time.perf_counter() - timer
                per_s = (self.iter - last) / (lapse or 1)
                self.log(f"Iteration {self.iter} ({g(per_s)} iter/s, {g(lapse)}s/{p.display} "
                         f"iters), loss = {g(smoothed)}")
                timer, last = time.perf_counter(), self.iter
                for line, name, value in self._output_lines(outputs, "Train"):
                    self.log(line)
                    record.setdefault("outputs", {})[name] = value
            rate, multistep = self.lr(self.iter)
            if multistep:
                self.log(multistep)
            if display:
                self.log(f"Iteration {self.iter}, lr = {g(rate)}")
            record["lr"] = rate
            clip = self.solver.step(self.iter, rate)
            if clip is not None:
                self.log(clip.message())
            self.curve.iterations.append(record)
            self.iter += 1
            request = self.requested
            if request == "snapshot":
                self.requested = None
            if (p.snapshot and self.iter % p.snapshot == 0) or request == "snapshot":
                self.snapshot()
            if bar:
                bar.update(self.iter, smoothed)
            if self.requested == "stop":
                break
        if bar:
            bar.close()

    # ------------------------------------------------------------------ outputs
    def _output_lines(self, outputs: dict[str, torch.Tensor], kind: str
                      ) -> list[tuple[str, str, float]]:
        """``Train/Test net output #k: name = v (* w = w·v loss)`` for every element."""
        weights = self.train.loss_weights if kind == "Train" else None
        lines = []
        k = 0
        for name in self.train.analysis.outputs:
            w = (weights or {}).get(name, 0.0)
            for v in outputs[name].detach().float().cpu().reshape(-1).tolist():
                extra = f" (* {g(w)} = {g(f32(f32(w) * f32(v)))} loss)" if w else ""
                lines.append((f"    {kind} net output #{k}: {name} = {g(v)}{extra}", name, v))
                k += 1
        return lines

    def test_all(self) -> None:
        for i in range(len(self.tests)):
            self.test(i)

    @torch.no_grad()
    def test(self, index: int) -> None:
        """``Solver::Test``: mean of each output over test_iter batches, in float32."""
        p = self.param
        net = self.tests[index]
        self.log(f"Iteration {self.iter}, Testing net (#{index})")
        scores: list[np.float32] = []
        names: list[str] = []
        loss_total = np.float32(0)
        n = p.test_iter[index]
        self._test_batches[index] += n
        for i in range(n):
            outputs, loss = net.forward()
            if p.test_compute_loss:
                loss_total = np.float32(loss_total + np.float32(float(loss)))
            flat = [(name, v) for name in net.analysis.outputs
                    for v in outputs[name].detach().float().cpu().reshape(-1).tolist()]
            if i == 0:
                scores = [np.float32(v) for _, v in flat]
                names = [name for name, _ in flat]
            else:
                scores = [np.float32(s + np.float32(v)) for s, (_, v) in zip(scores, flat)]
        if p.test_compute_loss:
            self.log(f"Test loss: {g(np.float32(loss_total / np.float32(n)))}")
        weights = net.loss_weights
        result = {"iter": self.iter, "net": index, "outputs": {}}
        for k, (name, total) in enumerate(zip(names, scores)):
            mean = np.float32(total / np.float32(n))
            w = weights.get(name, 0.0)
            extra = f" (* {g(w)} = {g(np.float32(np.float32(w) * mean))} loss)" if w else ""
            self.log(f"    Test net output #{k}: {name} = {g(mean)}{extra}")
            result["outputs"][name] = float(mean)
        self.curve.tests.append(result)

    # ------------------------------------------------------------------ snapshots
    def snapshot_filename(self, ext: str) -> str:
        return f"{self.param.snapshot_prefix}_iter_{self.iter}{ext}"

    def snapshot(self) -> None:
        """``Solver::Snapshot``: weights then solver state, each written atomically."""
        if self.rank != 0:
            return
        from netdef.io.caffemodel import make_solverstate, write_solverstate
        from netdef.lowering.weights import save

        if not has(self.param, "snapshot_prefix"):
            raise SolverError("snapshot_prefix is not set", hint="set snapshot_prefix in the solver")
        Path(self.param.snapshot_prefix).parent.mkdir(parents=True, exist_ok=True)
        hdf5 = self.param.snapshot_format.name == "HDF5"
        if hdf5:
            model = self.snapshot_filename(".caffemodel.h5")
            self.log(f"Snapshotting to HDF5 file {model}")
        else:
            model = self.snapshot_filename(".caffemodel")
            self.log(f"Snapshotting to binary proto file {model}")
        save(self.train.module, model, self.train.analysis, format="hdf5" if hdf5 else "binaryproto")
        history = [h.detach().cpu().numpy() for h in self.solver.history()]
        state = make_solverstate(self.iter, model, history, self.lr.current_step)
        ext = ".solverstate.h5" if hdf5 else ".solverstate"
        path = self.snapshot_filename(ext)
        from netdef.io.atomic import atomic_write

        # the sidecar (data positions for an exact resume) lands before the solverstate,
        # so every solverstate on disk has one, whenever a crash happens
        atomic_write(path + ".netdef.json", json.dumps(
            {"iter": self.iter, "train_batches": self._batches_read * self.world,  # whole stream
             "test_batches": self._test_batches}).encode())
        kind = "HDF5 file" if hdf5 else "binary proto file"
        self.log(f"Snapshotting solver state to {kind} {path}")
        write_solverstate(path, state, hdf5_format=hdf5)
        self.write_curve()

    def restore(self, path: str) -> None:
        """``Solver::Restore``: iteration, weights (learned_net), history, lr step.

        Caffe restarts its data readers at the first record; netdef replays the data
        streams to where the snapshot was taken when its ``.netdef.json`` sidecar is
        there, so a resumed run continues exactly like the uninterrupted one.
        """
        from netdef.io.caffemodel import read_solverstate, solverstate_history
        from netdef.lowering.weights import load_file

        state = read_solverstate(path)
        self.iter = state.iter
        if has(state, "learned_net") and state.learned_net:
            load_file(self.train.module, state.learned_net,
                      net_layers=[l.name for l in self.train.analysis.layers])
        self.lr.current_step = state.current_step
        self.log("SGDSolver: restoring history")
        self.solver.load_history(solverstate_history(state, path))
        sidecar = Path(path + ".netdef.json")
        if sidecar.exists():
            info = json.loads(sidecar.read_text())
            # train_batches counts batches of the whole stream (all ranks); each of
            # `world` ranks (any world size) has read its share of them
            mine = info.get("train_batches", 0) // self.world
            for _ in range(mine):
                self.train.next_inputs()
            self._batches_read = mine
            for k, (net, n) in enumerate(zip(self.tests, info.get("test_batches", []))):
                for _ in range(n):
                    net.next_inputs()
                self._test_batches[k] = n

    def write_curve(self) -> None:
        if self.rank != 0 or not has(self.param, "snapshot_prefix"):
            return
        from netdef.io.atomic import atomic_write

        Path(self.param.snapshot_prefix).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(f"{self.param.snapshot_prefix}_curve.json", self.curve.to_json().encode())


class _signals:
    """SIGINT → snapshot and stop; SIGHUP → snapshot and go on (main thread only)."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.saved: dict[int, object] = {}

    def __enter__(self) -> None:
        import threading

        if threading.current_thread() is not threading.main_thread():
            return
        for sig, action in ((signal.SIGINT, "stop"), (getattr(signal, "SIGHUP", None), "snapshot")):
            if sig is None:
                continue
            self.saved[sig] = signal.signal(sig, self._handler(action))

    def _handler(self, action: str):  # noqa: ANN202
        def handle(signum: int, frame: object) -> None:
            self.trainer.requested = action
        return handle

    def __exit__(self, *exc: object) -> None:
        for sig, old in self.saved.items():
            signal.signal(sig, old)  # type: ignore[arg-type]


class _Progress:
    """A rich progress bar on a terminal's stderr (never when output is piped)."""

    def __init__(self, start: int, total: int) -> None:
        self.bar = None
        if not sys.stderr.isatty():
            return
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
        from rich.console import Console

        self.bar = Progress(TextColumn("iter {task.completed}/{task.total}"), BarColumn(),
                            TextColumn("loss {task.fields[loss]}"), TimeRemainingColumn(),
                            console=Console(file=sys.stderr), transient=True)
        self.task = self.bar.add_task("train", total=total, completed=start, loss="-")
        self.bar.start()

    def update(self, it: int, loss: float) -> None:
        if self.bar:
            self.bar.update(self.task, completed=it, loss=g(loss))

    def close(self) -> None:
        if self.bar:
            self.bar.stop()


def set_seed(param: SolverParameter) -> None:
    if param.random_seed >= 0:
        torch.manual_seed(param.random_seed)
        np.random.seed(param.random_seed % (2**32))


def pick_device(param: SolverParameter, override: str | None = None) -> torch.device:
    """``solver_mode``/``device_id`` (or ``--device``) → a torch device; CPU when no GPU."""
    if override:
        return torch.device(override)
    if param.solver_mode.name == "GPU" and torch.cuda.is_available():
        return torch.device("cuda", param.device_id)
    return torch.device("cpu")


def plot_curve(curve: Curve, path: str) -> None:
    """Train loss, test outputs and lr against iteration, as a PNG (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    its = [r for r in curve.iterations if "loss" in r]
    fig, axes = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    axes[0].plot([r["iter"] for r in its], [r["loss"] for r in its], label="train loss", lw=1)
    names = sorted({n for t in curve.tests for n in t["outputs"]})
    for name in names:
        pts = [(t["iter"], t["outputs"][name]) for t in curve.tests if name in t["outputs"]]
        axes[0].plot(*zip(*pts), marker="o", label=f"test {name}")
    axes[0].legend()
    axes[0].set_ylabel("value")
    axes[1].plot([r["iter"] for r in its], [r["lr"] for r in its], color="tab:green")
    axes[1].set_ylabel("lr")
    axes[1].set_xlabel("iteration")
    fig.tight_layout()
    from io import BytesIO

    buf = BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    from netdef.io.atomic import atomic_write

    atomic_write(path, buf.getvalue())
