"""BatchNorm (both modes, running-stat update), MVN, Scale, Bias vs numpy references."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from netdef.lowering.ops import batch_norm, caffe_bias, caffe_scale, mvn, scale_param_shape


def close(x, ref, tol=1e-5):
    x = x.detach().numpy() if isinstance(x, torch.Tensor) else x
    assert x.shape == ref.shape, (x.shape, ref.shape)
    np.testing.assert_allclose(x, ref, rtol=0, atol=tol * max(np.abs(ref).max(), 1e-30))


def _axes(x):
    return (0,) + tuple(range(2, x.ndim))


def test_batch_norm_global_stats():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    mean_b = rng.standard_normal(3).astype(np.float32)
    var_b = rng.uniform(0.5, 1.5, 3).astype(np.float32)
    s = np.float32(2.5)
    xt = torch.from_numpy(x).requires_grad_()
    y = batch_norm(xt, torch.from_numpy(mean_b), torch.from_numpy(var_b), torch.tensor([s]), True, eps=1e-3)
    std = np.sqrt(var_b / s + 1e-3)[None, :, None, None]
    close(y, (x - (mean_b / s)[None, :, None, None]) / std)
    y.backward(torch.ones_like(y))
    close(xt.grad, np.broadcast_to(1 / std, x.shape).astype(np.float64))
    # scale factor 0 -> mean = var = 0 (Caffe's guard against 1/0)
    y0 = batch_norm(torch.from_numpy(x), torch.from_numpy(mean_b), torch.from_numpy(var_b),
                    torch.zeros(1), True, eps=1e-5)
    close(y0, x / np.sqrt(1e-5))


@pytest.mark.parametrize("shape", [(4, 3, 2, 5), (6, 2), (5,)])
def test_batch_norm_train_and_running_update(shape):
    rng = np.random.default_rng(len(shape))
    c = 1 if len(shape) == 1 else shape[1]
    mean_b, var_b, fac = np.zeros(c, np.float32), np.zeros(c, np.float32), np.zeros(1, np.float32)
    tb = [torch.from_numpy(a.copy()) for a in (mean_b, var_b, fac)]
    maf, eps = 0.9, 1e-4
    for it in range(3):
        x = (rng.standard_normal(shape) * (it + 1) + it).astype(np.float32)
        xv = x.reshape(-1, 1) if x.ndim == 1 else x
        axes = _axes(xv)
        mu = xv.astype(np.float64).mean(axes)
        var = ((xv - mu.reshape((1, c) + (1,) * (xv.ndim - 2))) ** 2).mean(axes)
        m = xv.size // c
        fac = fac * maf + 1
        mean_b = mean_b * maf + mu
        var_b = var_b * maf + m / (m - 1) * var
        bshape = (1, c) + (1,) * (xv.ndim - 2)
        ref = (xv - mu.reshape(bshape)) / np.sqrt(var.reshape(bshape) + eps)
        xt = torch.from_numpy(x).requires_grad_()
        y = batch_norm(xt, *tb, use_global_stats=False, moving_average_fraction=maf, eps=eps)
        close(y, ref.reshape(shape))
        for got, want in zip(tb, (mean_b, var_b, fac)):
            close(got, np.asarray(want, np.float64).reshape(got.shape), 1e-6)
        # Caffe's backward: (dy - mean(dy) - mean(dy*y)*y) / sqrt(var + eps)
        dy = rng.standard_normal(shape).astype(np.float32)
        y.backward(torch.from_numpy(dy))
        dyv, yv = dy.reshape(xv.shape).astype(np.float64), ref
        gref = (dyv - dyv.mean(axes, keepdims=True) - (dyv * yv).mean(axes, keepdims=True) * yv) \
            / np.sqrt(var.reshape(bshape) + eps)
        close(xt.grad, gref.reshape(shape), 1e-4)
    # the stored blobs then normalise like the global-stats path
    x = rng.standard_normal(shape).astype(np.float32)
    y = batch_norm(torch.from_numpy(x), *tb, use_global_stats=True, eps=eps)
    xv = x.reshape(-1, 1) if x.ndim == 1 else x
    bshape = (1, c) + (1,) * (xv.ndim - 2)
    ref = (xv - (mean_b / fac).reshape(bshape)) / np.sqrt((var_b / fac).reshape(bshape) + eps)
    close(y, ref.reshape(shape))


def ref_mvn(x, normalize_variance, across, eps):
    num = x.shape[0] if across else x.shape[0] * x.shape[1]
    x2 = x.reshape(num, -1).astype(np.float64)
    c = x2 - x2.mean(1, keepdims=True)
    std = np.sqrt((c ** 2).mean(1, keepdims=True)) + eps
    y = c / std if normalize_variance else c

    def backward(dy):
        d = dy.reshape(num, -1).astype(np.float64)
        if not normalize_variance:
            return (d - d.mean(1, keepdims=True)).reshape(x.shape)
        return ((d - d.mean(1, keepdims=True) - y * (y * d).mean(1, keepdims=True)) / std).reshape(x.shape)
    return y.reshape(x.shape), backward


@pytest.mark.parametrize("nv", [True, False])
@pytest.mark.parametrize("across", [True, False])
def test_mvn(nv, across):
    rng = np.random.default_rng(int(nv) * 2 + int(across))
    x = (rng.standard_normal((3, 4, 5, 2)) * 3 + 1).astype(np.float32)
    x[0, 0] = 2.0  # a constant group: Caffe divides by eps, no NaN
    eps = 1e-3
    ref, back = ref_mvn(x, nv, across, eps)
    xt = torch.from_numpy(x).requires_grad_()
    y = mvn(xt, nv, across, eps)
    close(y, ref)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    y.backward(torch.from_numpy(dy))
    close(xt.grad, back(dy), 1e-4)
    assert torch.isfinite(xt.grad).all()


def test_mvn_gradcheck():
    x = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    # Caffe's backward divides by std + eps everywhere; with eps 1e-9 it is the exact gradient
    assert torch.autograd.gradcheck(lambda t: mvn(t, True, False, 1e-9), (x,))


def test_scale_and_bias_broadcast():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    s1 = rng.standard_normal(3).astype(np.float32)
    b1 = rng.standard_normal(3).astype(np.float32)
    xt = torch.from_numpy(x)
    close(caffe_scale(xt, torch.from_numpy(s1), torch.from_numpy(b1)),
          x * s1[None, :, None, None] + b1[None, :, None, None])
    s2 = rng.standard_normal((3, 4)).astype(np.float32)  # num_axes 2
    close(caffe_scale(xt, torch.from_numpy(s2)), x * s2[None, :, :, None])
    s3 = rng.standard_normal((4, 5)).astype(np.float32)  # axis -2 through the end
    close(caffe_scale(xt, torch.from_numpy(s3), axis=-2), x * s3)
    close(caffe_scale(xt, torch.tensor(2.5), axis=3), x * 2.5)  # scalar: axis ignored
    close(caffe_bias(xt, torch.from_numpy(s2), axis=1), x + s2[None, :, :, None])
    with pytest.raises(ValueError):
        caffe_scale(xt, torch.from_numpy(s2), axis=2)
    assert scale_param_shape((2, 3, 4, 5)) == (3,)
    assert scale_param_shape((2, 3, 4, 5), 1, -1) == (3, 4, 5)
    assert scale_param_shape((2, 3, 4, 5), -2, 2) == (4, 5)
    assert scale_param_shape((2, 3, 4, 5), 1, 0) == ()
