"""The loss Caffe's log prints: ``Solver::UpdateSmoothedLoss`` replayed in float32.

Caffe never prints an iteration's own loss: it prints ``smoothed_loss_``, a float
running mean over the last ``average_loss`` iterations.  Once the window is full the
value is updated incrementally (``smoothed += (loss - oldest) / average_loss``), so
even with ``average_loss: 1`` it is the run's first loss plus a running sum of float32
differences and drifts from the true loss by ~1e-7 over hundreds of iterations
(fixture README, item 1).  Reproducing the printed digits needs the same float32
arithmetic, which this module does.
"""
from __future__ import annotations

from typing import Iterable

from netdef.training.lr_policy import f32

__all__ = ["SmoothedLoss", "iteration_loss"]


def iteration_loss(sub_batch_losses: Iterable[float]) -> float:
    """``Solver::Step``'s loss: float32 sum of the iter_size forward losses / iter_size."""
    total, n = 0.0, 0
    for loss in sub_batch_losses:
        total = f32(total + f32(loss))
        n += 1
    if n == 0:
        raise ValueError("iteration_loss needs at least one sub-batch loss")
    return f32(total / n)


class SmoothedLoss:
    """Caffe's ``losses_`` window and ``smoothed_loss_``; one instance per ``Step()`` call.

    Caffe resets both at the start of every ``Solver::Step`` (so a resumed run starts a
    new window at the resume iteration); ``start_iter`` is that call's first iteration.
    """

    def __init__(self, average_loss: int = 1, start_iter: int = 0) -> None:
        if average_loss < 1:
            raise ValueError(f"average_loss must be >= 1 (got {average_loss})")
        self.average_loss = average_loss
        self.start_iter = start_iter
        self.losses: list[float] = []
        self.value = 0.0

    def update(self, loss: float, iter: int) -> float:
        """Fold iteration ``iter``'s loss in; returns the value the log prints."""
        loss = f32(loss)
        if len(self.losses) < self.average_loss:
            self.losses.append(loss)
            size = len(self.losses)
            self.value = f32(f32(f32(self.value * (size - 1)) + loss) / size)
        else:
            idx = (iter - self.start_iter) % self.average_loss
            self.value = f32(self.value + f32(f32(loss - self.losses[idx]) / self.average_loss))
            self.losses[idx] = loss
        return self.value
