"""Caffe's learning-rate policies (``SGDSolver::GetLearningRate``), float32-exact.

Caffe computes ``Dtype rate`` in float from float proto fields, and the log prints it
with ``%g``.  To print the same digits (and train the same weights) every step here
is rounded exactly as the C++ expression is evaluated:

* ``pow(float, int)`` (step, multistep, exp) promotes to double, and
  ``base_lr * double`` is a double product, rounded to float once on assignment;
* ``pow(float, float)`` (inv, poly) and ``exp(float)`` (sigmoid) are the float
  overloads (``powf``/``expf``), i.e. one float rounding of the exact result,
  followed by float products;
* ``gamma * iter`` and ``iter / max_iter`` are float arithmetic.

Python floats are doubles, and a single ``+ - * /`` of two floats done in double and
rounded once to float32 is the correctly rounded float result, so :func:`f32` after
each C++ float operation reproduces Caffe bit for bit (checked against pycaffe's
``solver.lr`` for every fixture iteration).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from netdef.errors import SolverError

__all__ = ["POLICIES", "f32", "learning_rate", "LearningRate"]

POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")


def f32(x: float) -> float:
    """Round a Python float to the nearest float32 (as Caffe's ``Dtype``)."""
    with np.errstate(over="ignore"):
        return float(np.float32(x))


def _powf(x: float, y: float) -> float:
    """C's ``powf``: the float result of an exact power (NaN/inf as C gives)."""
    try:
        return f32(math.pow(x, y))
    except ValueError:  # negative base, non-integer exponent
        return math.nan
    except OverflowError:
        return math.inf


def _expf(x: float) -> float:
    """C's ``expf`` (glibc's is correctly rounded; NumPy's float32 exp is not)."""
    try:
        return f32(math.exp(x))
    except OverflowError:
        return math.inf


def _need_gamma(policy: str, gamma: float) -> None:
    if gamma < 0:
        raise SolverError(
            f"lr_policy '{policy}' needs gamma >= 0 (got {gamma:g})",
            hint="Caffe aborts here with 'Check failed: this->param_.gamma() >= 0'; "
                 "use a positive gamma")


def _need_stepsize(policy: str, stepsize: int) -> None:
    if stepsize <= 0:
        raise SolverError(
            f"lr_policy '{policy}' needs stepsize > 0 (got {stepsize})",
            hint="set stepsize in the solver prototxt")


def learning_rate(
    policy: str,
    base_lr: float,
    iter: int,
    *,
    gamma: float = 0.0,
    power: float = 0.0,
    stepsize: int = 0,
    stepvalues: Sequence[int] = (),
    max_iter: int = 0,
    current_step: int = 0,
) -> tuple[float, int, bool]:
    """The rate Caffe applies in the update of iteration ``iter``.

    Returns ``(lr, new_current_step, logged_multistep)``: ``lr`` is a float32 value
    (as a Python float), ``new_current_step`` is what Caffe stores in
    ``current_step_`` (step recomputes it from ``iter``; multistep advances it by at
    most one per call, exactly like Caffe's ``if``), and ``logged_multistep`` tells
    the caller to log ``MultiStep Status: Iteration {iter}, step = {new_current_step}``.
    """
    base = f32(base_lr)
    g = f32(gamma)
    logged = False
    if policy == "fixed":
        rate = base
    elif policy == "step":
        _need_stepsize(policy, stepsize)
        current_step = iter // stepsize
        _need_gamma(policy, g)
        rate = f32(base * _pow_double(g, current_step))
    elif policy == "exp":
        _need_gamma(policy, g)
        rate = f32(base * _pow_double(g, iter))
    elif policy == "inv":
        _need_gamma(policy, g)
        x = f32(1.0 + f32(g * f32(iter)))
        rate = f32(base * _powf(x, -f32(power)))
    elif policy == "multistep":
        if current_step < len(stepvalues) and iter >= stepvalues[current_step]:
            current_step += 1
            logged = True
        _need_gamma(policy, g)
        rate = f32(base * _pow_double(g, current_step))
    elif policy == "poly":
        if max_iter <= 0:
            raise SolverError(f"lr_policy 'poly' needs max_iter > 0 (got {max_iter})",
                              hint="Caffe would divide by zero here")
        x = f32(1.0 - f32(f32(iter) / f32(max_iter)))
        rate = f32(base * _powf(x, f32(power)))
    elif policy == "sigmoid":
        _need_gamma(policy, g)
        _need_stepsize(policy, stepsize)
        e = _expf(f32(-g * f32(f32(iter) - f32(stepsize))))
        rate = f32(base * f32(1.0 / f32(1.0 + e)))
    else:
        raise SolverError(f"unknown lr_policy '{policy}'",
                          hint="valid policies: " + ", ".join(POLICIES))
    return rate, current_step, logged


def _pow_double(x: float, n: int) -> float:
    """C++11 ``pow(float, int)``: promoted to ``pow(double, double)``."""
    try:
        return math.pow(x, n)
    except OverflowError:
        return math.inf


class LearningRate:
    """A solver's schedule with Caffe's ``current_step_`` state (saved in solverstates).

    ``config`` is anything with SolverParameter's attribute names (``lr_policy``,
    ``base_lr``, ``gamma``, ``power``, ``stepsize``, ``stepvalue``, ``max_iter``).
    """

    def __init__(self, config: object, current_step: int = 0) -> None:
        self.config = config
        self.current_step = current_step

    def __call__(self, iter: int) -> tuple[float, str | None]:
        """``(lr, multistep_log_line_or_None)`` for iteration ``iter``; updates state."""
        c = self.config
        rate, self.current_step, logged = learning_rate(
            getattr(c, "lr_policy", ""), getattr(c, "base_lr", 0.0), iter,
            gamma=getattr(c, "gamma", 0.0), power=getattr(c, "power", 0.0),
            stepsize=getattr(c, "stepsize", 0), stepvalues=tuple(getattr(c, "stepvalue", ())),
            max_iter=getattr(c, "max_iter", 0), current_step=self.current_step)
        line = (f"MultiStep Status: Iteration {iter}, step = {self.current_step}"
                if logged else None)
        return rate, line
