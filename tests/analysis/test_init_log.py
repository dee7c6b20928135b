"""`netdef report --caffe-log` equals real Caffe's Net::Init log, line for line.

Each fixture log's header names the model and the `caffe time` command (phase); the
section from "Initializing net from parameters:" to "Network initialization done."
is compared after stripping the glog prefix.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import CAFFE, FIXTURES, SHARED, need_shared
from netdef.analysis import analyze
from netdef.api import load_net

PREFIX = re.compile(r"^[IWEF]\d{8} \d\d:\d\d:\d\d\.\d{6} +\d+ \S+:\d+\] ")
LOGS = sorted((FIXTURES / "init-logs").glob("*.init.log")) if FIXTURES.is_dir() else []


def fixture_case(path: Path) -> tuple[Path, str, list[str]]:
    text = path.read_text().splitlines()
    model = next(l for l in text if l.startswith("# model: ")).split()[2]
    cmd = next(l for l in text if l.startswith("# Section 1"))
    phase = "TEST" if "-phase TEST" in cmd else "TRAIN"
    net = SHARED / model if model.startswith("shared/") else CAFFE / model
    net = Path(str(net).replace(str(SHARED / "shared"), str(SHARED)))
    lines, on = [], False
    for raw in text:
        line = PREFIX.sub("", raw)
        if line.startswith("Initializing net from parameters:"):
            on = True
        if on:
            lines.append(line)
        if on and line == "Network initialization done.":
            break
    return net, phase, lines


@pytest.mark.parametrize("log", LOGS, ids=[p.name.split(".")[0] for p in LOGS])
def test_init_log_is_byte_identical(log: Path) -> None:
    need_shared()
    net, phase, expected = fixture_case(log)
    ours = list(analyze(load_net(net, phase=phase, stages=("",))).log)
    for i, (a, b) in enumerate(zip(ours, expected)):
        assert a == b, f"line {i}: netdef {a!r} != caffe {b!r}"
    assert len(ours) == len(expected)


@pytest.mark.parametrize("model,memory", [("bvlc_alexnet", 83_232_440),
                                          ("bvlc_reference_caffenet", 68_681_400)])
def test_memory_required_for_data(model: str, memory: int) -> None:
    need_shared()
    a = analyze(load_net(CAFFE / f"models/{model}/deploy.prototxt", stages=("",)))
    assert a.memory_caffe_bytes == memory
    last = [l for l in a.log if l.startswith("Memory required for data:")][-1]
    assert last == f"Memory required for data: {memory}"
