"""Caffe update rules: the real sgd_step updates, a float64 reference of Caffe's
formulas for every solver type, Caffe's clip → normalize → regularize order, history
layout, and the printed (smoothed) loss."""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from netdef.errors import SolverError
from netdef.training.lr_policy import f32
from netdef.training.smoothing import SmoothedLoss, iteration_loss
from netdef.training.solvers import SOLVER_TYPES, CaffeSolver, ClipInfo, SolverConfig

FIXTURES = Path("/work/shared/fixtures/train")
needs_fixtures = pytest.mark.skipif(not FIXTURES.is_dir(), reason="training fixtures missing")
KEYS = ["conv1/0", "conv1/1", "conv2/0", "conv2/1", "ip1/0", "ip1/1", "ip2/0", "ip2/1"]
DIGITS_SPECS = [(1.0, 1.0) if k.endswith("/0") else (2.0, 0.0) for k in KEYS]


# -- the real Caffe run: sgd_step's first two updates ------------------------------

def _npz(name: str) -> dict[str, np.ndarray]:
    with np.load(FIXTURES / name) as f:
        return {k: f[k] for k in f.files}


def _within_ulps(got: np.ndarray, want: np.ndarray, *operands: np.ndarray,
                 ulps: float = 1.0) -> None:
    """|got − want| ≤ ``ulps`` ulp of the operands' magnitude (w_prev, update)."""
    scale = np.maximum.reduce([np.abs(o) for o in operands] + [np.abs(want)])
    err = np.abs(got.astype(np.float64) - want) / np.spacing(scale.astype(np.float32))
    assert err.max() <= ulps, err.max()


@needs_fixtures
def test_sgd_reproduces_caffe_updates_of_sgd_step() -> None:
    """README: update = lr·lr_mult·(grad + decay·w) + 0.9·previous, w −= update.

    The gradients are recovered from Caffe's own updates (previous = 0 at step 1;
    step 2 subtracts 0.9·update1), then fed to our SGD, which must reproduce Caffe's
    parameters after each step within one ulp (of the operands: where w_prev and
    the update nearly cancel, the result's own ulp is far smaller).
    """
    init = _npz("init_params.npz")
    params = [torch.tensor(init[k]) for k in KEYS]
    solver = CaffeSolver(params, DIGITS_SPECS,
                         dict(type="SGD", momentum=0.9, weight_decay=5e-4))
    lr, prev_w = 0.05, init
    prev_u = {k: np.zeros_like(v) for k, v in init.items()}
    for step in (1, 2):
        update = _npz(f"cases/sgd_step/update_step{step}.npz")
        after = _npz(f"cases/sgd_step/params_after_step{step}.npz")
        for k, p, (lr_mult, decay_mult) in zip(KEYS, params, DIGITS_SPECS):
            rate, decay = f32(lr * lr_mult), f32(f32(5e-4) * decay_mult)
            g = ((update[k] - f32(0.9) * prev_u[k].astype(np.float64)) / rate
                 - decay * prev_w[k].astype(np.float64))
            p.grad = torch.tensor(g.astype(np.float32))
        assert solver.step(step - 1, lr) is None
        for i, k in enumerate(KEYS):
            _within_ulps(params[i].numpy(), after[k], prev_w[k], update[k])
            assert np.array_equal(prev_w[k] - update[k], after[k])  # README's claim
        if step == 1:  # history = update; 2 ulp: the recovered g was rounded to float32
            for i, k in enumerate(KEYS):
                _within_ulps(solver.history()[i].numpy(), update[k], update[k], ulps=2)
        prev_w, prev_u = after, update


# -- float64 reference of Caffe's formulas ------------------------------------------

SHAPES = [(4, 3, 3, 3), (4,), (10, 20), (10,)]
SPECS = [(1.0, 1.0), (2.0, 0.0), (1.0, 1.0), (2.0, 0.0)]
LRS = [0.01, 0.01, 0.004, 0.004, 0.001, 0.0015]
CONFIGS = {
    "SGD": dict(momentum=0.9, weight_decay=5e-4),
    "Nesterov": dict(momentum=0.9, weight_decay=5e-4),
    "AdaGrad": dict(delta=1e-8, weight_decay=5e-4),
    "RMSProp": dict(rms_decay=0.98, delta=1e-6, weight_decay=5e-4),
    "AdaDelta": dict(momentum=0.95, delta=1e-6, weight_decay=5e-4),
    "Adam": dict(momentum=0.9, momentum2=0.999, delta=1e-8, weight_decay=5e-4,
                 regularization_type="L1"),
}


def _data(seed: int, steps: int) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
    rng = np.random.default_rng(seed)
    ws = [rng.normal(0, 0.1, s).astype(np.float32) for s in SHAPES]
    gs = [[rng.normal(0, 0.05, s).astype(np.float32) for s in SHAPES] for _ in range(steps)]
    return ws, gs


def _reference(kind: str, cfg: SolverConfig, ws: list[np.ndarray],
               grads: list[list[np.ndarray]], lrs: list[float], specs=SPECS):
    """Caffe's ApplyUpdate in float64 (float32 constants, as Caffe's Dtype)."""
    w = [x.astype(np.float64) for x in ws]
    h1 = [np.zeros_like(x) for x in w]
    h2 = [np.zeros_like(x) for x in w]
    for it, (gs, lr) in enumerate(zip(grads, lrs)):
        g = [x.astype(np.float64) for x in gs]
        if cfg.clip_gradients >= 0:
            norm = math.sqrt(sum(float((x * x).sum()) for x in g))
            if norm > cfg.clip_gradients:
                g = [x * (cfg.clip_gradients / norm) for x in g]
        for i, (lr_mult, decay_mult) in enumerate(specs):
            gi = g[i] / cfg.iter_size
            decay = cfg.weight_decay * decay_mult
            gi = gi + decay * (np.sign(w[i]) if cfg.regularization_type == "L1" else w[i])
            r, mu = f32(lr) * lr_mult, cfg.momentum
            if kind == "SGD":
                h1[i] = mu * h1[i] + r * gi
                u = h1[i]
            elif kind == "Nesterov":
                old = h1[i]
                h1[i] = mu * h1[i] + r * gi
                u = (1 + mu) * h1[i] - mu * old
            elif kind == "AdaGrad":
                h1[i] = h1[i] + gi * gi
                u = r * gi / (np.sqrt(h1[i]) + cfg.delta)
            elif kind == "RMSProp":
                h1[i] = cfg.rms_decay * h1[i] + (1 - cfg.rms_decay) * gi * gi
                u = r * gi / (np.sqrt(h1[i]) + cfg.delta)
            elif kind == "AdaDelta":
                h1[i] = mu * h1[i] + (1 - mu) * gi * gi
                u = gi * np.sqrt((h2[i] + cfg.delta) / (h1[i] + cfg.delta))
                h2[i] = mu * h2[i] + (1 - mu) * u * u
                u = r * u
            else:  # Adam
                b1, b2, t = cfg.momentum, cfg.momentum2, it + 1
                h1[i] = b1 * h1[i] + (1 - b1) * gi
                h2[i] = b2 * h2[i] + (1 - b2) * gi * gi
                corr = math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
                u = r * corr * h1[i] / (np.sqrt(h2[i]) + cfg.delta)
            w[i] = w[i] - u
    history = h1 if kind in ("SGD", "Nesterov", "AdaGrad", "RMSProp") else h1 + h2
    return w, history


def _run(solver: CaffeSolver, params: list[torch.Tensor], grads, lrs, start: int = 0):
    for it, (gs, lr) in enumerate(zip(grads, lrs), start):
        for p, g in zip(params, gs):
            p.grad = torch.tensor(g)
        solver.step(it, lr)


def _close(got: list[torch.Tensor], want: list[np.ndarray]) -> None:
    for a, b in zip(got, want):
        a = a.numpy()
        np.testing.assert_allclose(a, b, rtol=2e-6, atol=2e-6 * np.abs(b).max())


@pytest.mark.parametrize("kind", SOLVER_TYPES)
def test_solver_matches_float64_reference_of_caffe_formulas(kind: str) -> None:
    cfg = SolverConfig.of(dict(type=kind, **CONFIGS[kind]))
    ws, grads = _data(7, len(LRS))
    params = [torch.tensor(w) for w in ws]
    solver = CaffeSolver(params, SPECS, cfg)
    _run(solver, params, grads, LRS)
    ref_w, ref_h = _reference(kind, cfg, ws, grads, LRS)
    _close(params, ref_w)
    for p, w0, r in zip(params, ws, ref_w):  # the displacement too: AdaDelta's is ~1e-4
        moved, want = p.numpy() - w0, r - w0
        np.testing.assert_allclose(moved, want, rtol=1e-3, atol=1e-3 * np.abs(want).max())
    assert len(solver.history()) == len(ref_h)  # Caffe's solverstate layout
    _close(solver.history(), ref_h)


@pytest.mark.parametrize("kind", SOLVER_TYPES)
def test_resume_from_history_is_bit_exact(kind: str) -> None:
    cfg = dict(type=kind, **CONFIGS[kind])
    ws, grads = _data(3, 6)
    full = [torch.tensor(w) for w in ws]
    _run(CaffeSolver(full, SPECS, cfg), full, grads, LRS)

    first = [torch.tensor(w) for w in ws]
    a = CaffeSolver(first, SPECS, cfg)
    _run(a, first, grads[:3], LRS[:3])
    snapshot = [h.numpy().copy().ravel() for h in a.history()]  # as a BlobProto would
    resumed = [p.clone() for p in first]
    b = CaffeSolver(resumed, SPECS, cfg)
    b.load_history(snapshot)
    _run(b, resumed, grads[3:], LRS[3:], start=3)
    for x, y in zip(full, resumed):
        assert torch.equal(x, y)


def test_history_order_adam_m_then_v_adadelta_grad_then_update() -> None:
    ws, grads = _data(5, 2)
    for kind in ("Adam", "AdaDelta"):
        params = [torch.tensor(w) for w in ws]
        solver = CaffeSolver(params, SPECS, dict(type=kind, **CONFIGS[kind]))
        _run(solver, params, grads, [0.01, 0.01])
        _, ref_h = _reference(kind, solver.config, ws, grads, [0.01, 0.01])
        assert [tuple(h.shape) for h in solver.history()] == SHAPES + SHAPES
        _close(solver.history(), ref_h)


# -- Caffe's momentum history is not torch.optim's ----------------------------------

def test_sgd_differs_from_torch_optim_when_lr_changes() -> None:
    specs = [(1.0, 1.0)] * len(SHAPES)
    cfg = SolverConfig.of(dict(type="SGD", momentum=0.9, weight_decay=5e-4))
    lrs = [0.1, 0.1, 0.1, 0.01, 0.01, 0.01]
    ws, grads = _data(11, len(lrs))
    ours = [torch.tensor(w) for w in ws]
    solver = CaffeSolver(ours, specs, cfg)
    theirs = [torch.tensor(w) for w in ws]
    opt = torch.optim.SGD(theirs, lr=lrs[0], momentum=f32(0.9), weight_decay=f32(5e-4))
    for it, (gs, lr) in enumerate(zip(grads, lrs)):
        for p, q, g in zip(ours, theirs, gs):
            p.grad, q.grad = torch.tensor(g), torch.tensor(g)
        solver.step(it, lr)
        opt.param_groups[0]["lr"] = lr
        opt.step()
        gap = max(float((p - q).abs().max()) for p, q in zip(ours, theirs))
        if it < 3:  # constant lr: the same math up to rounding
            assert gap < 1e-6
        else:  # torch rescales the accumulated velocity by the new lr at once
            assert gap > 1e-3
    ref_w, _ = _reference("SGD", cfg, ws, grads, lrs, specs)
    _close(ours, ref_w)


# -- ApplyUpdate order: clip (summed diffs) → normalize → regularize → update --------

def test_clip_uses_summed_gradient_then_normalizes_then_adds_l1(caplog) -> None:
    ws, (g,) = _data(13, 1)
    sub_batches = [[x * 0.6 for x in g], [x * 0.4 for x in g]]
    summed = [(a + b).astype(np.float32) for a, b in zip(*sub_batches)]
    norm = math.sqrt(sum(float((x.astype(np.float64) ** 2).sum()) for x in summed))
    threshold = round(0.75 * norm, 3)  # summed norm > threshold > averaged norm
    assert norm / 2 < threshold < norm
    cfg = SolverConfig.of(dict(type="SGD", momentum=0.9, weight_decay=1e-2,
                               regularization_type="L1", clip_gradients=threshold,
                               iter_size=2))
    params = [torch.tensor(w) for w in ws]
    solver = CaffeSolver(params, SPECS, cfg)
    for p, x in zip(params, summed):
        p.grad = torch.tensor(x)
    with caplog.at_level(logging.INFO, logger="netdef.training.solvers"):
        info = solver.step(0, 0.05)
    assert isinstance(info, ClipInfo)
    assert info.threshold == f32(threshold) and abs(info.l2norm - norm) < 1e-5 * norm
    assert info.scale == f32(info.threshold / info.l2norm)
    assert info.message() in caplog.text
    ref_w, _ = _reference("SGD", cfg, ws, [summed], [0.05])
    _close(params, ref_w)
    # the L1 term is neither clipped nor halved: update = lr·(g·s/2 + λ·sign(w))
    lam = f32(1e-2)
    w0, g0 = ws[0].astype(np.float64), summed[0].astype(np.float64)
    expected = w0 - f32(0.05) * (g0 * info.scale / 2 + lam * np.sign(w0))
    np.testing.assert_allclose(params[0].numpy(), expected, rtol=1e-6, atol=1e-8)


def test_no_clip_below_threshold_and_clip_message_format() -> None:
    params = [torch.ones(3)]
    params[0].grad = torch.full((3,), 0.1)
    solver = CaffeSolver(params, None, dict(type="SGD", clip_gradients=1.0))
    assert solver.step(0, 0.1) is None
    msg = ClipInfo(f32(1.04679), 1.0, f32(1 / f32(1.04679))).message()
    assert msg == ("Gradient clipping: scaling down gradients (L2 norm 1.04679 > 1) "
                   "by scale factor 0.955301")


def test_zero_decay_mult_skips_regularization_and_missing_grad_is_zero() -> None:
    w = torch.tensor([1.0, -2.0])
    solver = CaffeSolver([w], [(1.0, 0.0)], dict(type="SGD", weight_decay=0.5))
    solver.step(0, 0.1)  # no grad, no decay: nothing moves
    assert torch.equal(w, torch.tensor([1.0, -2.0]))


# -- Caffe's constructor checks ------------------------------------------------------

@pytest.mark.parametrize("cfg, match", [
    (dict(type="AdaGrad", momentum=0.9), "Momentum cannot be used with AdaGrad"),
    (dict(type="RMSProp", momentum=0.5), "Momentum cannot be used with RMSProp"),
    (dict(type="RMSProp", rms_decay=1.0), "rms_decay"),
    (dict(type="Adagrad"), "AdaGrad"),  # names are case-sensitive, like Caffe's registry
    (dict(type="SGD", weight_decay=1e-4, regularization_type="L3"), "L3"),
])
def test_invalid_configs_are_solver_errors(cfg: dict, match: str) -> None:
    with pytest.raises(SolverError, match=match):
        CaffeSolver([torch.zeros(2)], None, cfg)


def test_load_history_checks_count_and_sizes() -> None:
    solver = CaffeSolver([torch.zeros(2, 3)], None, dict(type="Adam"))
    with pytest.raises(SolverError, match="needs 2"):
        solver.load_history([np.zeros(6, np.float32)])
    with pytest.raises(SolverError, match="5 values"):
        solver.load_history([np.zeros(6, np.float32), np.zeros(5, np.float32)])
    solver.load_history([np.arange(6, dtype=np.float32), np.ones((1, 1, 2, 3), np.float32)])
    assert solver.history()[0].shape == (2, 3) and float(solver.history()[0][1, 2]) == 5.0


def test_accepts_a_solver_parameter_message() -> None:
    messages = pytest.importorskip("netdef.ir.messages")
    param = messages.SolverParameter(type="Nesterov", momentum=0.9, weight_decay=5e-4)
    cfg = CaffeSolver([torch.zeros(1)], None, param).config
    assert (cfg.type, cfg.momentum, cfg.weight_decay) == ("Nesterov", f32(0.9), f32(5e-4))
    assert cfg.clip_gradients == -1.0 and cfg.iter_size == 1


# -- the loss the log prints ---------------------------------------------------------

@needs_fixtures
@pytest.mark.parametrize("case", sorted(p.name for p in (FIXTURES / "cases").glob("*")
                                        if (p / "pycaffe_replay.json").exists()))
def test_smoothed_loss_replays_caffe_bitwise(case: str) -> None:
    replay = json.loads((FIXTURES / "cases" / case / "pycaffe_replay.json").read_text())
    its = replay["iterations"]
    smooth = SmoothedLoss(average_loss=1, start_iter=its[0]["iter"])
    for it in its:
        assert iteration_loss(it["sub_batch_losses"]) == it["loss"]
        assert smooth.update(it["loss"], it["iter"]) == it["smoothed_loss"], it["iter"]
    final = replay["final_forward"]
    assert smooth.update(final["loss"], final["iter"]) == final["smoothed_loss"]


def test_smoothed_loss_window_is_a_running_mean() -> None:
    smooth = SmoothedLoss(average_loss=3)
    assert [smooth.update(x, i) for i, x in enumerate([3.0, 6.0, 9.0, 12.0])] == \
        [3.0, 4.5, 6.0, 9.0]
