"""Loss layers and Accuracy vs numpy loops of Caffe's Forward_cpu / Backward_cpu,
for every normalization mode with and without ignore_label."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from netdef.lowering import ops

FLT_MIN = float(np.finfo(np.float32).tiny)
MODES = ["FULL", "VALID", "BATCH_SIZE", "NONE"]
RNG = np.random.default_rng(0)


def close(x, ref, tol=1e-5):
    x = x.detach().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    ref = np.asarray(ref)
    assert x.shape == ref.shape, (x.shape, ref.shape)
    np.testing.assert_allclose(x, ref, rtol=0, atol=tol * max(np.abs(ref).max(), 1e-12))


def normalizer(mode, outer, inner, valid):
    n = {"FULL": outer * inner, "VALID": valid, "BATCH_SIZE": outer, "NONE": 1}[mode]
    return max(1.0, float(n))


def softmax(v):
    e = np.exp(v - v.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def class_last(x, axis):
    return np.moveaxis(x, axis, -1).reshape(-1, x.shape[axis]).astype(np.float64)


def from_class_last(g, x, axis):
    shape = list(np.moveaxis(x, axis, -1).shape)
    return np.moveaxis(g.reshape(shape), -1, axis)


def _labels(shape, nc, ignore):
    lab = RNG.integers(0, nc, shape).astype(np.float32)
    if ignore is not None:
        lab.reshape(-1)[::3] = ignore
    return lab


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("ignore", [None, 2])
def test_softmax_with_loss(mode, ignore):
    x = (RNG.standard_normal((2, 4, 3, 2)) * 3).astype(np.float32)
    lab = _labels((2, 3, 2), 4, ignore)
    p = softmax(class_last(x, 1))
    li = lab.reshape(-1).astype(int)
    loss, grad, valid = 0.0, np.zeros_like(p), 0
    for i, lv in enumerate(li):
        if ignore is not None and lv == ignore:
            continue
        loss -= math.log(max(p[i, lv], FLT_MIN))
        grad[i] = p[i]
        grad[i, lv] -= 1
        valid += 1
    norm = normalizer(mode, 2, 6, valid)
    xt = torch.from_numpy(x).requires_grad_()
    got, prob = ops.softmax_with_loss(xt, torch.from_numpy(lab), 1, ignore, mode)
    close(got, loss / norm)
    close(prob, from_class_last(p, x, 1))
    got.backward()
    close(xt.grad, from_class_last(grad / norm, x, 1))


def test_softmax_loss_floor_and_axis():
    x = np.array([[0.0, 200.0, 0.0]], np.float32)  # prob of class 0 underflows to 0
    xt = torch.from_numpy(x).requires_grad_()
    loss, _ = ops.softmax_with_loss(xt, torch.tensor([0.0]))
    close(loss, -math.log(FLT_MIN))
    loss.backward()  # Caffe's gradient ignores the floor: prob - onehot
    close(xt.grad, np.array([[-1.0, 1.0, 0.0]]))
    x2 = RNG.standard_normal((3, 5)).astype(np.float32)
    # axis 0: 3 classes, 5 positions, every label 1
    loss, _ = ops.softmax_with_loss(torch.from_numpy(x2), torch.ones(5), axis=0)
    close(loss, -np.log(softmax(x2.T.astype(np.float64))[:, 1]).mean())
    with pytest.raises(ValueError):
        ops.softmax_with_loss(torch.from_numpy(x2), torch.tensor([7.0, 0, 0]))


def test_resolve_normalization():
    assert ops.resolve_normalization(None, None) == "VALID"
    assert ops.resolve_normalization(None, True) == "VALID"
    assert ops.resolve_normalization(None, False) == "BATCH_SIZE"
    assert ops.resolve_normalization("FULL", False) == "FULL"
    assert ops.resolve_normalization(None, None, "BATCH_SIZE") == "BATCH_SIZE"
    assert ops.loss_normalizer("VALID", 2, 3, 0) == 1.0  # all ignored: max(1, 0)
    with pytest.raises(ValueError):
        ops.resolve_normalization("BOGUS", None)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("ignore", [None, -1])
def test_sigmoid_cross_entropy(mode, ignore):
    x = (RNG.standard_normal((3, 2, 4)) * 4).astype(np.float32)
    t = (RNG.random((3, 2, 4)) > 0.5).astype(np.float32)
    if ignore is not None:
        t.reshape(-1)[::4] = ignore
    xd, td = x.reshape(-1).astype(np.float64), t.reshape(-1).astype(np.float64)
    loss, grad, valid = 0.0, np.zeros_like(xd), 0
    for i in range(xd.size):
        if ignore is not None and int(td[i]) == ignore:
            continue
        pos = float(xd[i] >= 0)
        loss -= xd[i] * (td[i] - pos) - math.log(1 + math.exp(xd[i] - 2 * xd[i] * pos))
        grad[i] = 1 / (1 + math.exp(-xd[i])) - td[i]
        valid += 1
    norm = normalizer(mode, 3, 8, valid)
    xt = torch.from_numpy(x).requires_grad_()
    got = ops.sigmoid_cross_entropy_loss(xt, torch.from_numpy(t), ignore, mode)
    close(got, loss / norm)
    got.backward()
    close(xt.grad, (grad / norm).reshape(x.shape))


def test_euclidean_and_hinge():
    a, b = (RNG.standard_normal((4, 3, 2)).astype(np.float32) for _ in range(2))
    at, bt = torch.from_numpy(a).requires_grad_(), torch.from_numpy(b).requires_grad_()
    loss = ops.euclidean_loss(at, bt)
    d = a.astype(np.float64) - b
    close(loss, (d ** 2).sum() / 4 / 2)
    loss.backward()
    close(at.grad, d / 4)
    close(bt.grad, -d / 4)
    x = RNG.standard_normal((5, 4)).astype(np.float32) * 2
    lab = np.array([0, 3, 1, 1, 2], np.float32)
    t = -np.ones((5, 4))
    t[np.arange(5), lab.astype(int)] = 1
    m = np.maximum(0, 1 - t * x)
    for norm, ref, gref in [("L1", m.sum() / 5, -t * (m > 0) / 5),
                            ("L2", (m ** 2).sum() / 5, -2 * t * m / 5)]:
        xt = torch.from_numpy(x).requires_grad_()
        loss = ops.hinge_loss(xt, torch.from_numpy(lab), norm)
        close(loss, ref)
        loss.backward()
        close(xt.grad, gref)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("ignore", [None, 1])
def test_infogain(mode, ignore):
    x = (RNG.standard_normal((3, 4, 2)) * 2).astype(np.float32)
    lab = _labels((3, 2), 4, ignore)
    h = RNG.random((4, 4)).astype(np.float32)
    p = softmax(class_last(x, 1))
    li = lab.reshape(-1).astype(int)
    loss, grad, valid = 0.0, np.zeros_like(p), 0
    for i, lv in enumerate(li):
        if ignore is not None and lv == ignore:
            continue
        loss -= sum(h[lv, k] * math.log(max(p[i, k], 1e-20)) for k in range(4))
        grad[i] = p[i] * h[lv].sum() - h[lv]
        valid += 1
    norm = normalizer(mode, 3, 2, valid)
    xt = torch.from_numpy(x).requires_grad_()
    got, _ = ops.infogain_loss(xt, torch.from_numpy(lab), torch.from_numpy(h), 1, ignore, mode)
    close(got, loss / norm)
    got.backward()
    close(xt.grad, from_class_last(grad / norm, x, 1))


def test_multinomial_logistic():
    p = softmax(RNG.standard_normal((4, 5))).astype(np.float32)
    p[2, 3] = 1e-30  # below kLOG_THRESHOLD: clamped in value, Caffe's gradient still flows
    lab = np.array([0, 4, 3, 1], np.float32)
    pt = torch.from_numpy(p).requires_grad_()
    loss = ops.multinomial_logistic_loss(pt, torch.from_numpy(lab))
    sel = np.maximum(p[np.arange(4), lab.astype(int)].astype(np.float64), 1e-20)
    close(loss, -np.log(sel).sum() / 4)
    loss.backward()
    g = np.zeros((4, 5))
    g[np.arange(4), lab.astype(int)] = -1 / (4 * sel)
    close(pt.grad, g)


@pytest.mark.parametrize("legacy", [False, True])
def test_contrastive(legacy):
    a = RNG.standard_normal((6, 3, 1, 1)).astype(np.float32) * 0.4
    b = RNG.standard_normal((6, 3, 1, 1)).astype(np.float32) * 0.4
    b[5] = a[5]  # zero distance, dissimilar: Caffe's 1e-4 keeps the gradient finite
    sim = np.array([1, 0, 1, 0, 0, 0], np.float32)
    margin = 1.5
    d = (a - b).reshape(6, 3).astype(np.float64)
    dsq = (d ** 2).sum(1)
    loss, ga = 0.0, np.zeros_like(d)
    for i in range(6):
        if sim[i]:
            loss += dsq[i]
            ga[i] = d[i] / 6
        elif legacy:
            loss += max(margin - dsq[i], 0)
            ga[i] = -d[i] / 6 if margin - dsq[i] > 0 else 0
        else:
            dist = math.sqrt(dsq[i])
            loss += max(margin - dist, 0) ** 2
            md = margin - dist
            ga[i] = -(1 / 6) * md / (dist + 1e-4) * d[i] if md > 0 else 0
    at, bt = torch.from_numpy(a).requires_grad_(), torch.from_numpy(b).requires_grad_()
    got = ops.contrastive_loss(at, bt, torch.from_numpy(sim), margin, legacy)
    close(got, loss / 6 / 2)
    got.backward()
    close(at.grad.reshape(6, 3), ga)
    close(bt.grad.reshape(6, 3), -ga)


@pytest.mark.parametrize("top_k", [1, 2])
@pytest.mark.parametrize("ignore", [None, 0])
def test_accuracy(top_k, ignore):
    x = RNG.integers(0, 3, (4, 5, 3)).astype(np.float32)  # many ties
    lab = _labels((4, 3), 5, ignore)
    xs = class_last(x, 1)
    li = lab.reshape(-1).astype(int)
    correct, count = 0, 0
    seen, hit = np.zeros(5), np.zeros(5)
    for i, lv in enumerate(li):
        if ignore is not None and lv == ignore:
            continue
        seen[lv] += 1
        better = -1  # the true class counts itself
        for k in range(5):
            better += xs[i, k] >= xs[i, lv]
        if better < top_k:
            correct += 1
            hit[lv] += 1
        count += 1
    acc, per_class = ops.accuracy(torch.from_numpy(x), torch.from_numpy(lab), top_k, 1, ignore)
    close(acc, correct / count)
    close(per_class, np.where(seen > 0, hit / np.maximum(seen, 1), 0))
    empty, _ = ops.accuracy(torch.from_numpy(x[:1, :, :1]), torch.tensor([3.0]), ignore_label=3)
    assert float(empty) == 0.0


def test_contrastive_legacy_gradcheck():
    # legacy_version's closed form is the exact derivative (non-legacy adds Caffe's 1e-4)
    g = torch.Generator().manual_seed(1)
    a = torch.randn(5, 3, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(5, 3, dtype=torch.float64, generator=g, requires_grad=True)
    sim = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0])
    assert torch.autograd.gradcheck(lambda u, v: ops.contrastive_loss(u, v, sim, 4.0, True), (a, b))
