"""Training throughput: netdef's solver loop vs a hand-written PyTorch loop.

Same model (the netdef-lowered module, so the arithmetic is identical), same batches
(fixed in-memory tensors, so data loading is not measured), one process:

* **netdef**: ``Trainer.step`` — Caffe's iteration (forward/backward through the fx
  module, Caffe's SGD with lr_mult/decay_mult, lr policy, smoothed loss);
* **hand-written**: ``zero_grad; loss = Σ w·top; backward; torch.optim.SGD(momentum,
  weight_decay, foreach=True).step()``.

Iterations/s are medians over repeats of timed blocks, warm-up excluded, the two loops
alternating.  Also the optimizer step alone (netdef's CaffeSolver.step vs
torch.optim.SGD.step).  Goals (issue 7): ≥ 0.95× the hand-written loop's iterations/s;
update step ≤ 1.1× torch.optim.SGD(foreach=True).
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

from _common import REPO, write

sys.path.insert(0, str(REPO))


class _Fixed:
    """A data source handing out the same batch every time (no I/O in the timing)."""

    def __init__(self, batch: dict[str, torch.Tensor]) -> None:
        self.batch = batch

    def next_batch(self) -> dict[str, torch.Tensor]:
        return self.batch


def _setup(net_text: str, batch: int, shape: tuple[int, ...], classes: int):  # noqa: ANN202
    from netdef.api import prepare_net, read_net
    from netdef.analysis import analyze
    from netdef.ir.messages import SolverParameter
    from netdef.ir.schema import make
    from netdef.layers.registry import ShapeContext
    from netdef.lowering.module import build
    from netdef.training.loop import Trainer
    from netdef.training.nets import CompiledNet

    loaded = prepare_net(read_net(text=net_text), phase="TRAIN")
    analysis = analyze(loaded, ShapeContext(phase="TRAIN",
                                            input_shapes={"data": (batch, *shape), "label": (batch,)}))
    torch.manual_seed(0)
    module = build(analysis)
    data = {"data": torch.randn(batch, *shape), "label": torch.randint(0, classes, (batch,)).float()}
    net = CompiledNet("train", "bench", analysis, module, [_Fixed(data)])
    solver = make(SolverParameter, base_lr=0.001, lr_policy="fixed", momentum=0.9,
                  weight_decay=0.0005, max_iter=10**9, display=0, test_interval=0, snapshot=0)
    trainer = Trainer(solver, net, [], out=open("/dev/null", "w"))
    return trainer, module, data


def _hand_loop(module: torch.nn.Module, data: dict[str, torch.Tensor]):  # noqa: ANN202
    opt = torch.optim.SGD(module.parameters(), lr=0.001, momentum=0.9, weight_decay=0.0005,
                          foreach=True)
    weights = module.netdef_loss_weights

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        out = module(**data)
        loss = sum(w * out[t].sum() for t, w in weights.items())
        loss.backward()
        opt.step()
    return step, opt


def _time_block(fn, iters: int) -> float:  # noqa: ANN001
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t0) / iters


def bench(name: str, net: Path, batch: int, shape: tuple[int, ...], classes: int, iters: int,
          repeats: int) -> dict:
    text = net.read_text()
    start = text.index("layer {\n  name: \"conv1\"") if "conv1" in text else 0
    body = ('name: "bench"\nlayer { name: "data" type: "Input" top: "data" top: "label" '
            'input_param { shape { dim: 1 } shape { dim: 1 } } }\n' + text[start:])
    body = body.replace('  include { phase: TEST }\n', '')
    keep = []
    for block in body.split("layer {"):
        if '"Accuracy"' in block:
            continue
        keep.append(block)
    body = "layer {".join(keep)
    trainer, module, data = _setup(body, batch, shape, classes)
    ours = lambda: trainer.step(1)  # noqa: E731
    hand, opt = _hand_loop(module, data)
    for fn in (ours, hand):  # warm-up
        _time_block(fn, 2)
    ours_t, hand_t = [], []
    for _ in range(repeats):
        ours_t.append(_time_block(ours, iters))
        hand_t.append(_time_block(hand, iters))
    # optimizer step alone
    for p in trainer.params:
        p.grad = torch.randn_like(p)
    up_ours, up_torch = [], []
    for _ in range(repeats):
        up_ours.append(_time_block(lambda: trainer.solver.step(0, 0.001), iters))
        up_torch.append(_time_block(opt.step, iters))
    o, h = statistics.median(ours_t), statistics.median(hand_t)
    uo, ut = statistics.median(up_ours), statistics.median(up_torch)
    return {"net": name, "batch": batch, "iters_per_block": iters, "repeats": repeats,
            "netdef_iter_s": 1 / o, "hand_written_iter_s": 1 / h,
            "throughput_ratio_netdef_over_hand": h / o,
            "update_step_ms": {"netdef": uo * 1e3, "torch_optim_sgd_foreach": ut * 1e3,
                               "ratio": uo / ut}}


def digits_example() -> dict:
    """The README's example end to end (make-digits + train), wall time and accuracy."""
    import os
    import re
    import shutil
    import subprocess
    import tempfile

    work = Path(tempfile.mkdtemp())
    (work / "nets").mkdir()
    for name in ("digits.net", "digits_solver.net"):
        shutil.copy(REPO / "nets" / name, work / "nets" / name)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    t0 = time.perf_counter()
    for args in (["make-digits", "data/digits"], ["train", "nets/digits_solver.net", "--no-plot"]):
        proc = subprocess.run([sys.executable, "-m", "netdef", *args], cwd=work, env=env,
                              capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    acc = [float(a) for a in re.findall(r"accuracy = (\S+)", proc.stdout)]
    return {"wall_s": wall, "final_test_accuracy": acc[-1], "test_accuracies": acc,
            "goal": {"accuracy_min": 0.97, "wall_s_max": 180}}


def main() -> None:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    results = [bench("digits", REPO / "nets/digits.net", 50, (1, 8, 8), 10, 20, 7),
               bench("alexnet", REPO / "nets/alexnet_train_val.net", 32, (3, 227, 227), 1000, 1, 5)]
    write("train", {"device": "cpu", "threads": torch.get_num_threads(), "results": results,
                    "digits_example": digits_example(),
                    "goals": {"throughput_ratio_min": 0.95, "update_ratio_max": 1.1}})


if __name__ == "__main__":
    main()
