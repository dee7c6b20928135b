"""``netdef fmt``: the canonical, upgraded protobuf text of a net or solver.

Round trip: parsing the output gives the same IR as parsing the input (after upgrade).
"""
from __future__ import annotations

import argparse
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="a net or solver file")
    p.add_argument("-o", "--output", help="write here (atomically) instead of stdout")


def run(args: argparse.Namespace) -> int:
    from netdef.api import load_solver, looks_like_solver, read_net
    from netdef.ir.text import to_text
    from netdef.syntax import read_source

    text = read_source(args.file)
    warnings: list[str] = []
    if looks_like_solver(text):
        out = to_text(load_solver(args.file, text=text))
    else:
        out = to_text(read_net(args.file, text=text, warnings=warnings))
    for w in warnings:
        print(w, file=sys.stderr)
    if args.output:
        from netdef.io.atomic import atomic_write
        atomic_write(args.output, out.encode())
    else:
        sys.stdout.write(out)
    return 0
