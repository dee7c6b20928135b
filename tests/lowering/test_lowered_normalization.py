"""Lowered LRN, BatchNorm, MVN, Scale, Bias vs numpy references (Caffe's formulas)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from caffe_fixtures import net_of, run_net
from netdef.lowering import weights as W

RNG = np.random.default_rng(3)


def randn(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def close(x, ref, tol=1e-5):
    x = x.detach().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    assert x.shape == ref.shape, (x.shape, ref.shape)
    np.testing.assert_allclose(x, ref, rtol=0, atol=tol * max(np.abs(ref).max(), 1e-30))


# --------------------------------------------------------------------------- LRN
def lrn_across(x, n, alpha, beta, k):
    sq = np.pad(x.astype(np.float64) ** 2, [(0, 0), ((n - 1) // 2, (n - 1) // 2), (0, 0), (0, 0)])
    win = sum(sq[:, i:i + x.shape[1]] for i in range(n))
    return x * (k + alpha / n * win) ** -beta


def lrn_within(x, n, alpha, beta):
    h = (n - 1) // 2
    sq = np.pad(x.astype(np.float64) ** 2, [(0, 0), (0, 0), (h, h), (h, h)])
    win = sum(sq[:, :, i:i + x.shape[2], j:j + x.shape[3]] for i in range(n) for j in range(n))
    return x * (1 + alpha / n ** 2 * win) ** -beta  # k is not used WITHIN_CHANNEL


@pytest.mark.parametrize("grad", [False, True])
def test_lrn_across_channels(grad):
    body = ('layer { name: "n" type: "LRN" bottom: "x" top: "y" '
            'lrn_param { local_size: 5 alpha: 0.5 beta: 0.75 k: 2 } }\n'
            'layer { name: "d" type: "LRN" bottom: "x" top: "z" lrn_param { local_size: 3 beta: 0.6 } }\n')
    x = randn(2, 7, 3, 4)
    _, out, inputs = run_net(body, {"x": x}, grad=grad)
    close(out["y"], lrn_across(x, 5, 0.5, 0.75, 2.0))
    close(out["z"], lrn_across(x, 3, 1.0, 0.6, 1.0))  # Caffe defaults: alpha 1, k 1
    if grad:  # Caffe's closed-form backward vs a float64 numerical derivative
        dy = randn(*x.shape)
        (out["y"] * torch.from_numpy(dy)).sum().backward()
        eps = 1e-6
        x64 = x.astype(np.float64)
        num = np.zeros_like(x64)
        for idx in [(0, 0, 0, 0), (1, 3, 2, 1), (0, 6, 1, 3), (1, 2, 0, 0)]:
            xp, xm = x64.copy(), x64.copy()
            xp[idx] += eps
            xm[idx] -= eps
            num[idx] = ((lrn_across(xp, 5, 0.5, 0.75, 2.0) - lrn_across(xm, 5, 0.5, 0.75, 2.0)) * dy).sum() / (2 * eps)
            assert abs(inputs["x"].grad[idx].item() - num[idx]) < 1e-4 * max(1, abs(num[idx]))


def test_lrn_within_channel():
    body = ('layer { name: "n" type: "LRN" bottom: "x" top: "y" lrn_param { local_size: 3 '
            'alpha: 0.7 beta: 0.5 k: 5 norm_region: WITHIN_CHANNEL } }\n')
    x = randn(2, 3, 5, 6)
    _, out, _ = run_net(body, {"x": x})
    close(out["y"], lrn_within(x, 3, 0.7, 0.5))


# --------------------------------------------------------------------------- BatchNorm
BN = 'layer { name: "bn" type: "BatchNorm" bottom: "x" top: "x" %s }\n'


def test_batch_norm_train_updates_running_stats_then_test_uses_them(tmp_path):
    x1, x2 = randn(4, 3, 2, 5) * 2 + 1, randn(4, 3, 2, 5) - 3
    analysis, module = net_of(BN % "batch_norm_param { moving_average_fraction: 0.9 eps: 0.001 }",
                              {"x": x1.shape}, phase="TRAIN")
    bn = module.get_submodule("bn")
    assert [tuple(bn.blob(i).shape) for i in range(3)] == [(3,), (3,), (1,)]
    assert all(not bn.blob(i).requires_grad and not bn.blob(i).any() for i in range(3))
    m = x1.size // 3
    mean_acc, var_acc, s = np.zeros(3), np.zeros(3), 0.0
    for x in (x1, x2):
        xt = torch.from_numpy(x).requires_grad_()
        y = module(x=xt)["x"]
        x64 = x.astype(np.float64)
        mu = x64.mean((0, 2, 3))
        var = x64.var((0, 2, 3))  # biased, for normalising
        close(y, (x64 - mu[None, :, None, None]) / np.sqrt(var + 1e-3)[None, :, None, None])
        s = 0.9 * s + 1
        mean_acc = 0.9 * mean_acc + mu
        var_acc = 0.9 * var_acc + m / (m - 1) * var  # unbiased in the running sum
        close(bn.blob(2), np.array([s]))
        close(bn.blob(0), mean_acc)
        close(bn.blob(1), var_acc)
        y.sum().backward()  # gradient flows through the batch statistics
        assert xt.grad is not None and abs(float(xt.grad.abs().max())) < 1e-3  # d(sum)/dx = 0
    # the TRAIN-built module's stats go into a TEST net: global stats blob / s
    W.save(module, tmp_path / "bn.caffemodel", analysis)
    _, test_net = net_of(BN % "batch_norm_param { eps: 0.001 }", {"x": x1.shape}, phase="TEST")
    W.load_file(test_net, tmp_path / "bn.caffemodel")
    x3 = randn(4, 3, 2, 5)
    ref = (x3 - (mean_acc / s)[None, :, None, None]) / np.sqrt(var_acc / s + 1e-3)[None, :, None, None]
    close(test_net(x=torch.from_numpy(x3))["x"], ref)
    # eval() on the TRAIN net follows Caffe's TEST default too, and no longer updates
    module.eval()
    before = [bn.blob(i).clone() for i in range(3)]
    close(module(x=torch.from_numpy(x3))["x"], ref)
    assert all(torch.equal(b, bn.blob(i)) for i, b in enumerate(before))


def test_batch_norm_explicit_use_global_stats_and_zero_factor():
    x = randn(2, 3, 4)
    _, module = net_of(BN % "batch_norm_param { use_global_stats: true }", {"x": x.shape},
                       phase="TRAIN")
    bn = module.get_submodule("bn")
    with torch.no_grad():
        bn.blob(0).copy_(torch.tensor([2.0, 4.0, 6.0]))
        bn.blob(1).copy_(torch.tensor([8.0, 2.0, 4.0]))
    # factor 0: Caffe's guard (1/s taken as 0) gives mean = var = 0 whatever the blobs hold
    close(module(x=torch.from_numpy(x))["x"], x / np.sqrt(1e-5))
    with torch.no_grad():
        bn.blob(2).fill_(2.0)
    y = module(x=torch.from_numpy(x))["x"]  # TRAIN, but use_global_stats: no update
    ref = (x - np.array([1, 2, 3.0])[None, :, None]) / np.sqrt(np.array([4, 1, 2.0]) + 1e-5)[None, :, None]
    close(y, ref)
    assert bn.blob(2).item() == 2.0
    # use_global_stats: false in TEST: batch statistics
    _, m2 = net_of(BN % "batch_norm_param { use_global_stats: false }", {"x": x.shape}, phase="TEST")
    x64 = x.astype(np.float64)
    mu, var = x64.mean((0, 2)), x64.var((0, 2))
    close(m2(x=torch.from_numpy(x))["x"], (x64 - mu[None, :, None]) / np.sqrt(var + 1e-5)[None, :, None])


# --------------------------------------------------------------------------- MVN
@pytest.mark.parametrize("param", ["", "mvn_param { normalize_variance: false }",
                                   "mvn_param { across_channels: true eps: 0.01 }"])
def test_mvn(param):
    body = f'layer {{ name: "m" type: "MVN" bottom: "x" top: "y" {param} }}\n'
    x = randn(2, 3, 4, 5) * 3 + 2
    _, out, _ = run_net(body, {"x": x})
    axes = (1, 2, 3) if "across" in param else (2, 3)
    x64 = x.astype(np.float64)
    c = x64 - x64.mean(axes, keepdims=True)
    if "false" not in param:
        eps = 0.01 if "eps" in param else 1e-9
        c = c / (np.sqrt((c ** 2).mean(axes, keepdims=True)) + eps)  # eps after the sqrt
    close(out["y"], c)


# --------------------------------------------------------------------------- Scale / Bias
@pytest.mark.parametrize("param, blob_shape, view", [
    ("", (3,), (1, 3, 1, 1)),
    ("scale_param { num_axes: 2 }", (3, 4), (1, 3, 4, 1)),
    ("scale_param { axis: 0 num_axes: -1 }", (2, 3, 4, 5), (2, 3, 4, 5)),
    ("scale_param { axis: -1 }", (5,), (1, 1, 1, 5)),
    ("scale_param { num_axes: 0 }", (), ()),
])
def test_scale_learned(param, blob_shape, view):
    body = f'layer {{ name: "s" type: "Scale" bottom: "x" top: "x" {param} }}\n'
    x = randn(2, 3, 4, 5)
    module, out, _ = run_net(body, {"x": x})
    s = module.get_submodule("s")
    assert tuple(s.blob(0).shape) == blob_shape and bool((s.blob(0) == 1).all())  # filler: 1
    close(out["x"], x)
    g = randn(*blob_shape)
    with torch.no_grad():
        s.blob(0).copy_(torch.from_numpy(g))
    close(module(x=torch.from_numpy(x))["x"], x * g.reshape(view))


def test_scale_with_bias_and_bottom_operand():
    body = ('layer { name: "s" type: "Scale" bottom: "x" top: "y" scale_param { bias_term: true '
            'bias_filler { type: "constant" value: 0.5 } } }\n'
            'layer { name: "t" type: "Scale" bottom: "x" bottom: "g" top: "z" '
            'scale_param { axis: 0 bias_term: true } }\n')
    x, g = randn(2, 3, 4), randn(2, 3)
    module, out, inputs = run_net(body, {"x": x, "g": g}, grad=True)
    s, t = module.get_submodule("s"), module.get_submodule("t")
    assert s.blob(1).tolist() == [0.5] * 3
    close(out["y"], x + 0.5)
    assert t.num_blobs == 1 and tuple(t.blob(0).shape) == (2, 3)  # the bias spans g's axes
    with torch.no_grad():
        t.blob(0).copy_(torch.from_numpy(g * 10))
    z = module(**inputs)["z"]
    close(z, x * g[:, :, None] + 10 * g[:, :, None])
    z.sum().backward()
    close(inputs["g"].grad, x.sum(2))  # the bottom scale gets its gradient


def test_bias_learned_and_bottom():
    body = ('layer { name: "b" type: "Bias" bottom: "x" top: "y" '
            'bias_param { axis: 1 num_axes: 2 filler { type: "constant" value: -1 } } }\n'
            'layer { name: "c" type: "Bias" bottom: "x" bottom: "v" top: "z" bias_param { axis: 2 } }\n')
    x, v = randn(2, 3, 4), randn(4)
    module, out, inputs = run_net(body, {"x": x, "v": v}, grad=True)
    b = module.get_submodule("b")
    assert tuple(b.blob(0).shape) == (3, 4) and bool((b.blob(0) == -1).all())
    close(out["y"], x - 1)
    close(out["z"], x + v)
    out["z"].sum().backward()
    close(inputs["v"].grad, np.full(4, 6.0, np.float32))
    assert module.get_submodule("c").num_blobs == 0
