"""Layers that move data without arithmetic: Concat, Slice, Split, Flatten, Reshape,
Crop, Tile, Filter, Silence, BatchReindex.  None does any FLOPs.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

from netdef.ir.schema import has
from netdef.layers.families._util import canonical_axis, count, fail, n_tops, need_bottoms
from netdef.layers.families.common import TorchModules
from netdef.layers.registry import (LayerDef, LayerMemory, MemoryContext, Shape, ShapeContext,
                                    nbytes, register)

if TYPE_CHECKING:  # pragma: no cover
    from netdef.ir.messages import LayerParameter


class _Structure(LayerDef):
    category = "structure"

    def memory(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape], ctx: MemoryContext) -> LayerMemory:
        """Data movement keeps nothing for backward (only sizes and small indices);
        the tops are new tensors and each bottom gets its own diff."""
        return LayerMemory()


def _legacy_axis(layer: "LayerParameter", p, legacy: str, shape: Shape) -> int:
    """``axis`` or the legacy unsigned ``concat_dim``/``slice_dim`` (never both)."""
    if has(p, legacy):
        if has(p, "axis"):
            raise fail(layer, f"either axis or {legacy} should be specified; not both")
        axis = getattr(p, legacy)
        if axis >= len(shape):
            raise fail(layer, f"{legacy} {axis} is out of range for {tuple(shape)}")
        return axis
    return canonical_axis(layer, p.axis, shape)


@register
class Concat(_Structure):
    top_saved_for_backward = False
    type = "Concat"
    param_field = "concat_param"
    v1_type = "CONCAT"
    bottoms = (1, None)
    tops = (1, 1)

    def shapes(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               ctx: ShapeContext) -> list[Shape]:
        need_bottoms(layer, bottoms, 1)
        first = tuple(bottoms[0])
        axis = _legacy_axis(layer, layer.concat_param, "concat_dim", first)
        total = 0
        for i, b in enumerate(bottoms):
            if len(b) != len(first) or any(x != y for j, (x, y) in enumerate(zip(b, first))
                                           if j != axis):
                raise fail(layer, f"bottom[{i}] {tuple(b)} does not match bottom[0] {first} "
                                  f"outside the concat axis {axis}",
                           hint="all inputs must have the same shape except along the axis")
            total += b[axis]
        return [first[:axis] + (total,) + first[axis + 1:]]

    def summary(self, layer: "LayerParameter") -> str:
        p = layer.concat_param
        axis = p.concat_dim if has(p, "concat_dim") else p.axis
        return "" if axis == 1 else f"axis {axis}"

    def lower(self, layer: "LayerParameter", ctx):  # noqa: ANN001, ANN201
        shape = tuple(ctx.info.bottom_shapes[0])
        return _torch.LoweredConcat(_legacy_axis(layer, layer.concat_param, "concat_dim", shape))

    def memory(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape], ctx: MemoryContext) -> LayerMemory:
        """``torch.cat`` keeps nothing; its backward narrows the top diff (views).  One
        bottom is returned as is."""
        if len(bottoms) == 1:
            return LayerMemory(same=True)
        return LayerMemory(diff_alias=True)


@register
class Slice(_Structure):
    """Splits one axis at ``slice_point``s, or evenly into as many parts as tops."""

    type = "Slice"
    param_field = "slice_param"
    v1_type = "SLICE"
    bottoms = (1, 1)
    tops = (1, None)

    def shapes(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               ctx: ShapeContext) -> list[Shape]:
        need_bottoms(layer, bottoms, 1, 1)
        p, shape, tops = layer.slice_param, tuple(bottoms[0]), n_tops(layer)
        axis = _legacy_axis(layer, p, "slice_dim", shape)
        size = shape[axis]
        if p.slice_point:
            if len(p.slice_point) != tops - 1:
                raise fail(layer, f"{len(p.slice_point)} slice_point(s) need "
                                  f"{len(p.slice_point) + 1} tops, got {tops}",
                           hint="give one slice_point fewer than tops")
            bounds = (0, *p.slice_point, size)
            sizes = [b - a for a, b in zip(bounds, bounds[1:])]
            if any(s <= 0 for s in sizes):
                raise fail(layer, f"slice_points {tuple(p.slice_point)} must increase strictly "
                                  f"within axis {axis} of size {size}")
        else:
            if size % tops:
                raise fail(layer, f"{tops} tops do not evenly divide axis {axis} of size {size}",
                           hint="give slice_point values")
            sizes = [size // tops] * tops
        return [shape[:axis] + (s,) + shape[axis + 1:] for s in sizes]

    def summary(self, layer: "LayerParameter") -> str:
        p = layer.slice_param
        axis = p.slice_dim if has(p, "slice_dim") else p.axis
        text = f"axis {axis}"
        return text + (" @" + ",".join(map(str, p.slice_point)) if p.slice_point else "")

    def lower(self, layer: "LayerParameter", ctx):  # noqa: ANN001, ANN201
        p, shape = layer.slice_param, tuple(ctx.info.bottom_shapes[0])
        self.shapes(layer, ctx.info.bottom_shapes, None)
        axis = _legacy_axis(layer, p, "slice_dim", shape)
        return _torch.LoweredSlice(axis, tuple(int(x) for x in p.slice_point),
                                   len(ctx.info.tops))

    def memory(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape], ctx: MemoryContext) -> LayerMemory:
        """The tops are views of the bottom.  In backward every top's slice makes a
        bottom-sized zero-filled diff; they are added into the first."""
        if len(tops) == 1:
            return LayerMemory(same=True)
        return LayerMemory(alias=(0,) * len(tops), backward_workspace=nbytes(bottoms[0]))


@register
class Split(_Structure):
    """Copies one blob to several tops (Caffe inserts these for shared blobs)."""

    type = "Split"
    v1_type = "SPLIT"
    bottoms = (1, 1)
    tops = (1, None)

    def shapes(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               ctx: ShapeContext) -> list[Shape]:
        need_bottoms(layer, bottoms, 1, 1)
        return [tuple(bottoms[0])] * n_tops(layer)

    def lower(self, layer: "LayerParameter", ctx):  # noqa: ANN001, ANN201
        # the builder never calls it (it reuses the blob; autograd sums the gradients)
        return _torch.LoweredSplit(len(ctx.info.tops))

    def memory(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape], ctx: MemoryContext) -> LayerMemory:
        """Free: every top is the bottom tensor; autograd sums the consumers' diffs."""
        return LayerMemory(same=True)


@register
class Silence(_Structure):
    """Swallows its bottoms so they do not show up as net outputs."""

    type = "Silence"
    v1_type = "SILENCE"
    bottoms = (1, None)
    tops = (0, 0)

    def shapes(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               ctx: ShapeContext) -> list[Shape]:
        return []

    def lower(self, layer: "LayerParameter", ctx):  # noqa: ANN001, ANN201
        return _torch.LoweredSilence()

    def memory(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape], ctx: MemoryContext) -> LayerMemory:
        """Returns nothing: no node, no diffs."""
        return LayerMemory(differentiable=False)


@register
class Flatten(_Structure):
    """Merges axes ``axis``..``end_axis`` (inclusive) into one."""

    type = "Flatten"
    param_field = "flatten_param"
    v1_type = "FLATTEN"
    bottoms = (1, 1)
    tops = (1, 1)

    def shapes(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               ctx: ShapeContext) -> list[Shape]:
        need_bottoms(layer, bottoms, 1, 1)
        p, shape = layer.flatten_param, tuple(bottoms[0])
        start = canonical_axis(layer, p.axis, shape)
        end = canonical_axis(layer, p.end_axis, shape, "end_axis")
        if end < start:
            raise fail(layer, f"end_axis {p.end_axis} comes before axis {p.axis} for {shape}")
        return [shape[:start] + (count(shape, start, end + 1),) + shape[end + 1:]]

    def lower(self, layer: "LayerParameter", ctx):  # noqa: ANN001, ANN201
        p, shape = layer.flatten_param, tuple(ctx.info.bottom_shapes[0])
        self.shapes(layer, ctx.info.bottom_shapes, None)
        return _torch.LoweredFlatten(canonical_axis(layer, p.axis, shape),
                                     canonical_axis(layer, p.end_axis, shape, "end_axis"))

    def memory(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape], ctx: MemoryContext) -> LayerMemory:
        """A view: the top shares the bottom's storage, the diff is a view too."""
        return LayerMemory(alias=(0,), diff_alias=True)


@register
class Reshape(_Structure):
    """New dims for axes [axis, axis+num_axes): 0 copies the bottom dim, -1 is inferred."""

    type = "Reshape"
    param_field = "reshape_param"
    bottoms = (1, 1)
    tops = (1, 1)

    def shapes(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               ctx: ShapeContext) -> list[Shape]:
        need_bottoms(layer, bottoms, 1, 1)
        p, shape = layer.reshape_param, tuple(bottoms[0])
        dims, n = list(p.shape.dim), len(shape)
        start = p.axis if p.axis >= 0 else n + p.axis + 1
        if not 0 <= start <= n:
            raise fail(layer, f"axis {p.axis} is out of range for {shape}")
        if p.num_axes < -1:
            raise fail(layer, "num_axes must be >= 0, or -1 for all remaining axes")
        end = n if p.num_axes == -1 else start + p.num_axes
        if end > n:
            raise fail(layer, f"axis {p.axis} + num_axes {p.num_axes} exceed the {n} axes "
                              f"of {shape}")
        if dims.count(-1) > 1:
            raise fail(layer, "new shape has more than one -1 (only one dim can be inferred)",
                       field="reshape_param")
        new: list[int] = []
        for i, d in enumerate(dims):
            if d < -1:
                raise fail(layer, f"new shape dim {d} is invalid (use >= 0, or -1 to infer)")
            if d == 0 and start + i >= n:
                raise fail(layer, f"new shape dim {i} is 0 but the bottom has no axis "
                                  f"{start + i} to copy")
            new.append(shape[start + i] if d == 0 else d)
        top = list(shape[:start]) + new + list(shape[end:])
        total = count(shape)
        if -1 in new:
            known = math.prod(d for d in top if d != -1)
            if known == 0 or total % known:
                raise fail(layer, f"cannot infer the -1 dim: {total} elements of {shape} are "
                                  f"not divisible by {known}")
            top[start + new.index(-1)] = total // known
        if count(top) != total:
            raise fail(layer, f"output {tuple(top)} has {count(top)} elements, the bottom "
                              f"{shape} has {total}", hint="the element count must not change")
        return [tuple(top)]

    def summary(self, layer: "LayerParameter") -> str:
        return ",".join(map(str, layer.reshape_param.shape.dim))

    def lower(self, layer: "LayerParameter", ctx):  # noqa: ANN001, ANN201
        p, shape = layer.reshape_param, tuple(ctx.info.bottom_shapes[0])
        self.shapes(layer, ctx.info.bottom_shapes, None)
        start = p.axis if p.axis >= 0 else len(shape) + p.axis + 1
        end = len(shape) if p.num_axes == -1 else start + p.num_axes
        # per new dim: ("copy", bottom axis) for 0, else the literal (-1 left to torch)
        spec = tuple(("copy", start + i) if d == 0 else ("dim", int(d))
                     for i, d in enumerate(p.shape.dim))
        return _torch.LoweredReshape(start, end, spec, tuple(ctx.info.top_shapes[0]))

    def memory(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape], ctx: MemoryContext) -> LayerMemory:
        """A view: the top shares the bottom's storage, the diff is a view too."""
        return LayerMemory(alias=(0,), diff_alias=True)


@register
class Crop(_Structure):
    """Crops bottom[0] to bottom[1]'s size on axes >= ``axis``, at ``offset``s."""

    type = "Crop"
    param_field = "crop_param"
    bottoms = (2, 2)
    tops = (1, 1)

    def shapes(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               ctx: ShapeContext) -> list[Shape]:
        need_bottoms(layer, bottoms, 2, 2)
        p = layer.crop_param
        big, ref = tuple(bottoms[0]), tuple(bottoms[1])
        if len(big) != len(ref):
            raise fail(layer, f"bottoms need the same number of axes: {big} vs {ref}")
        start = canonical_axis(layer, p.axis, big)
        if len(p.offset) > 1 and start + len(p.offset) != len(big):
            raise fail(layer, f"{len(p.offset)} offsets given; need one, or one per axis "
                              f"from {start} ({len(big) - start})", field="crop_param")
        out = list(big)
        for i in range(start, len(big)):
            off = p.offset[0] if len(p.offset) == 1 else (p.offset[i - start] if p.offset else 0)
            if big[i] - off < ref[i]:
                raise fail(layer, f"axis {i}: cannot crop {ref[i]} at offset {off} from {big[i]}",
                           hint="check crop_param offset / axis")
            out[i] = ref[i]
        return [tuple(out)]

    def summary(self, layer: "LayerParameter") -> str:
        p = layer.crop_param
        return f"axis {p.axis}" + (" @" + ",".join(map(str, p.offset)) if p.offset else "")

    def lower(self, layer: "LayerParameter", ctx):  # noqa: ANN001, ANN201
        p, big = layer.crop_param, tuple(ctx.info.bottom_shapes[0])
        self.shapes(layer, ctx.info.bottom_shapes, None)
        start = canonical_axis(layer, p.axis, big)
        offsets = tuple(int(p.offset[0]) if len(p.offset) == 1 else
                        (int(p.offset[i - start]) if p.offset else 0)
                        for i in range(start, len(big)))
        return _torch.LoweredCrop(start, offsets)

    def memory(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape], ctx: MemoryContext) -> LayerMemory:
        """Basic indexing: the top is a view of bottom 0; bottom 1 only gives sizes.  The
        backward scatters the diff into a zero-filled bottom-sized tensor, one cropped
        axis at a time (the partial results are temporaries)."""
        cropped = [i for i, (a, b) in enumerate(zip(bottoms[0], tops[0])) if a != b]
        partial = list(tops[0])  # the last partial result, alive as the final one is made
        for i in cropped[1:]:
            partial[i] = bottoms[0][i]
        return LayerMemory(alias=(0,), no_grad_bottoms=(1,),
                           backward_workspace=nbytes(partial) if len(cropped) > 1 else 0)


@register
class Tile(_Structure):
    type = "Tile"
    param_field = "tile_param"
    bottoms = (1, 1)
    tops = (1, 1)

    def shapes(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               ctx: ShapeContext) -> list[Shape]:
        need_bottoms(layer, bottoms, 1, 1)
        p, shape = layer.tile_param, tuple(bottoms[0])
        if p.tiles <= 0:
            raise fail(layer, "tiles must be positive", hint="set tile_param { tiles: N }")
        axis = canonical_axis(layer, p.axis, shape)
        return [shape[:axis] + (shape[axis] * p.tiles,) + shape[axis + 1:]]

    def summary(self, layer: "LayerParameter") -> str:
        p = layer.tile_param
        return f"×{p.tiles}" + (f", axis {p.axis}" if p.axis != 1 else "")

    def lower(self, layer: "LayerParameter", ctx):  # noqa: ANN001, ANN201
        p, shape = layer.tile_param, tuple(ctx.info.bottom_shapes[0])
        self.shapes(layer, ctx.info.bottom_shapes, None)
        reps = [1] * len(shape)
        reps[canonical_axis(layer, p.axis, shape)] = p.tiles
        return _torch.LoweredTile(tuple(reps))


@register
class Filter(_Structure):
    """Keeps the items whose selector (last bottom) is non-zero.

    The kept count is data-dependent; like Caffe's first Reshape, shapes report the
    full batch (an upper bound).
    """

    type = "Filter"
    bottoms = (2, None)
    tops = (1, None)  # one fewer than bottoms

    def shapes(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               ctx: ShapeContext) -> list[Shape]:
        need_bottoms(layer, bottoms, 2)
        selector = tuple(bottoms[-1])
        if layer.top and len(layer.top) != len(bottoms) - 1:
            raise fail(layer, f"needs one top per filtered bottom ({len(bottoms) - 1}), "
                              f"got {len(layer.top)}")
        if any(d != 1 for d in selector[1:]):
            raise fail(layer, f"selector {selector} must be singleton except the first axis")
        for i, b in enumerate(bottoms[:-1]):
            if b[0] != selector[0]:
                raise fail(layer, f"bottom[{i}] {tuple(b)} and the selector {selector} "
                                  "differ in the first axis")
        return [(bottoms[0][0],) + tuple(b[1:]) for b in bottoms[:-1]]

    def lower(self, layer: "LayerParameter", ctx):  # noqa: ANN001, ANN201
        return _torch.LoweredFilter(len(ctx.info.bottoms) - 1)

    def memory(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape], ctx: MemoryContext) -> LayerMemory:
        """``index_select`` keeps only the (small) kept indices; the selector gets no
        gradient."""
        return LayerMemory(no_grad_bottoms=(len(bottoms) - 1,))


@register
class BatchReindex(_Structure):
    """Gathers items of bottom[0] along axis 0 by the 1-D index bottom[1]."""

    type = "BatchReindex"
    bottoms = (2, 2)
    tops = (1, 1)

    def shapes(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               ctx: ShapeContext) -> list[Shape]:
        need_bottoms(layer, bottoms, 2, 2)
        if len(bottoms[1]) != 1:
            raise fail(layer, f"the index bottom must be 1-D, got {tuple(bottoms[1])}")
        return [(bottoms[1][0],) + tuple(bottoms[0][1:])]

    def lower(self, layer: "LayerParameter", ctx):  # noqa: ANN001, ANN201
        return _torch.LoweredBatchReindex()

    def memory(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape], ctx: MemoryContext) -> LayerMemory:
        """``index_select`` keeps only the indices, which get no gradient."""
        return LayerMemory(no_grad_bottoms=(1,))


# --------------------------------------------------------------------------- torch modules
def _define() -> list[type]:
    import torch

    from netdef.lowering import functional as CF
    from netdef.lowering.module import LayerModule

    class LoweredConcat(LayerModule):
        def __init__(self, axis: int) -> None:
            super().__init__()
            self.axis = axis

        def forward(self, *xs):  # noqa: ANN002, ANN201
            return xs[0] if len(xs) == 1 else torch.cat(xs, self.axis)

        def extra_repr(self) -> str:
            return f"axis={self.axis}"

    class LoweredSlice(LayerModule):
        """Views of the bottom cut at ``slice_point``s, or into equal parts (one per top)."""

        def __init__(self, axis: int, points: tuple[int, ...], n_tops: int) -> None:
            super().__init__()
            self.axis, self.points, self.n_tops = axis, points, n_tops

        def forward(self, x):  # noqa: ANN001, ANN201
            if self.n_tops == 1:
                return x
            parts = torch.tensor_split(x, list(self.points) if self.points else self.n_tops,
                                       self.axis)
            return tuple(parts)

        def extra_repr(self) -> str:
            return f"axis={self.axis}, points={self.points}, tops={self.n_tops}"

    class LoweredSplit(LayerModule):
        def __init__(self, n_tops: int) -> None:
            super().__init__()
            self.n_tops = n_tops

        def forward(self, x):  # noqa: ANN001, ANN201
            return x if self.n_tops == 1 else (x,) * self.n_tops

    class LoweredSilence(LayerModule):
        def forward(self, *xs):  # noqa: ANN002, ANN201
            return ()

    class LoweredFlatten(LayerModule):
        def __init__(self, start: int, end: int) -> None:
            super().__init__()
            self.start, self.end = start, end

        def forward(self, x):  # noqa: ANN001, ANN201
            return x.flatten(self.start, self.end)

        def extra_repr(self) -> str:
            return f"axes {self.start}..{self.end}"

    class LoweredReshape(LayerModule):
        """Bottom axes ``[start, end)`` replaced by the new dims (0 copies the bottom's,
        -1 is inferred); the other axes follow the input, so the batch may change."""

        def __init__(self, start: int, end: int, spec, top_shape) -> None:  # noqa: ANN001
            super().__init__()
            self.start, self.end, self.spec = start, end, spec
            self.top_shape = top_shape

        def forward(self, x):  # noqa: ANN001, ANN201
            shape = x.shape
            new = [shape[v] if kind == "copy" else v for kind, v in self.spec]
            return x.reshape(tuple(shape[: self.start]) + tuple(new) + tuple(shape[self.end:]))

        def extra_repr(self) -> str:
            return f"-> {self.top_shape}"

    class LoweredCrop(LayerModule):
        """bottom 0 cut to bottom 1's size on the axes from ``start``, at ``offsets``
        (no gradient reaches bottom 1, as in Caffe)."""

        def __init__(self, start: int, offsets: tuple[int, ...]) -> None:
            super().__init__()
            self.start, self.offsets = start, offsets

        def forward(self, x, ref):  # noqa: ANN001, ANN201
            index = (slice(None),) * self.start + tuple(
                slice(o, o + ref.shape[self.start + i]) for i, o in enumerate(self.offsets))
            return x[index]

        def extra_repr(self) -> str:
            return f"axis={self.start}, offsets={self.offsets}"

    class LoweredTile(LayerModule):
        def __init__(self, reps: tuple[int, ...]) -> None:
            super().__init__()
            self.reps = reps

        def forward(self, x):  # noqa: ANN001, ANN201
            return x.repeat(self.reps)

        def extra_repr(self) -> str:
            return f"reps={self.reps}"

    class LoweredFilter(LayerModule):
        """Items (axis 0) of each bottom whose selector (the last bottom) is non-zero."""

        def __init__(self, n_tops: int) -> None:
            super().__init__()
            self.n_tops = n_tops

        def forward(self, *xs):  # noqa: ANN002, ANN201
            out = CF.filter_rows(xs[:-1], xs[-1])
            return out[0] if self.n_tops == 1 else tuple(out)

    class LoweredBatchReindex(LayerModule):
        def forward(self, x, permut):  # noqa: ANN001, ANN201
            return CF.batch_reindex(x, permut)

    return [LoweredConcat, LoweredSlice, LoweredSplit, LoweredSilence, LoweredFlatten,
            LoweredReshape, LoweredCrop, LoweredTile, LoweredFilter, LoweredBatchReindex]


_torch = TorchModules(__name__, _define)


def __getattr__(name: str):  # noqa: ANN202 - PEP 562: the Lowered* classes load torch lazily
    return _torch.module_getattr(name)
