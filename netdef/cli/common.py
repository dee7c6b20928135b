"""Argument helpers shared by commands (phase/stage/level, input shapes)."""
from __future__ import annotations

import argparse

from netdef.errors import NetdefError


def add_state_args(p: argparse.ArgumentParser, default_phase: str | None = "TRAIN") -> None:
    p.add_argument("--phase", type=_phase, default=default_phase,
                   help=f"TRAIN or TEST (default {default_phase or 'all layers'})")
    p.add_argument("--stage", action="append", default=[], metavar="S",
                   help="add a NetState stage (repeatable)")
    p.add_argument("--level", type=int, default=0, help="NetState level (default 0)")


def add_shape_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input-shape", action="append", default=[], metavar="BLOB=N,C,H,W",
                   help="shape of an input/data top, e.g. data=1,3,224,224 (repeatable)")
    p.add_argument("--batch", type=int, default=None, help="override the batch size")


def _phase(text: str) -> str:
    up = text.upper()
    if up not in ("TRAIN", "TEST"):
        raise argparse.ArgumentTypeError("phase is TRAIN or TEST")
    return up


def parse_input_shapes(items: list[str]) -> dict[str, tuple[int, ...]]:
    out: dict[str, tuple[int, ...]] = {}
    for item in items:
        name, sep, dims = item.partition("=")
        try:
            if not sep or not name:
                raise ValueError
            shape = tuple(int(d) for d in dims.replace("x", ",").split(",") if d.strip())
            if not shape or any(d <= 0 for d in shape):
                raise ValueError
        except ValueError:
            raise NetdefError(f"bad --input-shape {item!r}",
                              hint="write BLOB=N,C,H,W, e.g. data=10,3,227,227") from None
        out[name] = shape
    return out
