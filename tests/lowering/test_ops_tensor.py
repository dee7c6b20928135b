"""Blob-manipulation layers vs numpy: Eltwise, Slice, Crop, Reshape, Flatten, Tile,
Reduction, ArgMax, Embed, Filter, BatchReindex, Softmax, Concat."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from netdef.lowering import ops


def close(x, ref, tol=1e-6):
    x = x.detach().numpy() if isinstance(x, torch.Tensor) else x
    assert x.shape == ref.shape, (x.shape, ref.shape)
    np.testing.assert_allclose(x, ref, rtol=0, atol=tol * max(np.abs(ref).max(), 1e-30))


RNG = np.random.default_rng(0)


def test_eltwise_sum_prod():
    a, b, c = (RNG.standard_normal((2, 3, 4)).astype(np.float32) for _ in range(3))
    ts = [torch.from_numpy(v).requires_grad_() for v in (a, b, c)]
    close(ops.eltwise(ts, "SUM", [0.5, -1.0, 2.0]), 0.5 * a - b + 2 * c)
    close(ops.eltwise(ts, "SUM"), a + b + c)
    y = ops.eltwise(ts, "PROD")
    close(y, a * b * c)
    y.backward(torch.ones_like(y))
    close(ts[0].grad, b * c)  # stable_prod_grad: product of the others
    with pytest.raises(ValueError):
        ops.eltwise(ts, "SUM", [1.0, 2.0])


def test_eltwise_max_ties_and_gradient():
    a = np.array([1.0, 2.0, 3.0, 5.0], np.float32)
    b = np.array([1.0, 4.0, 3.0, 0.0], np.float32)
    c = np.array([0.0, 4.0, 3.0, 6.0], np.float32)
    ts = [torch.from_numpy(v).requires_grad_() for v in (a, b, c)]
    y = ops.eltwise(ts, "MAX")
    close(y, np.maximum(np.maximum(a, b), c))
    y.backward(torch.ones_like(y))
    # Caffe: a vs b ties go to b (a > b strict); later inputs only win when strictly larger
    np.testing.assert_array_equal(ts[0].grad.numpy(), [0, 0, 0, 0])
    np.testing.assert_array_equal(ts[1].grad.numpy(), [1, 1, 1, 0])
    np.testing.assert_array_equal(ts[2].grad.numpy(), [0, 0, 0, 1])


def test_concat_slice():
    x = RNG.standard_normal((2, 7, 3)).astype(np.float32)
    parts = ops.caffe_slice(torch.from_numpy(x), 1, [2, 3])
    for p, r in zip(parts, np.split(x, [2, 3], 1)):
        close(p, r)
    eq = ops.caffe_slice(torch.from_numpy(x), -1, num_tops=3)
    assert [tuple(p.shape) for p in eq] == [(2, 7, 1)] * 3
    close(ops.concat(parts, 1), x)
    with pytest.raises(ValueError):
        ops.caffe_slice(torch.from_numpy(x), 1, num_tops=2)


def test_crop():
    x = RNG.standard_normal((2, 3, 8, 9)).astype(np.float32)
    xt = torch.from_numpy(x)
    close(ops.crop(xt, (1, 1, 5, 4), 2, [1, 3]), x[:, :, 1:6, 3:7])
    close(ops.crop(xt, (1, 1, 5, 4), 2, [2]), x[:, :, 2:7, 2:6])
    close(ops.crop(xt, (1, 2, 5, 4), 1, []), x[:, :2, :5, :4])
    with pytest.raises(ValueError):
        ops.crop(xt, (1, 1, 5, 4), 2, [4])


@pytest.mark.parametrize("bottom,shape,axis,num_axes,expect", [
    ((2, 3, 4, 5), (0, -1), 0, -1, (2, 60)),
    ((2, 3, 4, 5), (0, 0, -1, 1), 0, -1, (2, 3, 20, 1)),
    ((2, 3, 4, 5), (-1,), 1, 2, (2, 12, 5)),
    ((2, 3, 4, 5), (1, 1), -1, 0, (2, 3, 4, 5, 1, 1)),  # axis -1: after the last axis
    ((2, 8), (2, 2, 2), 1, 1, (2, 2, 2, 2)),
    ((2, 3, 4, 5), (1, -1), 2, 0, (2, 3, 1, 1, 4, 5)),
])
def test_reshape_shape(bottom, shape, axis, num_axes, expect):
    assert ops.reshape_shape(bottom, shape, axis, num_axes) == expect
    x = torch.arange(int(np.prod(bottom)), dtype=torch.float32).reshape(bottom)
    assert torch.equal(ops.caffe_reshape(x, shape, axis, num_axes).reshape(-1), x.reshape(-1))


def test_reshape_errors():
    with pytest.raises(ValueError):
        ops.reshape_shape((2, 3), (-1, -1))
    with pytest.raises(ValueError):
        ops.reshape_shape((2, 3), (4,))
    with pytest.raises(ValueError):
        ops.reshape_shape((2, 3), (0, 0, 0))


def test_flatten_tile():
    x = RNG.standard_normal((2, 3, 4, 5)).astype(np.float32)
    xt = torch.from_numpy(x)
    close(ops.caffe_flatten(xt), x.reshape(2, 60))
    close(ops.caffe_flatten(xt, 1, 2), x.reshape(2, 12, 5))
    close(ops.caffe_flatten(xt, -3, -2), x.reshape(2, 12, 5))
    close(ops.tile(xt, 3, 1), np.tile(x, (1, 3, 1, 1)))
    close(ops.tile(xt, 2, -1), np.tile(x, (1, 1, 1, 2)))


@pytest.mark.parametrize("op", ["SUM", "ASUM", "SUMSQ", "MEAN"])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_reduction(op, axis):
    x = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    ax = axis % 3
    flat = x.reshape(x.shape[:ax] + (-1,)).astype(np.float64)
    f = {"SUM": flat, "ASUM": np.abs(flat), "SUMSQ": flat ** 2, "MEAN": flat / flat.shape[-1]}[op]
    ref = 0.5 * f.sum(-1)
    xt = torch.from_numpy(x).requires_grad_()
    y = ops.reduction(xt, op, axis, 0.5)
    close(y, np.asarray(ref))
    y.backward(torch.ones_like(y))
    gref = {"SUM": np.ones_like(x), "ASUM": np.sign(x), "SUMSQ": 2 * x,
            "MEAN": np.ones_like(x) / flat.shape[-1]}[op] * 0.5
    close(xt.grad, gref)


def ref_argmax(v, k):
    """std::partial_sort with greater<pair<value, index>>: ties -> larger index first."""
    order = sorted(range(len(v)), key=lambda j: (v[j], j), reverse=True)[:k]
    return [float(j) for j in order], [v[j] for j in order]


def test_argmax_layouts_and_ties():
    x = np.array([[[1.0, 3.0, 3.0, 0.0]], [[2.0, 2.0, 2.0, 5.0]]], np.float32)  # (2, 1, 4)
    xt = torch.from_numpy(x)
    y = ops.argmax(xt, top_k=3)
    assert tuple(y.shape) == (2, 1, 3)
    for i in range(2):
        idx, _ = ref_argmax(list(x[i].reshape(-1)), 3)
        np.testing.assert_array_equal(y[i, 0].numpy(), idx)
    y = ops.argmax(xt, top_k=2, out_max_val=True)
    assert tuple(y.shape) == (2, 2, 2)
    np.testing.assert_array_equal(y[0].numpy(), [[2.0, 1.0], [3.0, 3.0]])
    x4 = RNG.standard_normal((2, 3, 2, 2)).astype(np.float32)
    y4 = ops.argmax(torch.from_numpy(x4))
    assert tuple(y4.shape) == (2, 1, 1, 1)  # trailing 1s up to the bottom's axes
    np.testing.assert_array_equal(y4.reshape(-1).numpy(), x4.reshape(2, -1).argmax(1))
    ya = ops.argmax(torch.from_numpy(x4), top_k=2, axis=1)
    yv = ops.argmax(torch.from_numpy(x4), top_k=2, axis=1, out_max_val=True)
    assert tuple(ya.shape) == (2, 2, 2, 2)
    for n in range(2):
        for h in range(2):
            for w in range(2):
                idx, val = ref_argmax(list(x4[n, :, h, w]), 2)
                np.testing.assert_array_equal(ya[n, :, h, w].numpy(), idx)
                np.testing.assert_array_equal(yv[n, :, h, w].numpy(), val)


def test_embed_filter_batch_reindex():
    w = RNG.standard_normal((5, 3)).astype(np.float32)
    b = RNG.standard_normal(3).astype(np.float32)
    idx = np.array([[0.0, 4.0], [2.9, 2.0]], np.float32)  # 2.9 truncates to 2
    wt = torch.from_numpy(w).requires_grad_()
    y = ops.embed(torch.from_numpy(idx), wt, torch.from_numpy(b))
    close(y, w[idx.astype(int)] + b)
    y.sum().backward()
    np.testing.assert_array_equal(wt.grad.numpy()[:, 0], [1, 0, 2, 0, 1])
    with pytest.raises(IndexError):
        ops.embed(torch.tensor([5.0]), wt)
    a = RNG.standard_normal((4, 2)).astype(np.float32)
    c = RNG.standard_normal((4, 3, 2)).astype(np.float32)
    sel = torch.tensor([1.0, 0.0, 2.0, 0.0])
    fa, fc = ops.filter_rows([torch.from_numpy(a), torch.from_numpy(c)], sel)
    close(fa, a[[0, 2]])
    close(fc, c[[0, 2]])
    xt = torch.from_numpy(a).requires_grad_()
    r = ops.batch_reindex(xt, torch.tensor([3.0, 0.0, 3.0]))
    close(r, a[[3, 0, 3]])
    r.sum().backward()
    np.testing.assert_array_equal(xt.grad.numpy()[:, 0], [1, 0, 0, 2])


def test_softmax_axis():
    x = (RNG.standard_normal((2, 3, 4)) * 20).astype(np.float32)
    for axis in (1, 2, -3):
        e = np.exp(x - x.max(axis, keepdims=True))
        close(ops.caffe_softmax(torch.from_numpy(x), axis), e / e.sum(axis, keepdims=True))
