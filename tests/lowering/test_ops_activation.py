"""Neuron layers and Dropout vs numpy formulas, with Caffe's gradients at the kinks."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from netdef.lowering import ops


def close(x, ref, tol=1e-6):
    x = x.detach().numpy() if isinstance(x, torch.Tensor) else x
    assert x.shape == ref.shape
    np.testing.assert_allclose(x, ref, rtol=0, atol=tol * max(np.abs(ref).max(), 1e-30))


def grad_of(fn, x):
    xt = torch.from_numpy(x).requires_grad_()
    y = fn(xt)
    y.backward(torch.ones_like(y))
    return y.detach().numpy(), xt.grad.numpy()


RNG = np.random.default_rng(0)
X = np.concatenate([RNG.standard_normal(200) * 3, [0.0, -0.0, 1.0, -1.0]]).astype(np.float32).reshape(4, 51)


def test_relu_and_prelu():
    y, g = grad_of(lambda t: ops.caffe_relu(t, 0.1), X)
    close(y, np.maximum(X, 0) + 0.1 * np.minimum(X, 0))
    close(g, np.where(X > 0, 1.0, 0.1))  # Caffe: (x > 0) + ns * (x <= 0), so 0 takes ns
    y, g = grad_of(ops.caffe_relu, X)
    close(g, (X > 0).astype(np.float64))
    x4 = RNG.standard_normal((2, 3, 4, 5)).astype(np.float32)
    x4[0, 0, 0, 0] = 0
    a = np.array([0.25, -0.5, 2.0], np.float32)
    xt = torch.from_numpy(x4).requires_grad_()
    at = torch.from_numpy(a).requires_grad_()
    y = ops.caffe_prelu(xt, at)
    ab = a[None, :, None, None]
    close(y, np.maximum(x4, 0) + ab * np.minimum(x4, 0))
    dy = RNG.standard_normal(x4.shape).astype(np.float32)
    y.backward(torch.from_numpy(dy))
    close(xt.grad, dy * np.where(x4 > 0, 1.0, ab))
    close(at.grad, (dy * x4 * (x4 <= 0)).sum((0, 2, 3)))
    shared = torch.tensor([0.3], requires_grad=True)
    close(ops.caffe_prelu(torch.from_numpy(x4), shared, channel_shared=True),
          np.maximum(x4, 0) + 0.3 * np.minimum(x4, 0))


def test_elu_swish_sigmoid_tanh_abs():
    y, g = grad_of(lambda t: ops.caffe_elu(t, 0.7), X)
    ref = np.where(X > 0, X, 0.7 * (np.exp(np.minimum(X, 0)) - 1))
    close(y, ref)
    close(g, np.where(X > 0, 1.0, ref + 0.7))  # Caffe: dy * (y + alpha) for x <= 0
    y, g = grad_of(lambda t: ops.caffe_swish(t, 1.5), X)
    sig = 1 / (1 + np.exp(-1.5 * X.astype(np.float64)))
    close(y, X * sig)
    close(g, 1.5 * X * sig + sig * (1 - 1.5 * X * sig))
    close(ops.caffe_sigmoid(torch.from_numpy(X)), 0.5 * np.tanh(0.5 * X.astype(np.float64)) + 0.5)
    close(ops.caffe_tanh(torch.from_numpy(X)), np.tanh(X))
    y, g = grad_of(ops.caffe_absval, X)
    close(y, np.abs(X))
    close(g, np.sign(X))


@pytest.mark.parametrize("power,scale,shift", [(2.0, 0.5, 1.0), (3.0, 1.0, 0.0), (0.5, 2.0, 7.0),
                                               (1.0, -2.0, 0.5), (-1.0, 1.0, 9.0)])
def test_power(power, scale, shift):
    y, g = grad_of(lambda t: ops.caffe_power(t, power, scale, shift), X)
    base = shift + scale * X.astype(np.float64)
    with np.errstate(invalid="ignore"):
        ref = base ** power
        gref = power * scale * base ** (power - 1)
    ok = np.isfinite(ref)
    close(y[ok], ref[ok])
    close(g[ok], gref[ok], 1e-5)


def test_power_constant_cases():
    for power, scale, shift, value in [(0.0, 2.0, 1.0, 1.0), (2.0, 0.0, 3.0, 9.0)]:
        y, g = grad_of(lambda t: ops.caffe_power(t, power, scale, shift), X)
        assert (y == value).all() and (g == 0).all()  # Caffe: diff_scale 0 -> zero gradient


@pytest.mark.parametrize("base,scale,shift", [(-1.0, 1.0, 0.0), (2.0, 0.5, 1.0), (10.0, -0.3, 0.2),
                                              (-1.0, 0.7, -1.0)])
def test_exp_and_log(base, scale, shift):
    y, g = grad_of(lambda t: ops.caffe_exp(t, base, scale, shift), X)
    lb = 1.0 if base == -1 else np.log(base)
    ref = np.exp(lb * (shift + scale * X.astype(np.float64)))
    close(y, ref)
    close(g, ref * lb * scale, 1e-5)
    pos = np.abs(X) + 0.1
    y, g = grad_of(lambda t: ops.caffe_log(t, base, abs(scale), abs(shift)), pos)
    arg = abs(shift) + abs(scale) * pos.astype(np.float64)
    close(y, np.log(arg) / lb)
    close(g, abs(scale) / (arg * lb), 1e-5)


def test_bnll_threshold_clip():
    big = np.array([[-100.0, -30.0, -1.0, 0.0, 1.0, 30.0, 100.0]], np.float32)
    for x in (X, big):
        y, g = grad_of(ops.caffe_bnll, x)
        x64 = x.astype(np.float64)
        close(y, np.where(x64 > 0, x64 + np.log1p(np.exp(-np.abs(x64))),
                          np.log1p(np.exp(np.minimum(x64, 0)))))
        close(g, np.exp(np.minimum(x64, 50)) / (np.exp(np.minimum(x64, 50)) + 1))  # 0.5 at 0
    y = ops.caffe_threshold(torch.from_numpy(X), 0.5)
    close(y, (X > 0.5).astype(np.float32))
    assert not y.requires_grad
    xc = np.array([-2.0, -1.0, 0.0, 1.0, 2.0], np.float32)
    y, g = grad_of(lambda t: ops.caffe_clip(t, -1.0, 1.0), xc)
    close(y, np.clip(xc, -1, 1))
    close(g, np.array([0, 1, 1, 1, 0], np.float64))  # bounds included, as Caffe's >= and <=


def test_dropout():
    x = torch.ones(200, 500)
    assert ops.caffe_dropout(x, 0.3, training=False) is x  # TEST: identity, no scaling
    g = torch.Generator().manual_seed(0)
    xt = x.clone().requires_grad_()
    y = ops.caffe_dropout(xt, 0.3, training=True, generator=g)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.7) < 0.01
    close(y[kept], np.full(int(kept.sum()), 1 / np.float32(0.7), np.float32))
    y.backward(torch.ones_like(y))
    assert torch.equal(xt.grad, y.detach())  # mask * scale
