"""Lowered LSTM, RNN and LSTMUnit vs numpy references of Caffe's unrolled nets.

Caffe's LSTM (T×N layout) per step t:
    gates = W_xc x_t + b_c + W_hc (cont_t h_{t-1}) [+ W_xc_static x_static]
    i, f, o, g = σ(gates[0:H]), σ(gates[H:2H]), σ(gates[2H:3H]), tanh(gates[3H:4H])
    c_t = cont_t f c_{t-1} + i g;   h_t = o tanh(c_t)
Caffe's RNN:
    h_t = tanh(W_hh (cont_t h_{t-1}) + W_xh x_t + b_h [+ W_xh_static x_static])
    o_t = tanh(W_ho h_t + b_o)
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from netdef.analysis.net import analyze
from netdef.api import load_net
from netdef.lowering.module import build

RNG = np.random.default_rng(7)
T, N = 3, 2


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def lstm_ref(x, cont, w_xc, b_c, w_hc, x_static=None, w_static=None, h0=None, c0=None):
    t_len, n = x.shape[:2]
    hdim = w_hc.shape[1]
    xs = x.reshape(t_len, n, -1).astype(np.float64)
    h = np.zeros((n, hdim)) if h0 is None else h0.reshape(n, hdim).astype(np.float64)
    c = np.zeros((n, hdim)) if c0 is None else c0.reshape(n, hdim).astype(np.float64)
    outs = []
    for t in range(t_len):
        ct = cont[t].astype(np.float64)[:, None]
        gates = xs[t] @ w_xc.T + b_c + (ct * h) @ w_hc.T
        if x_static is not None:
            gates = gates + x_static.reshape(n, -1) @ w_static.T
        i = sigmoid(gates[:, :hdim])
        f = sigmoid(gates[:, hdim:2 * hdim])
        o = sigmoid(gates[:, 2 * hdim:3 * hdim])
        g = np.tanh(gates[:, 3 * hdim:])
        c = ct * f * c + i * g
        h = o * np.tanh(c)
        outs.append(h)
    return np.stack(outs), h[None], c[None]


def rnn_ref(x, cont, w_xh, b_h, w_hh, w_ho, b_o, x_static=None, w_static=None, h0=None):
    t_len, n = x.shape[:2]
    hdim = w_hh.shape[1]
    xs = x.reshape(t_len, n, -1).astype(np.float64)
    h = np.zeros((n, hdim)) if h0 is None else h0.reshape(n, hdim).astype(np.float64)
    outs = []
    for t in range(t_len):
        ct = cont[t].astype(np.float64)[:, None]
        pre = (ct * h) @ w_hh.T + xs[t] @ w_xh.T + b_h
        if x_static is not None:
            pre = pre + x_static.reshape(n, -1) @ w_static.T
        h = np.tanh(pre)
        outs.append(np.tanh(h @ w_ho.T + b_o))
    return np.stack(outs), h[None]


def make_net(ltype: str, hidden: int, inputs: dict[str, tuple[int, ...]], tops=("y",),
             extra: str = ""):
    shapes = " ".join("shape { " + " ".join(f"dim: {d}" for d in s) + " }"
                      for s in inputs.values())
    in_tops = " ".join(f'top: "{n}"' for n in inputs)
    bottoms = " ".join(f'bottom: "{n}"' for n in inputs)
    out_tops = " ".join(f'top: "{n}"' for n in tops)
    text = (f'layer {{ name: "in" type: "Input" {in_tops} input_param {{ {shapes} }} }}\n'
            f'layer {{ name: "rec" type: "{ltype}" {bottoms} {out_tops} recurrent_param {{ '
            f'num_output: {hidden} weight_filler {{ type: "uniform" min: -0.6 max: 0.6 }} '
            f'bias_filler {{ type: "uniform" min: -0.3 max: 0.3 }} {extra} }} }}\n')
    analysis = analyze(load_net(text=text))
    gen = torch.Generator().manual_seed(3)
    return build(analysis, generator=gen), analysis


def blobs(net) -> list[np.ndarray]:
    mod = net.rec
    return [mod.blob(i).detach().numpy().astype(np.float64) for i in range(mod.num_blobs)]


def close(got: torch.Tensor, ref, tol=1e-5):
    np.testing.assert_allclose(got.detach().numpy(), ref, rtol=tol, atol=tol)


CONTS = {
    "fresh": np.array([[0, 0], [1, 1], [1, 1]], np.float32),
    "resets": np.array([[0, 0], [1, 0], [0, 1]], np.float32),  # new sequences mid-batch
}


# --- LSTM -------------------------------------------------------------------------------------

@pytest.mark.parametrize("cont_name", list(CONTS))
def test_lstm_matches_caffe_equations(cont_name):
    hidden, x = 4, RNG.standard_normal((T, N, 3)).astype(np.float32)
    cont = CONTS[cont_name]
    net, analysis = make_net("LSTM", hidden, {"x": x.shape, "cont": cont.shape})
    # blob order and shapes as the registry says: W_xc (4H, I), b_c (4H,), W_hc (4H, H)
    assert [tuple(p.shape) for p in analysis.layers[1].params] == [(16, 3), (16,), (16, 4)]
    assert list(net.state_dict()) == ["rec.0", "rec.1", "rec.2"]
    w_xc, b_c, w_hc = blobs(net)
    assert np.abs(b_c).max() <= 0.3 and np.abs(w_xc).max() > 0.3  # bias/weight fillers
    xt = torch.from_numpy(x).requires_grad_()
    out = net(x=xt, cont=torch.from_numpy(cont))
    ref, _, _ = lstm_ref(x, cont, w_xc, b_c, w_hc)
    assert out["y"].shape == (T, N, hidden)
    close(out["y"], ref)
    out["y"].sum().backward()
    assert xt.grad is not None and net.rec.blob(2).grad is not None


def test_lstm_reset_cuts_the_sequence():
    """With cont_t = 0 the output from t on does not depend on earlier inputs."""
    x = RNG.standard_normal((T, N, 3)).astype(np.float32)
    cont = CONTS["resets"]  # item 0 restarts at t=2, item 1 at t=1
    net, _ = make_net("LSTM", 4, {"x": x.shape, "cont": cont.shape})
    xt = torch.from_numpy(x).requires_grad_()
    y = net(x=xt, cont=torch.from_numpy(cont))["y"]
    y[2, 0].sum().backward()
    assert torch.all(xt.grad[:2, 0] == 0) and torch.any(xt.grad[2, 0] != 0)
    xt.grad = None
    y = net(x=xt, cont=torch.from_numpy(cont))["y"]
    y[2, 1].sum().backward()
    assert torch.all(xt.grad[0, 1] == 0) and torch.any(xt.grad[1, 1] != 0)


def test_lstm_static_input_expose_hidden_and_nd_x():
    hidden = 3
    x = RNG.standard_normal((T, N, 2, 2)).astype(np.float32)  # flattened from axis 2
    cont = CONTS["resets"]
    xs = RNG.standard_normal((N, 5)).astype(np.float32)
    h0 = RNG.standard_normal((1, N, hidden)).astype(np.float32)
    c0 = RNG.standard_normal((1, N, hidden)).astype(np.float32)
    net, analysis = make_net(
        "LSTM", hidden, {"x": x.shape, "cont": cont.shape, "xs": xs.shape, "h0": h0.shape,
                         "c0": c0.shape}, tops=("y", "hT", "cT"), extra="expose_hidden: true")
    assert [tuple(p.shape) for p in analysis.layers[1].params] == [
        (12, 4), (12,), (12, 5), (12, 3)]  # W_xc, b_c, W_xc_static, W_hc
    w_xc, b_c, w_st, w_hc = blobs(net)
    out = net(x=torch.from_numpy(x), cont=torch.from_numpy(cont), xs=torch.from_numpy(xs),
              h0=torch.from_numpy(h0), c0=torch.from_numpy(c0))
    ref, h_t, c_t = lstm_ref(x, cont, w_xc, b_c, w_hc, xs, w_st, h0, c0)
    close(out["y"], ref)
    close(out["hT"], h_t)
    close(out["cT"], c_t)
    assert out["hT"].shape == (1, N, hidden)


def test_lstm_carries_state_across_forwards():
    """Without expose_hidden Caffe copies h_T, c_T into the next forward's h_0, c_0."""
    x1, x2 = (RNG.standard_normal((T, N, 3)).astype(np.float32) for _ in range(2))
    cont1 = CONTS["fresh"]
    cont2 = np.ones((T, N), np.float32)  # continues the previous batch
    net, _ = make_net("LSTM", 4, {"x": x1.shape, "cont": cont1.shape})
    w = blobs(net)
    net(x=torch.from_numpy(x1), cont=torch.from_numpy(cont1))
    out2 = net(x=torch.from_numpy(x2), cont=torch.from_numpy(cont2))["y"]
    _, h1, c1 = lstm_ref(x1, cont1, *w)
    ref2, _, _ = lstm_ref(x2, cont2, *w, h0=h1, c0=c1)
    close(out2, ref2)
    # without the carried state the result differs (the reference can tell)
    assert not np.allclose(ref2, lstm_ref(x2, cont2, *w)[0], atol=1e-4)
    net.rec.reset_state()
    close(net(x=torch.from_numpy(x2), cont=torch.from_numpy(cont2))["y"],
          lstm_ref(x2, cont2, *w)[0])
    # a different batch size starts from zeros (the carried (1, 2, H) state does not fit)
    x3 = RNG.standard_normal((T, 1, 3)).astype(np.float32)
    out3 = net(x=torch.from_numpy(x3), cont=torch.ones(T, 1))["y"]
    close(out3, lstm_ref(x3, np.ones((T, 1), np.float32), *w)[0])


def test_lstm_gradcheck():
    x = RNG.standard_normal((T, N, 2)).astype(np.float64)
    net, _ = make_net("LSTM", 2, {"x": x.shape, "cont": (T, N)})
    net = net.double()
    cont = torch.from_numpy(CONTS["resets"]).double()

    def f(xx, *ws):
        for i, w in enumerate(ws):
            net.rec._parameters[str(i)] = w
        net.rec.reset_state()
        return net(x=xx, cont=cont)["y"]

    ws = tuple(p.detach().clone().requires_grad_() for p in net.rec.parameters())
    assert torch.autograd.gradcheck(f, (torch.from_numpy(x).requires_grad_(), *ws))


# --- RNN ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("cont_name", list(CONTS))
def test_rnn_matches_caffe_equations(cont_name):
    hidden, x = 4, RNG.standard_normal((T, N, 3)).astype(np.float32)
    cont = CONTS[cont_name]
    net, analysis = make_net("RNN", hidden, {"x": x.shape, "cont": cont.shape})
    assert [tuple(p.shape) for p in analysis.layers[1].params] == [
        (4, 3), (4,), (4, 4), (4, 4), (4,)]  # W_xh, b_h, W_hh, W_ho, b_o
    w = blobs(net)
    assert np.abs(w[1]).max() <= 0.3 and np.abs(w[4]).max() <= 0.3  # biases: bias_filler
    xt = torch.from_numpy(x).requires_grad_()
    out = net(x=xt, cont=torch.from_numpy(cont))
    ref, _ = rnn_ref(x, cont, *w)
    close(out["y"], ref)
    out["y"].sum().backward()
    assert xt.grad is not None


def test_rnn_static_expose_hidden_and_carry():
    hidden = 3
    x = RNG.standard_normal((T, N, 2)).astype(np.float32)
    cont = CONTS["resets"]
    xs = RNG.standard_normal((N, 2, 2)).astype(np.float32)
    h0 = RNG.standard_normal((1, N, hidden)).astype(np.float32)
    net, analysis = make_net("RNN", hidden, {"x": x.shape, "cont": cont.shape, "xs": xs.shape,
                                             "h0": h0.shape},
                             tops=("y", "hT"), extra="expose_hidden: true")
    assert [tuple(p.shape) for p in analysis.layers[1].params] == [
        (3, 2), (3,), (3, 4), (3, 3), (3, 3), (3,)]  # W_xh, b_h, W_xh_static, W_hh, W_ho, b_o
    w_xh, b_h, w_st, w_hh, w_ho, b_o = blobs(net)
    out = net(x=torch.from_numpy(x), cont=torch.from_numpy(cont), xs=torch.from_numpy(xs),
              h0=torch.from_numpy(h0))
    ref, h_t = rnn_ref(x, cont, w_xh, b_h, w_hh, w_ho, b_o, xs, w_st, h0)
    close(out["y"], ref)
    close(out["hT"], h_t)
    # carried state without expose_hidden
    net2, _ = make_net("RNN", hidden, {"x": x.shape, "cont": cont.shape})
    w2 = blobs(net2)
    ones = np.ones((T, N), np.float32)
    net2(x=torch.from_numpy(x), cont=torch.from_numpy(ones))
    _, h1 = rnn_ref(x, ones, *w2)
    close(net2(x=torch.from_numpy(x), cont=torch.from_numpy(ones))["y"],
          rnn_ref(x, ones, *w2, h0=h1)[0])


def test_rnn_gradcheck():
    x = RNG.standard_normal((T, N, 2)).astype(np.float64)
    net, _ = make_net("RNN", 2, {"x": x.shape, "cont": (T, N)})
    net = net.double()
    cont = torch.from_numpy(CONTS["resets"]).double()

    def f(xx, *ws):
        for i, w in enumerate(ws):
            net.rec._parameters[str(i)] = w
        net.rec.reset_state()
        return net(x=xx, cont=cont)["y"]

    ws = tuple(p.detach().clone().requires_grad_() for p in net.rec.parameters())
    assert torch.autograd.gradcheck(f, (torch.from_numpy(x).requires_grad_(), *ws))


def test_recurrent_fillers_follow_recurrent_param():
    text = ('layer { name: "in" type: "Input" top: "x" top: "cont" input_param { '
            'shape { dim: 2 dim: 1 dim: 3 } shape { dim: 2 dim: 1 } } }\n'
            'layer { name: "rec" type: "RNN" bottom: "x" bottom: "cont" top: "y" '
            'recurrent_param { num_output: 2 weight_filler { type: "constant" value: 0.5 } '
            'bias_filler { type: "constant" value: -0.25 } } }\n')
    net = build(analyze(load_net(text=text)))
    vals = [float(p.detach().unique()) for p in net.rec.parameters()]
    assert vals == [0.5, -0.25, 0.5, 0.5, -0.25]


# --- LSTMUnit --------------------------------------------------------------------------------

def test_lstm_unit():
    d = 3
    c_prev = RNG.standard_normal((1, N, d)).astype(np.float32)
    gates = RNG.standard_normal((1, N, 4 * d)).astype(np.float32)
    cont = np.array([[1, 0]], np.float32)
    text = ('layer { name: "in" type: "Input" top: "c" top: "g" top: "cont" input_param { '
            f'shape {{ dim: 1 dim: {N} dim: {d} }} shape {{ dim: 1 dim: {N} dim: {4 * d} }} '
            f'shape {{ dim: 1 dim: {N} }} }} }}\n'
            'layer { name: "unit" type: "LSTMUnit" bottom: "c" bottom: "g" bottom: "cont" '
            'top: "c_t" top: "h_t" }\n')
    net = build(analyze(load_net(text=text)))
    gt = torch.from_numpy(gates).requires_grad_()
    out = net(c=torch.from_numpy(c_prev), g=gt, cont=torch.from_numpy(cont))
    gd = gates.astype(np.float64)[0]
    i, f, o = sigmoid(gd[:, :d]), sigmoid(gd[:, d:2 * d]), sigmoid(gd[:, 2 * d:3 * d])
    g = np.tanh(gd[:, 3 * d:])
    c = cont[0][:, None] * f * c_prev[0] + i * g
    close(out["c_t"], c[None])
    close(out["h_t"], (o * np.tanh(c))[None])
    out["h_t"].sum().backward()
    # forget-gate gradient of the reset item is zero: cont_t multiplies f
    assert torch.all(gt.grad[0, 1, d:2 * d] == 0) and torch.any(gt.grad[0, 0, d:2 * d] != 0)
