"""Caffe LRN (both regions) vs numpy transcriptions of LRNLayer; closed-form backward."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from netdef.lowering.ops import lrn, lrn_across_channels, lrn_within_channel


def close(x, ref, tol=1e-6):
    x = x.detach().numpy() if isinstance(x, torch.Tensor) else x
    assert x.shape == ref.shape
    np.testing.assert_allclose(x, ref, rtol=0, atol=tol * np.abs(ref).max())


def ref_across(x, n, alpha, beta, k):
    """Returns top and the backward for a top diff (Caffe's formulas, float64)."""
    x = x.astype(np.float64)
    c = x.shape[1]
    pre = (n - 1) // 2
    padded = np.zeros((x.shape[0], c + n - 1) + x.shape[2:])
    padded[:, pre: pre + c] = x * x
    scale = np.full(x.shape, k)
    for ch in range(c):
        scale[:, ch] += alpha / n * padded[:, ch: ch + n].sum(1)
    top = x * scale ** -beta

    def backward(dy):
        ratio = np.zeros_like(padded)
        ratio[:, pre: pre + c] = dy * top / scale
        acc = np.stack([ratio[:, ch: ch + n].sum(1) for ch in range(c)], 1)
        return dy * scale ** -beta - 2 * alpha * beta / n * x * acc
    return top, backward


def ref_within(x, n, alpha, beta):
    x = x.astype(np.float64)
    nb, c, h, w = x.shape
    pre = (n - 1) // 2
    padded = np.zeros((nb, c, h + 2 * pre, w + 2 * pre))
    padded[:, :, pre: pre + h, pre: pre + w] = x * x
    out = np.empty_like(x)
    for i in range(h):
        for j in range(w):
            # Caffe's AVE pool with pad (n-1)/2, stride 1: the divisor is always n*n.
            avg = padded[:, :, i: i + n, j: j + n].sum((2, 3)) / (n * n)
            out[:, :, i, j] = x[:, :, i, j] * (1 + alpha * avg) ** -beta
    return out


@pytest.mark.parametrize("n,alpha,beta,k", [(5, 1e-4, 0.75, 1.0), (3, 0.5, 0.75, 2.0), (1, 0.3, 0.5, 1.0),
                                            (7, 2.0, 1.0, 0.5), (5, 0.7, 0.6, 1.5), (9, 1.0, 0.75, 1.0)])
def test_across_channels_forward_backward(n, alpha, beta, k):
    rng = np.random.default_rng(n)
    x = rng.standard_normal((2, 6, 4, 5)).astype(np.float32)
    ref, back = ref_across(x, n, alpha, beta, k)
    xt = torch.from_numpy(x).requires_grad_()
    y = lrn(xt, n, alpha, beta, k)
    close(y, ref)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    y.backward(torch.from_numpy(dy))
    close(xt.grad, back(dy))


def test_across_matches_torch_local_response_norm():
    x = torch.randn(2, 96, 9, 9) * 10
    close(lrn_across_channels(x, 5, 1e-4, 0.75, 1.0), F.local_response_norm(x, 5, 1e-4, 0.75, 1.0).numpy())


def test_across_gradcheck_float64():
    x = torch.randn(2, 5, 3, 2, dtype=torch.float64, requires_grad=True)
    for n, beta in [(3, 0.75), (5, 0.6), (1, 0.5)]:
        assert torch.autograd.gradcheck(lambda t: lrn_across_channels(t, n, 0.9, beta, 1.3), (x,))


def test_across_accepts_any_trailing_dims():
    x = torch.randn(3, 7, 11)
    ref, _ = ref_across(x.numpy(), 5, 0.1, 0.75, 1.0)
    close(lrn_across_channels(x, 5, 0.1, 0.75, 1.0), ref)


@pytest.mark.parametrize("n", [1, 3, 5])
def test_within_channel(n):
    rng = np.random.default_rng(n)
    x = rng.standard_normal((2, 3, 6, 7)).astype(np.float32)
    xt = torch.from_numpy(x).requires_grad_()
    # k is ignored by Caffe's WITHIN_CHANNEL (its Power layer uses shift 1)
    y = lrn(xt, n, 0.8, 0.75, k=5.0, norm_region="WITHIN_CHANNEL")
    close(y, ref_within(x, n, 0.8, 0.75))
    y.sum().backward()
    x64 = torch.from_numpy(x).double().requires_grad_()
    lrn_within_channel(x64, n, 0.8, 0.75).sum().backward()
    close(xt.grad, x64.grad.numpy())


def test_even_size_rejected():
    with pytest.raises(ValueError):
        lrn(torch.randn(1, 4, 2, 2), 4)
    with pytest.raises(ValueError):
        lrn(torch.randn(1, 4, 2, 2), 3, norm_region="BOGUS")
