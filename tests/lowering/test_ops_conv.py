"""Convolution, deconvolution, Im2col, InnerProduct vs numpy loops in Caffe's layout."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from netdef.lowering.ops import (caffe_conv, caffe_deconv, caffe_im2col, caffe_inner_product,
                                 conv_output_size, deconv_output_size)


def close(x, ref, tol=1e-5):
    x = x.detach().numpy() if isinstance(x, torch.Tensor) else x
    assert x.shape == ref.shape, (x.shape, ref.shape)
    np.testing.assert_allclose(x, ref, rtol=0, atol=tol * np.abs(ref).max())


def ref_im2col(x, k, s, p, d):
    """Caffe's im2col_cpu for one image: rows (c, kh, kw), columns (oh, ow)."""
    c, h, w = x.shape
    oh = (h + 2 * p[0] - (d[0] * (k[0] - 1) + 1)) // s[0] + 1
    ow = (w + 2 * p[1] - (d[1] * (k[1] - 1) + 1)) // s[1] + 1
    col = np.zeros((c * k[0] * k[1], oh, ow), x.dtype)
    for ch in range(c):
        for ki in range(k[0]):
            for kj in range(k[1]):
                row = (ch * k[0] + ki) * k[1] + kj
                for i in range(oh):
                    for j in range(ow):
                        hh = i * s[0] - p[0] + ki * d[0]
                        ww = j * s[1] - p[1] + kj * d[1]
                        if 0 <= hh < h and 0 <= ww < w:
                            col[row, i, j] = x[ch, hh, ww]
    return col


def ref_conv(x, wt, b, s, p, d, g):
    n, c = x.shape[:2]
    out_c, cg, kh, kw = wt.shape
    outs = []
    for img in x:
        col = ref_im2col(img, (kh, kw), s, p, d).astype(np.float64)
        oh, ow = col.shape[1:]
        col = col.reshape(g, cg * kh * kw, oh * ow)
        wg = wt.reshape(g, out_c // g, cg * kh * kw).astype(np.float64)
        y = np.concatenate([wg[i] @ col[i] for i in range(g)], 0).reshape(out_c, oh, ow)
        outs.append(y + (0 if b is None else b[:, None, None]))
    return np.stack(outs)


def ref_deconv(x, wt, b, s, p, d, g):
    """Caffe's deconv = col2im of W^T x: scatter every input pixel through the kernel."""
    n, cin, h, w = x.shape
    _, cog, kh, kw = wt.shape
    oh = s[0] * (h - 1) + d[0] * (kh - 1) + 1 - 2 * p[0]
    ow = s[1] * (w - 1) + d[1] * (kw - 1) + 1 - 2 * p[1]
    out = np.zeros((n, cog * g, oh, ow))
    cig = cin // g
    for ci in range(cin):
        grp = ci // cig
        for co in range(cog):
            for ki in range(kh):
                for kj in range(kw):
                    for i in range(h):
                        for j in range(w):
                            hh, ww = i * s[0] - p[0] + ki * d[0], j * s[1] - p[1] + kj * d[1]
                            if 0 <= hh < oh and 0 <= ww < ow:
                                out[:, grp * cog + co, hh, ww] += x[:, ci, i, j] * wt[ci, co, ki, kj]
    return out + (0 if b is None else b[None, :, None, None])


CASES = [  # (cin, cout, k, s, p, d, g)
    (3, 4, (3, 3), (1, 1), (1, 1), (1, 1), 1),
    (4, 6, (3, 2), (2, 1), (0, 1), (1, 1), 2),
    (2, 2, (3, 3), (2, 2), (2, 1), (2, 1), 1),
    (6, 6, (2, 3), (1, 2), (1, 0), (1, 2), 3),
]


@pytest.mark.parametrize("cin,cout,k,s,p,d,g", CASES)
def test_conv2d(cin, cout, k, s, p, d, g):
    rng = np.random.default_rng(cin + cout)
    x = rng.standard_normal((2, cin, 7, 8)).astype(np.float32)
    wt = rng.standard_normal((cout, cin // g) + k).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    y = caffe_conv(torch.from_numpy(x), torch.from_numpy(wt), torch.from_numpy(b), s, p, d, g)
    close(y, ref_conv(x, wt, b, s, p, d, g))
    assert y.shape[2:] == (conv_output_size(7, k[0], s[0], p[0], d[0]),
                           conv_output_size(8, k[1], s[1], p[1], d[1]))


@pytest.mark.parametrize("cin,cout,k,s,p,d,g", CASES)
def test_deconv2d(cin, cout, k, s, p, d, g):
    rng = np.random.default_rng(cin * cout)
    x = rng.standard_normal((2, cin, 4, 5)).astype(np.float32)
    wt = rng.standard_normal((cin, cout // g) + k).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    y = caffe_deconv(torch.from_numpy(x), torch.from_numpy(wt), torch.from_numpy(b), s, p, d, g)
    close(y, ref_deconv(x, wt, b, s, p, d, g))
    assert y.shape[2] == deconv_output_size(4, k[0], s[0], p[0], d[0])


def test_conv_axis_and_nd():
    rng = np.random.default_rng(0)
    # axis 2: the two leading dims are both batch
    x = rng.standard_normal((2, 3, 4, 6, 6)).astype(np.float32)
    wt = rng.standard_normal((5, 4, 3, 3)).astype(np.float32)
    y = caffe_conv(torch.from_numpy(x), torch.from_numpy(wt), None, 1, 1, axis=2)
    ref = ref_conv(x.reshape(6, 4, 6, 6), wt, None, (1, 1), (1, 1), (1, 1), 1).reshape(2, 3, 5, 6, 6)
    close(y, ref)
    # 1-D: a 2-D conv with a unit height
    x1 = rng.standard_normal((2, 3, 9)).astype(np.float32)
    w1 = rng.standard_normal((4, 3, 3)).astype(np.float32)
    y1 = caffe_conv(torch.from_numpy(x1), torch.from_numpy(w1), None, [2], [1])
    ref1 = ref_conv(x1[:, :, None], w1[:, :, None], None, (1, 2), (0, 1), (1, 1), 1)[:, :, 0]
    close(y1, ref1)
    # 3-D: per-dim lists; depth slices of a (1, k, k) kernel are 2-D convs
    x3 = rng.standard_normal((1, 2, 3, 5, 5)).astype(np.float32)
    w3 = rng.standard_normal((3, 2, 1, 3, 3)).astype(np.float32)
    y3 = caffe_conv(torch.from_numpy(x3), torch.from_numpy(w3), None, [1, 2, 2], [0, 1, 1])
    for dz in range(3):
        close(y3[:, :, dz], ref_conv(x3[:, :, dz], w3[:, :, 0], None, (2, 2), (1, 1), (1, 1), 1))
    with pytest.raises(ValueError):
        caffe_conv(torch.from_numpy(x3), torch.from_numpy(w3), None, [1, 2], 0)


@pytest.mark.parametrize("k,s,p,d", [((3, 3), (1, 1), (1, 1), (1, 1)), ((2, 3), (2, 1), (1, 0), (2, 1))])
def test_im2col_layout(k, s, p, d):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 6, 7)).astype(np.float32)
    y = caffe_im2col(torch.from_numpy(x), k, s, p, d)
    ref = np.stack([ref_im2col(img, k, s, p, d) for img in x])
    np.testing.assert_array_equal(y.numpy(), ref)


def test_inner_product_axis_transpose():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    w = rng.standard_normal((6, 20)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    ref = x.reshape(2, 3, 20).astype(np.float64) @ w.T.astype(np.float64) + b
    close(caffe_inner_product(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), axis=2), ref)
    close(caffe_inner_product(torch.from_numpy(x), torch.from_numpy(w.T.copy()), torch.from_numpy(b),
                              axis=-2, transpose=True), ref)
    w1 = rng.standard_normal((3, 60)).astype(np.float32)  # default axis 1: C*H*W order
    close(caffe_inner_product(torch.from_numpy(x), torch.from_numpy(w1)),
          x.reshape(2, 60).astype(np.float64) @ w1.T.astype(np.float64))
