"""``netdef time NET --memory``: measured peak memory against the report's prediction.

Builds the whole-graph module (:func:`netdef.lowering.module.build`), feeds it the
random inputs ``netdef time`` uses, measures one training iteration pair and one
inference forward (:mod:`netdef.lowering.memory` says exactly what is counted) and
prints each next to :func:`netdef.analysis.memory.predict` with predicted/measured.
``--forward-only`` measures inference only.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

from netdef.analysis.counts import human_bytes
from netdef.errors import NetdefError


def run(args: argparse.Namespace) -> int:
    import torch

    from netdef.analysis.memory import predict
    from netdef.cli.report_cmd import analyze_from_args
    from netdef.cli.time_cmd import random_inputs
    from netdef.lowering import memory as measure
    from netdef.lowering import runtime as rt
    from netdef.lowering.module import build

    if args.dtype != "float32":
        raise NetdefError(f"--memory measures float32 nets, not --dtype {args.dtype}",
                          hint="drop --dtype (the prediction assumes float32 tensors)")
    if getattr(args, "compile", False):
        raise NetdefError("--memory measures the eager module, not --compile",
                          hint="drop --compile (the prediction models eager PyTorch)")
    if args.channels_last:
        raise NetdefError("--memory does not support --channels-last",
                          hint="drop --channels-last (the prediction assumes NCHW tensors)")
    device = rt.pick_device(args.device)
    if device.type not in ("cpu", "cuda"):
        raise NetdefError(f"--memory measures on cpu or cuda, not '{device}'",
                          hint="pass --device cpu or --device cuda")
    rt.set_tf32(args.tf32)
    analysis = analyze_from_args(args)
    prediction = predict(analysis, "SGD", device.type)
    gen = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    module = build(analysis, generator=gen).to(device)
    inputs = {k: v.to(device) for k, v in random_inputs(analysis, gen).items()}
    out = sys.stdout
    out.write(f"Memory: {analysis.name or 'net'}, phase {analysis.phase}, {device}, float32; "
              "peak = bytes alive at the worst moment, params, buffers and inputs "
              "included\n")
    rows = []
    if not args.forward_only:
        m = measure.measure_training(module, analysis, inputs)
        how = {"loss": "loss = Σ loss_weight·loss tops",
               "outputs": "no loss: backward from every output with a ones gradient",
               "nothing": "nothing needs a gradient: no backward"}[m.backward_from]
        rows.append(("training", f"2 iterations: forward, {how}, backward, Caffe SGD update "
                     "(momentum 0.9; the first allocates the history)",
                     prediction.training, m))
    m = measure.measure_inference(module, inputs)
    rows.append(("inference", "one forward under torch.inference_mode()",
                 prediction.inference, m))
    for name, what, pred, meas in rows:
        out.write(f"{name} ({what}):\n")
        out.write(f"  predicted {pred.total:,} B ({human_bytes(pred.total)}) = "
                  f"{_parts(pred)}, at {pred.where}\n")
        out.write(f"  measured  {meas.peak_bytes:,} B ({human_bytes(meas.peak_bytes)}), "
                  f"{meas.start_bytes:,} B of it alive at the start (params, buffers, "
                  "inputs)\n")
        out.write(f"  predicted/measured {pred.total / meas.peak_bytes:.3f}\n")
    out.flush()
    return 0


def _parts(peak: Any) -> str:
    return " + ".join(f"{label} {human_bytes(v)}" for label, v in (
        ("params", peak.params), ("grads", peak.grads), ("history", peak.history),
        ("activations", peak.activations), ("workspace", peak.workspace)) if v)
