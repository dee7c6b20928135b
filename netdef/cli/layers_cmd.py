"""``netdef layers``: the registered layer types and their parameter messages."""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--v1", action="store_true", help="also show the V1 enum name")


def run(args: argparse.Namespace) -> int:
    from netdef.layers import registry

    for name, d in sorted(registry.all_types().items()):
        extra = f"  (V1 {d.v1_type})" if args.v1 and d.v1_type else ""
        print(f"{name:26s} {d.param_field or '-':24s} {d.category}{extra}")
    return 0
