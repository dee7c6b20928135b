"""Wall time of `netdef draw` of GoogLeNet train_val to SVG, as a cold subprocess.

Goal: < 2 s.  Each run is a fresh `python -m netdef draw …` (parse, upgrade, analysis,
DOT, Graphviz `dot -Tsvg`, atomic write); medians of 5 after one warm-up.  For context
it also times the same command writing .dot (no Graphviz) and a bare `dot -Tsvg` of the
DOT file, so the Python side and the layout can be told apart.

    python tools/bench/draw.py

Result JSON: tools/bench/results/draw.json
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import SHARED, cold_command, timeit, write


def main() -> None:
    net = SHARED / "caffe/models/bvlc_googlenet/train_val.prototxt"
    if not net.exists():
        sys.exit(f"missing {net}")
    dot = shutil.which("dot")
    if dot is None:
        sys.exit("Graphviz `dot` is not installed (apt-get install graphviz)")
    shapes = ["--input-shape", "data=32,3,224,224", "--input-shape", "label=32"]
    with tempfile.TemporaryDirectory() as tmp:
        svg, dot_file = Path(tmp) / "googlenet.svg", Path(tmp) / "googlenet.dot"
        draw_svg = timeit(cold_command(["draw", str(net), "-o", str(svg), *shapes]))
        svg_bytes = svg.stat().st_size
        draw_dot = timeit(cold_command(["draw", str(net), "-o", str(dot_file), *shapes]))
        layout = timeit(lambda: subprocess.run([dot, "-Tsvg", str(dot_file), "-o",
                                                str(Path(tmp) / "plain.svg")], check=True))
    python = timeit(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True))
    write("draw", {"draw_googlenet_train_val_svg": draw_svg, "svg_bytes": svg_bytes,
                   "draw_googlenet_train_val_dot_only": draw_dot, "dot_Tsvg_only": layout,
                   "bare_python_start": python, "load_avg_1m": os.getloadavg()[0],
                   "goal_s": 2.0,
                   "met": draw_svg["median_s"] < 2.0})


if __name__ == "__main__":
    main()
