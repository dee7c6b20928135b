"""An analysed Caffe net as readable, standalone PyTorch source (``netdef export --format py``).

The generated file needs only ``torch``: no netdef import and no pickled classes, so
it can be copied anywhere (MMdnn's converted models famously need their ``MainModel``
module to unpickle).  It holds

* ``INPUTS`` / ``OUTPUTS``: the Caffe input blobs with the shapes the net was analysed
  for, and the output blobs in Caffe's order;
* small helper modules for the Caffe numerics that torch's own layers do not have
  (explicit-padding pooling, Scale, Eltwise MAX's tie rule, Power's constant cases …),
  only those the net uses;
* one ``nn.Module`` class whose attributes are the Caffe layers (identifiers made from
  the layer names, a comment above each naming the original layer and its summary) and
  whose ``forward(self, <inputs>)`` is straight-line code returning a **dict** of the
  outputs by Caffe blob name (the same dict netdef's own lowered net returns).

Weights go in a separate ``.pt``: a plain state_dict of tensors keyed by the generated
module's parameter names (``conv1.weight``), loadable with ``weights_only=True``.

How each layer type prints itself is one table, :data:`EMITTERS` (keyed by Caffe type).
A lowered layer module may instead print itself: if it has ``export_source(ctx)``
returning an :class:`Emitted`, that wins (none does today; the table covers every type
listed in :func:`supported_types`).  Types without an emitter are refused with a
:class:`~netdef.errors.NetdefError` naming the type before anything is written.

Decisions worth knowing (they are also stated in the generated file's docstring):

* The module is an inference module: Dropout is ``nn.Dropout`` (the identity in
  ``eval()``), BatchNorm follows Caffe's ``use_global_stats`` (unset: global statistics
  in ``eval()``, batch statistics in ``train()``, as netdef's own module), STOCHASTIC
  pooling computes Caffe's TEST-phase weighted average, losses compute their value.
* Pooling uses ``nn.MaxPool2d``/``nn.AvgPool2d`` with ``ceil_mode`` when torch's output
  grid equals Caffe's (almost always); otherwise explicit padding that reproduces
  Caffe's windows.  Global pooling is ``nn.Adaptive*Pool2d(1)``.
* ACROSS_CHANNELS LRN is a small ``LRN`` helper: ``nn.LocalResponseNorm``'s formula
  (Caffe's, ``x * (k + alpha/n * sum x^2)^-beta`` for the odd sizes Caffe allows),
  written out to round as netdef's op does (the window summed outwards, ``^-0.75`` by
  ``rsqrt``), so the export matches netdef to a few ulps rather than ~1e-6.
* BatchNorm's three Caffe blobs are folded into ``running_mean = mean/s`` and
  ``running_var = var/s`` (``s == 0`` gives 0, as Caffe).
"""
from __future__ import annotations

import builtins
import json
import keyword
import math
import textwrap
import types
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

from netdef.errors import NetdefError
from netdef.ir.schema import has

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

    from netdef.analysis.net import LayerInfo, NetAnalysis

__all__ = ["Emitted", "Param", "EmitContext", "GeneratedSource", "EMITTERS", "HELPERS",
           "generate", "instantiate", "check_supported", "supported_types", "class_name_for"]

FLT_MAX = 3.4028234663852886e38


# =========================================================================== helper modules
# Source text copied into the generated file when a layer needs it (in this order).
HELPERS: dict[str, str] = {}


def _helper(name: str, source: str) -> None:
    HELPERS[name] = textwrap.dedent(source).strip("\n") + "\n"


_helper("AxisConv", '''
class AxisConv(nn.Module):
    """A convolution whose channel axis is `axis`: the axes before it are batch axes."""

    def __init__(self, conv, axis):
        super().__init__()
        self.conv, self.axis = conv, axis

    def forward(self, x):
        lead = tuple(x.shape[: self.axis])
        y = self.conv(x.reshape((-1,) + tuple(x.shape[self.axis:])))
        return y.reshape(lead + tuple(y.shape[1:]))
''')

_helper("EachBottom", '''
class EachBottom(nn.Module):
    """Caffe runs a convolution on each of its bottoms with the same weights."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, *xs):
        return tuple(self.layer(x) for x in xs)
''')

_helper("LinearT", '''
class LinearT(nn.Module):
    """Caffe InnerProduct with `transpose: true`: weight is (in, out), y = x @ weight + bias."""

    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x):
        y = torch.matmul(x, self.weight)
        return y if self.bias is None else y + self.bias
''')

_helper("CaffeMaxPool2d", '''
class CaffeMaxPool2d(nn.Module):
    """MAX pooling on Caffe's output grid where torch's ceil_mode cannot express it:
    pad with -FLT_MAX (Caffe's initial value) so every Caffe window lies inside the
    tensor, pool, and keep Caffe's `out` positions."""

    def __init__(self, kernel, stride, pad, extra, out):
        super().__init__()
        self.kernel, self.stride, self.pad, self.extra, self.out = kernel, stride, pad, extra, out

    def forward(self, x):
        p, e = self.pad, self.extra
        x = F.pad(x, (p[1], e[1], p[0], e[0]), value=-3.4028234663852886e38)
        return F.max_pool2d(x, self.kernel, self.stride)[:, :, : self.out[0], : self.out[1]]
''')

_helper("CaffeAvgPool2d", '''
class CaffeAvgPool2d(nn.Module):
    """AVE pooling on Caffe's output grid where torch's ceil_mode cannot express it:
    zero padding, window sums, and Caffe's divisor (the window clipped to size + pad,
    padding counted)."""

    def __init__(self, size, kernel, stride, pad, extra, out):
        super().__init__()
        self.kernel, self.stride, self.pad, self.extra, self.out = kernel, stride, pad, extra, out
        extent = []
        for n, k, s, p, o in zip(size, kernel, stride, pad, out):
            extent.append([float(min(i * s - p + k, n + p) - (i * s - p)) for i in range(o)])
        divisor = torch.tensor(extent[0])[:, None] * torch.tensor(extent[1])[None, :]
        # avg_pool2d divides by kernel_h * kernel_w; rescale to Caffe's divisor
        self.register_buffer("rescale", (kernel[0] * kernel[1]) / divisor, persistent=False)

    def forward(self, x):
        p, e = self.pad, self.extra
        x = F.pad(x, (p[1], e[1], p[0], e[0]))
        y = F.avg_pool2d(x, self.kernel, self.stride)[:, :, : self.out[0], : self.out[1]]
        return y * self.rescale
''')

_helper("MaxPoolWithMask", '''
class MaxPoolWithMask(nn.Module):
    """MAX pooling with Caffe's second top: the argmax as h * W + w (as floats)."""

    def __init__(self, kernel, stride, pad, ceil_mode):
        super().__init__()
        self.kernel, self.stride, self.pad, self.ceil_mode = kernel, stride, pad, ceil_mode

    def forward(self, x):
        y, idx = F.max_pool2d(x, self.kernel, self.stride, self.pad, ceil_mode=self.ceil_mode,
                              return_indices=True)
        return y, idx.to(x.dtype)
''')

_helper("StochasticPool2d", '''
class StochasticPool2d(nn.Module):
    """Caffe STOCHASTIC pooling, TEST phase: the probability-weighted average
    sum(x^2) / sum(x) of each window (inputs must be non-negative)."""

    def __init__(self, kernel, stride, extra, out):
        super().__init__()
        self.kernel, self.stride, self.extra, self.out = kernel, stride, extra, out

    def forward(self, x):
        n, c = x.shape[0], x.shape[1]
        x = F.pad(x, (0, self.extra[1], 0, self.extra[0]))
        rows = (x.shape[2] - self.kernel[0]) // self.stride[0] + 1
        cols = (x.shape[3] - self.kernel[1]) // self.stride[1] + 1
        win = F.unfold(x, self.kernel, stride=self.stride)
        win = win.reshape(n, c, self.kernel[0] * self.kernel[1], rows, cols)
        win = win[:, :, :, : self.out[0], : self.out[1]]
        return (win * win).sum(2) / (win.sum(2) + 1.1754943508222875e-38)
''')

_helper("SPP", '''
class SPP(nn.Module):
    """Caffe spatial pyramid pooling: each level's pooling flattened, levels concatenated
    (a single level keeps its 4-D output)."""

    def __init__(self, levels):
        super().__init__()
        self.levels = nn.ModuleList(levels)

    def forward(self, x):
        if len(self.levels) == 1:
            return self.levels[0](x)
        return torch.cat([level(x).flatten(1) for level in self.levels], 1)
''')

_helper("LRN", '''
class LRN(nn.Module):
    """Caffe LRN, ACROSS_CHANNELS: x * (k + alpha/size * sum of x^2 over `size` channels
    centred on each, zero padded)^-beta.  The formula of nn.LocalResponseNorm, written out
    to round as Caffe and netdef do (window summed outwards, scale^-0.75 by rsqrt)."""

    def __init__(self, size=5, alpha=1.0, beta=0.75, k=1.0):
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, x):
        sq = x * x
        c, half = x.shape[1], (self.size - 1) // 2
        padded = F.pad(sq.reshape(x.shape[0], c, -1), (0, 0, half, half))
        total = sq.reshape(padded.shape[0], c, -1)
        for d in range(1, half + 1):
            total = total + padded[:, half - d: half - d + c] + padded[:, half + d: half + d + c]
        scale = total * (self.alpha / self.size) + self.k
        if self.beta == 0.75:
            scale = torch.rsqrt(scale * torch.sqrt(scale))
        elif self.beta == 0.5:
            scale = torch.rsqrt(scale)
        elif self.beta == 1.0:
            scale = torch.reciprocal(scale)
        else:
            scale = torch.pow(scale, -self.beta)
        return (x.reshape(scale.shape) * scale).reshape(x.shape)
''')

_helper("LRNWithinChannel", '''
class LRNWithinChannel(nn.Module):
    """Caffe LRN, WITHIN_CHANNEL: x * (1 + alpha * mean_{n x n}(x^2))^-beta (k unused)."""

    def __init__(self, size, alpha, beta):
        super().__init__()
        self.size, self.alpha, self.beta = size, alpha, beta

    def forward(self, x):
        pooled = F.avg_pool2d(x * x, self.size, 1, (self.size - 1) // 2, ceil_mode=True,
                              count_include_pad=True)
        return x * torch.pow(pooled * self.alpha + 1.0, -self.beta)
''')

_helper("FrozenBatchNorm", '''
class FrozenBatchNorm(nn.Module):
    """Caffe BatchNorm with `use_global_stats: true`: always the stored statistics."""

    def __init__(self, num_features, eps, view):
        super().__init__()
        self.eps, self.view = eps, view
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x):
        mean = self.running_mean.reshape(self.view)
        return (x - mean) / torch.sqrt(self.running_var.reshape(self.view) + self.eps)
''')

_helper("MVN", '''
class MVN(nn.Module):
    """Caffe MVN: subtract the mean of each (sample, channel) — or each sample with
    across_channels — and divide by std + eps (eps added after the square root)."""

    def __init__(self, normalize_variance=True, across_channels=False, eps=1e-9):
        super().__init__()
        self.normalize_variance, self.across_channels, self.eps = (
            normalize_variance, across_channels, eps)

    def forward(self, x):
        rows = x.shape[0] if self.across_channels or x.dim() < 2 else x.shape[0] * x.shape[1]
        x2 = x.reshape(rows, -1)
        y = x2 - x2.mean(1, keepdim=True)
        if self.normalize_variance:
            y = y / (torch.sqrt((y * y).mean(1, keepdim=True)) + self.eps)
        return y.reshape(x.shape)
''')

_helper("Scale", '''
class Scale(nn.Module):
    """Caffe Scale: x * weight (+ bias), both shaped like x's axes from Caffe's `axis`
    and viewed as `view` to broadcast; with `scale_input` the scale is a second input."""

    def __init__(self, shape, view, bias=False, scale_input=False):
        super().__init__()
        self.view = view
        self.weight = None if scale_input else nn.Parameter(torch.ones(shape))
        self.bias = nn.Parameter(torch.zeros(shape)) if bias else None

    def forward(self, x, scale=None):
        y = x * (self.weight if scale is None else scale).reshape(self.view)
        return y if self.bias is None else y + self.bias.reshape(self.view)
''')

_helper("Bias", '''
class Bias(nn.Module):
    """Caffe Bias: x + bias (a parameter, or a second input), viewed as `view`."""

    def __init__(self, shape, view, bias_input=False):
        super().__init__()
        self.view = view
        self.bias = None if bias_input else nn.Parameter(torch.zeros(shape))

    def forward(self, x, bias=None):
        return x + (self.bias if bias is None else bias).reshape(self.view)
''')

_helper("AbsVal", '''
class AbsVal(nn.Module):
    """Caffe AbsVal: |x|."""

    def forward(self, x):
        return torch.abs(x)
''')

_helper("Power", '''
class Power(nn.Module):
    """Caffe Power: (shift + scale * x) ** power; a constant when power or scale is 0."""

    def __init__(self, power=1.0, scale=1.0, shift=0.0):
        super().__init__()
        self.power, self.scale, self.shift = power, scale, shift

    def forward(self, x):
        if self.power == 0.0:
            return torch.ones_like(x)
        if self.scale == 0.0:
            return torch.full_like(x, self.shift ** self.power)
        y = x if self.scale == 1.0 else x * self.scale
        if self.shift != 0.0:
            y = y + self.shift
        return y if self.power == 1.0 else torch.pow(y, self.power)
''')

_helper("Exp", '''
class Exp(nn.Module):
    """Caffe Exp: base ** (shift + scale * x), base -1 meaning e, computed as Caffe does:
    base**shift * exp(ln(base) * scale * x)."""

    def __init__(self, base=-1.0, scale=1.0, shift=0.0):
        super().__init__()
        log_base = 1.0 if base == -1.0 else math.log(base)
        self.inner = log_base * scale
        self.outer = 1.0 if shift == 0.0 else (math.exp(shift) if base == -1.0
                                                else math.pow(base, shift))

    def forward(self, x):
        y = torch.exp(x if self.inner == 1.0 else x * self.inner)
        return y if self.outer == 1.0 else y * self.outer
''')

_helper("Log", '''
class Log(nn.Module):
    """Caffe Log: log_base(shift + scale * x), base -1 meaning e."""

    def __init__(self, base=-1.0, scale=1.0, shift=0.0):
        super().__init__()
        self.base_scale = 1.0 if base == -1.0 else 1.0 / math.log(base)
        self.scale, self.shift = scale, shift

    def forward(self, x):
        y = x if self.scale == 1.0 else x * self.scale
        if self.shift != 0.0:
            y = y + self.shift
        y = torch.log(y)
        return y if self.base_scale == 1.0 else y * self.base_scale
''')

_helper("Threshold", '''
class Threshold(nn.Module):
    """Caffe Threshold: 1 where x > threshold, else 0."""

    def __init__(self, threshold=0.0):
        super().__init__()
        self.threshold = threshold

    def forward(self, x):
        return (x > self.threshold).to(x.dtype)
''')

_helper("Swish", '''
class Swish(nn.Module):
    """Caffe Swish: x * sigmoid(beta * x)."""

    def __init__(self, beta=1.0):
        super().__init__()
        self.beta = beta

    def forward(self, x):
        return x * torch.sigmoid(x * self.beta)
''')

_helper("Clip", '''
class Clip(nn.Module):
    """Caffe Clip: clamp to [min, max]."""

    def __init__(self, min, max):  # noqa: A002 - Caffe's names
        super().__init__()
        self.min, self.max = min, max

    def forward(self, x):
        return torch.clamp(x, self.min, self.max)
''')

_helper("Eltwise", '''
class Eltwise(nn.Module):
    """Caffe Eltwise: SUM (with optional coefficients), PROD, or MAX with Caffe's tie rule
    (bottom 0 wins only when strictly larger than bottom 1, later bottoms only when
    strictly larger than the running maximum)."""

    def __init__(self, operation="SUM", coeffs=()):
        super().__init__()
        self.operation, self.coeffs = operation, tuple(coeffs)

    def forward(self, *xs):
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
''')

_helper("Concat", '''
class Concat(nn.Module):
    """Caffe Concat along `axis`."""

    def __init__(self, axis=1):
        super().__init__()
        self.axis = axis

    def forward(self, *xs):
        return xs[0] if len(xs) == 1 else torch.cat(xs, self.axis)
''')

_helper("Slice", '''
class Slice(nn.Module):
    """Caffe Slice: consecutive parts of `sizes` along `axis` (one per top)."""

    def __init__(self, axis, sizes):
        super().__init__()
        self.axis, self.sizes = axis, list(sizes)

    def forward(self, x):
        parts = torch.split(x, self.sizes, self.axis)
        return parts[0] if len(parts) == 1 else parts
''')

_helper("Reshape", '''
class Reshape(nn.Module):
    """Caffe Reshape: axes [start, end) become `dims` (0 copies the input's axis at that
    position, -1 is inferred); the other axes follow the input."""

    def __init__(self, start, end, dims):
        super().__init__()
        self.start, self.end, self.dims = start, end, dims

    def forward(self, x):
        new = [x.shape[self.start + i] if d == 0 else d for i, d in enumerate(self.dims)]
        return x.reshape(tuple(x.shape[: self.start]) + tuple(new) + tuple(x.shape[self.end:]))
''')

_helper("Crop", '''
class Crop(nn.Module):
    """Caffe Crop: x cut to ref's size on the axes from `axis`, at `offsets`."""

    def __init__(self, axis, offsets):
        super().__init__()
        self.axis, self.offsets = axis, offsets

    def forward(self, x, ref):
        index = (slice(None),) * self.axis + tuple(
            slice(o, o + ref.shape[self.axis + i]) for i, o in enumerate(self.offsets))
        return x[index]
''')

_helper("Tile", '''
class Tile(nn.Module):
    """Caffe Tile: the input repeated `reps` times per axis."""

    def __init__(self, reps):
        super().__init__()
        self.reps = reps

    def forward(self, x):
        return x.repeat(self.reps)
''')

_helper("Reduction", '''
class Reduction(nn.Module):
    """Caffe Reduction: SUM, ASUM, SUMSQ or MEAN over every axis from `axis`, times coeff."""

    def __init__(self, operation="SUM", axis=0, coeff=1.0):
        super().__init__()
        self.operation, self.axis, self.coeff = operation, axis, coeff

    def forward(self, x):
        flat = x.reshape(tuple(x.shape[: self.axis]) + (-1,))
        if self.operation == "SUM":
            y = flat.sum(-1)
        elif self.operation == "ASUM":
            y = flat.abs().sum(-1)
        elif self.operation == "SUMSQ":
            y = (flat * flat).sum(-1)
        else:  # MEAN
            y = flat.sum(-1) * (1.0 / flat.shape[-1])
        return y if self.coeff == 1.0 else y * self.coeff
''')

_helper("ArgMax", '''
class ArgMax(nn.Module):
    """Caffe ArgMax (indices as floats; equal values rank the larger index first, like
    Caffe's partial_sort).  With `axis`: that axis becomes top_k (indices, or values with
    out_max_val).  Without: per sample, (N, 1 or 2, top_k) padded with 1s to x's rank."""

    def __init__(self, top_k=1, out_max_val=False, axis=None):
        super().__init__()
        self.top_k, self.out_max_val, self.axis = top_k, out_max_val, axis

    def _topk(self, v):
        n = v.shape[-1]
        vals, idx = torch.sort(v.flip(-1), dim=-1, descending=True, stable=True)
        return vals[..., : self.top_k], (n - 1 - idx[..., : self.top_k])

    def forward(self, x):
        x = x.detach()
        if self.axis is not None:
            vals, idx = self._topk(x.movedim(self.axis, -1))
            out = vals if self.out_max_val else idx.to(x.dtype)
            return out.movedim(-1, self.axis).contiguous()
        n = x.shape[0]
        vals, idx = self._topk(x.reshape(n, -1))
        parts = [idx.to(x.dtype)] + ([vals] if self.out_max_val else [])
        shape = [n, len(parts), self.top_k] + [1] * max(0, x.dim() - 3)
        return torch.stack(parts, 1).reshape(shape)
''')

_helper("Embed", '''
class Embed(nn.Module):
    """Caffe Embed: rows of the (input_dim, num_output) table at the (float, truncated)
    indices."""

    def __init__(self, input_dim, num_output, bias=True):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(input_dim, num_output))
        self.bias = nn.Parameter(torch.zeros(num_output)) if bias else None

    def forward(self, x):
        y = F.embedding(x.to(torch.long), self.weight)
        return y if self.bias is None else y + self.bias
''')

_helper("Im2col", '''
class Im2col(nn.Module):
    """Caffe Im2col: windows unfolded into channels, rows ordered (c, kh, kw)."""

    def __init__(self, axis, kernel, stride, pad, dilation, out_spatial, one_d=False):
        super().__init__()
        self.axis, self.kernel, self.stride, self.pad = axis, kernel, stride, pad
        self.dilation, self.out_spatial, self.one_d = dilation, out_spatial, one_d

    def forward(self, x):
        lead = tuple(x.shape[: self.axis])
        xb = x.reshape((-1,) + tuple(x.shape[self.axis:]))
        if self.one_d:
            xb = xb.unsqueeze(2)
        cols = F.unfold(xb, self.kernel, dilation=self.dilation, padding=self.pad,
                        stride=self.stride)
        return cols.reshape(lead + (cols.shape[1],) + self.out_spatial)
''')

_helper("Blob", '''
class Blob(nn.Module):
    """Caffe Parameter layer: outputs its learnable blob."""

    def __init__(self, shape):
        super().__init__()
        self.data = nn.Parameter(torch.zeros(shape))

    def forward(self):
        return self.data
''')

_helper("_class_last", '''
def _class_last(x, label, axis):
    """(positions, classes) scores and int labels (truncated like Caffe's static_cast)."""
    outer = math.prod(x.shape[:axis])
    inner = math.prod(x.shape[axis + 1:])
    scores = x.movedim(axis, -1).reshape(outer * inner, x.shape[axis])
    return scores, label.reshape(-1).to(torch.long), outer, inner


def _normalizer(mode, outer, inner, valid_count):
    """Caffe's LossLayer::get_normalizer (at least 1)."""
    norm = {"FULL": outer * inner, "BATCH_SIZE": outer, "NONE": 1}.get(mode)
    if norm is None:  # VALID
        norm = outer * inner if valid_count is None else valid_count
    return float(max(1, norm))
''')

_helper("SoftmaxWithLoss", '''
class SoftmaxWithLoss(nn.Module):
    """Caffe SoftmaxWithLoss: -sum log(max(prob[label], FLT_MIN)) / normalizer over the
    non-ignored positions; with `prob_top` it also returns the probabilities."""

    def __init__(self, axis=1, ignore_label=None, normalization="VALID", prob_top=False):
        super().__init__()
        self.axis, self.ignore_label = axis, ignore_label
        self.normalization, self.prob_top = normalization, prob_top

    def forward(self, x, label):
        scores, lab, outer, inner = _class_last(x, label, self.axis)
        valid = torch.ones_like(lab, dtype=torch.bool) if self.ignore_label is None \\
            else lab != self.ignore_label
        safe = torch.where(valid, lab, torch.zeros_like(lab))
        logp = torch.log_softmax(scores, 1).gather(1, safe[:, None]).squeeze(1)
        nll = -logp.clamp_min(math.log(1.1754943508222875e-38)) * valid.to(x.dtype)
        count = None if self.ignore_label is None else int(valid.sum())
        loss = nll.sum() / _normalizer(self.normalization, outer, inner, count)
        return (loss, torch.softmax(x, self.axis)) if self.prob_top else loss
''')

_helper("Accuracy", '''
class Accuracy(nn.Module):
    """Caffe Accuracy: a position is right when fewer than top_k classes score >= the
    true class (ties count against it); with `per_class` also each class's accuracy."""

    def __init__(self, top_k=1, axis=1, ignore_label=None, per_class=False):
        super().__init__()
        self.top_k, self.axis, self.ignore_label, self.per_class = (
            top_k, axis, ignore_label, per_class)

    def forward(self, x, label):
        scores, lab, _, _ = _class_last(x.detach(), label, self.axis)
        valid = torch.ones_like(lab, dtype=torch.bool) if self.ignore_label is None \\
            else lab != self.ignore_label
        safe = torch.where(valid, lab, torch.zeros_like(lab))
        better = (scores >= scores.gather(1, safe[:, None])).sum(1) - 1
        correct = (better < self.top_k) & valid
        n_valid = int(valid.sum())
        acc = correct.sum().to(x.dtype) / n_valid if n_valid else x.new_zeros(())
        if not self.per_class:
            return acc.reshape(())
        classes = scores.shape[1]
        seen = torch.bincount(safe[valid], minlength=classes).to(x.dtype)
        hit = torch.bincount(safe[correct], minlength=classes).to(x.dtype)
        return acc.reshape(()), torch.where(seen > 0, hit / seen.clamp_min(1),
                                            torch.zeros_like(seen))
''')

_helper("EuclideanLoss", '''
class EuclideanLoss(nn.Module):
    """Caffe EuclideanLoss: sum((a - b)^2) / N / 2."""

    def forward(self, a, b):
        d = a - b.reshape(a.shape)
        return (d * d).sum() / a.shape[0] / 2.0
''')

_helper("SigmoidCrossEntropyLoss", '''
class SigmoidCrossEntropyLoss(nn.Module):
    """Caffe SigmoidCrossEntropyLoss (its overflow-safe form) / normalizer."""

    def __init__(self, ignore_label=None, normalization="BATCH_SIZE"):
        super().__init__()
        self.ignore_label, self.normalization = ignore_label, normalization

    def forward(self, x, target):
        t = target.reshape(x.shape).to(x.dtype)
        pos = (x >= 0).to(x.dtype)
        per = -(x * (t - pos) - torch.log(1.0 + torch.exp(x - 2 * x * pos)))
        count = None
        if self.ignore_label is not None:
            valid = target.reshape(x.shape).to(torch.long) != self.ignore_label
            per = per * valid.to(x.dtype)
            count = int(valid.sum())
        outer = x.shape[0] if x.dim() else 1
        inner = x.numel() // max(outer, 1)
        return per.sum() / _normalizer(self.normalization, outer, inner, count)
''')

_helper("HingeLoss", '''
class HingeLoss(nn.Module):
    """Caffe HingeLoss: t = +1 at the label, -1 elsewhere; L1: sum max(0, 1 - t*x) / N,
    L2: the squares."""

    def __init__(self, norm="L1"):
        super().__init__()
        self.norm = norm

    def forward(self, x, label):
        n = x.shape[0]
        x2 = x.reshape(n, -1)
        sign = torch.full_like(x2, -1.0).scatter(1, label.reshape(-1, 1).to(torch.long), 1.0)
        margin = torch.relu(1.0 - sign * x2)
        return (margin if self.norm == "L1" else margin * margin).sum() / n
''')

_helper("MultinomialLogisticLoss", '''
class MultinomialLogisticLoss(nn.Module):
    """Caffe MultinomialLogisticLoss on probabilities: -sum log(max(p[label], 1e-20)) / N."""

    def forward(self, prob, label):
        n = prob.shape[0]
        p = prob.reshape(n, -1).gather(1, label.reshape(-1, 1).to(torch.long)).squeeze(1)
        return -torch.log(p.clamp_min(1e-20)).sum() / n
''')

_helper("ContrastiveLoss", '''
class ContrastiveLoss(nn.Module):
    """Caffe ContrastiveLoss: similar pairs add d^2, dissimilar max(margin - d, 0)^2
    (legacy_version: max(margin - d^2, 0)); the total / N / 2."""

    def __init__(self, margin=1.0, legacy_version=False):
        super().__init__()
        self.margin, self.legacy_version = margin, legacy_version

    def forward(self, a, b, similar):
        n = a.shape[0]
        diff = a.reshape(n, -1) - b.reshape(n, -1)
        dist_sq = (diff * diff).sum(1)
        if self.legacy_version:
            dissim = torch.clamp(self.margin - dist_sq, min=0.0)
        else:
            dissim = torch.clamp(self.margin - torch.sqrt(dist_sq), min=0.0) ** 2
        sim = similar.reshape(-1).to(torch.long) != 0
        return torch.where(sim, dist_sq, dissim).sum() / n / 2.0
''')

_helper("BatchReindex", '''
class BatchReindex(nn.Module):
    """Caffe BatchReindex: x[permut] along axis 0."""

    def forward(self, x, permut):
        return x.index_select(0, permut.reshape(-1).to(torch.long))
''')

_helper("Filter", '''
class Filter(nn.Module):
    """Caffe Filter: the items (axis 0) of each input whose selector (the last input) is
    non-zero; the output size depends on the data."""

    def forward(self, *xs):
        keep = torch.nonzero(xs[-1].reshape(-1) != 0).reshape(-1)
        out = tuple(x.index_select(0, keep) for x in xs[:-1])
        return out[0] if len(out) == 1 else out
''')

# helpers that use other helpers
_HELPER_DEPS = {"SoftmaxWithLoss": ("_class_last",), "Accuracy": ("_class_last",),
                "SigmoidCrossEntropyLoss": ("_class_last",)}


# =========================================================================== the table
@dataclass(frozen=True)
class Param:
    """One tensor of the generated layer module's state_dict.

    ``key`` is its path inside the layer's module (``weight``, ``conv.weight``); its value
    is Caffe blob ``blob`` (reshaped to the module's shape: same count), or ``compute``
    applied to the layer's list of blobs."""

    key: str
    blob: int | None = None
    compute: Callable[[list], Any] | None = None


@dataclass
class Emitted:
    """How one layer prints itself in the generated file."""

    ctor: str  # expression building the layer's module
    params: list[Param] = field(default_factory=list)
    helpers: tuple[str, ...] = ()  # names in HELPERS the ctor uses
    # forward expression from (module expression, argument names); default ``m(a, b)``
    call: Callable[[str, list[str]], str] | None = None
    note: str = ""  # appended to the comment above the attribute

    def wrapped(self, template: str, prefix: str, helper: str) -> "Emitted":
        """This module inside a wrapper: ``template.format(inner=ctor)``, params under
        ``prefix``."""
        return Emitted(template.format(inner=self.ctor),
                       [Param(f"{prefix}.{p.key}", p.blob, p.compute) for p in self.params],
                       self.helpers + (helper,), self.call, self.note)


@dataclass
class EmitContext:
    """What an emitter gets: the analysed layer (``info``: LayerParameter, shapes)."""

    info: "LayerInfo"
    phase: str

    @property
    def p(self) -> Any:
        return self.info.param

    @property
    def bottoms(self) -> tuple[tuple[int, ...], ...]:
        return tuple(tuple(int(d) for d in s) for s in self.info.bottom_shapes)

    @property
    def tops(self) -> tuple[tuple[int, ...], ...]:
        return tuple(tuple(int(d) for d in s) for s in self.info.top_shapes)

    def axis(self, axis: int, ndim: int | None = None) -> int:
        n = len(self.bottoms[0]) if ndim is None else ndim
        if not -n <= axis < n:
            raise self.fail(f"axis {axis} is out of range for a {n}-axis input")
        return axis + n if axis < 0 else axis

    def fail(self, what: str) -> NetdefError:
        return NetdefError(f"cannot export layer '{self.info.name}' ({self.info.type}): {what}")


Emitter = Callable[[EmitContext], Emitted]
EMITTERS: dict[str, Emitter] = {}


def emits(*types_: str) -> Callable[[Emitter], Emitter]:
    def deco(fn: Emitter) -> Emitter:
        for t in types_:
            EMITTERS[t] = fn
        return fn
    return deco


def supported_types() -> list[str]:
    """Caffe layer types the source generator can print (data layers become inputs)."""
    return sorted(EMITTERS)


# --------------------------------------------------------------------------- formatting
def _f(v: float) -> str:
    """A float32 parameter as the shortest literal that reads back to the same float32
    (``0.0001``, not ``9.999999747378752e-05``)."""
    import numpy as np

    v = float(v)
    if math.isinf(v):
        return "math.inf" if v > 0 else "-math.inf"
    if math.isnan(v):
        return "math.nan"
    return repr(float(str(np.float32(v))))


def _t(values: Sequence[int]) -> str:
    vals = tuple(int(v) for v in values)
    return "(" + ", ".join(map(str, vals)) + ("," if len(vals) == 1 else "") + ")"


def _one_or_t(values: Sequence[int]) -> str:
    vals = tuple(int(v) for v in values)
    return str(vals[0]) if len(set(vals)) == 1 else _t(vals)


def _kw(**kwargs: str | None) -> str:
    return ", ".join(f"{k}={v}" for k, v in kwargs.items() if v is not None)


def _call_flatten(axis: int) -> Callable[[str, list[str]], str]:
    return lambda m, args: f"{m}({args[0]}.flatten({axis}))"


def _weight_bias(n_blobs: int, weight: str = "weight", bias: str = "bias") -> list[Param]:
    keys = [weight, bias][:n_blobs]
    return [Param(k, i) for i, k in enumerate(keys)]


# --------------------------------------------------------------------------- vision
@emits("Convolution", "Deconvolution")
def _conv(c: EmitContext) -> Emitted:
    from netdef.layers.spatial import conv_window

    p = c.p.convolution_param
    shape = c.bottoms[0]
    axis = c.axis(p.axis)
    nsp = len(shape) - axis - 1
    if not 1 <= nsp <= 3:
        raise c.fail(f"{nsp} spatial axes (PyTorch convolutions take 1 to 3)")
    w = conv_window(p, nsp, f"layer '{c.info.name}'")
    deconv = c.info.type == "Deconvolution"
    cls = f"nn.ConvTranspose{nsp}d" if deconv else f"nn.Conv{nsp}d"
    args = [str(shape[axis]), str(p.num_output)]
    kw = _kw(kernel_size=_one_or_t(w.kernel),
             stride=None if set(w.stride) == {1} else _one_or_t(w.stride),
             padding=None if set(w.pad) == {0} else _one_or_t(w.pad),
             dilation=None if set(w.dilation) == {1} else _one_or_t(w.dilation),
             groups=None if p.group == 1 else str(p.group),
             bias=None if p.bias_term else "False")
    out = Emitted(f"{cls}({', '.join(args)}, {kw})", _weight_bias(len(c.info.params)))
    if axis != 1:
        out = out.wrapped("AxisConv({inner}, axis=" + str(axis) + ")", "conv", "AxisConv")
    if len(c.info.bottoms) > 1:
        out = out.wrapped("EachBottom({inner})", "layer", "EachBottom")
    return out


def _native_ceil_mode(hw, k, s, p, out) -> bool | None:  # noqa: ANN001
    """The ceil_mode for which torch's pooling has Caffe's output grid, or None."""
    if any(pi > ki // 2 for pi, ki in zip(p, k)):
        return None  # torch refuses pad > kernel / 2 (Caffe allows pad < kernel)
    for cm in (False, True):
        sizes = []
        for i in range(2):
            q = (hw[i] + 2 * p[i] - k[i]) / s[i]
            o = (math.ceil(q) if cm else math.floor(q)) + 1
            if cm and (o - 1) * s[i] >= hw[i] + p[i]:
                o -= 1  # torch's rule: the last window must start inside input + left pad
            sizes.append(o)
        if tuple(sizes) == tuple(out):
            return cm
    return None


def _extra_pad(hw, k, s, p, out) -> tuple[int, int]:  # noqa: ANN001
    """Right/bottom padding so that every Caffe window lies inside the padded tensor."""
    return tuple(max(0, (out[i] - 1) * s[i] + k[i] - hw[i] - p[i]) for i in range(2))


def _pool_module(method: str, hw: tuple[int, int], k: tuple[int, ...], s: tuple[int, ...],
                 pad: tuple[int, ...], out: tuple[int, ...], global_pooling: bool) -> Emitted:
    """One Caffe pooling on an (H, W) input with Caffe's output grid ``out``."""
    cm = None if method == "STOCHASTIC" else _native_ceil_mode(hw, k, s, pad, out)
    geometry = _kw(kernel_size=_one_or_t(k), stride=_one_or_t(s),
                   padding=None if set(pad) == {0} else _one_or_t(pad),
                   ceil_mode="True" if cm else None)
    if global_pooling and method in ("MAX", "AVE") and tuple(out) == (1, 1):
        cls = "nn.AdaptiveMaxPool2d" if method == "MAX" else "nn.AdaptiveAvgPool2d"
        return Emitted(f"{cls}(1)", note="global pooling")
    extra = _t(_extra_pad(hw, k, s, pad if method != "STOCHASTIC" else (0, 0), out))
    if method == "MAX":
        if cm is not None:
            return Emitted(f"nn.MaxPool2d({geometry})")
        return Emitted(f"CaffeMaxPool2d({_t(k)}, {_t(s)}, {_t(pad)}, {extra}, {_t(out)})",
                       helpers=("CaffeMaxPool2d",), note="Caffe's grid, explicit padding")
    if method == "AVE":
        if cm is not None:  # torch's divisor equals Caffe's whenever the grid matches
            return Emitted(f"nn.AvgPool2d({geometry})")
        return Emitted(f"CaffeAvgPool2d({_t(hw)}, {_t(k)}, {_t(s)}, {_t(pad)}, {extra}, "
                       f"{_t(out)})", helpers=("CaffeAvgPool2d",),
                       note="Caffe's grid, explicit padding")
    return Emitted(f"StochasticPool2d({_t(k)}, {_t(s)}, {extra}, {_t(out)})",
                   helpers=("StochasticPool2d",), note="TEST-phase weighted average")


@emits("Pooling")
def _pooling(c: EmitContext) -> Emitted:
    from netdef.layers.spatial import pool_window

    p = c.p.pooling_param
    method = p.pool.name
    hw = c.bottoms[0][2:]
    w = pool_window(p, hw, f"layer '{c.info.name}'")
    out = c.tops[0][2:]
    if len(c.info.tops) > 1:  # MAX with Caffe's mask top
        cm = _native_ceil_mode(hw, w.kernel, w.stride, w.pad, out)
        if method != "MAX" or cm is None:
            raise c.fail("the MAX pooling mask top is only exportable where torch's pooling "
                         "has Caffe's output grid")
        return Emitted(f"MaxPoolWithMask({_t(w.kernel)}, {_t(w.stride)}, {_t(w.pad)}, {cm})",
                       helpers=("MaxPoolWithMask",))
    return _pool_module(method, hw, w.kernel, w.stride, w.pad, out, bool(p.global_pooling))


@emits("SPP")
def _spp(c: EmitContext) -> Emitted:
    from netdef.layers.spatial import Window, pool_shape

    p = c.p.spp_param
    method = p.pool.name
    h, w = c.bottoms[0][2:]
    levels = []
    for level in range(p.pyramid_height):
        bins = 2 ** level
        k = (-(-h // bins), -(-w // bins))
        pad = tuple((kk * bins - size + 1) // 2 for kk, size in zip(k, (h, w)))
        out = pool_shape((h, w), Window(k, k, pad, (1, 1)), True, f"layer '{c.info.name}'")
        levels.append(_pool_module(method, (h, w), k, k, pad, out, False))
    helpers = tuple(x for lv in levels for x in lv.helpers) + ("SPP",)
    inner = ",\n    ".join(lv.ctor for lv in levels)
    return Emitted(f"SPP([\n    {inner},\n])", helpers=helpers,
                   note=f"{p.pyramid_height} level(s)")


@emits("Im2col")
def _im2col(c: EmitContext) -> Emitted:
    from netdef.layers.spatial import conv_window

    p = c.p.convolution_param
    shape = c.bottoms[0]
    axis = c.axis(p.axis)
    w = conv_window(p, len(shape) - axis - 1, f"layer '{c.info.name}'")
    if len(w.kernel) not in (1, 2):
        raise c.fail(f"Im2col over {len(w.kernel)} spatial axes (1 or 2 are supported)")
    one_d = len(w.kernel) == 1
    pre = (lambda v, d: (d,) + tuple(v)) if one_d else (lambda v, d: tuple(v))
    return Emitted(f"Im2col({axis}, {_t(pre(w.kernel, 1))}, {_t(pre(w.stride, 1))}, "
                   f"{_t(pre(w.pad, 0))}, {_t(pre(w.dilation, 1))}, "
                   f"{_t(c.tops[0][axis + 1:])}, one_d={one_d})", helpers=("Im2col",))


# --------------------------------------------------------------------------- dense
@emits("InnerProduct")
def _inner_product(c: EmitContext) -> Emitted:
    p = c.p.inner_product_param
    shape = c.bottoms[0]
    axis = c.axis(p.axis)
    k = math.prod(shape[axis:])
    bias = None if p.bias_term else "False"
    call = None if len(shape) == axis + 1 else _call_flatten(axis)
    if p.transpose:
        return Emitted(f"LinearT({k}, {p.num_output}{', bias=False' if bias else ''})",
                       _weight_bias(len(c.info.params)), ("LinearT",), call,
                       note="weight is (in, out)")
    return Emitted(f"nn.Linear({k}, {p.num_output}{', bias=False' if bias else ''})",
                   _weight_bias(len(c.info.params)), call=call)


@emits("Embed")
def _embed(c: EmitContext) -> Emitted:
    p = c.p.embed_param
    return Emitted(f"Embed({p.input_dim}, {p.num_output}, bias={bool(p.bias_term)})",
                   _weight_bias(len(c.info.params)), ("Embed",))


@emits("Parameter")
def _parameter(c: EmitContext) -> Emitted:
    return Emitted(f"Blob({_t(c.tops[0])})", [Param("data", 0)], ("Blob",))


# --------------------------------------------------------------------------- normalisation
@emits("LRN")
def _lrn(c: EmitContext) -> Emitted:
    p = c.p.lrn_param
    if p.local_size % 2 != 1:
        raise c.fail("local_size must be odd")
    if p.norm_region.name == "ACROSS_CHANNELS":
        return Emitted(f"LRN({p.local_size}, alpha={_f(p.alpha)}, beta={_f(p.beta)}, "
                       f"k={_f(p.k)})", helpers=("LRN",))
    return Emitted(f"LRNWithinChannel({p.local_size}, alpha={_f(p.alpha)}, beta={_f(p.beta)})",
                   helpers=("LRNWithinChannel",))


def _bn_stat(i: int) -> Callable[[list], Any]:
    def compute(blobs: list) -> Any:
        s = float(blobs[2].reshape(-1)[0])
        return blobs[i].detach().reshape(-1) * (0.0 if s == 0 else 1.0 / s)
    return compute


@emits("BatchNorm")
def _batch_norm(c: EmitContext) -> Emitted:
    p = c.p.batch_norm_param
    shape = c.bottoms[0]
    if len(shape) < 2:
        raise c.fail("a 1-axis input")
    channels = shape[1]
    stats = [Param("running_mean", compute=_bn_stat(0)), Param("running_var", compute=_bn_stat(1))]
    use_global = bool(p.use_global_stats) if has(p, "use_global_stats") else None
    eps = _f(p.eps)
    nd = {2: 1, 3: 1, 4: 2, 5: 3}.get(len(shape))
    if use_global is True or nd is None:
        view = _t((1, channels) + (1,) * (len(shape) - 2))
        return Emitted(f"FrozenBatchNorm({channels}, eps={eps}, view={view})", stats,
                       ("FrozenBatchNorm",), note="always the stored statistics")
    if use_global is False:
        return Emitted(f"nn.BatchNorm{nd}d({channels}, eps={eps}, affine=False, "
                       "track_running_stats=False)", note="always batch statistics")
    momentum = _f(1.0 - float(p.moving_average_fraction))
    return Emitted(f"nn.BatchNorm{nd}d({channels}, eps={eps}, momentum={momentum}, "
                   "affine=False)", stats, note="running stats = Caffe's mean/s, var/s")


@emits("MVN")
def _mvn(c: EmitContext) -> Emitted:
    p = c.p.mvn_param
    return Emitted(f"MVN(normalize_variance={bool(p.normalize_variance)}, "
                   f"across_channels={bool(p.across_channels)}, eps={_f(p.eps)})",
                   helpers=("MVN",))


def _broadcast_view(c: EmitContext, param: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(operand shape, view) of Scale/Bias: bottom 1's shape or the learned blob's."""
    shape = c.bottoms[0]
    if len(c.bottoms) == 2:
        operand = c.bottoms[1]
    else:
        axis = c.axis(param.axis)
        end = len(shape) if param.num_axes == -1 else axis + param.num_axes
        operand = shape[axis:end]
    if not operand:
        return (), ()
    axis = c.axis(param.axis)
    return operand, (1,) * axis + operand + (1,) * (len(shape) - axis - len(operand))


@emits("Scale")
def _scale(c: EmitContext) -> Emitted:
    p = c.p.scale_param
    operand, view = _broadcast_view(c, p)
    scale_input = len(c.bottoms) == 2
    keys = (["bias"] if p.bias_term else []) if scale_input else \
        (["weight"] + (["bias"] if p.bias_term else []))
    return Emitted(f"Scale({_t(operand)}, view={_t(view)}"
                   f"{', bias=True' if p.bias_term else ''}"
                   f"{', scale_input=True' if scale_input else ''})",
                   [Param(k, i) for i, k in enumerate(keys)], ("Scale",))


@emits("Bias")
def _bias(c: EmitContext) -> Emitted:
    operand, view = _broadcast_view(c, c.p.bias_param)
    bias_input = len(c.bottoms) == 2
    return Emitted(f"Bias({_t(operand)}, view={_t(view)}{', bias_input=True' if bias_input else ''})",
                   [] if bias_input else [Param("bias", 0)], ("Bias",))


# --------------------------------------------------------------------------- activations
@emits("ReLU")
def _relu(c: EmitContext) -> Emitted:
    ns = float(c.p.relu_param.negative_slope)
    return Emitted("nn.ReLU()" if ns == 0.0 else f"nn.LeakyReLU({_f(ns)})")


@emits("PReLU")
def _prelu(c: EmitContext) -> Emitted:
    shared = bool(c.p.prelu_param.channel_shared)
    n = 1 if shared else c.bottoms[0][1]
    return Emitted(f"nn.PReLU({n})", [Param("weight", 0)],
                   note="one shared slope" if shared else "")


def _simple(ctor: str, helper: str | None = None) -> Emitter:
    return lambda c: Emitted(ctor, helpers=(helper,) if helper else ())


EMITTERS.update({
    "Sigmoid": _simple("nn.Sigmoid()"),
    "TanH": _simple("nn.Tanh()"),
    "AbsVal": _simple("AbsVal()", "AbsVal"),
    "BNLL": _simple("nn.Softplus()"),
    "EuclideanLoss": _simple("EuclideanLoss()", "EuclideanLoss"),
    "MultinomialLogisticLoss": _simple("MultinomialLogisticLoss()", "MultinomialLogisticLoss"),
    "BatchReindex": _simple("BatchReindex()", "BatchReindex"),
    "Filter": _simple("Filter()", "Filter"),
})


@emits("ELU")
def _elu(c: EmitContext) -> Emitted:
    return Emitted(f"nn.ELU({_f(c.p.elu_param.alpha)})")


@emits("Power")
def _power(c: EmitContext) -> Emitted:
    p = c.p.power_param
    return Emitted(f"Power({_f(p.power)}, scale={_f(p.scale)}, shift={_f(p.shift)})",
                   helpers=("Power",))


@emits("Exp", "Log")
def _exp_log(c: EmitContext) -> Emitted:
    p = c.p.exp_param if c.info.type == "Exp" else c.p.log_param
    if p.base != -1.0 and p.base <= 0:
        raise c.fail("base must be strictly positive (or -1 for e)")
    return Emitted(f"{c.info.type}(base={_f(p.base)}, scale={_f(p.scale)}, shift={_f(p.shift)})",
                   helpers=(c.info.type,))


@emits("Threshold")
def _threshold(c: EmitContext) -> Emitted:
    return Emitted(f"Threshold({_f(c.p.threshold_param.threshold)})", helpers=("Threshold",))


@emits("Swish")
def _swish(c: EmitContext) -> Emitted:
    beta = float(c.p.swish_param.beta)
    return Emitted("nn.SiLU()") if beta == 1.0 else \
        Emitted(f"Swish({_f(beta)})", helpers=("Swish",))


@emits("Clip")
def _clip(c: EmitContext) -> Emitted:
    p = c.p.clip_param
    return Emitted(f"Clip({_f(p.min)}, {_f(p.max)})", helpers=("Clip",))


@emits("Dropout")
def _dropout(c: EmitContext) -> Emitted:
    ratio = float(c.p.dropout_param.dropout_ratio)
    if not 0.0 <= ratio < 1.0:
        raise c.fail(f"dropout_ratio must be in [0, 1), got {ratio:g}")
    return Emitted(f"nn.Dropout({_f(ratio)})", note="the identity in eval()")


@emits("Softmax")
def _softmax(c: EmitContext) -> Emitted:
    return Emitted(f"nn.Softmax(dim={c.axis(c.p.softmax_param.axis)})")


# --------------------------------------------------------------------------- structure
@emits("Eltwise")
def _eltwise(c: EmitContext) -> Emitted:
    p = c.p.eltwise_param
    op = p.operation.name
    coeffs = tuple(float(v) for v in p.coeff)
    if coeffs and op != "SUM":
        raise c.fail("coefficients are only for SUM")
    if not any(v != 1.0 for v in coeffs):
        coeffs = ()
    arg = f", coeffs=({', '.join(_f(v) for v in coeffs)})" if coeffs else ""
    return Emitted(f'Eltwise("{op}"{arg})', helpers=("Eltwise",))


def _legacy_axis(c: EmitContext, p: Any, legacy: str) -> int:
    return int(getattr(p, legacy)) if has(p, legacy) else c.axis(p.axis)


@emits("Concat")
def _concat(c: EmitContext) -> Emitted:
    return Emitted(f"Concat({_legacy_axis(c, c.p.concat_param, 'concat_dim')})",
                   helpers=("Concat",))


@emits("Slice")
def _slice(c: EmitContext) -> Emitted:
    axis = _legacy_axis(c, c.p.slice_param, "slice_dim")
    sizes = [t[axis] for t in c.tops]
    return Emitted(f"Slice({axis}, {_t(sizes)})", helpers=("Slice",))


@emits("Flatten")
def _flatten(c: EmitContext) -> Emitted:
    p = c.p.flatten_param
    return Emitted(f"nn.Flatten({c.axis(p.axis)}, {c.axis(p.end_axis)})")


@emits("Reshape")
def _reshape(c: EmitContext) -> Emitted:
    p = c.p.reshape_param
    n = len(c.bottoms[0])
    start = p.axis if p.axis >= 0 else n + p.axis + 1
    end = n if p.num_axes == -1 else start + p.num_axes
    return Emitted(f"Reshape({start}, {end}, {_t(p.shape.dim)})", helpers=("Reshape",),
                   note=f"-> {_t(c.tops[0])}")


@emits("Crop")
def _crop(c: EmitContext) -> Emitted:
    p = c.p.crop_param
    big = c.bottoms[0]
    start = c.axis(p.axis)
    offsets = tuple(int(p.offset[0]) if len(p.offset) == 1 else
                    (int(p.offset[i - start]) if p.offset else 0) for i in range(start, len(big)))
    return Emitted(f"Crop({start}, {_t(offsets)})", helpers=("Crop",))


@emits("Tile")
def _tile(c: EmitContext) -> Emitted:
    p = c.p.tile_param
    reps = [1] * len(c.bottoms[0])
    reps[c.axis(p.axis)] = int(p.tiles)
    return Emitted(f"Tile({_t(reps)})", helpers=("Tile",))


@emits("Reduction")
def _reduction(c: EmitContext) -> Emitted:
    p = c.p.reduction_param
    return Emitted(f'Reduction("{p.operation.name}", axis={c.axis(p.axis)}, '
                   f"coeff={_f(p.coeff)})", helpers=("Reduction",))


@emits("ArgMax")
def _argmax(c: EmitContext) -> Emitted:
    p = c.p.argmax_param
    axis = c.axis(p.axis) if has(p, "axis") else None
    return Emitted(f"ArgMax(top_k={p.top_k}, out_max_val={bool(p.out_max_val)}, axis={axis})",
                   helpers=("ArgMax",))


# --------------------------------------------------------------------------- losses
def _loss_args(c: EmitContext, default: str) -> tuple[int | None, str]:
    from netdef.layers.families.loss import ignore_label, normalization_mode

    return ignore_label(c.p), normalization_mode(c.p, default)


@emits("SoftmaxWithLoss")
def _softmax_loss(c: EmitContext) -> Emitted:
    ignore, norm = _loss_args(c, "VALID")
    return Emitted(f"SoftmaxWithLoss(axis={c.axis(c.p.softmax_param.axis)}, ignore_label={ignore}, "
                   f'normalization="{norm}", prob_top={len(c.info.tops) > 1})',
                   helpers=("SoftmaxWithLoss",))


@emits("SigmoidCrossEntropyLoss")
def _sigmoid_ce(c: EmitContext) -> Emitted:
    ignore, norm = _loss_args(c, "BATCH_SIZE")
    return Emitted(f'SigmoidCrossEntropyLoss(ignore_label={ignore}, normalization="{norm}")',
                   helpers=("SigmoidCrossEntropyLoss",))


@emits("HingeLoss")
def _hinge(c: EmitContext) -> Emitted:
    return Emitted(f'HingeLoss("{c.p.hinge_loss_param.norm.name}")', helpers=("HingeLoss",))


@emits("ContrastiveLoss")
def _contrastive(c: EmitContext) -> Emitted:
    p = c.p.contrastive_loss_param
    return Emitted(f"ContrastiveLoss(margin={_f(p.margin)}, "
                   f"legacy_version={bool(p.legacy_version)})", helpers=("ContrastiveLoss",))


@emits("Accuracy")
def _accuracy(c: EmitContext) -> Emitted:
    p = c.p.accuracy_param
    ignore = int(p.ignore_label) if has(p, "ignore_label") else None
    return Emitted(f"Accuracy(top_k={p.top_k}, axis={c.axis(p.axis)}, ignore_label={ignore}, "
                   f"per_class={len(c.info.tops) > 1})", helpers=("Accuracy",))


_SKIPPED = ("Split", "Silence")  # no code: a Split's tops are its bottom; Silence has no top


# =========================================================================== the generator
@dataclass
class GeneratedSource:
    """The generated file and the state_dict that goes with it."""

    source: str
    class_name: str
    state: dict[str, Any]  # generated-module key -> tensor (from the built net's blobs)
    inputs: tuple[str, ...]  # Caffe input blobs, in forward's argument order
    input_shapes: dict[str, tuple[int, ...]]
    outputs: tuple[str, ...]  # keys of forward's dict, in order
    attributes: dict[str, str]  # Caffe layer name -> attribute name
    layer_bottom_shapes: dict[str, tuple[tuple[int, ...], ...]]  # attribute -> bottom shapes


_RESERVED = {"self", "torch", "nn", "F", "math"}


class _Names:
    """Python identifiers from Caffe names: unique, never a keyword, never shadowing."""

    def __init__(self, taken: set[str] = frozenset(), avoid_attr_of: type | None = None):
        self.used = set(taken)
        self.avoid = avoid_attr_of

    def make(self, name: str, prefix: str) -> str:
        ident = "".join(ch if ch.isalnum() and ch.isascii() or ch == "_" else "_" for ch in name)
        ident = ident or prefix
        if ident[0].isdigit():
            ident = f"{prefix}_{ident}"
        if keyword.iskeyword(ident) or ident in _RESERVED or (
                self.avoid is not None and hasattr(self.avoid, ident)) or ident.startswith("__"):
            ident = f"{prefix}_{ident.lstrip('_')}"
        base, n = ident, 1
        while ident in self.used:
            n += 1
            ident = f"{base}_{n}"
        self.used.add(ident)
        return ident


def class_name_for(net_name: str) -> str:
    """``"AlexNet"`` → ``AlexNet``, ``"CIFAR10_quick"`` → ``CIFAR10Quick``."""
    parts = [s for s in "".join(ch if ch.isalnum() and ch.isascii() else " "
                                for ch in net_name or "").split() if s]
    ident = "".join(s[0].upper() + s[1:] for s in parts) or "Net"
    if ident[0].isdigit() or keyword.iskeyword(ident) or ident in _RESERVED:
        ident = "Net" + ident
    return ident


def _emit(info: "LayerInfo", phase: str, lowered: Any) -> Emitted:
    hook = getattr(lowered, "export_source", None)
    ctx = EmitContext(info, phase)
    if callable(hook):
        out = hook(ctx)
        if out is not None:
            return out
    fn = EMITTERS.get(info.type)
    if fn is None:
        raise _unsupported(info)
    return fn(ctx)


def _unsupported(info: "LayerInfo") -> NetdefError:
    return NetdefError(f"cannot export layer '{info.name}': layer type {info.type} has no "
                       "PyTorch source emitter (netdef export supports "
                       f"{len(EMITTERS)} types; see netdef.export.pysource.supported_types())")


def check_supported(analysis: "NetAnalysis") -> None:
    """Refuse (NetdefError naming the type) before any work if a layer cannot be printed."""
    for info in analysis.layers:
        if info.defn.is_data or info.type in _SKIPPED or info.is_split:
            continue
        if info.type not in EMITTERS:
            raise _unsupported(info)


def _output_names(analysis: "NetAnalysis", module: Any) -> tuple[str, ...]:
    """The keys of the built net's output dict (Caffe's outputs + loss-weighted tops)."""
    graph = getattr(module, "graph", None)
    if graph is not None:
        for node in graph.nodes:
            if node.op == "output" and isinstance(node.args[0], dict):
                return tuple(node.args[0])
    outs = list(analysis.outputs)
    for info in analysis.layers:
        for t, w in zip(info.tops, info.loss_weights):
            if w and t not in outs:
                outs.append(t)
    return tuple(outs)


def _comment(text: str) -> str:
    return " ".join(str(text).split())


def generate(analysis: "NetAnalysis", module: Any = None, *, class_name: str | None = None,
             source_label: str | None = None, weights_name: str = "weights.pt",
             module_name: str = "net") -> GeneratedSource:
    """Print ``analysis`` (as built into ``module``, whose blobs become the state) as
    PyTorch source.  ``module`` may be None: the state is then empty."""
    from netdef import __version__
    from netdef.lowering.weights import layer_blobs

    check_supported(analysis)
    lowered = dict(module.named_children()) if module is not None else {}
    blobs = layer_blobs(module) if module is not None else {}
    cls = class_name or class_name_for(analysis.name)
    attrs = _Names({cls}, _module_base())
    local = _Names({cls} | set(HELPERS) | set(dir(builtins)))

    env: dict[str, str] = {}  # blob -> local variable
    inputs: list[str] = []
    init: list[str] = []
    body: list[str] = []
    used_helpers: list[str] = []
    state: dict[str, Any] = {}
    keys: dict[tuple[str, int], tuple[str, Param]] = {}  # (layer, blob) -> (state key, Param)
    attributes: dict[str, str] = {}
    bottom_shapes: dict[str, tuple[tuple[int, ...], ...]] = {}

    def var_for(blob: str) -> str:
        if blob not in env:
            env[blob] = local.make(blob, "b")
        return env[blob]

    for info in analysis.layers:
        if info.defn.is_data:
            for top in info.tops:
                inputs.append(top)
                var_for(top)
            continue
        if info.is_split or info.type == "Split":
            for top in info.tops:
                env[top] = env[info.bottoms[0]]
            continue
        if info.type == "Silence":
            body.append(f"# {_comment(info.name)} (Silence): drops "
                        f"{', '.join(_comment(b) for b in info.bottoms)}")
            continue
        em = _emit(info, analysis.phase, lowered.get(info.name))
        attr = attrs.make(info.name, "layer")
        attributes[info.name] = attr
        bottom_shapes[attr] = tuple(tuple(int(d) for d in b) for b in info.bottom_shapes)
        for h in em.helpers:
            for dep in (*_HELPER_DEPS.get(h, ()), h):
                if dep not in used_helpers:
                    used_helpers.append(dep)
        summary = info.defn.summary(info.param)
        head = info.name if info.name == attr else f"'{info.name}'"
        text = f"{head}: {info.type}" + (f" {summary}" if summary else "")
        if em.note:
            text += f" ({em.note})"
        init.append(f"# {_comment(text)}")
        init.append(f"self.{attr} = {em.ctor}")
        # parameters: own blobs to the state, shared ones tied to their owner
        layer_arrays = blobs.get(info.name, [])
        for prm in em.params:
            if prm.blob is not None:
                owner = info.params[prm.blob].owner if prm.blob < len(info.params) else None
                if owner is not None:
                    if owner not in keys or keys[owner][1].blob is None:
                        raise NetdefError(f"cannot export layer '{info.name}': its blob "
                                          f"{prm.blob} is shared with layer '{owner[0]}' in a "
                                          "way the generated module cannot tie")
                    init.append(f"self.{attr}.{prm.key} = self.{keys[owner][0]}  "
                                f"# shared with '{_comment(owner[0])}'")
                    keys[(info.name, prm.blob)] = keys[owner]
                    continue
                keys[(info.name, prm.blob)] = (f"{attr}.{prm.key}", prm)
                if layer_arrays:
                    state[f"{attr}.{prm.key}"] = layer_arrays[prm.blob].detach()
            elif layer_arrays:
                state[f"{attr}.{prm.key}"] = prm.compute(layer_arrays)
        args = [var_for(b) for b in info.bottoms]
        call = em.call(f"self.{attr}", args) if em.call else f"self.{attr}({', '.join(args)})"
        outs = [var_for(t) for t in info.tops]
        if not outs:
            body.append(call)
        else:
            body.append(f"{', '.join(outs)} = {call}")

    outputs = _output_names(analysis, module)
    input_shapes = {b: tuple(int(d) for d in analysis.blobs[b]) for b in inputs}
    in_args = [env[b] for b in inputs]
    out_lines = [f"{json.dumps(o, ensure_ascii=False)}: {env[o]}," for o in outputs]

    lines: list[str] = []
    lines.append(_docstring(analysis, cls, __version__, source_label, weights_name, module_name,
                            input_shapes, in_args, outputs,
                            {o: analysis.blobs.get(o) for o in outputs}))
    lines.append("import math\n\nimport torch\nimport torch.nn.functional as F\nfrom torch import nn\n")
    lines.append(f'__all__ = ["{cls}", "INPUTS", "OUTPUTS"]\n')
    lines.append("# Caffe input blobs and the shapes the net was exported for (forward's arguments)")
    lines.append("INPUTS = {" + ", ".join(f"{json.dumps(b, ensure_ascii=False)}: {_t(s)}"
                                          for b, s in input_shapes.items()) + "}")
    lines.append("# Caffe output blobs: the keys of forward's dict, in Caffe's order")
    lines.append("OUTPUTS = (" + "".join(f"{json.dumps(o, ensure_ascii=False)}, "
                                         for o in outputs).rstrip() + ")\n")
    for h in [h for h in HELPERS if h in used_helpers]:
        lines.append("\n" + HELPERS[h])
    lines.append("")
    lines.append(f"class {cls}(nn.Module):")
    lines.append(f'    """Caffe net {json.dumps(analysis.name or "", ensure_ascii=False)} '
                 f"(phase {analysis.phase}): forward returns a dict of OUTPUTS.\"\"\"\n")
    lines.append("    def __init__(self):")
    lines.append("        super().__init__()")
    lines.extend(f"        {ln}" for entry in init for ln in entry.split("\n"))
    lines.append("")
    lines.append(f"    def forward(self{''.join(', ' + a for a in in_args)}):")
    lines.extend(f"        {ln}" for ln in body)
    lines.append("        return {")
    lines.extend(f"            {ln}" for ln in out_lines)
    lines.append("        }")
    source = "\n".join(lines) + "\n"
    compile(source, f"{module_name}.py", "exec")  # a generator bug must not reach the disk
    return GeneratedSource(source, cls, state, tuple(inputs), input_shapes, outputs, attributes,
                           bottom_shapes)


def _module_base() -> type:
    from torch import nn

    return nn.Module


def _docstring(analysis: "NetAnalysis", cls: str, version: str, source_label: str | None,
               weights_name: str, module_name: str, input_shapes: dict, in_args: Sequence[str],
               outputs: Sequence[str], output_shapes: dict) -> str:
    src = f" from {source_label}" if source_label else ""
    ins = "\n".join(f"    {b}: {_t(s)}" for b, s in input_shapes.items()) or "    (none)"
    outs = "\n".join(f"    {o}: {_t(output_shapes[o]) if output_shapes.get(o) is not None else '?'}"
                     for o in outputs)
    args = ", ".join(in_args)
    text = f'''"""Caffe net {json.dumps(analysis.name or "", ensure_ascii=False)} as a standalone PyTorch module.

Generated by netdef {version}{src} (phase {analysis.phase}).  Needs only torch.

    import torch
    from {module_name} import {cls}

    net = {cls}().eval()
    net.load_state_dict(torch.load("{weights_name}", weights_only=True))
    outputs = net({args})  # dict: Caffe output blob -> tensor

Inputs (forward's arguments, in this order; the shapes exported for):

{ins}

Outputs (the keys of forward's dict, in Caffe's order):

{outs}

Layers are attributes named after Caffe's layers (a comment above each names the
original layer); state_dict keys are "<attribute>.<parameter>".  Caffe numerics that
torch's layers lack are small helper modules in this file.  Notes: use eval() for
inference (Dropout is then the identity); BatchNorm running statistics are Caffe's
mean/s and var/s; pooling uses ceil_mode where torch's grid equals Caffe's, else
explicit padding; LRN (across channels) is nn.LocalResponseNorm's (Caffe's) formula.
"""
'''
    return text


# =========================================================================== loading
def instantiate(gen: GeneratedSource, module_name: str = "netdef_generated") -> "nn.Module":
    """Run the generated source in a fresh module namespace, build the class, load the
    state (checking every key and count) and return it in eval mode.

    When the state covers every parameter, torch's random initialisation is skipped while
    constructing (it would be overwritten; for AlexNet it costs a second)."""
    mod = types.ModuleType(module_name)
    mod.__file__ = f"<netdef export {module_name}>"
    exec(compile(gen.source, mod.__file__, "exec"), mod.__dict__)  # noqa: S102 - our own text
    cls = getattr(mod, gen.class_name)
    if gen.state:
        with _SkipRandomInit.mode():
            net = cls()
        # tied parameters are one object: covered when any of their names is in the state
        covered = {id(p) for k, p in net.named_parameters() if k in gen.state}
        if any(id(p) not in covered for p in net.parameters()):
            net = cls()  # not all from Caffe blobs (should not happen): keep torch's init
    else:
        net = cls()
    sd = net.state_dict()
    for key, value in gen.state.items():
        if key not in sd:
            raise NetdefError(f"internal export error: generated module has no '{key}'")
        target = sd[key]
        if target.numel() != value.numel():
            raise NetdefError(f"internal export error: '{key}' has {target.numel()} values, "
                              f"the Caffe blob {value.numel()}")
        sd[key] = value.detach().reshape(target.shape).to(target.dtype)
    net.load_state_dict(sd)
    return net.eval()


class _SkipRandomInit:
    """A TorchFunctionMode (thread-local, scoped) that turns torch.nn.init's random fills
    into no-ops while a generated module is constructed."""

    _NAMES = frozenset({"uniform_", "normal_", "kaiming_uniform_", "kaiming_normal_",
                        "xavier_uniform_", "xavier_normal_", "trunc_normal_", "orthogonal_"})
    _mode_cls: type | None = None

    @classmethod
    def mode(cls) -> Any:
        if cls._mode_cls is None:
            from torch.overrides import TorchFunctionMode

            names = cls._NAMES

            class SkipInit(TorchFunctionMode):
                def __torch_function__(self, func, types_, args=(), kwargs=None):  # noqa: ANN001, ANN204
                    if getattr(func, "__name__", "") in names and args:
                        return args[0]
                    return func(*args, **(kwargs or {}))

            cls._mode_cls = SkipInit
        return cls._mode_cls()
