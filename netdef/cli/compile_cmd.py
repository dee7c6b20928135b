"""``netdef compile``: the front half of the pipeline and a one-screen summary."""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter

from netdef.cli.common import add_state_args


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="a .net/.prototxt net (V0, V1 or modern)")
    add_state_args(p)
    p.add_argument("--json", action="store_true", help="print the filtered IR as JSON")


def run(args: argparse.Namespace) -> int:
    from netdef.api import load_net
    from netdef.ir.schema import to_dict

    loaded = load_net(args.file, phase=args.phase, level=args.level, stages=tuple(args.stage))
    for w in loaded.warnings:
        print(w, file=sys.stderr)
    if args.json:
        json.dump(to_dict(loaded.net), sys.stdout, indent=1)
        print()
        return 0
    net = loaded.net
    produced, consumed = [], set()
    for layer in net.layer:
        consumed.update(layer.bottom)
        produced.extend(t for t in layer.top if t not in produced)
    inputs = [f"{t} ({l.type})" for l in net.layer if not l.bottom for t in l.top]
    outputs = sorted(t for t in produced if t not in consumed)
    types = Counter(l.type for l in net.layer)
    print(f"net {net.name or '(unnamed)'}: {len(net.layer)} layers, phase {loaded.state.phase.name}"
          f"  [{args.file}]")
    if loaded.upgrade_log:
        print("upgraded from a legacy format (netdef fmt prints the modern text)")
    print("inputs:  " + (", ".join(inputs) or "-"))
    print("outputs: " + (", ".join(outputs) or "-"))
    print("types:   " + ", ".join(f"{t}×{n}" if n > 1 else t for t, n in types.most_common()))
    print("ok")
    return 0
