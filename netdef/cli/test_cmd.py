"""``netdef test``: Caffe's ``caffe test`` — score a trained net over N batches."""
from __future__ import annotations

import argparse
import sys

from netdef.cli.common import add_state_args


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("net", help="a net with data layers (e.g. a train_val file)")
    p.add_argument("--weights", required=True, help="trained .caffemodel / .caffemodel.h5")
    p.add_argument("--iterations", type=int, default=50, help="batches to run (default 50)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 … (default: CUDA when available)")
    add_state_args(p, default_phase="TEST")


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from netdef.analysis import analyze
    from netdef.api import load_net
    from netdef.layers.registry import ShapeContext
    from netdef.lowering.module import build
    from netdef.lowering.weights import load_file
    from netdef.training.loop import g
    from netdef.training.nets import CompiledNet, _make_sources

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out = sys.stdout
    loaded = load_net(args.net, phase=args.phase, level=args.level, stages=tuple(args.stage))
    base = loaded.base_dir
    analysis = analyze(loaded, ShapeContext(phase=args.phase, base_dir=base))
    module = build(analysis)
    load_file(module, args.weights, net_layers=[l.name for l in analysis.layers])
    module.to(device).train(args.phase == "TRAIN")
    net = CompiledNet("test", args.net, analysis, module, device=device)
    net.sources = _make_sources(loaded, args.phase, base, 0, 1, -1)
    out.write(f"Running for {args.iterations} iterations.\n")
    scores: list[np.float32] = []
    names: list[str] = []
    loss_total = np.float32(0)
    try:
        with torch.inference_mode():
            for i in range(args.iterations):
                outputs, loss = net.forward()
                loss_total = np.float32(loss_total + np.float32(float(loss)))
                idx = 0
                for name in analysis.outputs:
                    for v in outputs[name].float().cpu().reshape(-1).tolist():
                        if i == 0:
                            scores.append(np.float32(v))
                            names.append(name)
                        else:
                            scores[idx] = np.float32(scores[idx] + np.float32(v))
                        out.write(f"Batch {i}, {name} = {g(v)}\n")
                        idx += 1
    finally:
        net.close()
    n = np.float32(args.iterations)
    out.write(f"Loss: {g(np.float32(loss_total / n))}\n")
    weights = net.loss_weights
    for name, total in zip(names, scores):
        mean = np.float32(total / n)
        w = weights.get(name, 0.0)
        extra = f" (* {g(w)} = {g(np.float32(np.float32(w) * mean))} loss)" if w else ""
        out.write(f"{name} = {g(mean)}{extra}\n")
    return 0
