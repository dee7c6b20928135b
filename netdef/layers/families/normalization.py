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

from netdef.layers.families._util import (Elementwise, canonical_axis, count, fail,
                                          fmt_float, need_bottoms)
from netdef.layers.registry import Counts, LayerDef, Shape, ShapeContext, register

if TYPE_CHECKING:  # pragma: no cover
    from netdef.ir.messages import LayerParameter


@register
class LRN(Elementwise):
    """Local response normalisation over (N, C, H, W); ``local_size`` must be odd."""

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


@register
class BatchNorm(Elementwise):
    """Blobs: mean (C,), variance (C,), moving-average factor (1,)."""

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


@register
class Scale(_Broadcast):
    """y = x·γ (+β): γ learned (1 bottom) or bottom[1]; β learned if ``bias_term``."""

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


@register
class Bias(_Broadcast):
    type = "Bias"
    param_field = "bias_param"

    def params(self, layer: "LayerParameter", bottoms: Sequence[Shape]) -> list[Shape]:
        return [] if len(bottoms) == 2 else [self._operand(layer, bottoms)]

    def counts(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape]) -> Counts:
        return Counts(0, count(bottoms[0]))
