"""Replay real Caffe logs: for every layer Caffe set up, our ``shapes()`` on the logged
bottom shapes must give the logged ``Top shape``s.

* ``fixtures/init-logs``: 8 deploy nets (incl. R-CNN and VGG-19, which have no forward
  fixtures) at their own batch sizes;
* ``fixtures/train/cases/*/caffe.log``: the TRAIN and TEST nets of the digits net, whose
  data layers read the real HDF5 files and LMDB that Caffe read (shapes come from the
  data on disk) and whose loss prints ``Top shape: (1)``.

Each net is the one Caffe printed into the log ("Initializing net from parameters"),
or — where glog truncated that long message (GoogLeNet) — the prototxt named in the
log's ``# model:`` header.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from netdef.errors import NetdefError
from netdef.ir.build import BuildContext, build_message
from netdef.ir.messages import LayerParameter, NetParameter
from netdef.ir.schema import make, update
from netdef.layers import registry
from netdef.layers.registry import ShapeContext
from netdef.syntax import parse_text

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
FIXTURES = SHARED / "fixtures"
TRAIN = FIXTURES / "train"
GLOG = re.compile(r"^[IWEF]\d{8} [\d:.]+ +\d+ \S+:\d+\] (.*)$")
LOGS = sorted(FIXTURES.glob("init-logs/*.init.log")) + [
    TRAIN / "cases" / c / "caffe.log" for c in ("lmdb_transform", "sgd_step")]


def _nets(path: Path) -> list[tuple[NetParameter, list[str]]]:
    """(net, its glog messages) for each net the log's first section initialises."""
    text = path.read_text().split("########## SECTION 2")[0]
    chunks: list[tuple[list[str], list[str]]] = []  # (printed net lines, messages)
    printing = False
    for line in text.splitlines():
        m = GLOG.match(line)
        if m and m.group(1).startswith("Initializing net from parameters"):
            chunks.append(([], []))
            printing = True
        elif m:
            printing = False
            if chunks:
                chunks[-1][1].append(m.group(1))
        elif printing:
            chunks[-1][0].append(line)
    out = []
    for printed, msgs in chunks:
        try:
            raw = parse_text("\n".join(printed))
            net = build_message(NetParameter, raw, BuildContext(str(path)))
        except NetdefError:  # truncated by glog: use the model file named in the header
            model = re.search(r"^# model: (\S+)", text, re.M).group(1)  # type: ignore[union-attr]
            file = next(p for p in (SHARED.parent / model, SHARED / "caffe" / model) if p.exists())
            net = build_message(NetParameter, parse_text(file.read_text()), BuildContext(str(file)))
        out.append((net, msgs))
    return out


def _in_phase(layer: LayerParameter, phase: str) -> bool:
    if layer.include:
        return any(r.phase.name == phase for r in layer.include)
    return not any(r.phase.name == phase for r in layer.exclude)


def _top_shape(text: str) -> tuple[int, ...]:
    return tuple(int(d) for d in text.split("(")[0].split())  # "(1)" alone: a scalar


@pytest.mark.skipif(not FIXTURES.is_dir(), reason="shared fixtures not present")
@pytest.mark.parametrize("log", LOGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_logged_top_shapes(log: Path) -> None:
    nets = _nets(log)
    assert nets
    for net, msgs in nets:
        phase = net.state.phase.name
        by_name = {layer.name: layer for layer in net.layer if _in_phase(layer, phase)}
        ctx = ShapeContext(phase=phase, base_dir=TRAIN)
        blobs: dict[str, tuple[int, ...]] = {}
        layers: list[tuple[str, list[str], list[str], list[tuple[int, ...]]]] = []
        for msg in msgs:
            if msg.startswith("Creating Layer "):
                layers.append((msg[len("Creating Layer "):], [], [], []))
            elif layers and " <- " in msg:
                layers[-1][1].append(msg.split(" <- ", 1)[1])
            elif layers and " -> " in msg:
                layers[-1][2].append(msg.split(" -> ", 1)[1].removesuffix(" (in-place)"))
            elif layers and msg.startswith("Top shape:"):
                layers[-1][3].append(_top_shape(msg[len("Top shape:"):]))
        assert len(layers) >= 9
        for name, bottoms, tops, logged in layers:
            wiring = {"bottom": tuple(bottoms), "top": tuple(tops)}
            layer = (update(by_name[name], **wiring) if name in by_name
                     else make(LayerParameter, name=name, type="Split", **wiring))
            got = registry.get(layer.type).shapes(layer, [blobs[b] for b in bottoms], ctx)
            assert got == logged, f"{log.name} {phase}: {name}"
            blobs.update(zip(tops, got))
