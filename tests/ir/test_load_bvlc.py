"""Every real BVLC file loads: nets in both phases, solvers with their nets."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import CAFFE, bvlc_files, is_solver_file, need_shared
from netdef.api import load_net, load_solver, read_net
from netdef.errors import NetdefError
from netdef.ir.text import to_text
from netdef.layers import registry

FILES = bvlc_files()
NET_FILES = [p for p in FILES if not is_solver_file(p)]
SOLVER_FILES = [p for p in FILES if is_solver_file(p)]


def _id(p: Path) -> str:
    return str(p.relative_to(CAFFE)) if CAFFE in p.parents else p.name


def test_the_shared_folder_has_all_54_files() -> None:
    need_shared()
    assert (len(FILES), len(NET_FILES), len(SOLVER_FILES)) == (54, 29, 25)


@pytest.mark.parametrize("path", NET_FILES, ids=_id)
@pytest.mark.parametrize("phase", ["TRAIN", "TEST"])
def test_net_loads_in_both_phases(path: Path, phase: str) -> None:
    loaded = _load_with_some_stage(path, phase)
    net = loaded.net
    assert net.layer, "no layers"
    assert all(registry.is_known(l.type) for l in net.layer)
    assert not net.layers  # legacy V1 layers were upgraded
    tops = {t for l in net.layer for t in l.top}
    assert all(b in tops for l in net.layer for b in l.bottom)


def _load_with_some_stage(path: Path, phase: str):  # noqa: ANN202
    """Like a solver's test_state: nets whose TEST layers need a stage get one of theirs.

    (Caffe itself cannot build mnist_autoencoder's TEST net without a stage.)
    """
    try:
        return load_net(path, phase=phase)
    except NetdefError:
        stages = {s for l in read_net(path).layer for r in l.include for s in r.stage}
        if not stages:
            raise
    for stage in sorted(stages):
        try:
            return load_net(path, phase=phase, stages=(stage,))
        except NetdefError:
            continue
    return load_net(path, phase=phase, stages=tuple(sorted(stages)))


@pytest.mark.parametrize("path", NET_FILES, ids=_id)
def test_fmt_round_trip(path: Path) -> None:
    net = read_net(path)
    again = read_net(text=to_text(net))
    assert again == net


@pytest.mark.parametrize("path", SOLVER_FILES, ids=_id)
def test_solver_loads(path: Path) -> None:
    solver = load_solver(path)
    assert solver.type in ("SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam")
    assert solver.base_lr > 0
    again = load_solver(text=to_text(solver))
    assert again == solver


def test_train_val_phases_differ_as_caffe_filters_them() -> None:
    need_shared()
    path = CAFFE / "models/bvlc_alexnet/train_val.prototxt"
    train, test = load_net(path, phase="TRAIN"), load_net(path, phase="TEST")
    assert [l.name for l in train.net.layer][-1] == "loss"
    assert "accuracy" in [l.name for l in test.net.layer]
    assert "accuracy" not in [l.name for l in train.net.layer]
    assert len(train.net.layer) == 24 and len(test.net.layer) == 25
    assert train.filter_log[0] == ("The NetState phase (0) differed from the phase (1) "
                                   "specified by a rule in layer data")
