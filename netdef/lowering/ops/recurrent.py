"""Caffe's LSTMUnit, LSTM and RNN (time-major: T x N x ...).

Caffe unrolls the recurrence into a net; these functions compute the same thing:
- ``cont`` (T, N) multiplies the previous hidden state (and, in LSTMUnit, the forget
  gate) so ``cont_t = 0`` starts a new sequence.
- LSTM gate order in the 4H axis is i, f, o, g; ``c_t = cont_t*f_t*c_{t-1} + i_t*g_t``,
  ``h_t = o_t * tanh(c_t)``; gate input = ``W_hc (cont_t*h_{t-1}) + (W_xc x_t + b_c)``
  (+ ``W_xc_static x_static``).  Parameter blob order: W_xc, b_c, [W_xc_static], W_hc.
- RNN: ``h_t = tanh(W_hh (cont_t*h_{t-1}) + W_xh x_t + b_h [+ W_xh_static x_static])``,
  ``o_t = tanh(W_ho h_t + b_o)``.  Blob order: W_xh, b_h, [W_xh_static], W_hh, W_ho, b_o.
- Without ``expose_hidden`` Caffe copies the last step's h/c into the next forward's
  initial state (it is carried across batches, zeros at first).  These functions take
  ``h0``/``c0`` (default zeros) and return the final states, so the caller keeps them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["lstm_unit", "caffe_lstm", "caffe_rnn"]


def lstm_unit(c_prev: Tensor, gates: Tensor, cont: Tensor) -> tuple[Tensor, Tensor]:
    """LSTMUnitLayer: ``c_prev`` (..., N, H), ``gates`` (..., N, 4H) as i, f, o, g pre-activations,
    ``cont`` (..., N).  Returns ``(c, h)``.  No gradient flows to ``cont``, as in Caffe."""
    hdim = c_prev.shape[-1]
    if gates.shape[-1] != 4 * hdim:
        raise ValueError("LSTMUnit gates need 4 * hidden_dim values per item")
    i = torch.sigmoid(gates[..., :hdim])
    f = torch.sigmoid(gates[..., hdim: 2 * hdim]) * cont.detach().unsqueeze(-1)
    o = torch.sigmoid(gates[..., 2 * hdim: 3 * hdim])
    g = torch.tanh(gates[..., 3 * hdim:])
    c = f * c_prev + i * g
    return c, o * torch.tanh(c)


def _prepare(x: Tensor, cont: Tensor, x_static: Tensor | None, w_static: Tensor | None):
    if x.dim() < 2:
        raise ValueError("recurrent input x must be (T, N, ...)")
    t_len, n = x.shape[0], x.shape[1]
    if tuple(cont.shape) != (t_len, n):
        raise ValueError(f"cont must be (T, N) = {(t_len, n)}, got {tuple(cont.shape)}")
    static = None
    if x_static is not None:
        if w_static is None:
            raise ValueError("x_static given without its weight")
        static = F.linear(x_static.reshape(x_static.shape[0], -1), w_static).unsqueeze(0)
    return x.reshape(t_len, n, -1), cont.detach().to(x.dtype), static


def caffe_lstm(x: Tensor, cont: Tensor, w_xc: Tensor, b_c: Tensor, w_hc: Tensor,
               x_static: Tensor | None = None, w_xc_static: Tensor | None = None,
               h0: Tensor | None = None, c0: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """LSTMLayer.  ``x`` (T, N, ...) is flattened from axis 2; weights are (4H, D), (4H,),
    (4H, H).  Returns ``(h, h_T, c_T)`` with ``h`` (T, N, H) and the final states (1, N, H)."""
    xs, cont, static = _prepare(x, cont, x_static, w_xc_static)
    t_len, n = xs.shape[:2]
    hdim = w_hc.shape[1]
    h = x.new_zeros(1, n, hdim) if h0 is None else h0.reshape(1, n, hdim)
    c = x.new_zeros(1, n, hdim) if c0 is None else c0.reshape(1, n, hdim)
    gates_x = F.linear(xs, w_xc, b_c.reshape(-1))  # all timesteps at once, as Caffe does
    outs = []
    for t in range(t_len):
        cont_t = cont[t: t + 1]
        gate = F.linear(h * cont_t.unsqueeze(-1), w_hc) + gates_x[t: t + 1]
        if static is not None:
            gate = gate + static
        c, h = lstm_unit(c, gate, cont_t)
        outs.append(h)
    return torch.cat(outs, 0), h, c


def caffe_rnn(x: Tensor, cont: Tensor, w_xh: Tensor, b_h: Tensor, w_hh: Tensor, w_ho: Tensor,
              b_o: Tensor, x_static: Tensor | None = None, w_xh_static: Tensor | None = None,
              h0: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """RNNLayer.  Returns ``(o, h_T)``: outputs (T, N, O) and the final hidden state (1, N, H)."""
    xs, cont, static = _prepare(x, cont, x_static, w_xh_static)
    t_len, n = xs.shape[:2]
    hdim = w_hh.shape[1]
    h = x.new_zeros(1, n, hdim) if h0 is None else h0.reshape(1, n, hdim)
    pre_x = F.linear(xs, w_xh, b_h.reshape(-1))
    outs = []
    for t in range(t_len):
        pre = F.linear(h * cont[t: t + 1].unsqueeze(-1), w_hh) + pre_x[t: t + 1]
        if static is not None:
            pre = pre + static
        h = torch.tanh(pre)
        outs.append(torch.tanh(F.linear(h, w_ho, b_o.reshape(-1))))
    return torch.cat(outs, 0), h
