"""Sliding-window layers: Convolution, Deconvolution, Im2col, Pooling, SPP.

Window geometry and output-size rules live in :mod:`netdef.layers.spatial`.

Counting convention (whole batch, forward):

* Convolution: ``MACs = count(top) · (C_in/group) · Πkernel``;
  ``FLOPs = 2·MACs + count(top)`` if ``bias_term`` (one add per output element).
* Deconvolution: the same with bottom and top swapped:
  ``MACs = count(bottom) · (num_output/group) · Πkernel``; bias adds per top element.
* Im2col: a copy, 0 FLOPs.
* Pooling: ``Πkernel`` compares (MAX) or adds (AVE, +1 divide) per output element.
* SPP: the sum of its pyramid levels' pooling counts.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

from netdef.layers.families._util import (canonical_axis, count, fail, n_tops, need_bottoms,
                                          where)
from netdef.layers.registry import Counts, LayerDef, Shape, ShapeContext, register
from netdef.layers.spatial import (Window, conv_shape, conv_window, describe, pool_shape,
                                   pool_window)
from netdef.ir.schema import has

if TYPE_CHECKING:  # pragma: no cover
    from netdef.ir.messages import LayerParameter


def _conv_text(p, *, show_out: bool = True) -> str:
    """``11×11/4, 96, p2, g2, d2`` from a ConvolutionParameter (no bottoms needed)."""
    if has(p, "kernel_h") or has(p, "kernel_w"):
        kernel = f"{p.kernel_h}×{p.kernel_w}"
    elif len(p.kernel_size) == 1:
        kernel = f"{p.kernel_size[0]}×{p.kernel_size[0]}"
    else:
        kernel = "×".join(map(str, p.kernel_size)) or "?"
    hw = has(p, "stride_h") or has(p, "stride_w")
    stride = (p.stride_h, p.stride_w) if hw else (p.stride or (1,))
    pad = (p.pad_h, p.pad_w) if has(p, "pad_h") or has(p, "pad_w") else (p.pad or (0,))
    parts = [f"{kernel}/{describe(stride)}"]
    if show_out:
        parts.append(str(p.num_output))
    if any(pad):
        parts.append(f"p{describe(pad)}")
    if show_out and p.group != 1:
        parts.append(f"g{p.group}")
    if any(d != 1 for d in p.dilation):
        parts.append(f"d{describe(p.dilation)}")
    return ", ".join(parts)


class _ConvBase(LayerDef):
    """Convolution and Deconvolution: Caffe's ``BaseConvolutionLayer``."""

    param_field = "convolution_param"
    bottoms = (1, None)
    tops = (1, None)  # one top per bottom (Caffe's EqualNumBottomTopBlobs)
    category = "conv"
    deconv = False

    def _setup(self, layer: "LayerParameter", bottoms: Sequence[Shape]) -> tuple[int, int, Window]:
        """Check the params against bottom 0; (channel axis, channels, window)."""
        need_bottoms(layer, bottoms, 1)
        p = layer.convolution_param
        shape = bottoms[0]
        for i, b in enumerate(bottoms[1:], 1):
            if tuple(b) != tuple(shape):
                raise fail(layer, f"all bottoms must have the same shape: bottom[0] "
                                  f"{tuple(shape)} vs bottom[{i}] {tuple(b)}")
        if layer.top and len(layer.top) != len(bottoms):
            raise fail(layer, f"needs one top per bottom ({len(bottoms)}), got {len(layer.top)}")
        if p.num_output <= 0:
            raise fail(layer, "num_output is missing or zero", hint="set convolution_param "
                       "{ num_output: N }", field="convolution_param")
        axis = canonical_axis(layer, p.axis, shape)
        channels = shape[axis]
        if p.group <= 0 or channels % p.group or p.num_output % p.group:
            raise fail(layer, f"group {p.group} must divide both the input channels "
                              f"({channels}) and num_output ({p.num_output})",
                       field="convolution_param")
        return axis, channels, conv_window(p, len(shape) - axis - 1, where(layer))

    def params(self, layer: "LayerParameter", bottoms: Sequence[Shape]) -> list[Shape]:
        _, channels, w = self._setup(layer, bottoms)
        p = layer.convolution_param
        out, inp = (channels, p.num_output) if self.deconv else (p.num_output, channels)
        blobs: list[Shape] = [(out, inp // p.group, *w.kernel)]
        if p.bias_term:
            blobs.append((p.num_output,))
        return blobs

    def shapes(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               ctx: ShapeContext) -> list[Shape]:
        axis, _, w = self._setup(layer, bottoms)
        shape = tuple(bottoms[0])
        spatial = conv_shape(shape[axis + 1:], w, where(layer), deconv=self.deconv)
        top = shape[:axis] + (layer.convolution_param.num_output,) + spatial
        return [top] * len(bottoms)

    def counts(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape]) -> Counts:
        axis, channels, w = self._setup(layer, bottoms)
        p = layer.convolution_param
        per_out = (p.num_output if self.deconv else channels) // p.group * math.prod(w.kernel)
        # deconv: every *input* element scatters into a kernel window of each output map
        macs = sum(count(b if self.deconv else t) * per_out for b, t in zip(bottoms, tops))
        bias = sum(count(t) for t in tops) if p.bias_term else 0
        return Counts(macs, 2 * macs + bias)

    def summary(self, layer: "LayerParameter") -> str:
        return _conv_text(layer.convolution_param)


@register
class Convolution(_ConvBase):
    type = "Convolution"
    v1_type = "CONVOLUTION"


@register
class Deconvolution(_ConvBase):
    """Transposed convolution: weights are (C_in, num_output/group, *kernel)."""

    type = "Deconvolution"
    v1_type = "DECONVOLUTION"
    deconv = True


@register
class Im2col(LayerDef):
    """Unfolds windows into channels: C·Πkernel channels at the conv output size."""

    type = "Im2col"
    param_field = "convolution_param"
    v1_type = "IM2COL"
    bottoms = (1, 1)
    tops = (1, 1)
    category = "conv"

    def shapes(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               ctx: ShapeContext) -> list[Shape]:
        need_bottoms(layer, bottoms, 1, 1)
        shape = tuple(bottoms[0])
        axis = canonical_axis(layer, layer.convolution_param.axis, shape)
        w = conv_window(layer.convolution_param, len(shape) - axis - 1, where(layer))
        spatial = conv_shape(shape[axis + 1:], w, where(layer))
        return [shape[:axis] + (shape[axis] * math.prod(w.kernel),) + spatial]

    def summary(self, layer: "LayerParameter") -> str:
        return _conv_text(layer.convolution_param, show_out=False)


def _pool_flops(p, window: Window, top: Shape) -> int:
    per = math.prod(window.kernel) + (1 if p.pool.name == "AVE" else 0)
    return count(top) * per


@register
class Pooling(LayerDef):
    """MAX/AVE/STOCHASTIC pooling over (N, C, H, W); MAX may output its argmax mask."""

    type = "Pooling"
    param_field = "pooling_param"
    v1_type = "POOLING"
    bottoms = (1, 1)
    tops = (1, 2)  # Caffe: MaxTopBlobs is 2 for MAX (the mask), else 1
    category = "pool"

    def _window(self, layer: "LayerParameter", bottoms: Sequence[Shape]) -> Window:
        need_bottoms(layer, bottoms, 1, 1)
        if len(bottoms[0]) != 4:
            raise fail(layer, f"input must have 4 axes (num, channels, height, width), "
                              f"got {tuple(bottoms[0])}", hint="add a Reshape before pooling")
        return pool_window(layer.pooling_param, bottoms[0][2:], where(layer))

    def shapes(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               ctx: ShapeContext) -> list[Shape]:
        p = layer.pooling_param
        w = self._window(layer, bottoms)
        if len(layer.top) > 1 and p.pool.name != "MAX":
            raise fail(layer, f"{p.pool.name} pooling has one top; only MAX pooling "
                              "outputs a second (mask) top")
        n, c, h, wd = bottoms[0]
        top = (n, c) + pool_shape((h, wd), w, p.round_mode.name == "CEIL", where(layer))
        return [top] * n_tops(layer)

    def counts(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape]) -> Counts:
        return Counts(0, _pool_flops(layer.pooling_param, self._window(layer, bottoms), tops[0]))

    def summary(self, layer: "LayerParameter") -> str:
        p = layer.pooling_param
        if p.global_pooling:
            return f"{p.pool.name} global"
        kernel = (p.kernel_size,) if has(p, "kernel_size") else (p.kernel_h, p.kernel_w)
        stride = (p.stride_h, p.stride_w) if has(p, "stride_h") else (p.stride,)
        pad = (p.pad_h, p.pad_w) if has(p, "pad_h") else (p.pad,)
        text = f"{p.pool.name} {describe(kernel)}/{describe(stride)}"
        if any(pad):
            text += f", p{describe(pad)}"
        if p.round_mode.name == "FLOOR":
            text += ", floor"
        return text


@register
class SPP(LayerDef):
    """Spatial pyramid pooling: level l pools into 2^l × 2^l bins, flattened and joined.

    Per level (Caffe's ``GetPoolingParam``): ``k = ceil(H / bins)``,
    ``pad = (k·bins − H + 1) // 2``, ``stride = k``, then the usual pooling rule.
    With ``pyramid_height: 1`` the top stays 4-D (one plain pooling), else it is
    ``(N, Σ C·h_l·w_l)``.
    """

    type = "SPP"
    param_field = "spp_param"
    bottoms = (1, 1)
    tops = (1, 1)
    category = "pool"

    def _levels(self, layer: "LayerParameter",
                bottoms: Sequence[Shape]) -> list[tuple[Window, Shape]]:
        need_bottoms(layer, bottoms, 1, 1)
        if len(bottoms[0]) != 4:
            raise fail(layer, f"input must have 4 axes (num, channels, height, width), "
                              f"got {tuple(bottoms[0])}")
        height = layer.spp_param.pyramid_height
        if height <= 0:
            raise fail(layer, "pyramid_height must be at least 1", field="spp_param")
        n, c, h, w = bottoms[0]
        out = []
        for level in range(height):
            bins = 2 ** level
            kernel = (-(-h // bins), -(-w // bins))
            pad = tuple((k * bins - size + 1) // 2 for k, size in zip(kernel, (h, w)))
            if any(pd >= k for pd, k in zip(pad, kernel)):
                raise fail(layer, f"pyramid level {level} ({bins}×{bins} bins) needs pad "
                                  f"{pad} ≥ kernel {kernel}: the input {h}×{w} is too small",
                           hint="use a smaller pyramid_height or a larger input")
            win = Window(kernel, kernel, pad, (1, 1))
            out.append((win, (n, c) + pool_shape((h, w), win, True, where(layer))))
        return out

    def shapes(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               ctx: ShapeContext) -> list[Shape]:
        levels = self._levels(layer, bottoms)
        if len(levels) == 1:
            return [levels[0][1]]
        return [(bottoms[0][0], sum(count(s, 1) for _, s in levels))]

    def counts(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape]) -> Counts:
        p = layer.spp_param
        return Counts(0, sum(_pool_flops(p, w, s) for w, s in self._levels(layer, bottoms)))

    def summary(self, layer: "LayerParameter") -> str:
        p = layer.spp_param
        return f"{p.pool.name} pyramid {p.pyramid_height}"
