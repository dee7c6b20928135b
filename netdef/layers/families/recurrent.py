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

Lowering (:mod:`netdef.lowering.ops.recurrent` does the numerics): the module takes the
bottoms above positionally and returns the tops.  Without ``expose_hidden`` Caffe copies
the last step's h (and c) into the next forward's initial state, so the lowered module
keeps them too (non-persistent buffers, detached: no gradient crosses batches; zeros at
first and whenever the batch size changes; ``reset_state()`` zeroes them).  A sequence
that starts with ``cont = 0`` does not see them.  Fillers: ``recurrent_param``'s
``weight_filler`` for every weight matrix, ``bias_filler`` for the biases.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from netdef.layers.families._util import count, fail, need_bottoms
from netdef.layers.registry import (Counts, LayerDef, LayerMemory, MemoryContext, Saved, Shape,
                                    ShapeContext, nbytes, register)

if TYPE_CHECKING:  # pragma: no cover
    from netdef.ir.messages import LayerParameter

LSTM_UNIT_FLOPS = 10


class _Recurrent(LayerDef):
    param_field = "recurrent_param"
    category = "recurrent"
    n_states = 1  # recurrent input/output blobs (h; LSTM adds c)
    saved_per_step = 3  # (N, H) tensors autograd keeps per step (module doc of memory())
    gates = 1  # the all-steps input projection, in (T, N, H) units

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

    bias_blobs: tuple[str, ...] = ()  # blob names (below) filled by bias_filler

    def blob_names(self, static: bool) -> list[str]:
        """Caffe's names of the unrolled net's learnable blobs, in blob order."""
        raise NotImplementedError

    def fillers(self, layer: "LayerParameter", n_blobs: int) -> list[Any]:
        p = layer.recurrent_param
        names = self.blob_names(n_blobs > len(self.blob_names(False)))
        return [p.bias_filler if n in self.bias_blobs else p.weight_filler for n in names]

    def lower(self, layer: "LayerParameter", ctx: Any) -> Any:
        p = layer.recurrent_param
        extra = self.n_states if p.expose_hidden else 0
        static = len(layer.bottom) > 2 + extra
        cls = _define()["CaffeLSTM" if self.n_states == 2 else "CaffeRNN"]
        return cls(ctx.blobs, static, bool(p.expose_hidden))

    def memory(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape], ctx: MemoryContext) -> LayerMemory:
        """The input projection of all steps at once (``gates`` (T, N, H) units) and the
        step outputs (one unit, until ``cat``) are forward temporaries; autograd keeps x
        (the projection's input) and ``saved_per_step`` (N, H) tensors a step (see
        LSTM/RNN), while without autograd each step's tensors die at once.  Backward:
        every step's slice of the projection gets a zero-filled projection-sized diff
        that is added into the accumulated one.  ``cont`` gets no gradient."""
        t, n, h, _ = self._setup(layer, bottoms)
        unit = nbytes((t, n, h))
        gates = self.gates * unit
        if not ctx.grad:
            return LayerMemory(no_grad_bottoms=(1,), workspace=gates + unit)
        steps = Saved("new", nbytes=self.saved_per_step * unit)
        return LayerMemory(saved=(Saved("bottom", 0), steps), no_grad_bottoms=(1,),
                           workspace=gates + unit,
                           backward_workspace=2 * gates)


@register
class LSTM(_Recurrent):
    type = "LSTM"
    bottoms = (2, 5)
    tops = (1, 3)
    n_states = 2
    # per step: h·cont (the W_hc product's input), i, σ(f), σ(f)·cont, o, tanh(g), c, tanh(c)
    saved_per_step = 8
    gates = 4
    bias_blobs = ("b_c",)

    def blob_names(self, static: bool) -> list[str]:
        return ["W_xc", "b_c"] + (["W_xc_static"] if static else []) + ["W_hc"]

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
    saved_per_step = 3  # h·cont (W_hh's input), h = tanh(·), o = tanh(·)
    bias_blobs = ("b_h", "b_o")

    def blob_names(self, static: bool) -> list[str]:
        return ["W_xh", "b_h"] + (["W_xh_static"] if static else []) + ["W_hh", "W_ho", "b_o"]

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

    def lower(self, layer: "LayerParameter", ctx: Any) -> Any:
        return _define()["LSTMUnitModule"]()

    def memory(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape], ctx: MemoryContext) -> LayerMemory:
        """Keeps c_prev, the three sigmoid gates, tanh(g) and tanh(c) (5 × N·D new);
        backward: each gate slice's zero-filled gates-sized diff, added into the first."""
        size = nbytes(bottoms[0])
        return LayerMemory(saved=(Saved("bottom", 0), Saved("new", nbytes=5 * size)),
                           no_grad_bottoms=(2,), backward_workspace=nbytes(bottoms[1]))


# --- lowering -------------------------------------------------------------------------
# torch classes are defined on first use (importing the registry never imports torch)
# and reachable as attributes of this module (PEP 562), so lowered nets pickle.

_LOWERED = ("CaffeLSTM", "CaffeRNN", "LSTMUnitModule")
_CLASSES: dict[str, type] = {}


def _define() -> dict[str, type]:
    if _CLASSES:
        return _CLASSES
    import torch

    from netdef.lowering import functional as CF
    from netdef.lowering.module import LayerModule

    class _RecurrentModule(LayerModule):
        n_states = 1

        def __init__(self, blobs, static: bool, expose_hidden: bool) -> None:
            super().__init__(blobs)
            self.static, self.expose_hidden = static, expose_hidden
            for i in range(self.n_states):  # Caffe's carried-over initial state
                self.register_buffer(f"state{i}", None, persistent=False)

        def reset_state(self) -> None:
            """Zero the carried state (as in a freshly initialised Caffe net)."""
            for i in range(self.n_states):
                setattr(self, f"state{i}", None)

        def _split(self, x: torch.Tensor, rest: tuple[torch.Tensor, ...]):
            """(x_static or None, initial states) from the bottoms after x and cont."""
            want = int(self.static) + (self.n_states if self.expose_hidden else 0)
            if len(rest) != want:
                raise TypeError(f"expected {2 + want} bottoms, got {2 + len(rest)}")
            x_static = rest[0] if self.static else None
            if self.expose_hidden:
                return x_static, list(rest[int(self.static):])
            # W_hc (LSTM) and W_hh (RNN) are blob 2 (+1 with a static input): (·, H)
            n, h = x.shape[1], self.blob(2 + int(self.static)).shape[1]
            states = []
            for i in range(self.n_states):
                s = getattr(self, f"state{i}")
                if s is None or s.shape != (1, n, h) or s.device != x.device:
                    s = x.new_zeros(1, n, h)
                states.append(s.to(x.dtype))
            return x_static, states

        def _keep(self, finals) -> None:
            if not self.expose_hidden:
                for i, s in enumerate(finals):
                    setattr(self, f"state{i}", s.detach())

        def extra_repr(self) -> str:
            return f"static={self.static}, expose_hidden={self.expose_hidden}"

    class CaffeLSTM(_RecurrentModule):
        """Caffe's LSTM; blobs W_xc, b_c, [W_xc_static], W_hc (gate order i, f, o, g)."""

        n_states = 2

        def forward(self, x: torch.Tensor, cont: torch.Tensor, *rest: torch.Tensor):
            x_static, (h0, c0) = self._split(x, rest)
            k = int(self.static)
            out, h_t, c_t = CF.caffe_lstm(
                x, cont, self.blob(0), self.blob(1), self.blob(2 + k), x_static,
                self.blob(2) if self.static else None, h0, c0)
            if self.expose_hidden:
                return out, h_t, c_t
            self._keep((h_t, c_t))
            return out

    class CaffeRNN(_RecurrentModule):
        """Caffe's RNN; blobs W_xh, b_h, [W_xh_static], W_hh, W_ho, b_o."""

        def forward(self, x: torch.Tensor, cont: torch.Tensor, *rest: torch.Tensor):
            x_static, (h0,) = self._split(x, rest)
            k = int(self.static)
            out, h_t = CF.caffe_rnn(
                x, cont, self.blob(0), self.blob(1), self.blob(2 + k), self.blob(3 + k),
                self.blob(4 + k), x_static, self.blob(2) if self.static else None, h0)
            if self.expose_hidden:
                return out, h_t
            self._keep((h_t,))
            return out

    class LSTMUnitModule(LayerModule):
        """One LSTM step: (c_prev, gates, cont) -> (c, h)."""

        def forward(self, c_prev: torch.Tensor, gates: torch.Tensor, cont: torch.Tensor):
            return CF.lstm_unit(c_prev, gates, cont)

    for cls in (CaffeLSTM, CaffeRNN, LSTMUnitModule):
        cls.__module__, cls.__qualname__ = __name__, cls.__name__
        _CLASSES[cls.__name__] = cls
    return _CLASSES


def __getattr__(name: str):  # PEP 562: pickle finds the lazily defined classes here
    if name in _LOWERED:
        return _define()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
