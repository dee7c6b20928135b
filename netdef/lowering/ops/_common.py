"""Small helpers shared by the op modules: Caffe's axis and per-dimension rules."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Union

FLT_MAX = 3.4028234663852886e38
FLT_MIN = 1.1754943508222875e-38  # Caffe's softmax-loss log floor
LOG_THRESHOLD = 1e-20  # Caffe's kLOG_THRESHOLD (multinomial/infogain losses)

IntOrSeq = Union[int, Sequence[int]]


def expand(value: IntOrSeq, n: int, name: str = "value") -> tuple[int, ...]:
    """Caffe's repeated-field rule: one value applies to every spatial dim, else one per dim."""
    if isinstance(value, int):
        return (value,) * n
    vals = tuple(int(v) for v in value)
    if len(vals) == 1:
        return vals * n
    if len(vals) != n:
        raise ValueError(f"{name} needs 1 or {n} values, got {len(vals)}")
    return vals


def canonical_axis(axis: int, ndim: int) -> int:
    """Blob::CanonicalAxisIndex: negative axes count from the end; out of range is an error."""
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} out of range for a {ndim}-D blob")
    return axis + ndim if axis < 0 else axis


def count(shape: Sequence[int], start: int = 0, end: int | None = None) -> int:
    """Blob::count(start, end): product of the dims in [start, end)."""
    out = 1
    for d in shape[start:end]:
        out *= int(d)
    return out
