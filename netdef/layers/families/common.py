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

import math
import os
from typing import TYPE_CHECKING, Sequence

from netdef.ir.schema import has
from netdef.layers.families._util import Elementwise, canonical_axis, count, fail, need_bottoms
from netdef.layers.registry import (Counts, LayerDef, LayerMemory, MemoryContext, Saved,
                                    Shape, ShapeContext, nbytes, register)

if TYPE_CHECKING:  # pragma: no cover
    from netdef.ir.messages import LayerParameter


# --------------------------------------------------------------------------- lowering support
class TorchModules:
    """The ``nn.Module`` classes of one family file, defined on first use.

    Importing the registry must not import torch (``compile``/``report``/``draw`` never
    need it), so each family file puts its lowered-layer classes in a ``_define()``
    function.  The first attribute access runs it; the classes are then published as
    attributes of the family module (``__module__``/``__qualname__`` fixed up), so that
    pickling a built net finds them by name — the file's module-level ``__getattr__``
    (PEP 562) forwards here, which also makes a fresh process able to unpickle.
    """

    def __init__(self, module_name: str, define) -> None:  # noqa: ANN001
        self._module_name = module_name
        self._define = define
        self._classes: dict[str, type] | None = None

    def _load(self) -> dict[str, type]:
        if self._classes is None:
            import sys

            mod = sys.modules[self._module_name]
            classes = {}
            for cls in self._define():
                cls.__module__ = self._module_name
                cls.__qualname__ = cls.__name__
                setattr(mod, cls.__name__, cls)
                classes[cls.__name__] = cls
            self._classes = classes
        return self._classes

    def __getattr__(self, name: str) -> type:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._load()[name]
        except KeyError:
            raise AttributeError(f"{self._module_name} defines no lowered module {name!r}") from None

    def module_getattr(self, name: str) -> type:
        """For the family module's ``__getattr__``: only ``Lowered*`` names are lazy."""
        if name.startswith("Lowered"):
            return getattr(self, name)
        raise AttributeError(f"module {self._module_name!r} has no attribute {name!r}")


def filler_or(p, field: str, **default):  # noqa: ANN001
    """``p.<field>`` when the file sets it, else a FillerParameter made of ``default``
    (Caffe's ``if (has_filler()) ... else { set_type("constant"); set_value(v); }``)."""
    from netdef.ir.messages import FillerParameter
    from netdef.ir.schema import make

    return getattr(p, field) if has(p, field) else make(FillerParameter, **default)


def weight_bias_fillers(p, n_blobs: int) -> list:  # noqa: ANN001
    """Convolution/Deconvolution/InnerProduct/Embed: ``weight_filler`` then ``bias_filler``."""
    return [p.weight_filler, p.bias_filler][:n_blobs]


# InnerProduct runs oneDNN's GEMM on the CPU from this many weight elements (below, MKL's
# smaller call overhead wins); onednn_gemm is the one rule the lowering
# (netdef.lowering.ops.gemm) and the memory model below both follow
ONEDNN_GEMM_MIN_WEIGHT = 1 << 15
ONEDNN_GEMM_MIN_WEIGHT_ONE_ROW = 1 << 20  # one input row: only large weights win (LeNet's
# 500×800 ip1 at batch 1: 0.04 ms oneDNN vs 0.03 ms MKL; AlexNet's fc8 1.4× faster)


def onednn_gemm(rows: int, weight_elements: int) -> bool:
    """Whether InnerProduct's GEMM runs oneDNN's matmul on the CPU (float32)."""
    return weight_elements >= (ONEDNN_GEMM_MIN_WEIGHT if rows > 1
                               else ONEDNN_GEMM_MIN_WEIGHT_ONE_ROW) and rows > 0


def _cpu_threads() -> int:
    """The intra-op threads torch will use, without importing it: ``OMP_NUM_THREADS``
    when set, else the CPU count (torch's default on VMs without SMT siblings)."""
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "")))
    except ValueError:
        return os.cpu_count() or 1


@register
class InnerProduct(LayerDef):
    """Fully connected: flattens dims from ``axis`` (K) into num_output (N)."""
    top_saved_for_backward = False

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

    def fillers(self, layer: "LayerParameter", n_blobs: int) -> list:
        return weight_bias_fillers(layer.inner_product_param, n_blobs)

    def lower(self, layer: "LayerParameter", ctx):  # noqa: ANN001, ANN201
        p = layer.inner_product_param
        axis = canonical_axis(layer, p.axis, ctx.info.bottom_shapes[0])
        rows = math.prod(ctx.info.bottom_shapes[0][:axis])
        return _torch.LoweredInnerProduct(ctx.blobs, axis, p.transpose, rows)

    def memory(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape], ctx: MemoryContext) -> LayerMemory:
        """Keeps its (flattened) bottom; the weight is a param; the bias is added inside
        the GEMM.  On the CPU, where :func:`onednn_gemm` says so, it runs oneDNN's matmul
        (:mod:`netdef.lowering.ops.gemm`), whose scratchpad was measured (torch 2.13,
        AVX-512): forward, one ``64 × k_block`` float buffer per thread
        (``k_block`` = K rounded up to 16 up to 512, then 512 up to K = 1024, then 1024)
        plus 1,664 B, only 1,536 B for one row; backward, a plain copy of the top diff for
        the weight gradient."""
        _, m, k, n = self._mkn(layer, bottoms)
        if ctx.device != "cpu" or not onednn_gemm(m, k * n):
            return LayerMemory(saved=(Saved("bottom", 0),))
        k_block = -(-k // 16) * 16 if k <= 512 else 512 if k <= 1024 else 1024
        fwd = 1536 if m == 1 else 1664 + _cpu_threads() * 256 * k_block
        return LayerMemory(saved=(Saved("bottom", 0),), workspace=fwd,
                           backward_workspace=nbytes(tops[0]))


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

    def fillers(self, layer: "LayerParameter", n_blobs: int) -> list:
        return weight_bias_fillers(layer.embed_param, n_blobs)

    def lower(self, layer: "LayerParameter", ctx):  # noqa: ANN001, ANN201
        return _torch.LoweredEmbed(ctx.blobs)

    def memory(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape], ctx: MemoryContext) -> LayerMemory:
        """``weight[idx]`` keeps the int64 indices (the float bottom truncated: no
        gradient reaches it); a bias add makes the row gather a temporary."""
        return LayerMemory(saved=(Saved("new", nbytes=nbytes(bottoms[0], 8)),),
                           no_grad_bottoms=(0,),
                           workspace=nbytes(tops[0]) if layer.embed_param.bias_term else 0)


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

    def lower(self, layer: "LayerParameter", ctx):  # noqa: ANN001, ANN201
        axis = canonical_axis(layer, layer.softmax_param.axis, ctx.info.bottom_shapes[0])
        return _torch.LoweredSoftmax(axis)

    def memory(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape], ctx: MemoryContext) -> LayerMemory:
        """softmax's backward reads its output."""
        return LayerMemory(saved=(Saved("top", 0),))


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

    def lower(self, layer: "LayerParameter", ctx):  # noqa: ANN001, ANN201
        p = layer.eltwise_param
        return _torch.LoweredEltwise(p.operation.name, tuple(float(c) for c in p.coeff))

    def memory(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape], ctx: MemoryContext) -> LayerMemory:
        """SUM: additions keep nothing and pass the top diff down unchanged (with
        coefficients each scaled input is a temporary and gets its own diff).  PROD:
        each multiply keeps both factors.  MAX: each ``torch.where`` keeps its bool
        condition.  Chains over more than two bottoms make top-sized partial results."""
        p, n, size = layer.eltwise_param, len(bottoms), nbytes(tops[0])
        op = p.operation.name
        partial = max(0, n - 2) * size
        if op == "SUM":
            if any(c != 1.0 for c in p.coeff):  # the running sum and one scaled input
                return LayerMemory(workspace=2 * size, backward_workspace=size)
            return LayerMemory(diff_alias=True, workspace=min(partial, size))
        if op == "PROD":
            saved = tuple(Saved("bottom", i) for i in range(n))
            return LayerMemory(saved=saved + (Saved("new", nbytes=size),) * (n - 2))
        return LayerMemory(saved=(Saved("new", nbytes=nbytes(tops[0], 1)),) * (n - 1),
                           workspace=min(partial, size))


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

    def lower(self, layer: "LayerParameter", ctx):  # noqa: ANN001, ANN201
        p = layer.reduction_param
        axis = canonical_axis(layer, p.axis, ctx.info.bottom_shapes[0])
        return _torch.LoweredReduction(p.operation.name, axis, float(p.coeff))

    def memory(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape], ctx: MemoryContext) -> LayerMemory:
        """SUM/MEAN keep nothing; ASUM/SUMSQ keep x for ``abs``/the square, whose
        bottom-sized result is a temporary before the sum."""
        if layer.reduction_param.operation.name in ("ASUM", "SUMSQ"):
            size = nbytes(bottoms[0])
            return LayerMemory(saved=(Saved("bottom", 0),), workspace=size,
                               backward_workspace=size)
        return LayerMemory()


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

    def lower(self, layer: "LayerParameter", ctx):  # noqa: ANN001, ANN201
        p = layer.argmax_param
        axis = canonical_axis(layer, p.axis, ctx.info.bottom_shapes[0]) if has(p, "axis") else None
        return _torch.LoweredArgMax(p.top_k, p.out_max_val, axis)

    def memory(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape], ctx: MemoryContext) -> LayerMemory:
        """Works on the detached input: a flipped copy, then a full sort (values and
        int64 indices, and 2 bytes an element of sort scratch, as measured)."""
        return LayerMemory(differentiable=False, workspace=nbytes(bottoms[0], 18))


# --------------------------------------------------------------------------- torch modules
def _define() -> list[type]:
    import torch
    import torch.nn.functional as F

    from netdef.lowering import functional as CF
    from netdef.lowering.module import LayerModule

    class LoweredInnerProduct(LayerModule):
        """Flatten from ``axis`` (C-order), then ``x·Wᵀ + b`` (``x·W`` with ``transpose``)."""

        def __init__(self, blobs, axis: int, transpose: bool, rows: int = 0  # noqa: ANN001
                     ) -> None:
            super().__init__(blobs)
            self.axis, self.transpose = axis, transpose
            self.bias_term = len(blobs) > 1
            self.rows = rows  # the GEMM's M at the analysed shapes (the packing's hint)
            self.packed = None  # oneDNN-blocked weight of a frozen inference graph

        def freeze_weights(self) -> None:
            self.packed = None if self.transpose else CF.pack_weight(self.blob(0), self.rows)

        def forward(self, x):  # noqa: ANN001, ANN201
            x = x.flatten(self.axis)
            bias = self.blob(1) if self.bias_term else None
            if (self.packed is not None and torch.compiler.is_compiling()
                    and not torch.is_grad_enabled()):
                return CF.linear_packed(x, self.packed, bias)
            if self.transpose:
                y = torch.matmul(x, self.blob(0))
                return y if bias is None else y + bias
            return CF.linear(x, self.blob(0), bias)

        def extra_repr(self) -> str:
            return f"axis={self.axis}, transpose={self.transpose}, bias={self.bias_term}"

    class LoweredEmbed(LayerModule):
        """Rows of the (input_dim, num_output) table at the (float, truncated) indices."""

        def forward(self, x):  # noqa: ANN001, ANN201
            return CF.embed(x, self.blob(0), self.blob(1) if self.num_blobs > 1 else None)

    class LoweredSoftmax(LayerModule):
        def __init__(self, axis: int) -> None:
            super().__init__()
            self.axis = axis

        def forward(self, x):  # noqa: ANN001, ANN201
            return torch.softmax(x, self.axis)

        def extra_repr(self) -> str:
            return f"axis={self.axis}"

    class LoweredEltwise(LayerModule):
        """SUM (``Σ cᵢ·xᵢ`` in bottom order, Caffe's axpy chain), PROD, MAX.

        MAX follows Caffe's tie rule (bottom 0 wins over 1 only when strictly larger, later
        bottoms only when strictly larger than the running max) with ``torch.where``, so
        the gradient goes to the selected bottom only, and no data-dependent indexing
        stops ``torch.export``."""

        def __init__(self, operation: str, coeffs: tuple[float, ...]) -> None:
            super().__init__()
            if operation not in ("SUM", "PROD", "MAX"):
                raise NotImplementedError(f"Eltwise operation {operation}")
            if coeffs and operation != "SUM":
                raise ValueError("Eltwise coefficients are only for SUM")
            self.operation = operation
            self.coeffs = coeffs if coeffs and any(c != 1.0 for c in coeffs) else ()

        def forward(self, *xs):  # noqa: ANN002, ANN201
            if self.operation == "SUM":
                if not self.coeffs:
                    out = xs[0] + xs[1]
                    for x in xs[2:]:
                        out = out + x
                    return out
                out = xs[0] * self.coeffs[0]
                for x, c in zip(xs[1:], self.coeffs[1:]):
                    out = out + (x if c == 1.0 else x * c)
                return out
            if self.operation == "PROD":
                out = xs[0] * xs[1]
                for x in xs[2:]:
                    out = out * x
                return out
            out = torch.where(xs[0] > xs[1], xs[0], xs[1])
            for x in xs[2:]:
                out = torch.where(x > out, x, out)
            return out

        def extra_repr(self) -> str:
            return self.operation + (f", coeffs={self.coeffs}" if self.coeffs else "")

    class LoweredReduction(LayerModule):
        def __init__(self, operation: str, axis: int, coeff: float) -> None:
            super().__init__()
            self.operation, self.axis, self.coeff = operation, axis, coeff

        def forward(self, x):  # noqa: ANN001, ANN201
            return CF.reduction(x, self.operation, self.axis, self.coeff)

        def extra_repr(self) -> str:
            return f"{self.operation}, axis={self.axis}, coeff={self.coeff:g}"

    class LoweredArgMax(LayerModule):
        """Indices (as floats) of the top-k values; no gradient (Caffe has no Backward)."""

        def __init__(self, top_k: int, out_max_val: bool, axis: int | None) -> None:
            super().__init__()
            self.top_k, self.out_max_val, self.axis = top_k, out_max_val, axis

        def forward(self, x):  # noqa: ANN001, ANN201
            return CF.argmax(x, self.top_k, self.out_max_val, self.axis)

        def extra_repr(self) -> str:
            return f"top_k={self.top_k}, out_max_val={self.out_max_val}, axis={self.axis}"

    return [LoweredInnerProduct, LoweredEmbed, LoweredSoftmax, LoweredEltwise,
            LoweredReduction, LoweredArgMax]


_torch = TorchModules(__name__, _define)


def __getattr__(name: str):  # noqa: ANN202 - PEP 562: the Lowered* classes load torch lazily
    return _torch.module_getattr(name)
