"""``netdef draw``: render a net with Graphviz (svg, png, pdf, or the DOT source)."""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from netdef.cli.common import add_shape_args, add_state_args

PHASE_NOTE = ("Unlike Caffe's draw_net.py (which draws the layers of every phase), netdef "
              "draws one phase, TRAIN unless --phase says otherwise, because blob shapes are "
              "worked out per phase.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = (PHASE_NOTE + " Data layers whose source is not on disk need --input-shape "
                "(e.g. --input-shape data=32,3,224,224 --input-shape label=32).")
    p.add_argument("file", help="a .net/.prototxt net")
    p.add_argument("-o", "--output", metavar="OUT",
                   help="output file; the format comes from its suffix: .svg, .png, .pdf or "
                        ".dot (default: <net name>.svg in the current directory; '-' writes "
                        "DOT to stdout)")
    add_state_args(p)
    for action in p._actions:  # say plainly which phase is drawn by default
        if action.dest == "phase":
            action.help = "TRAIN or TEST (default TRAIN; see below)"
    add_shape_args(p)
    p.add_argument("--rankdir", type=str.upper, choices=("TB", "LR", "BT", "RL"), default="TB",
                   help="direction of the graph: TB top→bottom (default), LR, BT, RL")
    p.add_argument("--no-shapes", action="store_true",
                   help="do not label edges with blob shapes")
    p.add_argument("--expand-inplace", action="store_true",
                   help="draw in-place layers (ReLU, Dropout, BatchNorm…) as nodes of their "
                        "own instead of '+ Type' lines in their producer's node")
    p.add_argument("--display-lrm", action="store_true",
                   help="show the lr_mult of each learnable blob (like draw_net.py "
                        "--display_lrm)")


def default_output(net_name: str, file: str) -> Path:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", net_name or "").strip("._") or Path(file).stem
    return Path(f"{stem}.svg")


def run(args: argparse.Namespace) -> int:
    from netdef.cli.report_cmd import analyze_from_args
    from netdef.errors import NetdefError
    from netdef.render.graph import FORMATS, INSTALL_HINT, DrawOptions, build_graph, \
        dot_available, render

    out = args.output
    if out is not None and out != "-":
        fmt = Path(out).suffix.lower().lstrip(".")
        if fmt not in FORMATS:
            raise NetdefError(f"cannot tell the output format from '{out}'",
                              hint="end the file name in .svg, .png, .pdf or .dot")
    analysis = analyze_from_args(args)
    options = DrawOptions(rankdir=args.rankdir, show_shapes=not args.no_shapes,
                          expand_inplace=args.expand_inplace, display_lrm=args.display_lrm)
    graph = build_graph(analysis, options)
    if out == "-":
        sys.stdout.write(graph.source)
        return 0
    path = Path(out) if out is not None else default_output(analysis.name, args.file)
    fmt = path.suffix.lower().lstrip(".")
    data = render(graph, fmt)
    _write(path, data)
    print(f"wrote {path}")
    if fmt == "dot" and not dot_available():
        print(f"note: Graphviz `dot` is not installed; to render the .dot file, "
              f"{INSTALL_HINT}", file=sys.stderr)
    return 0


def _write(path: Path, data: bytes) -> None:
    from netdef.errors import NetdefError

    try:
        from netdef.io.atomic import atomic_write
    except ImportError:  # pragma: no cover - atomic.py ships with netdef
        atomic_write = _replace_write
    try:
        atomic_write(path, data)
    except OSError as exc:
        raise NetdefError(f"cannot write {path}: {exc.strerror or exc}",
                          hint="check that the directory exists and is writable") from None


def _replace_write(path: Path, data: bytes) -> None:
    import os
    import tempfile

    fd, tmp = tempfile.mkstemp(dir=path.parent or ".", prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
