"""Element-wise neuron layers (Caffe's ``NeuronLayer`` family) and Dropout.

All take one bottom and give one top of the same shape, and are commonly run in
place (``top == bottom``).

Counting convention: 1 FLOP per element for every neuron, whatever its formula
(a compare, an exp, a power each count as one op), as common profilers count ReLU.
Dropout counts 0: it is the identity at test time, where counts are read.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from netdef.layers.families._util import Elementwise, fail, fmt_float, need_bottoms
from netdef.layers.registry import Counts, Shape, ShapeContext, register

if TYPE_CHECKING:  # pragma: no cover
    from netdef.ir.messages import LayerParameter


class _Neuron(Elementwise):
    in_place = True
    category = "act"


def _nondefault(p, defaults: dict[str, float], names: dict[str, str] | None = None) -> str:
    """``α=0.2, shift=1``: the params that differ from Caffe's defaults."""
    names = names or {}
    return ", ".join(f"{names.get(k, k)}={fmt_float(getattr(p, k))}"
                     for k, d in defaults.items() if getattr(p, k) != d)


@register
class ReLU(_Neuron):
    type = "ReLU"
    param_field = "relu_param"
    v1_type = "RELU"

    def summary(self, layer: "LayerParameter") -> str:
        return _nondefault(layer.relu_param, {"negative_slope": 0.0}, {"negative_slope": "slope"})


@register
class PReLU(_Neuron):
    """Learned negative slope per channel (axis 1), or one shared scalar blob."""

    type = "PReLU"
    param_field = "prelu_param"

    def params(self, layer: "LayerParameter", bottoms: Sequence[Shape]) -> list[Shape]:
        need_bottoms(layer, bottoms, 1, 1)
        if len(bottoms[0]) < 2:
            raise fail(layer, f"bottom must have at least 2 axes, got {tuple(bottoms[0])}")
        # Caffe: channel_shared makes a 0-axis blob (count 1), not shape (1,)
        return [()] if layer.prelu_param.channel_shared else [(bottoms[0][1],)]

    def shapes(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               ctx: ShapeContext) -> list[Shape]:
        self.params(layer, bottoms)
        return [tuple(bottoms[0])]

    def summary(self, layer: "LayerParameter") -> str:
        return "shared" if layer.prelu_param.channel_shared else ""


@register
class ELU(_Neuron):
    type = "ELU"
    param_field = "elu_param"

    def summary(self, layer: "LayerParameter") -> str:
        return _nondefault(layer.elu_param, {"alpha": 1.0}, {"alpha": "α"})


@register
class Sigmoid(_Neuron):
    type = "Sigmoid"
    param_field = "sigmoid_param"
    v1_type = "SIGMOID"


@register
class TanH(_Neuron):
    type = "TanH"
    param_field = "tanh_param"
    v1_type = "TANH"


@register
class AbsVal(_Neuron):
    type = "AbsVal"
    v1_type = "ABSVAL"


@register
class BNLL(_Neuron):
    """log(1 + exp(x))."""

    type = "BNLL"
    v1_type = "BNLL"


@register
class Power(_Neuron):
    """(shift + scale·x)^power."""

    type = "Power"
    param_field = "power_param"
    v1_type = "POWER"

    def summary(self, layer: "LayerParameter") -> str:
        return _nondefault(layer.power_param, {"power": 1.0, "scale": 1.0, "shift": 0.0})


@register
class Exp(_Neuron):
    """base^(shift + scale·x); base -1 means e."""

    type = "Exp"
    param_field = "exp_param"
    v1_type = "EXP"

    def summary(self, layer: "LayerParameter") -> str:
        return _nondefault(layer.exp_param, {"base": -1.0, "scale": 1.0, "shift": 0.0})


@register
class Log(_Neuron):
    """log_base(shift + scale·x); base -1 means e."""

    type = "Log"
    param_field = "log_param"

    def summary(self, layer: "LayerParameter") -> str:
        return _nondefault(layer.log_param, {"base": -1.0, "scale": 1.0, "shift": 0.0})


@register
class Threshold(_Neuron):
    """1 where x > threshold, else 0."""

    type = "Threshold"
    param_field = "threshold_param"
    v1_type = "THRESHOLD"

    def summary(self, layer: "LayerParameter") -> str:
        return f"> {fmt_float(layer.threshold_param.threshold)}"


@register
class Swish(_Neuron):
    """x·sigmoid(β·x)."""

    type = "Swish"
    param_field = "swish_param"

    def summary(self, layer: "LayerParameter") -> str:
        return _nondefault(layer.swish_param, {"beta": 1.0}, {"beta": "β"})


@register
class Clip(_Neuron):
    type = "Clip"
    param_field = "clip_param"

    def summary(self, layer: "LayerParameter") -> str:
        p = layer.clip_param
        return f"[{fmt_float(p.min)}, {fmt_float(p.max)}]"


@register
class Dropout(Elementwise):
    """Zeroes a ``dropout_ratio`` fraction in TRAIN (scaling the rest); identity in TEST."""

    type = "Dropout"
    param_field = "dropout_param"
    v1_type = "DROPOUT"
    in_place = True
    category = "other"

    def counts(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape]) -> Counts:
        return Counts()

    def summary(self, layer: "LayerParameter") -> str:
        return fmt_float(layer.dropout_param.dropout_ratio)
