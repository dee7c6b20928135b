"""Layers outside the other families: Parameter (a learned blob as a top) and Python."""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from netdef.layers.families._util import fail
from netdef.layers.registry import LayerDef, Shape, ShapeContext, register

if TYPE_CHECKING:  # pragma: no cover
    from netdef.ir.messages import LayerParameter


@register
class Parameter(LayerDef):
    """Exposes one learnable blob of ``parameter_param.shape`` as its top."""

    type = "Parameter"
    param_field = "parameter_param"
    bottoms = (0, 0)
    tops = (1, 1)
    category = "other"

    def params(self, layer: "LayerParameter", bottoms: Sequence[Shape]) -> list[Shape]:
        return [tuple(int(d) for d in layer.parameter_param.shape.dim)]

    def shapes(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               ctx: ShapeContext) -> list[Shape]:
        return self.params(layer, bottoms)

    def summary(self, layer: "LayerParameter") -> str:
        return "×".join(map(str, layer.parameter_param.shape.dim))


@register
class Python(LayerDef):
    """User code (``python_param.module``/``layer``): its shapes cannot be known statically.

    Tops get their shapes from ``ctx.input_shapes`` (``--input-shape``); FLOPs are 0.
    """

    type = "Python"
    param_field = "python_param"
    category = "other"

    def shapes(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               ctx: ShapeContext) -> list[Shape]:
        missing = [t for t in layer.top if t not in ctx.input_shapes]
        if missing:
            p = layer.python_param
            raise fail(layer, f"cannot infer the shape of top '{missing[0]}' of Python layer "
                              f"{p.module}.{p.layer}",
                       hint=f"pass --input-shape {missing[0]}=N,C,H,W")
        return [tuple(ctx.input_shapes[t]) for t in layer.top]

    def summary(self, layer: "LayerParameter") -> str:
        p = layer.python_param
        return f"{p.module}.{p.layer}"
