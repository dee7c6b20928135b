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
from netdef.layers.families.common import TorchModules, filler_or
from netdef.layers.registry import (Counts, LayerMemory, MemoryContext, Saved, Shape,
                                    ShapeContext, nbytes, register)

if TYPE_CHECKING:  # pragma: no cover
    from netdef.ir.messages import LayerParameter

_KEEPS_TOP = LayerMemory(saved=(Saved("top", 0),))  # derivative from the output


class _Neuron(Elementwise):
    in_place = True
    category = "act"

    def function(self, layer: "LayerParameter"):  # noqa: ANN201
        """``(fn, kwargs)``: the torch function computing ``top = fn(bottom, **kwargs)``."""
        raise NotImplementedError(f"{self.type}: no PyTorch lowering")

    def lower(self, layer: "LayerParameter", ctx):  # noqa: ANN001, ANN201
        fn, kwargs = self.function(layer)
        return _torch.LoweredNeuron(fn, kwargs)


def _cf():  # noqa: ANN202
    from netdef.lowering import functional as CF

    return CF


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

    def function(self, layer: "LayerParameter"):  # noqa: ANN201
        ns = float(layer.relu_param.negative_slope)
        if ns == 0.0:
            return _cf().relu, {}
        return _cf().caffe_relu, {"negative_slope": ns}

    def lower(self, layer: "LayerParameter", ctx):  # noqa: ANN001, ANN201
        if ctx.overwrite_ok and float(layer.relu_param.negative_slope) == 0.0:
            return _torch.LoweredInplaceReLU()  # Caffe's in-place ReLU: no new blob
        return super().lower(layer, ctx)

    def memory(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape], ctx: MemoryContext) -> LayerMemory:
        """ReLU keeps its output; in place where the lowering may overwrite its bottom
        (``ctx.overwrite``) it is ``relu_`` and reuses the bottom's storage.  Leaky ReLU
        is ``torch.where(x > 0, x, x·ns)``: it keeps the bool condition (1 byte an
        element) and drops ``x·ns`` at once; its backward makes both branches' diffs and
        the scaled one."""
        size = nbytes(bottoms[0])
        if layer.relu_param.negative_slope != 0.0:
            return LayerMemory(saved=(Saved("new", nbytes=nbytes(bottoms[0], 1)),),
                               workspace=size, backward_workspace=2 * size)
        return LayerMemory(saved=(Saved("top", 0),), alias=(0,) if ctx.overwrite else ())


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

    def fillers(self, layer: "LayerParameter", n_blobs: int) -> list:
        return [filler_or(layer.prelu_param, "filler", type="constant", value=0.25)] * n_blobs

    def lower(self, layer: "LayerParameter", ctx):  # noqa: ANN001, ANN201
        return _torch.LoweredPReLU(ctx.blobs, layer.prelu_param.channel_shared)

    def memory(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape], ctx: MemoryContext) -> LayerMemory:
        """``torch.where(x > 0, x, x·a)``: the bool condition, and x (for the slope's
        gradient); ``x·a`` lives only inside the forward.  Backward: both branches'
        diffs, ``g·a`` and ``g·x`` (reduced to the slope)."""
        size = nbytes(bottoms[0])
        return LayerMemory(saved=(Saved("bottom", 0), Saved("new", nbytes=nbytes(bottoms[0], 1))),
                           workspace=size, backward_workspace=3 * size)


@register
class ELU(_Neuron):
    type = "ELU"
    param_field = "elu_param"

    def summary(self, layer: "LayerParameter") -> str:
        return _nondefault(layer.elu_param, {"alpha": 1.0}, {"alpha": "α"})

    def function(self, layer: "LayerParameter"):  # noqa: ANN201
        return _cf().caffe_elu, {"alpha": float(layer.elu_param.alpha)}


@register
class Sigmoid(_Neuron):
    type = "Sigmoid"
    param_field = "sigmoid_param"
    v1_type = "SIGMOID"

    def function(self, layer: "LayerParameter"):  # noqa: ANN201
        import torch

        return torch.sigmoid, {}

    def memory(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape], ctx: MemoryContext) -> LayerMemory:
        return _KEEPS_TOP


@register
class TanH(_Neuron):
    type = "TanH"
    param_field = "tanh_param"
    v1_type = "TANH"

    def function(self, layer: "LayerParameter"):  # noqa: ANN201
        import torch

        return torch.tanh, {}

    def memory(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape], ctx: MemoryContext) -> LayerMemory:
        return _KEEPS_TOP


@register
class AbsVal(_Neuron):
    type = "AbsVal"
    v1_type = "ABSVAL"

    def function(self, layer: "LayerParameter"):  # noqa: ANN201
        import torch

        return torch.abs, {}

    def memory(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape], ctx: MemoryContext) -> LayerMemory:
        """``abs`` keeps x; its backward makes ``sign(x)`` before the product."""
        return LayerMemory(saved=(Saved("bottom", 0),), backward_workspace=nbytes(bottoms[0]))


@register
class BNLL(_Neuron):
    """log(1 + exp(x))."""

    type = "BNLL"
    v1_type = "BNLL"

    def function(self, layer: "LayerParameter"):  # noqa: ANN201
        return _cf().caffe_bnll, {}


@register
class Power(_Neuron):
    """(shift + scale·x)^power."""

    type = "Power"
    param_field = "power_param"
    v1_type = "POWER"

    def summary(self, layer: "LayerParameter") -> str:
        return _nondefault(layer.power_param, {"power": 1.0, "scale": 1.0, "shift": 0.0})

    def function(self, layer: "LayerParameter"):  # noqa: ANN201
        p = layer.power_param
        return _cf().caffe_power, {"power": float(p.power), "scale": float(p.scale),
                                   "shift": float(p.shift)}

    def memory(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape], ctx: MemoryContext) -> LayerMemory:
        """``pow`` keeps its base: x itself, or the scaled/shifted copy; power 1 is only
        scalar arithmetic (nothing kept); a constant output keeps a bool condition."""
        p, size = layer.power_param, nbytes(bottoms[0])
        if p.power == 0.0 or p.scale == 0.0:
            return LayerMemory(saved=(Saved("new", nbytes=nbytes(bottoms[0], 1)),),
                               workspace=size + nbytes(bottoms[0], 1))
        steps = (p.scale != 1.0) + (p.shift != 0.0)
        if p.power == 1.0:
            return LayerMemory(workspace=size if steps == 2 else 0)
        # the scaled input dies before pow's output exists; pow's backward makes
        # base^(p-1), its product with p and with the diff
        base = Saved("bottom", 0) if not steps else Saved("new", nbytes=size)
        return LayerMemory(saved=(base,), backward_workspace=2 * size)


@register
class Exp(_Neuron):
    """base^(shift + scale·x); base -1 means e."""

    type = "Exp"
    param_field = "exp_param"
    v1_type = "EXP"

    def summary(self, layer: "LayerParameter") -> str:
        return _nondefault(layer.exp_param, {"base": -1.0, "scale": 1.0, "shift": 0.0})

    def function(self, layer: "LayerParameter"):  # noqa: ANN201
        p = layer.exp_param
        if p.base != -1.0 and p.base <= 0:
            raise fail(layer, f"base must be strictly positive (or -1 for e), got {p.base:g}",
                       field="exp_param")
        return _cf().caffe_exp, {"base": float(p.base), "scale": float(p.scale),
                                 "shift": float(p.shift)}

    def memory(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape], ctx: MemoryContext) -> LayerMemory:
        """``exp`` keeps its result: the top, or a separate tensor when an outer factor
        follows; the scaled input lives only inside the forward."""
        p, size = layer.exp_param, nbytes(bottoms[0])
        outer = p.shift != 0.0
        inner = p.scale != 1.0 or p.base != -1.0
        return LayerMemory(saved=(Saved("new", nbytes=size) if outer else Saved("top", 0),),
                           workspace=size if inner else 0,
                           backward_workspace=size if inner or outer else 0)


@register
class Log(_Neuron):
    """log_base(shift + scale·x); base -1 means e."""

    type = "Log"
    param_field = "log_param"

    def summary(self, layer: "LayerParameter") -> str:
        return _nondefault(layer.log_param, {"base": -1.0, "scale": 1.0, "shift": 0.0})

    def function(self, layer: "LayerParameter"):  # noqa: ANN201
        p = layer.log_param
        if p.base != -1.0 and p.base <= 0:
            raise fail(layer, f"base must be strictly positive (or -1 for e), got {p.base:g}",
                       field="log_param")
        return _cf().caffe_log, {"base": float(p.base), "scale": float(p.scale),
                                 "shift": float(p.shift)}

    def memory(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape], ctx: MemoryContext) -> LayerMemory:
        """``log`` keeps its input: x, or the scaled/shifted copy; a base other than e
        adds a multiply whose input dies at once."""
        p, size = layer.log_param, nbytes(bottoms[0])
        shifted = p.scale != 1.0 or p.shift != 0.0
        return LayerMemory(saved=(Saved("new", nbytes=size) if shifted else Saved("bottom", 0),),
                           workspace=size if p.base != -1.0 else 0)


@register
class Threshold(_Neuron):
    """1 where x > threshold, else 0."""

    type = "Threshold"
    param_field = "threshold_param"
    v1_type = "THRESHOLD"

    def summary(self, layer: "LayerParameter") -> str:
        return f"> {fmt_float(layer.threshold_param.threshold)}"

    def function(self, layer: "LayerParameter"):  # noqa: ANN201
        return _cf().caffe_threshold, {"threshold": float(layer.threshold_param.threshold)}

    def memory(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape], ctx: MemoryContext) -> LayerMemory:
        """Computed on the detached input (Caffe has no backward): a bool, then the top."""
        return LayerMemory(differentiable=False, workspace=nbytes(bottoms[0], 1))


@register
class Swish(_Neuron):
    """x·sigmoid(β·x)."""

    type = "Swish"
    param_field = "swish_param"

    def summary(self, layer: "LayerParameter") -> str:
        return _nondefault(layer.swish_param, {"beta": 1.0}, {"beta": "β"})

    def function(self, layer: "LayerParameter"):  # noqa: ANN201
        return _cf().caffe_swish, {"beta": float(layer.swish_param.beta)}

    def memory(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape], ctx: MemoryContext) -> LayerMemory:
        """``x·sigmoid(βx)``: the product keeps x and the sigmoid (which the sigmoid's
        own backward reads too); backward makes ``g·x`` besides x's diff."""
        size = nbytes(bottoms[0])
        return LayerMemory(saved=(Saved("bottom", 0), Saved("new", nbytes=size)),
                           workspace=size if layer.swish_param.beta != 1.0 else 0,
                           backward_workspace=size)


@register
class Clip(_Neuron):
    type = "Clip"
    param_field = "clip_param"

    def summary(self, layer: "LayerParameter") -> str:
        p = layer.clip_param
        return f"[{fmt_float(p.min)}, {fmt_float(p.max)}]"

    def function(self, layer: "LayerParameter"):  # noqa: ANN201
        p = layer.clip_param
        return _cf().caffe_clip, {"min": float(p.min), "max": float(p.max)}

    def memory(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape], ctx: MemoryContext) -> LayerMemory:
        """``clamp`` keeps x; its backward makes two bool masks (the bounds)."""
        return LayerMemory(saved=(Saved("bottom", 0),),
                           backward_workspace=2 * nbytes(bottoms[0], 1))


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

    def lower(self, layer: "LayerParameter", ctx):  # noqa: ANN001, ANN201
        ratio = float(layer.dropout_param.dropout_ratio)
        if not 0.0 <= ratio < 1.0:
            raise fail(layer, f"dropout_ratio must be in [0, 1), got {ratio:g}",
                       field="dropout_param")
        return _torch.LoweredDropout(ratio)

    def memory(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape], ctx: MemoryContext) -> LayerMemory:
        """TEST: the identity (the top is the bottom tensor).  TRAIN: ``F.dropout``
        keeps its mask and not its input: on the CPU that is ATen's float32 noise
        tensor (``input * noise``, 4 bytes an element), on CUDA ``native_dropout``'s
        bool mask (1 byte); without autograd the mask dies inside the forward."""
        if ctx.phase != "TRAIN":
            return LayerMemory(same=True)
        mask = nbytes(bottoms[0], 4 if ctx.device == "cpu" else 1)
        if not ctx.grad:
            return LayerMemory(workspace=mask)
        return LayerMemory(saved=(Saved("new", nbytes=mask),))


# --------------------------------------------------------------------------- torch modules
def _define() -> list[type]:
    import torch

    from netdef.lowering import functional as CF
    from netdef.lowering.module import LayerModule

    class LoweredNeuron(LayerModule):
        """``top = fn(bottom, **kwargs)``; never writes into the bottom (in-place Caffe
        layers get their semantics from the builder rebinding the blob)."""

        def __init__(self, fn, kwargs: dict) -> None:  # noqa: ANN001
            super().__init__()
            self.fn, self.kwargs = fn, dict(kwargs)

        def forward(self, x):  # noqa: ANN001, ANN201
            return self.fn(x, **self.kwargs)

        def extra_repr(self) -> str:
            args = "".join(f", {k}={v:g}" for k, v in self.kwargs.items())
            return getattr(self.fn, "__name__", repr(self.fn)) + args

    class LoweredInplaceReLU(LayerModule):
        """``relu_`` into the bottom (see ``LowerContext.overwrite_ok``); the gradient is
        read from the top (0 where it is 0, as Caffe's ``bottom_data > 0`` test).  A leaf
        that requires grad (``netdef time`` feeds each layer such leaves) cannot be
        overwritten, so it gets the out-of-place op."""

        def forward(self, x):  # noqa: ANN001, ANN201
            return CF.relu(x, inplace=not (x.requires_grad and x.is_leaf))

    class LoweredPReLU(LayerModule):
        """Learned slope for ``x <= 0``: per channel (axis 1) or one shared 0-D blob."""

        def __init__(self, blobs, channel_shared: bool) -> None:  # noqa: ANN001
            super().__init__(blobs)
            self.channel_shared = channel_shared

        def forward(self, x):  # noqa: ANN001, ANN201
            return CF.caffe_prelu(x, self.blob(0), self.channel_shared)

    class LoweredDropout(LayerModule):
        """TRAIN (``self.training``): keep with probability ``1 - ratio``, scale kept units
        by ``1/(1 - ratio)``; TEST: the identity."""

        def __init__(self, ratio: float) -> None:
            super().__init__()
            self.ratio = ratio

        def forward(self, x):  # noqa: ANN001, ANN201
            if not self.training:
                return x
            return CF.caffe_dropout(x, self.ratio, training=True)

        def extra_repr(self) -> str:
            return f"ratio={self.ratio:g}"

    return [LoweredNeuron, LoweredInplaceReLU, LoweredPReLU, LoweredDropout]


_torch = TorchModules(__name__, _define)


def __getattr__(name: str):  # noqa: ANN202 - PEP 562: the Lowered* classes load torch lazily
    return _torch.module_getattr(name)
