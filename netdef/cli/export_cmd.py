"""``netdef export``: a net (+ weights) as standalone PyTorch, TorchScript, torch.export or ONNX.

    netdef export NET [--weights W] --format py|torchscript|export|onnx -o OUT
                  [--phase TEST] [--batch N] [--input-shape BLOB=N,C,H,W] [--opset 17]

Every format starts from the same readable plain-torch source (see
:mod:`netdef.export`); ``py`` writes it as ``OUT.py`` with its weights ``OUT.pt``.
"""
from __future__ import annotations

import argparse
import sys

from netdef.cli.common import add_shape_args, add_state_args

FORMATS = ("py", "torchscript", "export", "onnx")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="a .net/.prototxt net")
    p.add_argument("--weights", "-w", metavar="W",
                   help=".caffemodel (V2/V1) or .caffemodel.h5 to load; without it the "
                        "blobs get the net's fillers (seeded by --seed)")
    p.add_argument("--format", "-f", required=True, choices=FORMATS,
                   help="py: OUT.py + OUT.pt (state_dict); torchscript: jit.trace archive; "
                        "export: torch.export .pt2; onnx: checked .onnx")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="file to write")
    add_state_args(p, default_phase="TEST")
    add_shape_args(p)
    p.add_argument("--opset", type=int, default=None,
                   help="ONNX opset (default 17; 10 or later)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the fillers when no --weights are given (default 0)")
    p.add_argument("--class-name", metavar="NAME",
                   help="name of the generated nn.Module class (default: from the net's name)")
    p.add_argument("--verify", action="store_true",
                   help="run netdef's net and the written file on the same random input "
                        "and print the largest difference (ONNX: with onnxruntime)")


def run(args: argparse.Namespace) -> int:
    from netdef.cli.report_cmd import analyze_from_args
    from netdef.errors import NetdefError
    from netdef.export import pysource

    if args.opset is not None and args.format != "onnx":
        raise NetdefError("--opset is only for --format onnx")
    analysis = analyze_from_args(args)
    pysource.check_supported(analysis)  # before building: refuse unsupported types at once

    import torch

    from netdef.export import export, run_artifact
    from netdef.lowering.module import build

    module = build(analysis, generator=torch.Generator().manual_seed(args.seed))
    if args.weights:
        from netdef.lowering.weights import load_file

        report = load_file(module, args.weights, net_layers=[l.name for l in analysis.layers])
        for line in report.log:
            print(line, file=sys.stderr)
        if report.missing:
            print(f"netdef: {len(report.missing)} layer(s) not in {args.weights} keep their "
                  f"fillers: {', '.join(report.missing)}", file=sys.stderr)
    result = export(analysis, module, args.format, args.output, opset=args.opset,
                    source_label=args.file, class_name=args.class_name)
    gen = result.generated
    values = sum(int(v.numel()) for v in result.module.state_dict().values())
    ins = ", ".join(f"{b} {tuple(s)}" for b, s in gen.input_shapes.items())
    print(f"{args.format}: {gen.class_name} ({len(gen.attributes)} layers, {values:,} values); "
          f"inputs {ins}; outputs {', '.join(gen.outputs)}")
    for path in result.files:
        print(f"wrote {path}")
    if args.verify:
        _verify(analysis, module, result, run_artifact, args.seed)
    return 0


# (layer type, bottom index) that Caffe reads as integers: fed 0/1 by --verify
_INDEX_BOTTOMS = {("SoftmaxWithLoss", 1), ("Accuracy", 1), ("HingeLoss", 1),
                  ("MultinomialLogisticLoss", 1), ("InfogainLoss", 1), ("Embed", 0),
                  ("BatchReindex", 1), ("ContrastiveLoss", 2), ("SigmoidCrossEntropyLoss", 1)}


def _verify(analysis, module, result, run_artifact, seed: int) -> None:  # noqa: ANN001
    """netdef's net and the written file on the same random inputs (index-like inputs,
    e.g. labels, get 0/1); prints max |diff| per output, absolute and relative."""
    import numpy as np
    import torch

    from netdef.errors import NetdefError

    root: dict[str, str] = {}  # Split tops -> the blob they copy
    for info in analysis.layers:
        if info.is_split or info.type == "Split":
            for t in info.tops:
                root[t] = root.get(info.bottoms[0], info.bottoms[0])
    index_like = {root.get(b, b) for info in analysis.layers for i, b in enumerate(info.bottoms)
                  if (info.type, i) in _INDEX_BOTTOMS
                  or (info.type == "Filter" and i == len(info.bottoms) - 1)}
    gen = torch.Generator().manual_seed(seed)
    feeds = {}
    for b, s in result.generated.input_shapes.items():
        feeds[b] = (torch.randint(0, 2, tuple(s), generator=gen).float() if b in index_like
                    else torch.randn(tuple(s), generator=gen))
    module.eval()
    try:
        with torch.no_grad():
            ref = module(**feeds)
        got = run_artifact(result, feeds)
    except Exception as exc:  # noqa: BLE001 - one line for the CLI
        raise NetdefError(f"--verify could not run on random inputs: {type(exc).__name__}: "
                          f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}") from exc
    for name in result.generated.outputs:
        r = ref[name].detach().numpy()
        scale = float(np.abs(r).max()) or 1.0
        diff = float(np.abs(got[name].astype(np.float64) - r).max())
        print(f"verify {name}: max |diff| {diff:.3g} = {diff / scale:.3g} x max |netdef|")
