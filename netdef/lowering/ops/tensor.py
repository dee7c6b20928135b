"""Caffe's blob-manipulation layers: Softmax, Eltwise, Concat, Slice, Crop, Reshape,
Flatten, Tile, Reduction, ArgMax, Embed, Filter, BatchReindex."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ._common import canonical_axis, count

__all__ = ["caffe_softmax", "eltwise", "concat", "caffe_slice", "crop", "reshape_shape",
           "caffe_reshape", "flatten_shape", "caffe_flatten", "tile", "reduction", "argmax",
           "embed", "filter_rows", "batch_reindex"]


def caffe_softmax(x: Tensor, axis: int = 1) -> Tensor:
    """Softmax over ``axis`` (Caffe subtracts the max first, as torch does)."""
    return torch.softmax(x, canonical_axis(axis, x.dim()))


def eltwise(inputs: Sequence[Tensor], operation: str = "SUM", coeffs: Sequence[float] = ()) -> Tensor:
    """EltwiseLayer.  SUM takes one coefficient per input (or none = all 1).  MAX follows
    Caffe's tie rule: between inputs 0 and 1 a tie goes to input 1 (``a > b`` strict),
    later inputs win only when strictly larger; the gradient goes to that input only.
    PROD's gradient is the product of the other inputs (Caffe's stable_prod_grad)."""
    if len(inputs) < 2:
        raise ValueError("Eltwise needs at least 2 inputs")
    op = operation.upper()
    if op == "SUM":
        if coeffs and len(coeffs) != len(inputs):
            raise ValueError("Eltwise SUM needs one coefficient per input")
        cs = list(coeffs) if coeffs else [1.0] * len(inputs)
        out = inputs[0] if cs[0] == 1.0 else inputs[0] * cs[0]
        for t, c in zip(inputs[1:], cs[1:]):
            out = out + (t if c == 1.0 else t * c)
        return out
    if coeffs:
        raise ValueError("Eltwise coefficients are only for SUM")
    if op == "PROD":
        out = inputs[0]
        for t in inputs[1:]:
            out = out * t
        return out
    if op == "MAX":
        stacked = torch.stack(list(inputs))
        with torch.no_grad():
            best = stacked[1].clone()
            idx = torch.ones(best.shape, dtype=torch.long, device=best.device)
            first = stacked[0] > stacked[1]
            best[first] = stacked[0][first]
            idx[first] = 0
            for i in range(2, len(inputs)):
                win = stacked[i] > best
                best[win] = stacked[i][win]
                idx[win] = i
        return stacked.gather(0, idx.unsqueeze(0)).squeeze(0)
    raise ValueError(f"unknown Eltwise operation {operation!r}")


def concat(inputs: Sequence[Tensor], axis: int = 1) -> Tensor:
    """ConcatLayer along ``axis``."""
    return torch.cat(list(inputs), canonical_axis(axis, inputs[0].dim()))


def caffe_slice(x: Tensor, axis: int = 1, slice_points: Sequence[int] = (),
                num_tops: int | None = None) -> list[Tensor]:
    """SliceLayer: cut at ``slice_points`` (len = tops-1), or into ``num_tops`` equal parts."""
    axis = canonical_axis(axis, x.dim())
    size = x.shape[axis]
    if slice_points:
        pts = [0] + list(slice_points) + [size]
        if any(b <= a for a, b in zip(pts, pts[1:])):
            raise ValueError("slice_points must be strictly increasing inside the axis")
        if num_tops is not None and num_tops != len(pts) - 1:
            raise ValueError("number of tops must be len(slice_points) + 1")
        return [x.narrow(axis, a, b - a) for a, b in zip(pts, pts[1:])]
    if not num_tops or size % num_tops:
        raise ValueError("without slice_points the axis must divide evenly among the tops")
    step = size // num_tops
    return [x.narrow(axis, i * step, step) for i in range(num_tops)]


def crop(x: Tensor, ref_shape: Sequence[int], axis: int = 2, offsets: Sequence[int] = ()) -> Tensor:
    """CropLayer: axes from ``axis`` take ref's size, at offset ``offsets[0]`` for all (one
    value), one per cropped axis, or 0 (none)."""
    axis = canonical_axis(axis, x.dim())
    ncrop = x.dim() - axis
    if len(offsets) not in (0, 1, ncrop):
        raise ValueError(f"crop needs 0, 1 or {ncrop} offsets")
    out = x
    for i in range(axis, x.dim()):
        off = 0 if not offsets else offsets[0] if len(offsets) == 1 else offsets[i - axis]
        new = int(ref_shape[i])
        if x.shape[i] - off < new:
            raise ValueError(f"crop axis {i}: offset {off} + size {new} exceeds {x.shape[i]}")
        out = out.narrow(i, off, new)
    return out


def reshape_shape(bottom_shape: Sequence[int], shape: Sequence[int], axis: int = 0,
                  num_axes: int = -1) -> tuple[int, ...]:
    """ReshapeLayer's top shape: dims ``[axis, axis+num_axes)`` are replaced by ``shape``,
    where 0 copies the bottom dim at that position and one -1 is inferred.  A negative
    ``axis`` counts from the end *plus one* (``-1`` = after the last axis)."""
    nb = len(bottom_shape)
    start = axis if axis >= 0 else nb + axis + 1
    if not 0 <= start <= nb:
        raise ValueError("reshape axis out of range")
    if num_axes < -1:
        raise ValueError("num_axes must be >= 0, or -1 for all remaining")
    end = nb if num_axes == -1 else start + num_axes
    if end > nb:
        raise ValueError("axis + num_axes exceeds the bottom's axes")
    new = list(bottom_shape[:start])
    infer = None
    for i, d in enumerate(shape):
        if d == 0:
            if start + i >= nb:
                raise ValueError("a 0 in shape copies a bottom dim that does not exist")
            new.append(int(bottom_shape[start + i]))
        elif d == -1:
            if infer is not None:
                raise ValueError("at most one -1 in a reshape")
            infer = len(new)
            new.append(1)
        elif d < -1:
            raise ValueError("reshape dims must be >= -1")
        else:
            new.append(int(d))
    new += list(bottom_shape[end:])
    total = count(bottom_shape)
    if infer is not None:
        known = count(new)
        if known == 0 or total % known:
            raise ValueError("cannot infer the -1 dim")
        new[infer] = total // known
    if count(new) != total:
        raise ValueError(f"reshape {tuple(bottom_shape)} -> {tuple(new)} changes the count")
    return tuple(new)


def caffe_reshape(x: Tensor, shape: Sequence[int], axis: int = 0, num_axes: int = -1) -> Tensor:
    """ReshapeLayer (data and gradient are a view, as Caffe shares them)."""
    return x.reshape(reshape_shape(tuple(x.shape), shape, axis, num_axes))


def flatten_shape(bottom_shape: Sequence[int], axis: int = 1, end_axis: int = -1) -> tuple[int, ...]:
    """FlattenLayer's top shape: axes ``axis..end_axis`` (inclusive) merged into one."""
    nb = len(bottom_shape)
    a, e = canonical_axis(axis, nb), canonical_axis(end_axis, nb)
    return tuple(bottom_shape[:a]) + (count(bottom_shape, a, e + 1),) + tuple(bottom_shape[e + 1:])


def caffe_flatten(x: Tensor, axis: int = 1, end_axis: int = -1) -> Tensor:
    """FlattenLayer."""
    return x.reshape(flatten_shape(tuple(x.shape), axis, end_axis))


def tile(x: Tensor, tiles: int, axis: int = 1) -> Tensor:
    """TileLayer: the block ``x.shape[axis:]`` repeated ``tiles`` times along ``axis``."""
    axis = canonical_axis(axis, x.dim())
    if tiles < 1:
        raise ValueError("tiles must be positive")
    reps = [1] * x.dim()
    reps[axis] = tiles
    return x.repeat(reps)


def reduction(x: Tensor, operation: str = "SUM", axis: int = 0, coeff: float = 1.0) -> Tensor:
    """ReductionLayer: reduce every axis from ``axis`` to the end (top shape
    ``x.shape[:axis]``, 0-D for axis 0) with SUM, ASUM, SUMSQ or MEAN, times ``coeff``."""
    axis = canonical_axis(axis, x.dim())
    flat = x.reshape(tuple(x.shape[:axis]) + (-1,))
    op = operation.upper()
    if op == "SUM":
        y = flat.sum(-1)
    elif op == "ASUM":
        y = flat.abs().sum(-1)
    elif op == "SUMSQ":
        y = (flat * flat).sum(-1)
    elif op == "MEAN":
        y = flat.sum(-1) * (1.0 / flat.shape[-1])
    else:
        raise ValueError(f"unknown Reduction operation {operation!r}")
    return y if coeff == 1.0 else y * coeff


def _topk_caffe(v: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top-k along the last dim ordered like std::partial_sort with greater<pair<value, index>>:
    equal values rank the larger index first."""
    n = v.shape[-1]
    flipped = v.flip(-1)
    vals, idx = torch.sort(flipped, dim=-1, descending=True, stable=True)
    return vals[..., :k], (n - 1 - idx[..., :k])


def argmax(x: Tensor, top_k: int = 1, out_max_val: bool = False, axis: int | None = None) -> Tensor:
    """ArgMaxLayer (indices as floats).  With ``axis``: that axis becomes ``top_k`` and holds
    indices, or the values when ``out_max_val``.  Without: each sample is flattened and the
    top has shape ``(N, 1, top_k)`` (``(N, 2, top_k)`` = indices then values with
    ``out_max_val``), padded with trailing 1s to the bottom's number of axes."""
    x = x.detach()
    if axis is not None:
        ax = canonical_axis(axis, x.dim())
        if top_k > x.shape[ax]:
            raise ValueError("top_k larger than the axis")
        vals, idx = _topk_caffe(x.movedim(ax, -1), top_k)
        out = vals if out_max_val else idx.to(x.dtype)
        return out.movedim(-1, ax).contiguous()
    n = x.shape[0]
    flat = x.reshape(n, -1)
    if top_k > flat.shape[1]:
        raise ValueError("top_k larger than the flattened sample")
    vals, idx = _topk_caffe(flat, top_k)
    parts = [idx.to(x.dtype)] + ([vals] if out_max_val else [])
    out = torch.stack(parts, 1)
    shape = [n, len(parts), top_k] + [1] * max(0, x.dim() - 3)
    return out.reshape(shape)


def embed(indices: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """EmbedLayer: rows of ``weight`` (input_dim, num_output) at the (float) indices,
    truncated to int like Caffe; output shape ``indices.shape + (num_output,)``."""
    idx = indices.detach().to(torch.long)
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= weight.shape[0]):
        raise IndexError("Embed index out of range [0, input_dim)")
    y = weight[idx]
    return y if bias is None else y + bias.reshape(-1)


def filter_rows(inputs: Sequence[Tensor], selector: Tensor) -> list[Tensor]:
    """FilterLayer: keep the items (axis 0) whose selector value is non-zero."""
    keep = torch.nonzero(selector.detach().reshape(-1) != 0).reshape(-1)
    for t in inputs:
        if t.shape[0] != selector.reshape(-1).shape[0]:
            raise ValueError("Filter: every input needs one item per selector value")
    return [t.index_select(0, keep.to(t.device)) for t in inputs]


def batch_reindex(x: Tensor, permut: Tensor) -> Tensor:
    """BatchReindexLayer: ``x[permut]`` (indices may repeat; gradients accumulate)."""
    idx = permut.detach().reshape(-1).to(torch.long)
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= x.shape[0]):
        raise IndexError("BatchReindex index out of range")
    return x.index_select(0, idx)
