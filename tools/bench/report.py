"""Wall time of `netdef report` on GoogLeNet train_val and of `netdef --help` (cold).

Goals (issue 4): report < 0.5 s, start-up < 0.3 s.  Each run is a fresh process,
medians of 5 after one warm-up (which also fills the grammar's table cache).
"""
from __future__ import annotations

import sys

from _common import SHARED, cold_command, timeit, write


def main() -> None:
    net = SHARED / "caffe/models/bvlc_googlenet/train_val.prototxt"
    if not net.exists():
        sys.exit(f"missing {net}")
    report = timeit(cold_command(["report", str(net), "--input-shape", "data=32,3,224,224",
                                  "--input-shape", "label=32"]))
    help_ = timeit(cold_command(["--help"]))
    python = timeit(lambda: __import__("subprocess").run([sys.executable, "-c", "pass"]))
    write("report", {"report_googlenet_train_val": report, "netdef_help": help_,
                     "bare_python_start": python,
                     "goals": {"report_s": 0.5, "help_s": 0.3},
                     "met": {"report": report["median_s"] < 0.5, "help": help_["median_s"] < 0.3}})


if __name__ == "__main__":
    main()
