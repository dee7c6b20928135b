"""Loss layers and Accuracy.

Every loss outputs a scalar (shape ``()``; Caffe prints it as ``(1)``) with loss
weight 1 on top 0.  Caffe's ``LossLayer`` checks that prediction and label agree
in their first dim and refuses ``force_backward`` into the label (bottom 1);
EuclideanLoss allows it into both, ContrastiveLoss into all but the similarity
bottom 2.  Accuracy is not a ``LossLayer`` and does not override
``AllowForceBackward`` (every bottom allowed, like Caffe).

Counting convention (FLOPs, no MACs; "element" = element of bottom 0):
SoftmaxWithLoss 3 per element (softmax) + 1 per label (log); InfogainLoss 5 per
element (softmax 3, log, multiply-add with H); EuclideanLoss 3 (subtract, square,
add); SigmoidCrossEntropyLoss 4; HingeLoss 3; ContrastiveLoss 3 (+3 per pair);
MultinomialLogisticLoss 1 per label; Accuracy 1 compare per element.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from netdef.layers.families._util import canonical_axis, count, fail, need_bottoms
from netdef.layers.registry import (Counts, LayerDef, LayerMemory, MemoryContext, Saved,
                                    Shape, ShapeContext, nbytes, register)

if TYPE_CHECKING:  # pragma: no cover
    from netdef.ir.messages import LayerParameter


def _legacy(shape: Shape, i: int) -> int:
    """Caffe's ``LegacyShape``: missing trailing axes read as 1."""
    return shape[i] if i < len(shape) else 1


class _Loss(LayerDef):
    bottoms = (2, 2)
    tops = (1, 1)
    is_loss = True
    category = "loss"
    per_element = 1  # FLOPs per prediction element (module doc)
    per_label = 0

    def allow_force_backward(self, layer: "LayerParameter", bottom_index: int) -> bool:
        return bottom_index != 1

    def check(self, layer: "LayerParameter", bottoms: Sequence[Shape]) -> None:
        """Caffe's LossLayer::Reshape: same first dim; subclasses add their own checks."""
        need_bottoms(layer, bottoms, self.bottoms[0], self.bottoms[1])
        if not bottoms[0] or not bottoms[1] or bottoms[0][0] != bottoms[1][0]:
            raise fail(layer, f"prediction {tuple(bottoms[0])} and label {tuple(bottoms[1])} "
                              "must have the same first dimension")

    def shapes(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               ctx: ShapeContext) -> list[Shape]:
        self.check(layer, bottoms)
        return [()]

    def counts(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape]) -> Counts:
        return Counts(0, self.per_element * count(bottoms[0]) + self.per_label * count(bottoms[1]))

    def memory(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape], ctx: MemoryContext) -> LayerMemory:
        """Default loss: keeps the prediction; labels get no gradient."""
        return LayerMemory(saved=(Saved("bottom", 0),), no_grad_bottoms=(1,))


def _check_labels(layer: "LayerParameter", pred: Shape, label: Shape, axis: int) -> int:
    """Labels must number outer·inner around the class ``axis``; returns the axis."""
    axis = canonical_axis(layer, axis, pred)
    if count(pred, 0, axis) * count(pred, axis + 1) != count(label):
        raise fail(layer, f"number of labels ({count(label)} in {tuple(label)}) must match "
                          f"the number of predictions ({tuple(pred)} without axis {axis})",
                   hint="with axis 1 and predictions (N, C, H, W) the label count must be N·H·W")
    return axis


@register
class SoftmaxWithLoss(_Loss):
    """Softmax + multinomial log loss; an optional 2nd top gives the probabilities."""

    type = "SoftmaxWithLoss"
    param_field = "softmax_param"
    v1_type = "SOFTMAX_LOSS"
    tops = (1, 2)
    per_element, per_label = 3, 1

    def shapes(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               ctx: ShapeContext) -> list[Shape]:
        self.check(layer, bottoms)
        _check_labels(layer, bottoms[0], bottoms[1], layer.softmax_param.axis)
        return [()] + ([tuple(bottoms[0])] if len(layer.top) > 1 else [])

    def lower(self, layer: "LayerParameter", ctx: Any) -> Any:
        return _define()["SoftmaxWithLossModule"](
            layer.softmax_param.axis, ignore_label(layer), normalization_mode(layer, "VALID"),
            _n_tops(layer))

    def memory(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape], ctx: MemoryContext) -> LayerMemory:
        """Keeps the log-softmax (bottom-sized, read by its backward and by the gather's),
        the int64 labels (the gather's index) and the float valid mask: 12 bytes a label.
        The probabilities are computed either way (a temporary unless they are top 1;
        without autograd the log-softmax is gone by then); a class axis with positions
        after it is moved last by a copy; the label checks make ~16 bytes a label.  The
        backward scatters into a zero-filled bottom-sized tensor first."""
        size, labels = nbytes(bottoms[0]), count(bottoms[1])
        axis = canonical_axis(layer, layer.softmax_param.axis, bottoms[0])
        copy = size if count(bottoms[0], axis + 1) > 1 else 0
        prob = size if len(tops) < 2 and ctx.grad else 0
        return LayerMemory(saved=(Saved("new", nbytes=size), Saved("new", nbytes=12 * labels)),
                           no_grad_bottoms=(1,), no_grad_tops=(1,),
                           workspace=copy + prob + 16 * labels, backward_workspace=size)


@register
class EuclideanLoss(_Loss):
    type = "EuclideanLoss"
    v1_type = "EUCLIDEAN_LOSS"
    per_element = 3

    def allow_force_backward(self, layer: "LayerParameter", bottom_index: int) -> bool:
        return True

    def check(self, layer: "LayerParameter", bottoms: Sequence[Shape]) -> None:
        super().check(layer, bottoms)
        if count(bottoms[0], 1) != count(bottoms[1], 1):
            raise fail(layer, f"inputs must have the same dimension: {tuple(bottoms[0])} vs "
                              f"{tuple(bottoms[1])}")

    def lower(self, layer: "LayerParameter", ctx: Any) -> Any:
        return _define()["EuclideanLossModule"]()

    def memory(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape], ctx: MemoryContext) -> LayerMemory:
        """``d = a − b`` is kept (its square's backward reads it); the square is a
        temporary.  Backward: d's diff lives only until the two bottom diffs exist."""
        size = nbytes(bottoms[0])
        return LayerMemory(saved=(Saved("new", nbytes=size),), workspace=size)


@register
class HingeLoss(_Loss):
    type = "HingeLoss"
    param_field = "hinge_loss_param"
    v1_type = "HINGE_LOSS"
    per_element = 3

    def summary(self, layer: "LayerParameter") -> str:
        return layer.hinge_loss_param.norm.name

    def lower(self, layer: "LayerParameter", ctx: Any) -> Any:
        return _define()["HingeLossModule"](layer.hinge_loss_param.norm.name)

    def memory(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape], ctx: MemoryContext) -> LayerMemory:
        """Keeps the ±1 sign tensor and the margins (relu's output)."""
        size = nbytes(bottoms[0])
        return LayerMemory(saved=(Saved("new", nbytes=size),) * 2, no_grad_bottoms=(1,),
                           workspace=size)


@register
class InfogainLoss(_Loss):
    """Softmax + loss weighted by an infogain matrix H (file ``source`` or bottom 2)."""

    type = "InfogainLoss"
    param_field = "infogain_loss_param"
    v1_type = "INFOGAIN_LOSS"
    bottoms = (2, 3)
    tops = (1, 2)
    per_element = 5

    def shapes(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               ctx: ShapeContext) -> list[Shape]:
        self.check(layer, bottoms)
        axis = _check_labels(layer, bottoms[0], bottoms[1], layer.infogain_loss_param.axis)
        labels = bottoms[0][axis]
        if len(bottoms) == 3 and count(bottoms[2]) != labels * labels:
            raise fail(layer, f"infogain matrix {tuple(bottoms[2])} must be {labels}×{labels}")
        return [()] + ([tuple(bottoms[0])] if len(layer.top) > 1 else [])

    def lower(self, layer: "LayerParameter", ctx: Any) -> Any:
        """H comes from bottom 2 when given, else from the ``source`` BlobProto (read now,
        like Caffe's LayerSetUp; relative paths: cwd first, then the net file's folder)."""
        import numpy as np
        import torch

        from netdef.errors import NetdefError
        from netdef.ir.schema import loc_of

        p = layer.infogain_loss_param
        h = None
        if len(layer.bottom) < 3:
            if not p.source:
                raise NetdefError(f"layer '{layer.name}' (InfogainLoss): the infogain matrix "
                                  "source must be specified", loc=loc_of(layer),
                                  hint='set infogain_loss_param { source: "H.binaryproto" } '
                                       "or give H as a third bottom")
            from netdef.io.blobs import read_blobproto
            arr = read_blobproto(_find_source(layer, p.source))
            info = getattr(ctx, "info", None)
            if info is not None:  # Caffe's Reshape check: H is num_labels × num_labels
                pred = info.bottom_shapes[0]
                labels = pred[canonical_axis(layer, p.axis, pred)]
                if arr.size != labels * labels:
                    raise NetdefError(f"layer '{layer.name}' (InfogainLoss): the infogain "
                                      f"matrix in '{p.source}' has shape {arr.shape}, "
                                      f"need {labels}×{labels}", loc=loc_of(layer))
            h = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
        return _define()["InfogainLossModule"](p.axis, ignore_label(layer),
                                              normalization_mode(layer, "VALID"), h,
                                              _n_tops(layer))

    def memory(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape], ctx: MemoryContext) -> LayerMemory:
        """Keeps the log-softmax, its clamped form and the gathered H rows."""
        size = nbytes(bottoms[0])
        return LayerMemory(saved=(Saved("new", nbytes=size),) * 3, no_grad_tops=(1,),
                           no_grad_bottoms=tuple(range(1, len(bottoms))), workspace=2 * size,
                           backward_workspace=size)


@register
class MultinomialLogisticLoss(_Loss):
    """-log p[label]: expects probabilities and a (N, 1, 1, 1) label."""

    type = "MultinomialLogisticLoss"
    v1_type = "MULTINOMIAL_LOGISTIC_LOSS"
    per_element, per_label = 0, 1

    def check(self, layer: "LayerParameter", bottoms: Sequence[Shape]) -> None:
        super().check(layer, bottoms)
        if any(_legacy(bottoms[1], i) != 1 for i in (1, 2, 3)):
            raise fail(layer, f"label {tuple(bottoms[1])} must hold one value per item "
                              "(N, 1, 1, 1)")

    def lower(self, layer: "LayerParameter", ctx: Any) -> Any:
        return _define()["MultinomialLogisticLossModule"]()

    def memory(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape], ctx: MemoryContext) -> LayerMemory:
        """``gather`` keeps the probabilities."""
        return LayerMemory(saved=(Saved("bottom", 0),), no_grad_bottoms=(1,))


@register
class SigmoidCrossEntropyLoss(_Loss):
    type = "SigmoidCrossEntropyLoss"
    v1_type = "SIGMOID_CROSS_ENTROPY_LOSS"
    per_element = 4

    def check(self, layer: "LayerParameter", bottoms: Sequence[Shape]) -> None:
        super().check(layer, bottoms)
        if count(bottoms[0]) != count(bottoms[1]):
            raise fail(layer, f"inputs must have the same count: {tuple(bottoms[0])} vs "
                              f"{tuple(bottoms[1])}")

    def lower(self, layer: "LayerParameter", ctx: Any) -> Any:
        return _define()["SigmoidCrossEntropyLossModule"](
            ignore_label(layer), normalization_mode(layer, "BATCH_SIZE"))

    def memory(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape], ctx: MemoryContext) -> LayerMemory:
        """Caffe's overflow-safe formula in torch ops: ``t − [x≥0]``, the indicator, the
        exp and the log's input are kept (4 bottom-sized tensors)."""
        size = nbytes(bottoms[0])  # (without autograd ~4 bottom-sized tensors at a time)
        return LayerMemory(saved=(Saved("new", nbytes=size),) * 4, no_grad_bottoms=(1,),
                           workspace=3 * size if ctx.grad else 0, backward_workspace=size)


@register
class ContrastiveLoss(_Loss):
    """Siamese loss on feature pairs (N, C, 1, 1) and a similarity label (N, 1, 1, 1)."""

    type = "ContrastiveLoss"
    param_field = "contrastive_loss_param"
    v1_type = "CONTRASTIVE_LOSS"
    bottoms = (3, 3)
    per_element, per_label = 3, 3

    def allow_force_backward(self, layer: "LayerParameter", bottom_index: int) -> bool:
        return bottom_index != 2

    def check(self, layer: "LayerParameter", bottoms: Sequence[Shape]) -> None:
        super().check(layer, bottoms)
        a, b, sim = bottoms
        if _legacy(a, 1) != _legacy(b, 1) or any(_legacy(x, i) != 1
                                                 for x in (a, b) for i in (2, 3)):
            raise fail(layer, f"the two features must be (N, C, 1, 1) alike: "
                              f"{tuple(a)} vs {tuple(b)}")
        if any(_legacy(sim, i) != 1 for i in (1, 2, 3)):
            raise fail(layer, f"the similarity label {tuple(sim)} must be (N, 1, 1, 1)")

    def counts(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape]) -> Counts:
        return Counts(0, 3 * count(bottoms[0]) + 3 * count(bottoms[2]))

    def lower(self, layer: "LayerParameter", ctx: Any) -> Any:
        p = layer.contrastive_loss_param
        return _define()["ContrastiveLossModule"](float(p.margin), bool(p.legacy_version))

    def memory(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape], ctx: MemoryContext) -> LayerMemory:
        """netdef's Function keeps ``a − b`` (and per-pair scalars)."""
        size = nbytes(bottoms[0])
        return LayerMemory(saved=(Saved("new", nbytes=size),), no_grad_bottoms=(2,),
                           workspace=size, backward_workspace=size)


@register
class Accuracy(LayerDef):
    """Top-k accuracy (scalar); an optional 2nd top gives per-class accuracy (C,)."""

    type = "Accuracy"
    param_field = "accuracy_param"
    v1_type = "ACCURACY"
    bottoms = (2, 2)
    tops = (1, 2)
    category = "other"

    def shapes(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               ctx: ShapeContext) -> list[Shape]:
        need_bottoms(layer, bottoms, 2, 2)
        p, pred, label = layer.accuracy_param, tuple(bottoms[0]), tuple(bottoms[1])
        if p.top_k > count(pred) // max(count(label), 1):
            raise fail(layer, f"top_k {p.top_k} exceeds the number of classes")
        axis = _check_labels(layer, pred, label, p.axis)
        return [()] + ([(pred[axis],)] if len(layer.top) > 1 else [])

    def counts(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape]) -> Counts:
        return Counts(0, count(bottoms[0]))

    def summary(self, layer: "LayerParameter") -> str:
        k = layer.accuracy_param.top_k
        return f"top-{k}" if k != 1 else ""

    def lower(self, layer: "LayerParameter", ctx: Any) -> Any:
        from netdef.ir.schema import has

        p = layer.accuracy_param
        ignore = int(p.ignore_label) if has(p, "ignore_label") else None
        return _define()["AccuracyModule"](int(p.top_k), int(p.axis), ignore, _n_tops(layer))

    def memory(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape], ctx: MemoryContext) -> LayerMemory:
        """Detached: a bool per score (``scores >= true``), summed through an int64
        copy; no node."""
        return LayerMemory(differentiable=False, workspace=nbytes(bottoms[0], 9))


# --- lowering -------------------------------------------------------------------------
#
# Each loss lowers to a small ``LayerModule`` calling :mod:`netdef.lowering.ops.loss`.
# The module returns the *unweighted* loss as a 0-dim tensor (Caffe's top shape ``()``);
# the builder applies ``loss_weight``.  Labels arrive as float tensors (Caffe stores
# labels as float) and are truncated to int inside the ops, like Caffe's
# ``static_cast<int>``.  The torch classes are defined on first use (so that importing
# the registry never imports torch) and are reachable as attributes of this module
# (PEP 562 ``__getattr__``), so lowered nets pickle.

_LOWERED = ("SoftmaxWithLossModule", "InfogainLossModule", "SigmoidCrossEntropyLossModule",
            "EuclideanLossModule", "HingeLossModule", "MultinomialLogisticLossModule",
            "ContrastiveLossModule", "AccuracyModule")
_CLASSES: dict[str, type] = {}


def normalization_mode(layer: "LayerParameter", default: str = "VALID") -> str:
    """Caffe's choice of ``LossParameter`` normalization for a layer.

    An explicit ``normalization`` wins; else the legacy ``normalize`` (true: VALID,
    false: BATCH_SIZE); else the layer's default (VALID for SoftmaxWithLoss and
    InfogainLoss — caffe.proto's default — and BATCH_SIZE for SigmoidCrossEntropyLoss).
    """
    from netdef.ir.schema import has

    lp = layer.loss_param
    if has(lp, "normalization"):
        return lp.normalization.name
    if has(lp, "normalize"):
        return "VALID" if lp.normalize else "BATCH_SIZE"
    return default


def ignore_label(layer: "LayerParameter") -> int | None:
    """``loss_param.ignore_label`` if set (Caffe's ``has_ignore_label``), else None."""
    from netdef.ir.schema import has

    return int(layer.loss_param.ignore_label) if has(layer.loss_param, "ignore_label") else None


def _find_source(layer: "LayerParameter", path: str) -> str:
    """A file named in a layer param, as Caffe opens it (cwd), else beside the net file."""
    import os

    from netdef.ir.schema import loc_of

    if os.path.exists(path) or os.path.isabs(path):
        return path
    loc = loc_of(layer)
    if loc is not None and loc.file:
        cand = os.path.join(os.path.dirname(os.path.abspath(loc.file)), path)
        if os.path.exists(cand):
            return cand
    return path


def _define() -> dict[str, type]:
    """Build the torch module classes once (torch is imported here, not at import time)."""
    if _CLASSES:
        return _CLASSES
    import torch

    from netdef.lowering import functional as CF
    from netdef.lowering.module import LayerModule

    class _LossModule(LayerModule):
        def __init__(self, n_tops: int = 1) -> None:
            super().__init__()
            self.n_tops = n_tops

    class SoftmaxWithLossModule(_LossModule):
        """Softmax + multinomial log loss; 2nd top (optional): the softmax probabilities."""

        def __init__(self, axis: int, ignore: int | None, normalization: str,
                     n_tops: int = 1) -> None:
            super().__init__(n_tops)
            self.axis, self.ignore_label, self.normalization = axis, ignore, normalization

        def forward(self, x: torch.Tensor, label: torch.Tensor):
            loss, prob = CF.softmax_with_loss(x, label, self.axis, self.ignore_label,
                                              self.normalization)
            return (loss, prob) if self.n_tops > 1 else loss

        def extra_repr(self) -> str:
            return (f"axis={self.axis}, ignore_label={self.ignore_label}, "
                    f"normalization={self.normalization}")

    class InfogainLossModule(_LossModule):
        """Softmax + infogain-weighted log loss; H from the ``source`` file or bottom 2."""

        def __init__(self, axis: int, ignore: int | None, normalization: str,
                     infogain: torch.Tensor | None, n_tops: int = 1) -> None:
            super().__init__(n_tops)
            self.axis, self.ignore_label, self.normalization = axis, ignore, normalization
            # not persistent: state_dict keys stay Caffe's learnable blobs only
            self.register_buffer("infogain", infogain, persistent=False)

        def forward(self, x: torch.Tensor, label: torch.Tensor,
                    infogain: torch.Tensor | None = None):
            h = self.infogain if infogain is None else infogain
            if h is None:
                raise RuntimeError("InfogainLoss needs the infogain matrix as bottom 2")
            loss, prob = CF.infogain_loss(x, label, h, self.axis, self.ignore_label,
                                          self.normalization)
            return (loss, prob) if self.n_tops > 1 else loss

        def extra_repr(self) -> str:
            return (f"axis={self.axis}, ignore_label={self.ignore_label}, "
                    f"normalization={self.normalization}")

    class SigmoidCrossEntropyLossModule(_LossModule):
        def __init__(self, ignore: int | None, normalization: str) -> None:
            super().__init__()
            self.ignore_label, self.normalization = ignore, normalization

        def forward(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return CF.sigmoid_cross_entropy_loss(x, target, self.ignore_label,
                                                 self.normalization)

        def extra_repr(self) -> str:
            return f"ignore_label={self.ignore_label}, normalization={self.normalization}"

    class EuclideanLossModule(_LossModule):
        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return CF.euclidean_loss(a, b)

    class HingeLossModule(_LossModule):
        def __init__(self, norm: str) -> None:
            super().__init__()
            self.norm = norm

        def forward(self, x: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
            return CF.hinge_loss(x, label, self.norm)

        def extra_repr(self) -> str:
            return f"norm={self.norm}"

    class MultinomialLogisticLossModule(_LossModule):
        def forward(self, prob: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
            return CF.multinomial_logistic_loss(prob, label)

    class ContrastiveLossModule(_LossModule):
        def __init__(self, margin: float, legacy_version: bool) -> None:
            super().__init__()
            self.margin, self.legacy_version = margin, legacy_version

        def forward(self, a: torch.Tensor, b: torch.Tensor, similar: torch.Tensor):
            return CF.contrastive_loss(a, b, similar, self.margin, self.legacy_version)

        def extra_repr(self) -> str:
            return f"margin={self.margin:g}, legacy_version={self.legacy_version}"

    class AccuracyModule(LayerModule):
        """Top-k accuracy (no gradient); 2nd top (optional): per-class accuracy."""

        def __init__(self, top_k: int, axis: int, ignore: int | None, n_tops: int = 1) -> None:
            super().__init__()
            self.top_k, self.axis, self.ignore_label, self.n_tops = top_k, axis, ignore, n_tops

        def forward(self, x: torch.Tensor, label: torch.Tensor):
            acc, per_class = CF.accuracy(x, label, self.top_k, self.axis, self.ignore_label)
            return (acc, per_class) if self.n_tops > 1 else acc

        def extra_repr(self) -> str:
            return f"top_k={self.top_k}, axis={self.axis}, ignore_label={self.ignore_label}"

    for cls in (SoftmaxWithLossModule, InfogainLossModule, SigmoidCrossEntropyLossModule,
                EuclideanLossModule, HingeLossModule, MultinomialLogisticLossModule,
                ContrastiveLossModule, AccuracyModule):
        cls.__module__, cls.__qualname__ = __name__, cls.__name__
        _CLASSES[cls.__name__] = cls
    return _CLASSES


def __getattr__(name: str):  # PEP 562: pickle finds the lazily defined classes here
    if name in _LOWERED:
        return _define()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _n_tops(layer: "LayerParameter") -> int:
    return max(1, len(layer.top))
