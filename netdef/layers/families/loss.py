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

from typing import TYPE_CHECKING, Sequence

from netdef.layers.families._util import canonical_axis, count, fail, need_bottoms
from netdef.layers.registry import Counts, LayerDef, Shape, ShapeContext, register

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


@register
class HingeLoss(_Loss):
    type = "HingeLoss"
    param_field = "hinge_loss_param"
    v1_type = "HINGE_LOSS"
    per_element = 3

    def summary(self, layer: "LayerParameter") -> str:
        return layer.hinge_loss_param.norm.name


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
