"""LSTMUnit / LSTM / RNN vs numpy loops of Caffe's unrolled nets (gate order i, f, o, g)."""
from __future__ import annotations

import numpy as np
import torch

from netdef.lowering.ops import caffe_lstm, caffe_rnn, lstm_unit


def close(x, ref, tol=1e-5):
    x = x.detach().numpy() if isinstance(x, torch.Tensor) else x
    assert x.shape == ref.shape, (x.shape, ref.shape)
    np.testing.assert_allclose(x, ref, rtol=0, atol=tol * np.abs(ref).max())


def sig(v):
    return 1 / (1 + np.exp(-v))


def ref_unit(c_prev, gates, cont):
    h = c_prev.shape[-1]
    i, f, o = (sig(gates[..., j * h:(j + 1) * h]) for j in range(3))
    g = np.tanh(gates[..., 3 * h:])
    c = cont[..., None] * f * c_prev + i * g
    return c, o * np.tanh(c)


def ref_lstm(x, cont, w_xc, b_c, w_hc, xs=None, w_s=None, h0=None, c0=None):
    t_len, n = x.shape[:2]
    hd = w_hc.shape[1]
    h = np.zeros((n, hd)) if h0 is None else h0.reshape(n, hd)
    c = np.zeros((n, hd)) if c0 is None else c0.reshape(n, hd)
    x2 = x.reshape(t_len, n, -1)
    outs = []
    for t in range(t_len):
        gate = (cont[t][:, None] * h) @ w_hc.T + x2[t] @ w_xc.T + b_c
        if xs is not None:
            gate = gate + xs.reshape(n, -1) @ w_s.T
        c, h = ref_unit(c, gate, cont[t])
        outs.append(h)
    return np.stack(outs), h[None], c[None]


def ref_rnn(x, cont, w_xh, b_h, w_hh, w_ho, b_o, h0=None, xs=None, w_s=None):
    t_len, n = x.shape[:2]
    h = np.zeros((n, w_hh.shape[1])) if h0 is None else h0.reshape(n, -1)
    static = 0 if xs is None else xs.reshape(n, -1) @ w_s.T
    outs = []
    for t in range(t_len):
        h = np.tanh((cont[t][:, None] * h) @ w_hh.T + x[t].reshape(n, -1) @ w_xh.T + b_h + static)
        outs.append(np.tanh(h @ w_ho.T + b_o))
    return np.stack(outs), h[None]


def f32(*arrays):
    return [torch.from_numpy(np.asarray(a, np.float32)) for a in arrays]


RNG = np.random.default_rng(0)


def test_lstm_unit():
    c_prev = RNG.standard_normal((1, 3, 4))
    gates = RNG.standard_normal((1, 3, 16)) * 2
    cont = np.array([[1.0, 0.0, 1.0]])
    c, h = lstm_unit(*f32(c_prev, gates, cont))
    rc, rh = ref_unit(c_prev, gates, cont)
    close(c, rc)
    close(h, rh)


def test_lstm_with_resets_static_and_state():
    t_len, n, d, hd, ds = 5, 3, 2 * 3, 4, 3
    x = RNG.standard_normal((t_len, n, 2, 3))  # flattened from axis 2
    cont = np.ones((t_len, n))
    cont[0] = 0
    cont[3, 1] = 0  # sequence 1 restarts at t = 3
    w_xc, b_c = RNG.standard_normal((4 * hd, d)) * 0.5, RNG.standard_normal(4 * hd) * 0.1
    w_hc = RNG.standard_normal((4 * hd, hd)) * 0.5
    xs, w_s = RNG.standard_normal((n, ds)), RNG.standard_normal((4 * hd, ds)) * 0.5
    h0, c0 = RNG.standard_normal((1, n, hd)), RNG.standard_normal((1, n, hd))
    cont_state = cont.copy()
    cont_state[0] = 1  # keep the given initial state at t = 0
    for args, kw in [((x, cont, w_xc, b_c, w_hc), {}),
                     ((x, cont, w_xc, b_c, w_hc), {"xs": xs, "w_s": w_s}),
                     ((x, cont_state, w_xc, b_c, w_hc), {"h0": h0, "c0": c0})]:
        ref = ref_lstm(*args, **kw)
        targs = f32(*args)
        tkw = {"x_static": kw.get("xs"), "w_xc_static": kw.get("w_s"), "h0": kw.get("h0"), "c0": kw.get("c0")}
        tkw = {k: (None if v is None else f32(v)[0]) for k, v in tkw.items()}
        out = caffe_lstm(*targs, **tkw)
        for got, want in zip(out, ref):
            close(got, want)


def test_lstm_gradcheck():
    t_len, n, d, hd = 3, 2, 3, 2
    g = torch.Generator().manual_seed(0)
    params = [torch.randn(s, dtype=torch.float64, generator=g, requires_grad=True)
              for s in ((t_len, n, d), (4 * hd, d), (4 * hd,), (4 * hd, hd))]
    cont = torch.tensor([[0.0, 0.0], [1.0, 1.0], [1.0, 0.0]], dtype=torch.float64)

    def fn(x, w_xc, b_c, w_hc):
        h, h_t, c_t = caffe_lstm(x, cont, w_xc, b_c, w_hc)
        return h.sum() + c_t.sum()
    assert torch.autograd.gradcheck(fn, params)


def test_rnn():
    t_len, n, d, hd, od = 4, 2, 3, 5, 2
    x = RNG.standard_normal((t_len, n, d))
    cont = np.ones((t_len, n))
    cont[0] = 0
    cont[2, 0] = 0
    w = [RNG.standard_normal(s) * 0.5 for s in ((hd, d), (hd,), (hd, hd), (od, hd), (od,))]
    h0 = RNG.standard_normal((1, n, hd))
    ref = ref_rnn(x, np.ones_like(cont), *w, h0=h0)
    out = caffe_rnn(*f32(x, np.ones_like(cont), *w), h0=f32(h0)[0])
    for got, want in zip(out, ref):
        close(got, want)
    ref = ref_rnn(x, cont, *w)
    out = caffe_rnn(*f32(x, cont, *w))
    for got, want in zip(out, ref):
        close(got, want)
    xs, w_s = RNG.standard_normal((n, 2, 2)), RNG.standard_normal((hd, 4))
    ref = ref_rnn(x, cont, *w, xs=xs, w_s=w_s)
    xst, wst = f32(xs, w_s)
    out = caffe_rnn(*f32(x, cont, *w), x_static=xst, w_xh_static=wst)
    for got, want in zip(out, ref):
        close(got, want)
