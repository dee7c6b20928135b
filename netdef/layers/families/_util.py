"""Small helpers shared by the layer families (Caffe's ``Blob`` axis/count rules)."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

from netdef.errors import ShapeError
from netdef.ir.schema import loc_of
from netdef.layers.registry import Counts, LayerDef, Shape, ShapeContext

if TYPE_CHECKING:  # pragma: no cover
    from netdef.ir.messages import LayerParameter


def where(layer: "LayerParameter") -> str:
    """How errors name a layer: ``layer 'conv1' (Convolution)``."""
    return f"layer '{layer.name}' ({layer.type})"


def fail(layer: "LayerParameter", what: str, hint: str | None = None,
         field: str | None = None) -> ShapeError:
    """A ShapeError naming the layer, located at the layer (or its ``field``)."""
    return ShapeError(f"{where(layer)}: {what}", hint=hint, loc=loc_of(layer, field))


def count(shape: Sequence[int], start: int = 0, end: int | None = None) -> int:
    """Caffe's ``Blob::count(start, end)``: product of dims in ``[start, end)``."""
    return math.prod(shape[start:end])


def canonical_axis(layer: "LayerParameter", axis: int, shape: Sequence[int],
                   what: str = "axis") -> int:
    """Caffe's ``CanonicalAxisIndex``: -1 is the last axis; out of range is an error."""
    n = len(shape)
    if not -n <= axis < n:
        raise fail(layer, f"{what} {axis} is out of range for a {n}-axis input "
                          f"{tuple(shape)}", hint=f"use an axis in [{-n}, {n - 1}]")
    return axis + n if axis < 0 else axis


def need_bottoms(layer: "LayerParameter", bottoms: Sequence[Shape], lo: int,
                 hi: int | None = None) -> None:
    """Shape rules index bottoms directly; say so clearly when they are missing."""
    n = len(bottoms)
    if n < lo or (hi is not None and n > hi):
        want = (f"exactly {lo}" if lo == hi else
                f"at least {lo}" if hi is None else f"{lo} to {hi}")
        raise fail(layer, f"takes {want} bottom blob(s), got {n}")


def n_tops(layer: "LayerParameter", default: int = 1) -> int:
    """How many tops the layer declares (a bare LayerParameter in tests may have none)."""
    return len(layer.top) or default


class Elementwise(LayerDef):
    """One bottom, one same-shaped top, ``flops_per_element`` ops per element.

    Base of the neuron layers (ReLU, TanH …) and other shape-preserving layers.
    """

    bottoms = (1, 1)
    tops = (1, 1)
    flops_per_element: int = 1

    def shapes(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               ctx: ShapeContext) -> list[Shape]:
        need_bottoms(layer, bottoms, 1, 1)
        return [tuple(bottoms[0])]

    def counts(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape]) -> Counts:
        return Counts(0, self.flops_per_element * count(bottoms[0]))


def fmt_float(x: float) -> str:
    """Compact float for summaries: ``0.0001``, ``0.75``, ``1``."""
    return f"{x:g}"
