"""Solver snapshots: Caffe's binary SolverState and the HDF5 layout of hdf5.cpp."""
from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np
import pytest

import netdef.ir.messages as M
from netdef.errors import WeightsError
from netdef.io import make_solverstate, read_solverstate, solverstate_history, write_solverstate

TRAIN = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "train"
pytestmark = pytest.mark.skipif(not TRAIN.is_dir(), reason="the Caffe fixtures (../shared) are not beside the repo")
STATES = sorted(TRAIN.glob("cases/*/snap_iter_*.solverstate"))
# parameter order of digits_net: what every history blob is shaped like
PARAMS = ["conv1/0", "conv1/1", "conv2/0", "conv2/1", "ip1/0", "ip1/1", "ip2/0", "ip2/1"]


def _expected_step(solver: str, iteration: int) -> int:
    """current_step as Caffe leaves it after computing the lr of update ``iteration - 1``."""
    last = iteration - 1
    policy = re.search(r'lr_policy:\s*"(\w+)"', solver).group(1)
    if policy == "step":
        return last // int(re.search(r"stepsize:\s*(\d+)", solver).group(1))
    if policy == "multistep":
        return sum(int(v) <= last for v in re.findall(r"stepvalue:\s*(\d+)", solver))
    return 0


def test_all_fixture_states_found() -> None:
    assert len(STATES) == 12


@pytest.mark.parametrize("path", STATES, ids=[f"{p.parent.name}/{p.name}" for p in STATES])
def test_fixture_solverstates(path: Path, tmp_path: Path) -> None:
    state = read_solverstate(path)
    it = int(re.search(r"_iter_(\d+)", path.name).group(1))
    assert state.iter == it
    solver = (path.parent / "solver.prototxt").read_text()
    assert state.current_step == _expected_step(solver, it)
    assert state.learned_net == f"cases/{path.parent.name}/snap_iter_{it}.caffemodel"
    two = re.search(r'type:\s*"(Adam|AdaDelta)"', solver) is not None
    assert len(state.history) == (16 if two else 8)
    with np.load(TRAIN / "init_params.npz") as z:
        shapes = [z[k].shape for k in PARAMS] * (2 if two else 1)
    history = solverstate_history(state)
    assert [h.shape for h in history] == shapes
    assert all(h.dtype == np.float32 and np.isfinite(h).all() for h in history)
    out = tmp_path / "again.solverstate"
    write_solverstate(out, state)
    assert out.read_bytes() == path.read_bytes()


def test_named_current_steps_from_readme() -> None:
    steps = {p.parent.name: read_solverstate(p).current_step
             for p in STATES if p.name == "snap_iter_60.solverstate"}
    assert steps["sgd_step"] == 2 and steps["nesterov_multistep"] == 2
    assert steps["adam_poly"] == steps["adagrad_fixed"] == steps["rmsprop_inv"] == 0


def test_resumed_run_has_identical_history() -> None:
    a = solverstate_history(read_solverstate(TRAIN / "cases/sgd_step/snap_iter_60.solverstate"))
    b = solverstate_history(read_solverstate(TRAIN / "cases/sgd_resume/snap_iter_60.solverstate"))
    assert all(x.tobytes() == y.tobytes() for x, y in zip(a, b))


def test_built_state_encodes_like_caffe() -> None:
    src = read_solverstate(TRAIN / "cases/adam_poly/snap_iter_60.solverstate")
    built = make_solverstate(src.iter, src.learned_net, solverstate_history(src), src.current_step)
    from netdef.io import encode
    assert encode(built) == (TRAIN / "cases/adam_poly/snap_iter_60.solverstate").read_bytes()


def test_hdf5_solverstate_layout_and_round_trip(tmp_path: Path) -> None:
    src = read_solverstate(TRAIN / "cases/adadelta_exp/snap_iter_60.solverstate")
    out = tmp_path / "snap_iter_60.solverstate.h5"
    write_solverstate(out, src)
    with h5py.File(out, "r") as f:
        assert set(f) == {"iter", "learned_net", "current_step", "history"}
        for key in ("iter", "current_step"):  # H5LTmake_dataset_int, dims {1}
            assert f[key].dtype == np.dtype("<i4") and f[key].shape == (1,)
        assert f["iter"][0] == 60
        ln = f["learned_net"]  # H5LTmake_dataset_string: scalar, strlen + 1, NULLTERM
        assert ln.shape == () and ln.id.get_type().get_size() == len(src.learned_net) + 1
        assert ln.id.get_type().get_strpad() == h5py.h5t.STR_NULLTERM
        assert ln[()] == src.learned_net.encode()
        assert sorted(f["history"], key=int) == [str(i) for i in range(16)]
        assert f["history/0"].dtype == np.dtype("<f4") and f["history/0"].shape == (8, 1, 3, 3)
    back = read_solverstate(out)
    assert (back.iter, back.learned_net, back.current_step) == (60, src.learned_net, 0)
    assert all(a.tobytes() == b.tobytes()
               for a, b in zip(solverstate_history(back), solverstate_history(src)))


def test_damaged_solverstates(tmp_path: Path) -> None:
    raw = (TRAIN / "cases/sgd_step/snap_iter_60.solverstate").read_bytes()
    for cut in (1, 30, 500, len(raw) - 3):
        p = tmp_path / f"cut{cut}.solverstate"
        p.write_bytes(raw[:cut])
        with pytest.raises(WeightsError, match="at byte"):
            read_solverstate(p)
    p = tmp_path / "weights.solverstate"
    p.write_bytes((TRAIN / "init.caffemodel").read_bytes()[:0])
    with pytest.raises(WeightsError, match="no 'iter'"):
        read_solverstate(p)
    h5 = tmp_path / "cut.solverstate.h5"
    write_solverstate(h5, make_solverstate(1, "x", [np.ones(3)]))
    h5.write_bytes(h5.read_bytes()[:900])
    with pytest.raises(WeightsError):
        read_solverstate(h5)


def test_state_message_type() -> None:
    state = make_solverstate(5, None, [np.zeros((2, 2))])
    assert isinstance(state, M.SolverState) and state.history[0].shape.dim == (2, 2)
