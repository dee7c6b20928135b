"""``netdef train``: Caffe's ``caffe train`` on PyTorch (logs in Caffe's format)."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("solver", help="a Caffe solver file (e.g. nets/digits_solver.net)")
    p.add_argument("--weights", help="comma-separated .caffemodel(s) to fine-tune from")
    p.add_argument("--snapshot", help="a .solverstate to resume from")
    p.add_argument("--device", help="cpu, cuda, cuda:1 … (default: the solver's solver_mode)")
    p.add_argument("--iterations", type=int, help="override max_iter")
    p.add_argument("--no-plot", action="store_true", help="do not write the PNG curve")


def prepare_solver(path: str, lines: list[str], iterations: int | None = None):  # noqa: ANN201
    """Load and upgrade a solver; Caffe's snapshot_prefix defaults (logged)."""
    from netdef.api import load_solver
    from netdef.ir.schema import has, update

    solver = load_solver(path, log=lines)
    if not has(solver, "snapshot_prefix"):
        prefix = str(Path(path).with_suffix(""))
        solver = update(solver, snapshot_prefix=prefix)
        lines.append(f"snapshot_prefix was not specified and is set to {prefix}")
    elif os.path.isdir(solver.snapshot_prefix):
        prefix = str(Path(solver.snapshot_prefix) / Path(path).stem)
        solver = update(solver, snapshot_prefix=prefix)
        lines.append(f"snapshot_prefix was a directory and is replaced to {prefix}")
    if iterations is not None:
        solver = update(solver, max_iter=iterations)
    return solver


def run(args: argparse.Namespace) -> int:
    from netdef.errors import NetdefError
    from netdef.ir.schema import update
    from netdef.ir.text import to_text
    from netdef.lowering.weights import load_file
    from netdef.training.loop import Trainer, pick_device, plot_curve, set_seed
    from netdef.training.nets import compile_solver_nets

    out = sys.stdout
    if args.weights and args.snapshot:
        raise NetdefError("give a snapshot to resume training or weights to fine-tune, not both",
                          hint="--snapshot X.solverstate or --weights Y.caffemodel")
    lines: list[str] = []
    solver = prepare_solver(args.solver, lines, args.iterations)
    weights = list(solver.weights) + (args.weights.split(",") if args.weights else [])
    if args.weights:
        solver = update(solver, weights=tuple(weights))
    device = pick_device(solver, args.device)
    out.write("Use CPU.\n" if device.type == "cpu" else f"Use GPU with device ID {device.index or 0}\n")
    out.write("".join(l + "\n" for l in lines))
    set_seed(solver)
    out.write("Initializing solver from parameters: \n" + to_text(solver))
    log: list[str] = []
    train, tests = compile_solver_nets(solver, args.solver, device=device, log=log)
    out.write("".join(l + "\n" for l in log))
    out.write("Solver scaffolding done.\n")
    for net in [train, *tests]:
        for w in weights:
            out.write(f"Finetuning from {w}\n")
            load_file(net.module, w, net_layers=[l.name for l in net.analysis.layers])
    if args.snapshot:
        out.write(f"Resuming from {args.snapshot}\n")
    trainer = Trainer(solver, train, tests, out=out, progress=sys.stderr.isatty())
    try:
        trainer.solve(resume=args.snapshot)
    finally:
        for net in [train, *tests]:
            net.close()
    out.write("Optimization Done.\n")
    if not args.no_plot and trainer.curve.iterations:
        png = f"{solver.snapshot_prefix}_curve.png"
        plot_curve(trainer.curve, png)
        print(f"wrote {png}", file=sys.stderr)
    return 0
