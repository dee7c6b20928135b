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
from netdef.layers.families.common import TorchModules, weight_bias_fillers
from netdef.layers.registry import (Counts, LayerDef, LayerMemory, MemoryContext, Saved,
                                    Shape, ShapeContext, nbytes, register, saves_bottoms)
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
    top_saved_for_backward = False

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

    def memory(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape], ctx: MemoryContext) -> LayerMemory:
        """Autograd keeps each bottom (and the weight, a param).  On the CPU oneDNN
        computes in a channel-blocked layout: forward holds the blocked output (about a
        top) or the reordered input + weight, whichever is larger, until the plain top
        is written; backward reorders the top diff, the input and the weight diff.  The
        convolution's blocked output pads its channels to oneDNN's AVX-512 block of 16
        (measured on an AVX-512 EPYC: 8 output channels hold a 16-channel buffer)."""
        axis = self._setup(layer, bottoms)[0]
        weight = nbytes(self.params(layer, bottoms)[0])
        fwd = bwd = 0
        if ctx.device == "cpu":
            for b, t in zip(bottoms, tops):  # deconvolution: two top-sized buffers
                c = t[axis] if self.deconv else -(-t[axis] // 16) * 16
                blocked = nbytes(t) // t[axis] * c
                fwd = max(fwd, nbytes(b) + weight, blocked * (1 + self.deconv))
                bwd = max(bwd, nbytes(t) + nbytes(b) + weight)
        return LayerMemory(saved=saves_bottoms(len(bottoms)), workspace=fwd,
                           backward_workspace=bwd)

    def fillers(self, layer: "LayerParameter", n_blobs: int) -> list:
        return weight_bias_fillers(layer.convolution_param, n_blobs)

    def lower(self, layer: "LayerParameter", ctx):  # noqa: ANN001, ANN201
        axis, _, w = self._setup(layer, ctx.info.bottom_shapes)
        nsp = len(w.kernel)
        if not 1 <= nsp <= 3:
            raise NotImplementedError(f"{nsp} spatial axes: PyTorch convolutions take 1 to 3")
        return _torch.LoweredConvolution(ctx.blobs, self.deconv, axis, w.stride, w.pad,
                                         w.dilation, layer.convolution_param.group,
                                         len(ctx.info.bottoms))


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

    def memory(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape], ctx: MemoryContext) -> LayerMemory:
        """F.unfold's backward (col2im) needs only sizes: nothing is saved."""
        return LayerMemory()

    def lower(self, layer: "LayerParameter", ctx):  # noqa: ANN001, ANN201
        shape = tuple(ctx.info.bottom_shapes[0])
        axis = canonical_axis(layer, layer.convolution_param.axis, shape)
        w = conv_window(layer.convolution_param, len(shape) - axis - 1, where(layer))
        if len(w.kernel) not in (1, 2):
            raise NotImplementedError(f"Im2col over {len(w.kernel)} spatial axes (1 or 2 are "
                                      "supported)")
        return _torch.LoweredIm2col(axis, w, tuple(ctx.info.top_shapes[0][axis + 1:]))


def _pool_padding(hw: tuple[int, int], w: Window,
                  out: tuple[int, ...]) -> tuple[int, int] | None:
    """None when torch's own pooling has Caffe's output grid ``out`` (the lowering's
    usual path), else the right/bottom padding the lowering adds (see LoweredPooling)."""
    k, s, p = w.kernel, w.stride, w.pad
    if all(pi <= ki // 2 for pi, ki in zip(p, k)):
        for ceil in (False, True):
            sizes = []
            for i in range(2):
                q = (hw[i] + 2 * p[i] - k[i]) / s[i]
                o = (math.ceil(q) if ceil else math.floor(q)) + 1
                if ceil and (o - 1) * s[i] >= hw[i] + p[i]:
                    o -= 1
                sizes.append(o)
            if tuple(sizes) == tuple(out):
                return None
    return tuple(max(0, (out[i] - 1) * s[i] + k[i] - hw[i] - p[i]) for i in range(2))


def _pool_flops(p, window: Window, top: Shape) -> int:
    per = math.prod(window.kernel) + (1 if p.pool.name == "AVE" else 0)
    return count(top) * per


@register
class Pooling(LayerDef):
    """MAX/AVE/STOCHASTIC pooling over (N, C, H, W); MAX may output its argmax mask."""
    top_saved_for_backward = False

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

    def memory(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape], ctx: MemoryContext) -> LayerMemory:
        """MAX: max_pool2d_with_indices keeps the input and int64 indices (8 bytes per
        top element; the CPU kernel makes them even without autograd).  AVE:
        avg_pool2d's backward reads its input.  Where torch's grid differs from Caffe's
        the input is padded first, and the padded copy is what is kept.  STOCHASTIC keeps
        its unfolded windows and the sampled indices."""
        p, w = layer.pooling_param, self._window(layer, bottoms)
        method, top = p.pool.name, tops[0]
        n, c, h, wd = bottoms[0]
        if method == "STOCHASTIC":
            cols = nbytes((n, c, math.prod(w.kernel)) + tuple(top[2:]))
            saved = (Saved("new", nbytes=cols), Saved("new", nbytes=nbytes(top, 8)))
            return LayerMemory(saved=saved if ctx.grad else (), workspace=cols)
        extra = _pool_padding((h, wd), w, tuple(top[2:]))
        kept: tuple[Saved, ...] = (Saved("bottom", 0),)
        if extra is not None:  # F.pad: a padded copy of the input is what pooling reads
            kept = (Saved("new", nbytes=nbytes((n, c, h + w.pad[0] + extra[0],
                                                wd + w.pad[1] + extra[1]))),)
        if method == "MAX":
            indices = Saved("new", nbytes=nbytes(top, 8))
            mask = (1,) if len(tops) > 1 else ()  # the mask top carries no gradient
            return LayerMemory(saved=kept + (indices,) if ctx.grad else (indices,),
                               no_grad_tops=mask)
        return LayerMemory(saved=kept if ctx.grad else ())

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

    def lower(self, layer: "LayerParameter", ctx):  # noqa: ANN001, ANN201
        p = layer.pooling_param
        w = self._window(layer, ctx.info.bottom_shapes)
        hw = tuple(ctx.info.bottom_shapes[0][2:])
        return _torch.LoweredPooling(p.pool.name, hw, w.kernel, w.stride, w.pad,
                                     p.round_mode.name, p.global_pooling,
                                     mask=len(ctx.info.tops) > 1)


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

    def memory(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape], ctx: MemoryContext) -> LayerMemory:
        """Each level pools the same bottom (kept once) and, for MAX, keeps its int64
        indices; the level outputs live until ``cat`` joins them; in backward each level
        makes a bottom-sized diff that is added into the first."""
        levels = self._levels(layer, bottoms)
        method = layer.spp_param.pool.name
        indices = sum(nbytes(s, 8) for _, s in levels) if method == "MAX" else 0
        outs = sum(nbytes(s) for _, s in levels) if len(levels) > 1 else 0
        if not ctx.grad:
            return LayerMemory(workspace=outs + indices)
        saved = (Saved("bottom", 0),) + ((Saved("new", nbytes=indices),) if indices else ())
        return LayerMemory(saved=saved, workspace=outs,
                           backward_workspace=nbytes(bottoms[0]) if len(levels) > 1 else 0)

    def lower(self, layer: "LayerParameter", ctx):  # noqa: ANN001, ANN201
        p = layer.spp_param
        hw = tuple(ctx.info.bottom_shapes[0][2:])
        levels = [_torch.LoweredPooling(p.pool.name, hw, win.kernel, win.stride, win.pad,
                                        "CEIL", False)
                  for win, _ in self._levels(layer, ctx.info.bottom_shapes)]
        return _torch.LoweredSPP(levels)


# --------------------------------------------------------------------------- torch modules
def _define() -> list[type]:
    import torch
    import torch.nn.functional as F
    from torch import nn

    from netdef.lowering import functional as CF
    from netdef.lowering.module import LayerModule
    from netdef.lowering.ops.pooling import max_pool2d, pool_output_size

    conv_fns = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
    deconv_fns = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
    flt_max = 3.4028234663852886e38

    class LoweredConvolution(LayerModule):
        """Convolution / Deconvolution; every bottom gets its own top with the same weights.

        Dims before the channel ``axis`` are batch dims (folded into one for the call)."""

        def __init__(self, blobs, deconv: bool, axis: int, stride, pad, dilation,  # noqa: ANN001
                     group: int, n_bottoms: int) -> None:
            super().__init__(blobs)
            self.deconv, self.axis, self.group = deconv, axis, group
            self.stride, self.pad, self.dilation = tuple(stride), tuple(pad), tuple(dilation)
            self.nsp = len(self.stride)
            self.bias_term = len(blobs) > 1
            self.n_bottoms = n_bottoms
            self.fn = (deconv_fns if deconv else conv_fns)[self.nsp]

        def _one(self, x):  # noqa: ANN001, ANN202
            lead = None
            if self.axis != 1:  # fold the leading axes into one batch axis
                lead = tuple(x.shape[: self.axis])
                x = x.reshape((-1,) + tuple(x.shape[self.axis:]))
            bias = self.blob(1) if self.bias_term else None
            if self.deconv:
                y = self.fn(x, self.blob(0), bias, stride=self.stride, padding=self.pad,
                            groups=self.group, dilation=self.dilation)
            else:
                y = self.fn(x, self.blob(0), bias, self.stride, self.pad, self.dilation, self.group)
            return y if lead is None else y.reshape(lead + tuple(y.shape[1:]))

        def forward(self, *xs):  # noqa: ANN002, ANN201
            if self.n_bottoms == 1:
                return self._one(xs[0])
            return tuple(self._one(x) for x in xs)

        def absorb_channel_affine(self, a, b):  # noqa: ANN001, ANN201
            """``W' = a[o]·W[o]``, ``b' = a·bias + b`` (a convolution, not a deconvolution:
            its output channels are the weight's first axis)."""
            if self.deconv or self.axis != 1 or self.n_bottoms != 1:
                return None
            w = self.blob(0).detach()
            if a.numel() != w.shape[0]:
                return None
            bias = self.blob(1).detach() if self.bias_term else torch.zeros_like(a)
            blobs = [torch.nn.Parameter(w * a.reshape((-1,) + (1,) * (w.dim() - 1)),
                                        requires_grad=False),
                     torch.nn.Parameter(bias.reshape(-1) * a + b, requires_grad=False)]
            new = LoweredConvolution(blobs, False, 1, self.stride, self.pad, self.dilation,
                                     self.group, 1)
            return new.train(self.training)

        def extra_repr(self) -> str:
            kind = "deconv" if self.deconv else "conv"
            return (f"{kind}, stride={self.stride}, pad={self.pad}, dilation={self.dilation}, "
                    f"group={self.group}, axis={self.axis}, bias={self.bias_term}")

    class LoweredIm2col(LayerModule):
        """Windows unfolded into channels, rows ordered (c, kh, kw) as Caffe's im2col."""

        def __init__(self, axis: int, w, out_spatial: tuple[int, ...]) -> None:  # noqa: ANN001
            super().__init__()
            self.axis = axis
            one_d = len(w.kernel) == 1
            self.one_d = one_d
            self.kernel = (1,) + w.kernel if one_d else w.kernel
            self.stride = (1,) + w.stride if one_d else w.stride
            self.pad = (0,) + w.pad if one_d else w.pad
            self.dilation = (1,) + w.dilation if one_d else w.dilation
            self.out_spatial = out_spatial

        def forward(self, x):  # noqa: ANN001, ANN201
            lead = tuple(x.shape[: self.axis])
            xb = x.reshape((-1,) + tuple(x.shape[self.axis:]))
            if self.one_d:
                xb = xb.unsqueeze(2)
            cols = F.unfold(xb, self.kernel, dilation=self.dilation, padding=self.pad,
                            stride=self.stride)
            return cols.reshape(lead + (cols.shape[1],) + self.out_spatial)

    class LoweredPooling(LayerModule):
        """MAX/AVE/STOCHASTIC pooling, its geometry decided once: torch's own pooling where
        its output grid equals Caffe's (the usual case), else explicit padding that
        reproduces Caffe's windows (-FLT_MAX for MAX, Caffe's clipped divisor for AVE,
        precomputed).  An input of another spatial size than planned falls back to the
        general op.  STOCHASTIC samples when ``self.training`` (TEST: the weighted
        average).  With two tops MAX also outputs Caffe's mask: the argmax as ``h·W + w``."""

        def __init__(self, method: str, hw, kernel, stride, pad, round_mode: str,  # noqa: ANN001
                     global_pooling: bool, mask: bool = False) -> None:
            super().__init__()
            self.method, self.round_mode, self.global_pooling = method, round_mode, global_pooling
            self.hw = tuple(int(d) for d in hw)
            self.kernel, self.stride, self.pad = tuple(kernel), tuple(stride), tuple(pad)
            self.mask = mask
            out = tuple(pool_output_size(self.hw[i], self.kernel[i], self.stride[i], self.pad[i],
                                         round_mode) for i in range(2))
            self.out = out
            self.ceil_mode = self._native(out)
            # right/bottom padding so that every Caffe window lies in the padded tensor
            self.extra = tuple(max(0, (out[i] - 1) * self.stride[i] + self.kernel[i]
                                   - self.hw[i] - self.pad[i]) for i in range(2))
            div = None
            if method == "AVE" and self.ceil_mode is None:
                dh, dw = (torch.tensor([float(min(o * s - p + k, size + p) - (o * s - p))
                                        for o in range(n)])
                          for size, k, s, p, n in zip(self.hw, self.kernel, self.stride,
                                                      self.pad, out))
                div = dh[:, None] * dw[None, :]
            self.register_buffer("divisor", div, persistent=False)

        def _native(self, out):  # noqa: ANN001, ANN202
            """The ceil_mode for which torch's pooling has Caffe's output grid, or None."""
            k, s, p = self.kernel, self.stride, self.pad
            if self.method == "STOCHASTIC" or any(pi > ki // 2 for pi, ki in zip(p, k)):
                return None  # torch refuses pad > kernel / 2
            for cm in (False, True):
                sizes = []
                for i in range(2):
                    q = (self.hw[i] + 2 * p[i] - k[i]) / s[i]
                    o = (math.ceil(q) if cm else math.floor(q)) + 1
                    if cm and (o - 1) * s[i] >= self.hw[i] + p[i]:
                        o -= 1
                    sizes.append(o)
                if tuple(sizes) == out:
                    return cm
            return None

        def forward(self, x):  # noqa: ANN001, ANN201
            training = self.training
            if not torch.jit.is_tracing() and tuple(x.shape[2:]) != self.hw:
                return self._general(x, training)  # (a trace records the planned size)
            k, s, p = self.kernel, self.stride, self.pad
            if self.method == "STOCHASTIC":
                return CF.caffe_pool2d(x, "STOCHASTIC", k, s, p, self.round_mode, training=training)
            cm = self.ceil_mode
            if self.method == "MAX":
                if cm is not None:
                    if self.mask:
                        y, idx = F.max_pool2d(x, k, s, p, ceil_mode=cm, return_indices=True)
                        return y, idx.to(x.dtype)
                    return max_pool2d(x, k, s, p, cm)
                xp = F.pad(x, (p[1], self.extra[1], p[0], self.extra[0]), value=-flt_max)
                oh, ow = self.out
                if not self.mask:
                    return F.max_pool2d(xp, k, s)[:, :, :oh, :ow]
                y, idx = F.max_pool2d(xp, k, s, return_indices=True)
                y, idx = y[:, :, :oh, :ow], idx[:, :, :oh, :ow]
                wp = xp.shape[3]
                h, w = idx // wp - p[0], idx % wp - p[1]
                inside = (h >= 0) & (h < self.hw[0]) & (w >= 0) & (w < self.hw[1])
                flat = torch.where(inside, h * self.hw[1] + w, torch.full_like(idx, -1))
                return y, flat.to(x.dtype)
            if cm is not None:
                return F.avg_pool2d(x, k, s, p, ceil_mode=cm, count_include_pad=True)
            xp = F.pad(x, (p[1], self.extra[1], p[0], self.extra[0]))
            oh, ow = self.out
            return F.avg_pool2d(xp, k, s, divisor_override=1)[:, :, :oh, :ow] / self.divisor

        def _general(self, x, training: bool):  # noqa: ANN001, ANN202
            """Another input size than planned: recompute the geometry (global pooling
            follows the input)."""
            if self.global_pooling:
                y = CF.caffe_pool2d(x, self.method, None, 1, 0, self.round_mode,
                                    global_pooling=True, training=training)
            else:
                y = CF.caffe_pool2d(x, self.method, self.kernel, self.stride, self.pad,
                                    self.round_mode, training=training)
            if self.mask:
                raise NotImplementedError("the MAX pooling mask top is planned for the "
                                          f"analysed input size {self.hw}, got "
                                          f"{tuple(x.shape[2:])}")
            return y

        def extra_repr(self) -> str:
            path = "torch" if self.ceil_mode is not None else "padded"
            return (f"{self.method}, kernel={self.kernel}, stride={self.stride}, pad={self.pad}, "
                    f"out={self.out}, {path}")

    class LoweredSPP(LayerModule):
        """Spatial pyramid pooling: each level's pooling flattened, levels concatenated
        (one level: its 4-D output as is)."""

        def __init__(self, levels) -> None:  # noqa: ANN001
            super().__init__()
            self.levels = nn.ModuleList(levels)

        def forward(self, x):  # noqa: ANN001, ANN201
            if len(self.levels) == 1:
                return self.levels[0](x)
            return torch.cat([lvl(x).flatten(1) for lvl in self.levels], 1)

    return [LoweredConvolution, LoweredIm2col, LoweredPooling, LoweredSPP]


_torch = TorchModules(__name__, _define)


def __getattr__(name: str):  # noqa: ANN202 - PEP 562: the Lowered* classes load torch lazily
    return _torch.module_getattr(name)
