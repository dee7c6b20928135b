"""Dense and reducing layers: InnerProduct, Embed, Softmax, Eltwise, Reduction, ArgMax.

Counting convention (whole batch, forward):

* InnerProduct: ``MACs = M·K·N`` (M rows before ``axis``, K = count from ``axis``,
  N = num_output); ``FLOPs = 2·MACs + M·N`` with ``bias_term``.
* Embed: a table lookup (0 MACs); FLOPs = bias adds, one per top element.
* Softmax: 3 per element (exp, sum, divide; the max-subtraction is not counted).
* Eltwise: ``(bottoms − 1)`` per top element (add / multiply / max), plus one multiply
  per bottom element when SUM has non-unit coefficients.
* Reduction: per bottom element 1 (SUM, MEAN) or 2 (ASUM: abs + add, SUMSQ: square + add).
* ArgMax: 1 compare per bottom element.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from netdef.ir.schema import has
from netdef.layers.families._util import Elementwise, canonical_axis, count, fail, need_bottoms
from netdef.layers.registry import Counts, LayerDef, Shape, ShapeContext, register

if TYPE_CHECKING:  # pragma: no cover
    from netdef.ir.messages import LayerParameter


@register
class InnerProduct(LayerDef):
    """Fully connected: flattens dims from ``axis`` (K) into num_output (N)."""

    type = "InnerProduct"
    param_field = "inner_product_param"
    v1_type = "INNER_PRODUCT"
    bottoms = (1, 1)
    tops = (1, 1)
    category = "fc"

    def _mkn(self, layer: "LayerParameter", bottoms: Sequence[Shape]) -> tuple[int, int, int, int]:
        need_bottoms(layer, bottoms, 1, 1)
        p = layer.inner_product_param
        if p.num_output <= 0:
            raise fail(layer, "num_output is missing or zero", field="inner_product_param",
                       hint="set inner_product_param { num_output: N }")
        axis = canonical_axis(layer, p.axis, bottoms[0])
        return axis, count(bottoms[0], 0, axis), count(bottoms[0], axis), p.num_output

    def params(self, layer: "LayerParameter", bottoms: Sequence[Shape]) -> list[Shape]:
        _, _, k, n = self._mkn(layer, bottoms)
        p = layer.inner_product_param
        return [(k, n) if p.transpose else (n, k)] + ([(n,)] if p.bias_term else [])

    def shapes(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               ctx: ShapeContext) -> list[Shape]:
        axis, _, _, n = self._mkn(layer, bottoms)
        return [tuple(bottoms[0][:axis]) + (n,)]

    def counts(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape]) -> Counts:
        _, m, k, n = self._mkn(layer, bottoms)
        bias = m * n if layer.inner_product_param.bias_term else 0
        return Counts(m * k * n, 2 * m * k * n + bias)

    def summary(self, layer: "LayerParameter") -> str:
        p = layer.inner_product_param
        text = str(p.num_output)
        if p.axis != 1:
            text += f", axis {p.axis}"
        return text + (", T" if p.transpose else "")


@register
class Embed(LayerDef):
    """Lookup table: each input index becomes a num_output vector (top = bottom + (N,))."""

    type = "Embed"
    param_field = "embed_param"
    bottoms = (1, 1)
    tops = (1, 1)
    category = "fc"

    def _check(self, layer: "LayerParameter", bottoms: Sequence[Shape]) -> None:
        need_bottoms(layer, bottoms, 1, 1)
        p = layer.embed_param
        if p.num_output <= 0 or p.input_dim <= 0:
            raise fail(layer, "num_output and input_dim must be positive",
                       hint="set embed_param { input_dim: V num_output: N }", field="embed_param")

    def params(self, layer: "LayerParameter", bottoms: Sequence[Shape]) -> list[Shape]:
        self._check(layer, bottoms)
        p = layer.embed_param
        return [(p.input_dim, p.num_output)] + ([(p.num_output,)] if p.bias_term else [])

    def shapes(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               ctx: ShapeContext) -> list[Shape]:
        self._check(layer, bottoms)
        return [tuple(bottoms[0]) + (layer.embed_param.num_output,)]

    def counts(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape]) -> Counts:
        return Counts(0, count(tops[0]) if layer.embed_param.bias_term else 0)

    def summary(self, layer: "LayerParameter") -> str:
        p = layer.embed_param
        return f"{p.input_dim}→{p.num_output}"


@register
class Softmax(Elementwise):
    type = "Softmax"
    param_field = "softmax_param"
    v1_type = "SOFTMAX"
    category = "act"
    flops_per_element = 3

    def shapes(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               ctx: ShapeContext) -> list[Shape]:
        need_bottoms(layer, bottoms, 1, 1)
        canonical_axis(layer, layer.softmax_param.axis, bottoms[0])
        return [tuple(bottoms[0])]

    def summary(self, layer: "LayerParameter") -> str:
        axis = layer.softmax_param.axis
        return "" if axis == 1 else f"axis {axis}"


@register
class Eltwise(LayerDef):
    """Element-wise SUM (with optional coefficients), PROD or MAX of same-shaped bottoms."""

    type = "Eltwise"
    param_field = "eltwise_param"
    v1_type = "ELTWISE"
    bottoms = (2, None)
    tops = (1, 1)
    category = "structure"

    def shapes(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               ctx: ShapeContext) -> list[Shape]:
        need_bottoms(layer, bottoms, 2)
        p = layer.eltwise_param
        if p.coeff and len(p.coeff) != len(bottoms):
            raise fail(layer, f"takes one coefficient per bottom ({len(bottoms)}), "
                              f"got {len(p.coeff)}", field="eltwise_param")
        if p.coeff and p.operation.name == "PROD":
            raise fail(layer, "coefficients are only for SUM", field="eltwise_param")
        for i, b in enumerate(bottoms[1:], 1):
            if tuple(b) != tuple(bottoms[0]):
                raise fail(layer, f"bottom shapes differ: bottom[0] {tuple(bottoms[0])} vs "
                                  f"bottom[{i}] {tuple(b)}",
                           hint="Eltwise needs equal shapes (no broadcasting); "
                                "crop or reshape the inputs")
        return [tuple(bottoms[0])]

    def counts(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape]) -> Counts:
        p = layer.eltwise_param
        n = count(bottoms[0])
        scaled = len(bottoms) * n if any(c != 1 for c in p.coeff) else 0
        return Counts(0, (len(bottoms) - 1) * n + scaled)

    def summary(self, layer: "LayerParameter") -> str:
        p = layer.eltwise_param
        text = p.operation.name
        if p.coeff:
            text += " " + ",".join(f"{c:g}" for c in p.coeff)
        return text


@register
class Reduction(LayerDef):
    """SUM/ASUM/SUMSQ/MEAN over all axes from ``axis``: top = bottom[:axis]."""

    type = "Reduction"
    param_field = "reduction_param"
    bottoms = (1, 1)
    tops = (1, 1)
    category = "other"

    def shapes(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               ctx: ShapeContext) -> list[Shape]:
        need_bottoms(layer, bottoms, 1, 1)
        axis = canonical_axis(layer, layer.reduction_param.axis, bottoms[0])
        return [tuple(bottoms[0][:axis])]

    def counts(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape]) -> Counts:
        per = 2 if layer.reduction_param.operation.name in ("ASUM", "SUMSQ") else 1
        return Counts(0, per * count(bottoms[0]))

    def summary(self, layer: "LayerParameter") -> str:
        p = layer.reduction_param
        return p.operation.name + (f", axis {p.axis}" if p.axis else "")


@register
class ArgMax(LayerDef):
    """Top-k indices (and values) per instance, or along ``axis`` when given.

    Without ``axis`` the top is ``(N, 1 or 2, top_k)`` padded with 1s to the bottom's
    rank (at least 3 axes) — Caffe's legacy layout.
    """

    type = "ArgMax"
    param_field = "argmax_param"
    v1_type = "ARGMAX"
    bottoms = (1, 1)
    tops = (1, 1)
    category = "other"

    def shapes(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               ctx: ShapeContext) -> list[Shape]:
        need_bottoms(layer, bottoms, 1, 1)
        p, shape = layer.argmax_param, tuple(bottoms[0])
        if p.top_k < 1:
            raise fail(layer, "top_k must be at least 1", field="argmax_param")
        if has(p, "axis"):
            axis = canonical_axis(layer, p.axis, shape)
            if p.top_k > shape[axis]:
                raise fail(layer, f"top_k {p.top_k} exceeds axis {axis} size {shape[axis]}")
            return [shape[:axis] + (p.top_k,) + shape[axis + 1:]]
        if p.top_k > count(shape, 1):
            raise fail(layer, f"top_k {p.top_k} exceeds the {count(shape, 1)} values per instance")
        top = [1] * max(len(shape), 3)
        top[0], top[1], top[2] = shape[0], (2 if p.out_max_val else 1), p.top_k
        return [tuple(top)]

    def counts(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape]) -> Counts:
        return Counts(0, count(bottoms[0]))

    def summary(self, layer: "LayerParameter") -> str:
        p = layer.argmax_param
        text = f"top {p.top_k}" + (", values" if p.out_max_val else "")
        return text + (f", axis {p.axis}" if has(p, "axis") else "")
