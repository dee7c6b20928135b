"""Normalisation and affine layers: LRN, BatchNorm, MVN, Scale, Bias.

Counting convention (FLOPs per element of the bottom, no MACs):

* LRN ACROSS_CHANNELS: ``2·n + 4`` — n squares and n adds for the window sum, then
  ``k + α/n·sum`` (2), the power (1) and the multiply by x (1); WITHIN_CHANNEL:
  ``2·n² + 4`` (the window is n×n).
* BatchNorm: 2 (subtract the mean, multiply by 1/σ).
* MVN: 2 (mean, subtract) + 3 with ``normalize_variance`` (square, sum, divide).
* Scale: 1 (multiply) + 1 with ``bias_term``; Bias: 1.
"""
from __future__ import annotations

from typing import Any, TYPE_CHECKING, Sequence

from netdef.ir.schema import has
from netdef.layers.families._util import (Elementwise, canonical_axis, count, fail,
                                          fmt_float, need_bottoms)
from netdef.layers.families.common import TorchModules, filler_or
from netdef.layers.registry import (Counts, LayerDef, LayerMemory, MemoryContext, Saved,
                                    Shape, ShapeContext, nbytes, register)

if TYPE_CHECKING:  # pragma: no cover
    from netdef.ir.messages import LayerParameter


@register
class LRN(Elementwise):
    """Local response normalisation over (N, C, H, W); ``local_size`` must be odd."""
    top_saved_for_backward = False

    type = "LRN"
    param_field = "lrn_param"
    v1_type = "LRN"
    category = "norm"

    def shapes(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               ctx: ShapeContext) -> list[Shape]:
        need_bottoms(layer, bottoms, 1, 1)
        if layer.lrn_param.local_size % 2 != 1:
            raise fail(layer, f"local_size must be odd, got {layer.lrn_param.local_size}",
                       field="lrn_param")
        if len(bottoms[0]) != 4:
            raise fail(layer, f"input must have 4 axes (num, channels, height, width), "
                              f"got {tuple(bottoms[0])}")
        return [tuple(bottoms[0])]

    def counts(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape]) -> Counts:
        p = layer.lrn_param
        window = p.local_size if p.norm_region.name == "ACROSS_CHANNELS" else p.local_size ** 2
        return Counts(0, (2 * window + 4) * count(bottoms[0]))

    def summary(self, layer: "LayerParameter") -> str:
        p = layer.lrn_param
        text = f"{p.local_size}, α={fmt_float(p.alpha)}, β={fmt_float(p.beta)}"
        if p.k != 1:
            text += f", k={fmt_float(p.k)}"
        if p.norm_region.name == "WITHIN_CHANNEL":
            text += ", within"
        return text

    def lower(self, layer: "LayerParameter", ctx):  # noqa: ANN001, ANN201
        self.shapes(layer, ctx.info.bottom_shapes, None)  # odd local_size, 4-D input
        p = layer.lrn_param
        return _torch.LoweredLRN(p.norm_region.name, p.local_size, float(p.alpha),
                                 float(p.beta), float(p.k))

    def memory(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape], ctx: MemoryContext) -> LayerMemory:
        """ACROSS_CHANNELS (netdef's custom ops, ops/lrn.py) keeps x, ``scale``
        and ``scale^-β``; its backward holds one temporary (``dy·x·scale^-β/scale``)
        beside the diff.  Without autograd the scale buffer becomes the top, with one
        temporary (x² or the square root).  WITHIN_CHANNEL is plain torch ops: x, x²
        (avg_pool2d's input), the pow base and result are kept."""
        size = nbytes(bottoms[0])
        if layer.lrn_param.norm_region.name == "WITHIN_CHANNEL":
            if not ctx.grad:
                return LayerMemory(workspace=2 * size)
            return LayerMemory(saved=(Saved("bottom", 0),) + (Saved("new", nbytes=size),) * 3,
                               workspace=size, backward_workspace=3 * size)
        if not ctx.grad:
            return LayerMemory(workspace=size)
        return LayerMemory(saved=(Saved("bottom", 0), Saved("new", nbytes=size),
                                  Saved("new", nbytes=size)), backward_workspace=size)


@register
class BatchNorm(Elementwise):
    """Blobs: mean (C,), variance (C,), moving-average factor (1,)."""
    top_saved_for_backward = False

    type = "BatchNorm"
    param_field = "batch_norm_param"
    in_place = True
    category = "norm"
    flops_per_element = 2

    def params(self, layer: "LayerParameter", bottoms: Sequence[Shape]) -> list[Shape]:
        need_bottoms(layer, bottoms, 1, 1)
        channels = bottoms[0][1] if len(bottoms[0]) > 1 else 1
        return [(channels,), (channels,), (1,)]

    def param_spec(self, layer: "LayerParameter", index: int) -> Any:
        """Caffe masks the statistics from the solver: lr_mult 0, and refuses any other."""
        from netdef.errors import ShapeError
        from netdef.ir.messages import ParamSpec
        from netdef.ir.schema import loc_of, make

        if index < len(layer.param):
            spec = layer.param[index]
            if spec.lr_mult != 0:
                raise ShapeError(f"layer '{layer.name}' (BatchNorm): cannot configure batch "
                                 "normalization statistics as layer parameters (lr_mult must "
                                 "be 0)", loc=loc_of(layer, "param", index),
                                 hint="remove the param { } blocks or set lr_mult: 0")
            return spec
        return make(ParamSpec, lr_mult=0.0)

    def learnable(self, layer: "LayerParameter", index: int) -> bool:
        return False

    def summary(self, layer: "LayerParameter") -> str:
        p = layer.batch_norm_param
        parts = ["global stats"] if p.use_global_stats else []
        if p.eps != 1e-5:
            parts.append(f"eps={fmt_float(p.eps)}")
        return ", ".join(parts)

    def fillers(self, layer: "LayerParameter", n_blobs: int) -> list:
        from netdef.ir.messages import FillerParameter
        from netdef.ir.schema import make

        return [make(FillerParameter, type="constant", value=0.0)] * n_blobs  # caffe_set 0

    def lower(self, layer: "LayerParameter", ctx):  # noqa: ANN001, ANN201
        p = layer.batch_norm_param
        # Caffe: use_global_stats defaults to (phase == TEST); here unset means "follow
        # self.training", which the builder sets from the phase (and .eval() can change)
        use_global = bool(p.use_global_stats) if has(p, "use_global_stats") else None
        return _torch.LoweredBatchNorm(ctx.blobs, use_global, float(p.moving_average_fraction),
                                       float(p.eps), len(ctx.info.bottom_shapes[0]))

    def memory(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape], ctx: MemoryContext) -> LayerMemory:
        """Batch statistics (ops/normalization.py ``batch_norm``): the centred input is
        kept (the division's numerator); its square dies before the top is made; the
        backward of the division, mean and square makes about three bottom-sized
        temporaries.  Global statistics: ``x − mean`` dies in the division, nothing
        bottom-sized is kept.  Either way the top is a new tensor even when Caffe runs
        the layer in place."""
        from netdef.ir.schema import has

        p, size = layer.batch_norm_param, nbytes(bottoms[0])
        use_global = bool(p.use_global_stats) if has(p, "use_global_stats") else (
            ctx.phase != "TRAIN")
        if use_global:
            return LayerMemory(workspace=size)
        return LayerMemory(saved=(Saved("new", nbytes=size),), backward_workspace=3 * size)


@register
class MVN(Elementwise):
    type = "MVN"
    param_field = "mvn_param"
    v1_type = "MVN"
    category = "norm"

    def counts(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape]) -> Counts:
        per = 5 if layer.mvn_param.normalize_variance else 2
        return Counts(0, per * count(bottoms[0]))

    def summary(self, layer: "LayerParameter") -> str:
        p = layer.mvn_param
        parts = [] if p.normalize_variance else ["mean only"]
        if p.across_channels:
            parts.append("across channels")
        return ", ".join(parts)

    def lower(self, layer: "LayerParameter", ctx):  # noqa: ANN001, ANN201
        p = layer.mvn_param
        return _torch.LoweredMVN(bool(p.normalize_variance), bool(p.across_channels),
                                 float(p.eps))

    def memory(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape], ctx: MemoryContext) -> LayerMemory:
        """With ``normalize_variance`` netdef's Function keeps its output (and the small
        std); the centred input and its square are forward temporaries.  Mean-only is one
        subtraction that keeps nothing."""
        size = nbytes(bottoms[0])
        if not layer.mvn_param.normalize_variance:  # x's two diffs are summed out of place
            return LayerMemory(backward_workspace=size)
        return LayerMemory(saved=(Saved("top", 0),) if ctx.grad else (), workspace=size,
                           backward_workspace=2 * size)


class _Broadcast(LayerDef):
    """Scale and Bias: a (learned or bottom[1]) blob broadcast over bottom[0] from ``axis``."""

    bottoms = (1, 2)
    tops = (1, 1)
    in_place = True
    category = "norm"

    def _param(self, layer: "LayerParameter"):
        return getattr(layer, self.param_field)

    def _blob_shape(self, layer: "LayerParameter", shape: Shape, num_axes: int) -> Shape:
        """bottom[0] dims from ``axis`` for ``num_axes`` (-1: to the end)."""
        axis = canonical_axis(layer, self._param(layer).axis, shape)
        if num_axes < -1:
            raise fail(layer, "num_axes must be non-negative, or -1 to extend to the end")
        end = len(shape) if num_axes == -1 else axis + num_axes
        if end > len(shape):
            raise fail(layer, f"the {num_axes}-axis blob starting at axis {axis} extends "
                              f"past bottom[0] {tuple(shape)}")
        return tuple(shape[axis:end])

    def _operand(self, layer: "LayerParameter", bottoms: Sequence[Shape]) -> Shape:
        need_bottoms(layer, bottoms, 1, 2)
        if len(bottoms) == 2:
            return tuple(bottoms[1])
        return self._blob_shape(layer, bottoms[0], self._param(layer).num_axes)

    def shapes(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               ctx: ShapeContext) -> list[Shape]:
        shape, operand = tuple(bottoms[0]), self._operand(layer, bottoms)
        # a scalar operand broadcasts from axis 0 (Caffe ignores ``axis`` then)
        axis = 0 if not operand else canonical_axis(layer, self._param(layer).axis, shape)
        if shape[axis:axis + len(operand)] != operand:
            raise fail(layer, f"{self.type.lower()} {operand} does not match bottom[0] "
                              f"{shape} from axis {axis}", hint="check axis / num_axes")
        return [shape]

    def _broadcast_axes(self, layer: "LayerParameter", ctx) -> tuple[int, int]:  # noqa: ANN001
        """(axes before, axes after) the operand in bottom[0]: how it is viewed to broadcast."""
        bottoms = ctx.info.bottom_shapes
        self.shapes(layer, bottoms, None)
        shape, operand = tuple(bottoms[0]), self._operand(layer, bottoms)
        axis = 0 if not operand else canonical_axis(layer, self._param(layer).axis, shape)
        return axis, len(shape) - axis - len(operand)



@register
class Scale(_Broadcast):
    """y = x·γ (+β): γ learned (1 bottom) or bottom[1]; β learned if ``bias_term``."""
    top_saved_for_backward = False

    type = "Scale"
    param_field = "scale_param"

    def params(self, layer: "LayerParameter", bottoms: Sequence[Shape]) -> list[Shape]:
        blobs = [] if len(bottoms) == 2 else [self._operand(layer, bottoms)]
        if layer.scale_param.bias_term:
            # Caffe's inner Bias layer spans bottom[1]'s axes when the scale is a bottom
            n = len(bottoms[1]) if len(bottoms) == 2 else layer.scale_param.num_axes
            blobs.append(self._blob_shape(layer, bottoms[0], n))
        return blobs

    def counts(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape]) -> Counts:
        return Counts(0, (2 if layer.scale_param.bias_term else 1) * count(bottoms[0]))

    def summary(self, layer: "LayerParameter") -> str:
        return "+bias" if layer.scale_param.bias_term else ""

    def fillers(self, layer: "LayerParameter", n_blobs: int) -> list:
        p = layer.scale_param
        # the learned scale defaults to 1 (identity); the bias blob takes bias_filler
        # (Caffe copies it into its inner Bias layer's filler: default constant 0)
        out = []
        if len(layer.bottom) < 2:  # the scale is a blob (not bottom[1])
            out.append(filler_or(p, "filler", type="constant", value=1.0))
        if p.bias_term:
            out.append(p.bias_filler)
        return out[:n_blobs]

    def lower(self, layer: "LayerParameter", ctx):  # noqa: ANN001, ANN201
        lead, trail = self._broadcast_axes(layer, ctx)
        return _torch.LoweredScale(ctx.blobs, lead, trail, len(ctx.info.bottoms) > 1,
                                   bool(layer.scale_param.bias_term))

    def memory(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape], ctx: MemoryContext) -> LayerMemory:
        """``x·γ`` keeps x (for γ's gradient) and a bottom γ (for x's); with a bias term
        the product is a temporary before the add.  Backward: ``g·x`` before it is
        reduced to γ's shape (unless γ is a bottom as large as x)."""
        saved = tuple(Saved("bottom", i) for i in range(len(bottoms)))
        size = nbytes(bottoms[0])
        reduced = len(bottoms) == 1 or nbytes(bottoms[1]) < size
        return LayerMemory(saved=saved, workspace=size if layer.scale_param.bias_term else 0,
                           backward_workspace=size if reduced else 0)


@register
class Bias(_Broadcast):
    top_saved_for_backward = False
    type = "Bias"
    param_field = "bias_param"

    def params(self, layer: "LayerParameter", bottoms: Sequence[Shape]) -> list[Shape]:
        return [] if len(bottoms) == 2 else [self._operand(layer, bottoms)]

    def counts(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape]) -> Counts:
        return Counts(0, count(bottoms[0]))

    def fillers(self, layer: "LayerParameter", n_blobs: int) -> list:
        return [layer.bias_param.filler] * n_blobs

    def lower(self, layer: "LayerParameter", ctx):  # noqa: ANN001, ANN201
        lead, trail = self._broadcast_axes(layer, ctx)
        return _torch.LoweredBias(ctx.blobs, lead, trail, len(ctx.info.bottoms) > 1)

    def memory(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape], ctx: MemoryContext) -> LayerMemory:
        """``x + β`` keeps nothing; x's diff is the top diff itself."""
        return LayerMemory(diff_alias=len(bottoms) == 1)


# --------------------------------------------------------------------------- torch modules
def _define() -> list[type]:
    import torch

    from netdef.lowering import functional as CF
    from netdef.lowering.module import LayerModule

    def view(t, lead: int, trail: int):  # noqa: ANN001, ANN202
        """``t`` (the dims of bottom[0] from the axis) viewed to broadcast against it."""
        if t.dim() == 0 or (lead == 0 and trail == 0):
            return t
        return t.reshape((1,) * lead + tuple(t.shape) + (1,) * trail)

    class LoweredLRN(LayerModule):
        """ACROSS_CHANNELS (the fast op, Caffe's closed-form backward) or WITHIN_CHANNEL."""

        def __init__(self, region: str, size: int, alpha: float, beta: float, k: float) -> None:
            super().__init__()
            if region not in ("ACROSS_CHANNELS", "WITHIN_CHANNEL"):
                raise NotImplementedError(f"LRN norm_region {region}")
            self.region, self.size, self.alpha, self.beta, self.k = region, size, alpha, beta, k

        def forward(self, x):  # noqa: ANN001, ANN201
            if self.region == "ACROSS_CHANNELS":
                return CF.lrn_across_channels(x, self.size, self.alpha, self.beta, self.k)
            return CF.lrn_within_channel(x, self.size, self.alpha, self.beta)

        def extra_repr(self) -> str:
            return (f"{self.region}, size={self.size}, alpha={self.alpha:g}, "
                    f"beta={self.beta:g}, k={self.k:g}")

    class LoweredBatchNorm(LayerModule):
        """Caffe's 3 blobs (mean·s, var·s, s; not learnable).  Global statistics
        (``use_global_stats``, or ``not self.training`` when the file leaves it unset)
        normalise with ``blob/s`` (s == 0 → 0); otherwise batch statistics, and the blobs
        get Caffe's moving-average update (``s = maf·s + 1``, ``var += m/(m-1)·batch_var``)."""

        def __init__(self, blobs, use_global: bool | None, maf: float, eps: float,  # noqa: ANN001
                     ndim: int) -> None:
            super().__init__(blobs)
            self.use_global, self.maf, self.eps = use_global, maf, eps
            self.stat_shape = (1, -1) + (1,) * (ndim - 2) if ndim >= 2 else (-1,)

        def forward(self, x):  # noqa: ANN001, ANN201
            use_global = (not self.training) if self.use_global is None else self.use_global
            if not use_global:
                return CF.batch_norm(x, self.blob(0), self.blob(1), self.blob(2), False,
                                     self.maf, self.eps, update_stats=True)
            s = self.blob(2).detach()
            inv = torch.where(s == 0, torch.zeros_like(s), 1.0 / s)
            mean = (self.blob(0).detach() * inv).reshape(self.stat_shape)
            var = (self.blob(1).detach() * inv).reshape(self.stat_shape)
            return (x - mean) / torch.sqrt(var + self.eps)

        def channel_affine(self):  # noqa: ANN201
            use_global = (not self.training) if self.use_global is None else self.use_global
            if not use_global or self.stat_shape[:2] != (1, -1):
                return None
            s = self.blob(2).detach().reshape(-1)[:1]
            inv = torch.where(s == 0, torch.zeros_like(s), 1.0 / s)
            inv_std = torch.rsqrt(self.blob(1).detach().reshape(-1) * inv + self.eps)
            return inv_std, -(self.blob(0).detach().reshape(-1) * inv) * inv_std

        def extra_repr(self) -> str:
            mode = "follow training" if self.use_global is None else (
                "global stats" if self.use_global else "batch stats")
            return f"{mode}, moving_average_fraction={self.maf:g}, eps={self.eps:g}"

    class LoweredMVN(LayerModule):
        def __init__(self, normalize_variance: bool, across_channels: bool, eps: float) -> None:
            super().__init__()
            self.normalize_variance, self.across_channels, self.eps = (
                normalize_variance, across_channels, eps)

        def forward(self, x):  # noqa: ANN001, ANN201
            return CF.mvn(x, self.normalize_variance, self.across_channels, self.eps)

        def extra_repr(self) -> str:
            return (f"normalize_variance={self.normalize_variance}, "
                    f"across_channels={self.across_channels}, eps={self.eps:g}")

    class LoweredScale(LayerModule):
        """``x·γ (+β)``: γ is blob 0, or bottom 1 when given (then β is blob 0)."""

        def __init__(self, blobs, lead: int, trail: int, scale_bottom: bool,  # noqa: ANN001
                     bias_term: bool) -> None:
            super().__init__(blobs)
            self.lead, self.trail = lead, trail
            self.scale_bottom, self.bias_term = scale_bottom, bias_term

        def forward(self, x, scale=None):  # noqa: ANN001, ANN201
            if not self.scale_bottom:
                scale = self.blob(0)
            y = x * view(scale, self.lead, self.trail)
            if self.bias_term:
                y = y + view(self.blob(0 if self.scale_bottom else 1), self.lead, self.trail)
            return y

        def channel_affine(self):  # noqa: ANN201
            if self.scale_bottom or self.lead != 1 or self.blob(0).dim() != 1:
                return None
            a = self.blob(0).detach()
            b = self.blob(1).detach() if self.bias_term else torch.zeros_like(a)
            return a, b

        def extra_repr(self) -> str:
            return (f"axes before={self.lead}, after={self.trail}, "
                    f"scale from {'bottom 1' if self.scale_bottom else 'blob 0'}, "
                    f"bias={self.bias_term}")

    class LoweredBias(LayerModule):
        """``x + β``: β is blob 0, or bottom 1 when given."""

        def __init__(self, blobs, lead: int, trail: int, bias_bottom: bool) -> None:  # noqa: ANN001
            super().__init__(blobs)
            self.lead, self.trail, self.bias_bottom = lead, trail, bias_bottom

        def forward(self, x, bias=None):  # noqa: ANN001, ANN201
            if not self.bias_bottom:
                bias = self.blob(0)
            return x + view(bias, self.lead, self.trail)

        def channel_affine(self):  # noqa: ANN201
            if self.bias_bottom or self.lead != 1 or self.blob(0).dim() != 1:
                return None
            b = self.blob(0).detach()
            return torch.ones_like(b), b

    return [LoweredLRN, LoweredBatchNorm, LoweredMVN, LoweredScale, LoweredBias]


_torch = TorchModules(__name__, _define)


def __getattr__(name: str):  # noqa: ANN202 - PEP 562: the Lowered* classes load torch lazily
    return _torch.module_getattr(name)
