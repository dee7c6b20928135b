"""``netdef report``: per-layer shapes, params, MACs, memory — or Caffe's init log."""
from __future__ import annotations

import argparse
import json
import sys

from netdef.cli.common import add_shape_args, add_state_args, parse_input_shapes


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="a .net/.prototxt net")
    add_state_args(p)
    add_shape_args(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--caffe-log", action="store_true",
                   help="print the lines Caffe's Net::Init logs (as `caffe time` would; no "
                        "glog prefix)")
    p.add_argument("--solver-type", default="SGD",
                   help="solver whose history memory to count (default SGD)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                   help="whose kernels the peak-memory prediction models (default cpu)")


def analyze_from_args(args: argparse.Namespace):  # noqa: ANN201 - NetAnalysis
    """Shared by report/draw: load, then run the analysis with CLI overrides."""
    from netdef.analysis import analyze
    from netdef.api import load_net
    from netdef.layers.registry import ShapeContext

    stages = tuple(args.stage)
    if getattr(args, "caffe_log", False) and not stages:
        stages = ("",)  # the `caffe` tool always adds its -stage flag (default "")
    loaded = load_net(args.file, phase=args.phase or "TRAIN", level=args.level, stages=stages)
    for w in loaded.warnings:
        print(w, file=sys.stderr)
    ctx = ShapeContext(phase=loaded.state.phase.name,
                       input_shapes=parse_input_shapes(args.input_shape), batch=args.batch,
                       base_dir=loaded.base_dir)
    return analyze(loaded, ctx)


def run(args: argparse.Namespace) -> int:
    analysis = analyze_from_args(args)
    if args.caffe_log:
        sys.stdout.write("".join(line + "\n" for line in analysis.loaded.upgrade_log))
        sys.stdout.write("".join(line + "\n" for line in analysis.log))
        return 0
    from netdef.analysis.report import as_json, print_table

    if args.json:
        json.dump(as_json(analysis, args.solver_type, args.device), sys.stdout, indent=1)
        print()
    else:
        print_table(analysis, args.solver_type, device=args.device)
    return 0
