"""Recurrent layers: LSTM, RNN (Caffe unrolls them into an inner net) and LSTMUnit.

Bottoms: x (T, N, ...), cont (T, N), optional x_static (N, ...), then — with
``expose_hidden`` — the initial states (1, N, H) (LSTM: h_0, c_0; RNN: h_0).
Tops: (T, N, H), then with ``expose_hidden`` the final states (1, N, H).

Param blobs are those of the unrolled net, in its layer order:

* LSTM: W_xc (4H, I), b_c (4H,), [W_xc_static (4H, S)], W_hc (4H, H)
* RNN:  W_xh (H, I), b_h (H,), [W_xh_static (H, S)], W_hh (H, H), W_ho (H, H), b_o (H,)

with I = x.count(2) and S = x_static.count(1).

Counting convention: MACs of the inner products (the static one once per
sequence, not per step); FLOPs = 2·MACs plus, per step and hidden unit:
LSTM 4·2 gate adds (bias, W_hc·h + W_xc·x; 4·3 with a static input) + 10 for the
cell (3 sigmoids, 2 tanh, 4 multiply/adds, the cont multiply; LSTMUnit alone
counts those 10); RNN 6 (bias, sum, tanh for h; bias, tanh for o; cont
multiply) + 1 with a static input.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from netdef.layers.families._util import count, fail, need_bottoms
from netdef.layers.registry import Counts, LayerDef, Shape, ShapeContext, register

if TYPE_CHECKING:  # pragma: no cover
    from netdef.ir.messages import LayerParameter

LSTM_UNIT_FLOPS = 10


class _Recurrent(LayerDef):
    param_field = "recurrent_param"
    category = "recurrent"
    n_states = 1  # recurrent input/output blobs (h; LSTM adds c)

    def allow_force_backward(self, layer: "LayerParameter", bottom_index: int) -> bool:
        return bottom_index != 1  # the sequence-continuation indicators

    def _setup(self, layer: "LayerParameter",
               bottoms: Sequence[Shape]) -> tuple[int, int, int, int | None]:
        """Check the bottoms; returns (T, N, H, S or None)."""
        p = layer.recurrent_param
        extra = self.n_states if p.expose_hidden else 0
        need_bottoms(layer, bottoms, 2 + extra, 3 + extra)
        x, cont = tuple(bottoms[0]), tuple(bottoms[1])
        if len(x) < 2:
            raise fail(layer, f"x must be (T, N, ...), got {x}")
        t, n = x[0], x[1]
        if cont != (t, n):
            raise fail(layer, f"cont must be (T, N) = {(t, n)}, got {cont}")
        if p.num_output <= 0:
            raise fail(layer, "num_output must be positive", field="recurrent_param")
        static = len(bottoms) > 2 + extra
        s = None
        if static:
            xs = tuple(bottoms[2])
            if not xs or xs[0] != n:
                raise fail(layer, f"x_static must be (N, ...) with N = {n}, got {xs}")
            s = count(xs, 1)
        for i, b in enumerate(bottoms[2 + static:]):
            if tuple(b) != (1, n, p.num_output):
                raise fail(layer, f"initial state {i} must be {(1, n, p.num_output)}, "
                                  f"got {tuple(b)}")
        want_tops = 1 + extra
        if layer.top and len(layer.top) != want_tops:
            raise fail(layer, f"takes exactly {want_tops} top(s), got {len(layer.top)}",
                       hint="expose_hidden adds one top per recurrent state")
        return t, n, p.num_output, s

    def shapes(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               ctx: ShapeContext) -> list[Shape]:
        t, n, h, _ = self._setup(layer, bottoms)
        extra = self.n_states if layer.recurrent_param.expose_hidden else 0
        return [(t, n, h)] + [(1, n, h)] * extra

    def summary(self, layer: "LayerParameter") -> str:
        return str(layer.recurrent_param.num_output)


@register
class LSTM(_Recurrent):
    type = "LSTM"
    bottoms = (2, 5)
    tops = (1, 3)
    n_states = 2

    def params(self, layer: "LayerParameter", bottoms: Sequence[Shape]) -> list[Shape]:
        _, _, h, s = self._setup(layer, bottoms)
        i = count(bottoms[0], 2)
        return [(4 * h, i), (4 * h,)] + ([(4 * h, s)] if s is not None else []) + [(4 * h, h)]

    def counts(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape]) -> Counts:
        t, n, h, s = self._setup(layer, bottoms)
        macs = t * n * 4 * h * (count(bottoms[0], 2) + h) + n * 4 * h * (s or 0)
        adds = 4 * h * (2 + (s is not None))  # bias, W_hc·h + W_xc·x [+ static]
        return Counts(macs, 2 * macs + t * n * (adds + LSTM_UNIT_FLOPS * h))


@register
class RNN(_Recurrent):
    """h_t = tanh(W_hh h_{t-1} + W_xh x_t + b_h); o_t = tanh(W_ho h_t + b_o)."""

    type = "RNN"
    bottoms = (2, 4)
    tops = (1, 2)

    def params(self, layer: "LayerParameter", bottoms: Sequence[Shape]) -> list[Shape]:
        _, _, h, s = self._setup(layer, bottoms)
        i = count(bottoms[0], 2)
        static = [(h, s)] if s is not None else []
        return [(h, i), (h,)] + static + [(h, h), (h, h), (h,)]

    def counts(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape]) -> Counts:
        t, n, h, s = self._setup(layer, bottoms)
        macs = t * n * h * (count(bottoms[0], 2) + 2 * h) + n * h * (s or 0)
        return Counts(macs, 2 * macs + t * n * h * (6 + (s is not None)))


@register
class LSTMUnit(LayerDef):
    """One LSTM step: (c_{t-1} (1,N,D), gates (1,N,4D), cont (1,N)) → c_t, h_t."""

    type = "LSTMUnit"
    bottoms = (3, 3)
    tops = (2, 2)
    category = "recurrent"

    def allow_force_backward(self, layer: "LayerParameter", bottom_index: int) -> bool:
        return bottom_index != 2

    def shapes(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               ctx: ShapeContext) -> list[Shape]:
        need_bottoms(layer, bottoms, 3, 3)
        c, gates, cont = (tuple(b) for b in bottoms)
        if len(c) != 3 or c[0] != 1:
            raise fail(layer, f"c_prev must be (1, N, D), got {c}")
        n, d = c[1], c[2]
        if gates != (1, n, 4 * d) or cont != (1, n):
            raise fail(layer, f"gates must be {(1, n, 4 * d)} and cont {(1, n)}, "
                              f"got {gates} and {cont}")
        return [c, c]

    def counts(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape]) -> Counts:
        return Counts(0, LSTM_UNIT_FLOPS * count(bottoms[0]))
