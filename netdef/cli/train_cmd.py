"""``netdef train``: Caffe's ``caffe train`` on PyTorch (logs in Caffe's format).

Data-parallel training (Caffe's ``-gpu 0,1``): ``--gpus 0,1`` starts ``torchrun`` with one
process per GPU; under ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set) every
process joins the process group (NCCL on CUDA, gloo on the CPU) and trains one rank
(:mod:`netdef.training.distributed`).  Only rank 0 writes the log, snapshots and plot.
"""
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
    p.add_argument("--compile", action="store_true",
                   help="torch.compile (inductor) the train and test nets; falls back to "
                        "eager with a one-line message when the compiler is unavailable")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels-last memory format for the nets (default: on for "
                        "convolutional nets on the CPU; --no-channels-last keeps NCHW)")
    p.add_argument("--gpus", metavar="IDS",
                   help="data-parallel on these GPUs, e.g. 0,1 or all (Caffe's -gpu): starts "
                        "torchrun with one process per GPU; each GPU trains the net's "
                        "batch_size, the effective batch is N x batch_size")


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


def _relaunch_args(args: argparse.Namespace) -> list[str]:
    """This command's arguments for the ranks torchrun starts (``--gpus`` → ``--device cuda``)."""
    tail = ["train", args.solver, "--device", "cuda"]
    for flag, value in (("--weights", args.weights), ("--snapshot", args.snapshot),
                        ("--iterations", args.iterations)):
        if value is not None:
            tail += [flag, str(value)]
    if args.no_plot:
        tail.append("--no-plot")
    if args.compile:
        tail.append("--compile")
    if args.channels_last is not None:
        tail.append("--channels-last" if args.channels_last else "--no-channels-last")
    return tail


def run(args: argparse.Namespace) -> int:
    from netdef.errors import NetdefError
    from netdef.training import distributed as dist

    if args.weights and args.snapshot:
        raise NetdefError("give a snapshot to resume training or weights to fine-tune, not both",
                          hint="--snapshot X.solverstate or --weights Y.caffemodel")
    launch = dist.from_env()
    device_arg = args.device
    if getattr(args, "gpus", None) is not None:
        if launch is not None and launch.world > 1:
            raise NetdefError("--gpus starts torchrun itself; do not combine it with torchrun",
                              hint="under torchrun use --nproc_per_node (one process per GPU)")
        gpus = dist.parse_gpus(args.gpus)
        if len(gpus) > 1:
            return dist.launch_torchrun(_relaunch_args(args), gpus)
        device_arg = f"cuda:{gpus[0]}"
    if launch is not None and launch.world == 1:
        launch = None  # a one-process torchrun job: plain training
    return _train(args, device_arg, launch)


def _train(args: argparse.Namespace, device_arg: str | None, launch) -> int:  # noqa: ANN001
    from netdef.ir.schema import update
    from netdef.ir.text import to_text
    from netdef.lowering.weights import load_file
    from netdef.training import distributed as dist
    from netdef.training.loop import Trainer, pick_device, plot_curve, set_seed
    from netdef.training.nets import compile_solver_nets

    rank, world = (launch.rank, launch.world) if launch else (0, 1)
    out = sys.stdout if rank == 0 else dist.null_output()
    lines: list[str] = []
    solver = prepare_solver(args.solver, lines, args.iterations)
    weights = list(solver.weights) + (args.weights.split(",") if args.weights else [])
    if args.weights:
        solver = update(solver, weights=tuple(weights))
    device = pick_device(solver, device_arg)
    from netdef.lowering.runtime import prepare_device

    prepare_device(device)
    group = None
    if launch:
        device = dist.rank_device(device, launch)
        dist.install_sigterm(rank)
        group = dist.ProcessGroup(launch, device)
    try:
        out.write("Use CPU.\n" if device.type == "cpu" else f"Use GPU with device ID {device.index or 0}\n")
        if group:
            out.write(f"Data-parallel training on {world} ranks ({group.backend}): rank k "
                      f"reads train batches k, k+{world}, ...; gradients and printed losses "
                      "are means over the ranks\n")
        out.write("".join(l + "\n" for l in lines))
        set_seed(solver)
        out.write("Initializing solver from parameters: \n" + to_text(solver))
        log: list[str] = []
        train, tests = compile_solver_nets(solver, args.solver, device=device, rank=rank,
                                           world=world, log=log,
                                           channels_last=args.channels_last)
        out.write("".join(l + "\n" for l in log))
        out.write("Solver scaffolding done.\n")
        try:
            for net in [train, *tests]:
                for w in weights:
                    out.write(f"Finetuning from {w}\n")
                    load_file(net.module, w, net_layers=[l.name for l in net.analysis.layers])
            if args.compile:
                from netdef.lowering.runtime import CompiledRunner

                for net in [train, *tests]:
                    net.runner = CompiledRunner(net.module)
            if args.snapshot:
                out.write(f"Resuming from {args.snapshot}\n")
            progress = sys.stderr.isatty() and rank == 0
            if group:
                trainer: Trainer = dist.DistributedTrainer(solver, train, tests, group=group,
                                                           out=out, progress=progress)
                trainer.sync_start(dist.net_fingerprint(solver, train, tests))
            else:
                trainer = Trainer(solver, train, tests, out=out, progress=progress)
            trainer.solve(resume=args.snapshot)
            if group:
                trainer.check_in_sync()
        finally:
            for net in [train, *tests]:
                net.close()
        out.write("Optimization Done.\n")
        out.flush()
        if rank == 0 and not args.no_plot and trainer.curve.iterations:
            png = f"{solver.snapshot_prefix}_curve.png"
            plot_curve(trainer.curve, png)
            print(f"wrote {png}", file=sys.stderr)
    except BaseException as exc:
        if group is None:
            raise
        # A rank is lost or this one failed: report, then leave at once.  Tearing the
        # process group down normally would block on (NCCL) or abort in (gloo) the
        # connections to the dead peer; the survivors see this rank's sockets close.
        if not isinstance(exc, dist.RankLost):
            group.announce_failure(str(exc) or type(exc).__name__)
        group = None
        _exit_now(exc)
    finally:
        if group is not None:
            group.close()
        if out is not sys.stdout:
            out.close()
    return 0


def _exit_now(exc: BaseException) -> None:
    """Print ``exc`` as ``netdef`` would and end the process without running destructors."""
    from netdef.errors import NetdefError

    if isinstance(exc, NetdefError):
        text, code = exc.format(), 2
    elif isinstance(exc, KeyboardInterrupt):
        text, code = "netdef: interrupted", 130
    elif isinstance(exc, SystemExit):
        text, code = "", exc.code if isinstance(exc.code, int) else 1
    else:
        import traceback

        text, code = "".join(traceback.format_exception(exc)).rstrip(), 1
    try:
        sys.stdout.flush()
        if text:
            print(text, file=sys.stderr)
        sys.stderr.flush()
    finally:
        os._exit(code)
