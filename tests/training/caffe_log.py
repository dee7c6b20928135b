"""Parse Caffe-format training logs (Caffe's own, or netdef's) into a curve dict.

The same fields as the fixtures' curve.json (see fixtures/train/README.md), so a
netdef run and a Caffe run compare key by key.
"""
from __future__ import annotations

import re

PREFIX = re.compile(r"^[IWEF]\d{8} \d\d:\d\d:\d\d\.\d{6} +\d+ \S+:\d+\] ")
ITER_LOSS = re.compile(r"^Iteration (\d+) \(.*\), loss = (\S+)$")
TRAIN_OUT = re.compile(r"^    Train net output #\d+: (\S+) = (\S+)")
LR = re.compile(r"^Iteration (\d+), lr = (\S+)$")
TESTING = re.compile(r"^Iteration (\d+), Testing net \(#(\d+)\)$")
TEST_OUT = re.compile(r"^    Test net output #\d+: (\S+) = (\S+)")
FINAL = re.compile(r"^Iteration (\d+), loss = (\S+)$")
SNAP = re.compile(r"^Snapshotting to binary proto file (\S+)$")


def parse(text: str) -> dict:
    curve: dict = {"iterations": [], "tests": [], "final_forward": None, "snapshots": []}
    current: dict | None = None
    test: dict | None = None
    for raw in text.splitlines():
        line = PREFIX.sub("", raw)
        if m := ITER_LOSS.match(line):
            current = {"iter": int(m[1]), "loss": float(m[2]), "train_outputs": {}}
            curve["iterations"].append(current)
            test = None
        elif (m := TRAIN_OUT.match(line)) and current is not None:
            current["train_outputs"][m[1]] = float(m[2])
        elif m := LR.match(line):
            if current is not None and current["iter"] == int(m[1]):
                current["lr"] = float(m[2])
                current["lr_text"] = m[2]
        elif m := TESTING.match(line):
            test = {"iter": int(m[1]), "net": int(m[2]), "outputs": {}, "texts": {}}
            curve["tests"].append(test)
        elif (m := TEST_OUT.match(line)) and test is not None:
            test["outputs"][m[1]] = float(m[2])
            test["texts"][m[1]] = m[2]
        elif m := FINAL.match(line):
            curve["final_forward"] = {"iter": int(m[1]), "loss": float(m[2])}
        elif m := SNAP.match(line):
            curve["snapshots"].append(m[1])
    return curve
