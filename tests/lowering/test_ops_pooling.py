"""Caffe pooling / SPP vs straightforward numpy transcriptions of PoolingLayer."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from netdef.lowering.ops import caffe_pool2d, pool_output_size, spp, spp_pooling_params

FLT_MAX = np.finfo(np.float32).max
FLT_MIN = np.finfo(np.float32).tiny


def close(x, ref, tol=1e-6):
    x = x.detach().numpy() if isinstance(x, torch.Tensor) else x
    assert x.shape == ref.shape, (x.shape, ref.shape)
    scale = np.nanmax(np.abs(ref)) if np.isfinite(ref).any() else 1.0
    np.testing.assert_allclose(x, ref, rtol=0, atol=tol * max(scale, 1e-30), equal_nan=True)


def ref_size(h, k, s, p, mode="CEIL"):
    q = (h + 2 * p - k) / s
    out = (math.ceil(q) if mode == "CEIL" else math.floor(q)) + 1
    if p and (out - 1) * s >= h + p:
        out -= 1
    return out


def ref_pool(x, method, k, s, p, mode="CEIL"):
    """Returns (top, backward(top_diff)) following Caffe's loops."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw) = k, s, p
    oh, ow = ref_size(h, kh, sh, ph, mode), ref_size(w, kw, sw, pw, mode)
    top = np.zeros((n, c, oh, ow), np.float32)
    arg = {}
    sizes = {}
    for i in range(oh):
        for j in range(ow):
            hs, ws = i * sh - ph, j * sw - pw
            if method == "MAX":
                he, we = min(hs + kh, h), min(ws + kw, w)
                hs, ws = max(hs, 0), max(ws, 0)
                if he <= hs or we <= ws:
                    top[:, :, i, j] = -FLT_MAX  # Caffe's initial value, no element wins
                    continue
                win = x[:, :, hs:he, ws:we].reshape(n, c, -1)
                first = win.argmax(2)  # first maximum in row-major order, like Caffe's strict >
                top[:, :, i, j] = win.max(2)
                for a in range(n):
                    for b in range(c):
                        q = int(first[a, b])
                        arg[a, b, i, j] = (hs + q // (we - ws), ws + q % (we - ws))
            else:
                he, we = min(hs + kh, h + ph), min(ws + kw, w + pw)
                size = (he - hs) * (we - ws)
                hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
                sizes[i, j] = (size, hs, he, ws, we)
                win = x[:, :, hs:he, ws:we].astype(np.float64).sum((2, 3)) if he > hs and we > ws \
                    else np.zeros((n, c))
                with np.errstate(invalid="ignore", divide="ignore"):
                    top[:, :, i, j] = (win / size).astype(np.float32)

    def backward(dy):
        dx = np.zeros_like(x, dtype=np.float64)
        if method == "MAX":
            for (a, b, i, j), (hh, ww) in arg.items():
                dx[a, b, hh, ww] += dy[a, b, i, j]
        else:
            for (i, j), (size, hs, he, ws, we) in sizes.items():
                if he > hs and we > ws:
                    dx[:, :, hs:he, ws:we] += (dy[:, :, i, j] / size)[:, :, None, None]
        return dx
    return top, backward


@pytest.mark.parametrize("h,k,s,p,expect", [(9, 4, 4, 2, 3), (112, 3, 2, 0, 56), (55, 3, 2, 0, 27),
                                            (7, 3, 2, 1, 4), (13, 3, 2, 1, 7)])
@pytest.mark.parametrize("method", ["MAX", "AVE"])
def test_clip_cases(h, k, s, p, expect, method):
    assert pool_output_size(h, k, s, p) == expect == ref_size(h, k, s, p)
    x = np.random.default_rng(h).standard_normal((2, 3, h, h)).astype(np.float32)
    y = caffe_pool2d(torch.from_numpy(x), method, k, s, p)
    assert tuple(y.shape) == (2, 3, expect, expect)
    if h <= 13:
        close(y, ref_pool(x, method, (k, k), (s, s), (p, p))[0])


def test_floor_mode_sizes():
    assert pool_output_size(112, 3, 2, 0, "FLOOR") == 55
    x = torch.randn(1, 2, 112, 112)
    assert caffe_pool2d(x, "MAX", 3, 2, round_mode="FLOOR").shape[-1] == 55


def _random_cases(count, seed):
    rng = np.random.default_rng(seed)
    cases = []
    while len(cases) < count:
        k = (int(rng.integers(1, 6)), int(rng.integers(1, 6)))
        s = (int(rng.integers(1, 5)), int(rng.integers(1, 5)))
        p = (int(rng.integers(0, k[0])), int(rng.integers(0, k[1])))
        hw = (int(rng.integers(max(1, k[0] - 2 * p[0]), 12)), int(rng.integers(max(1, k[1] - 2 * p[1]), 12)))
        mode = "CEIL" if rng.random() < 0.75 else "FLOOR"
        if min(ref_size(hw[0], k[0], s[0], p[0], mode), ref_size(hw[1], k[1], s[1], p[1], mode)) < 1:
            continue
        cases.append((hw, k, s, p, mode))
    return cases


@pytest.mark.parametrize("method", ["MAX", "AVE"])
def test_random_geometries_forward_backward(method):
    rng = np.random.default_rng(7)
    for hw, k, s, p, mode in _random_cases(60, 3 if method == "MAX" else 4):
        x = rng.standard_normal((2, 2) + hw).astype(np.float32)
        ref, back = ref_pool(x, method, k, s, p, mode)
        xt = torch.from_numpy(x).requires_grad_()
        y = caffe_pool2d(xt, method, k, s, p, mode)
        close(y, ref)
        dy = rng.standard_normal(ref.shape).astype(np.float32)
        dy[~np.isfinite(ref)] = 0  # Caffe's NaN windows (0/0) carry no defined gradient
        y.backward(torch.from_numpy(dy))
        close(xt.grad, back(dy).astype(np.float32))


def test_torch_avg_pool_equivalence_and_where_it_breaks():
    # Where torch accepts the geometry and agrees on the size, avg_pool2d(ceil, include_pad)
    # is Caffe's AVE.  With pad 0 and stride > kernel Caffe keeps a window starting past
    # the edge (0/0 = NaN) that torch drops.
    x = torch.randn(1, 1, 6, 6)
    ours = caffe_pool2d(x, "AVE", 1, 3, 0)
    assert ours.shape[-1] == 3 and torch.isnan(ours[0, 0, 2]).all()
    assert F.avg_pool2d(x, 1, 3, 0, ceil_mode=True).shape[-1] == 2
    y = caffe_pool2d(torch.randn(1, 1, 5, 5), "AVE", 1, 3, 0)  # pool_size -1: 0/-1 = -0
    assert y.shape[-1] == 3 and (y[0, 0, 2] == 0).all()
    mx = caffe_pool2d(x, "MAX", 1, 3, 0)
    assert (mx[0, 0, 2] == -FLT_MAX).all() and torch.equal(mx[..., :2, :2], x[..., ::3, ::3])
    for h in (3, 4, 7, 10):
        for k in range(2, 5):
            for st in range(1, k + 1):
                for p in range(0, k // 2 + 1):
                    xx = torch.randn(1, 2, h, h)
                    if ref_size(h, k, st, p) < 1:
                        continue
                    t = F.avg_pool2d(xx, k, st, p, ceil_mode=True, count_include_pad=True)
                    close(t, ref_pool(xx.numpy(), "AVE", (k, k), (st, st), (p, p))[0])


def test_global_pooling():
    x = torch.randn(2, 3, 5, 7)
    close(caffe_pool2d(x, "AVE", global_pooling=True), x.mean((2, 3), keepdim=True).numpy())
    close(caffe_pool2d(x, "MAX", global_pooling=True), x.amax((2, 3), keepdim=True).numpy())
    with pytest.raises(ValueError):
        caffe_pool2d(x, "MAX", global_pooling=True, stride=2)


def test_parameter_checks():
    x = torch.randn(1, 1, 6, 6)
    with pytest.raises(ValueError):
        caffe_pool2d(x, "MAX", 3, 1, 3)  # pad must be < kernel
    with pytest.raises(ValueError):
        caffe_pool2d(x, "STOCHASTIC", 3, 2, 1)  # Caffe pads only MAX/AVE


def test_stochastic_test_mode():
    rng = np.random.default_rng(0)
    x = np.abs(rng.standard_normal((2, 3, 7, 8))).astype(np.float32)
    x[0, 0, :3, :3] = 0  # an all-zero window -> 0
    k, s = 3, 2
    oh, ow = ref_size(7, k, s, 0), ref_size(8, k, s, 0)
    ref = np.zeros((2, 3, oh, ow), np.float32)
    for i in range(oh):
        for j in range(ow):
            win = x[:, :, i * s: min(i * s + k, 7), j * s: min(j * s + k, 8)].astype(np.float64)
            ref[:, :, i, j] = (win ** 2).sum((2, 3)) / (FLT_MIN + win.sum((2, 3)))
    close(caffe_pool2d(torch.from_numpy(x), "STOCHASTIC", k, s, training=False), ref)


def test_stochastic_train_samples_proportionally():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 2, 2).repeat(4000, 1, 1, 1).requires_grad_()
    g = torch.Generator().manual_seed(0)
    y = caffe_pool2d(x, "STOCHASTIC", 2, 2, training=True, generator=g)
    freq = torch.stack([(y == v).float().mean() for v in (1.0, 2.0, 3.0, 4.0)])
    np.testing.assert_allclose(freq.numpy(), [0.1, 0.2, 0.3, 0.4], atol=0.03)
    y.sum().backward()  # the gradient goes to the sampled element only
    assert torch.equal(x.grad.sum((1, 2, 3)), torch.ones(4000))
    assert torch.equal((x.grad.reshape(4000, 4) * x.detach().reshape(4000, 4)).sum(1), y.detach().reshape(-1))


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("height", [1, 2, 3])
def test_spp(method, height):
    rng = np.random.default_rng(height)
    x = rng.standard_normal((2, 3, 13, 9)).astype(np.float32)
    parts = []
    for level in range(height):
        prm = spp_pooling_params(13, 9, level)
        bins = 2 ** level
        kh, kw = math.ceil(13 / bins), math.ceil(9 / bins)
        assert prm == {"kernel": (kh, kw), "stride": (kh, kw),
                       "pad": ((kh * bins - 13 + 1) // 2, (kw * bins - 9 + 1) // 2)}
        parts.append(ref_pool(x, method, prm["kernel"], prm["stride"], prm["pad"])[0])
    y = spp(torch.from_numpy(x), height, method)
    if height == 1:
        close(y, parts[0])  # a single level stays 4-D, as Caffe's SPPLayer does
    else:
        close(y, np.concatenate([p.reshape(2, -1) for p in parts], 1))
        assert y.shape[1] == 3 * sum(4 ** i for i in range(height))


@pytest.mark.parametrize("k,s,p", [(3, 2, 1), (3, 2, 2), (2, 1, 0), (1, 3, 0)])
def test_max_ties_route_gradient_to_first_maximum(k, s, p):
    # (3, 2, 2) and (1, 3, 0) take the explicit-padding path, the others torch's own
    rng = np.random.default_rng(k * 10 + p)
    x = rng.integers(0, 3, (2, 2, 7, 6)).astype(np.float32)
    ref, back = ref_pool(x, "MAX", (k, k), (s, s), (p, p))
    xt = torch.from_numpy(x).requires_grad_()
    y = caffe_pool2d(xt, "MAX", k, s, p)
    close(y, ref)
    dy = rng.standard_normal(ref.shape).astype(np.float32)
    dy[ref == -FLT_MAX] = 0
    y.backward(torch.from_numpy(dy))
    close(xt.grad, back(dy).astype(np.float32))
