"""Net totals: params, MACs/FLOPs and memory, stated with their conventions.

* **Params**: every learnable blob, a blob shared by ``param { name }`` counted once.
* **MACs**: multiply-accumulates of one forward pass (conv, deconv, fc, recurrent).
* **FLOPs**: 2 per MAC, plus one per bias add, element-wise op, pooling compare/add,
  LRN/softmax/normalisation arithmetic (per-type rules live in the layer registry).
* **Caffe data memory**: what Caffe's log prints — every top of every layer, in-place
  and Split tops included, × 4 bytes.
* **Activation memory (honest)**: each distinct blob once (in-place layers write into
  their bottom; Split tops share their bottom's data), × 4 bytes.
* **Peak memory** of training and inference is predicted by a simulation of the lowered
  net, not summed here: see :mod:`netdef.analysis.memory`.  ``history_bytes`` below is
  the solver history of every blob (SGD/Nesterov/AdaGrad/RMSProp keep one per param,
  AdaDelta and Adam two).
"""
from __future__ import annotations

from dataclasses import dataclass

from netdef.analysis.net import NetAnalysis

HISTORY_BLOBS = {"SGD": 1, "Nesterov": 1, "AdaGrad": 1, "RMSProp": 1, "AdaDelta": 2, "Adam": 2}
BYTES = 4  # float32


@dataclass(frozen=True)
class NetTotals:
    batch: int
    params: int
    macs: int
    flops: int
    caffe_data_bytes: int
    activation_bytes: int
    param_bytes: int

    @property
    def grad_bytes(self) -> int:
        return self.param_bytes

    def history_bytes(self, solver_type: str = "SGD") -> int:
        return HISTORY_BLOBS.get(solver_type, 1) * self.param_bytes

    @property
    def macs_per_item(self) -> float:
        return self.macs / self.batch if self.batch else float(self.macs)


def totals(analysis: NetAnalysis) -> NetTotals:
    """Sum the per-layer facts of ``analysis`` (see the module doc for conventions)."""
    macs = sum(l.counts.macs for l in analysis.layers)
    flops = sum(l.counts.flops for l in analysis.layers)
    params = analysis.param_count
    seen: set[str] = set()
    act = 0
    for info in analysis.layers:
        for t, s, ip in zip(info.tops, info.top_shapes, info.in_place):
            if ip or info.is_split or t in seen:
                continue
            seen.add(t)
            act += _prod(s)
    batch = _batch(analysis)
    return NetTotals(batch, params, macs, flops, analysis.memory_caffe_bytes, act * BYTES,
                     params * BYTES)


def _batch(analysis: NetAnalysis) -> int:
    for info in analysis.layers:
        if info.defn.is_data and info.top_shapes and info.top_shapes[0]:
            return int(info.top_shapes[0][0])
    return 1


def _prod(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def human(n: float, unit: str = "") -> str:
    """1234567 → '1.23 M' (decimal prefixes; bytes use MiB via human_bytes)."""
    for div, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.2f} {prefix}{unit}"
    return f"{n:.0f} {unit}".rstrip()


def human_bytes(n: float) -> str:
    for div, prefix in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if n >= div:
            return f"{n / div:.2f} {prefix}"
    return f"{n:.0f} B"
