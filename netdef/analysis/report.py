"""The per-layer report: a rich table for people, a dict for machines."""
from __future__ import annotations

import sys
from typing import Any, TextIO

from netdef.analysis.counts import HISTORY_BLOBS, human, human_bytes, totals
from netdef.analysis.memory import Peak, predict
from netdef.analysis.net import NetAnalysis

CONVENTION = ("MACs = multiply-accumulates; FLOPs = 2×MACs + bias adds + element-wise ops "
              "(pool compares/adds, LRN, softmax, activations); memory in float32")


def _dims(shape: tuple[int, ...]) -> str:
    return "×".join(str(d) for d in shape) if shape else "scalar"


def as_json(analysis: NetAnalysis, solver_type: str = "SGD",
            device: str = "cpu") -> dict[str, Any]:
    t = totals(analysis)
    mem = predict(analysis, solver_type, device)
    layers = []
    for info in analysis.layers:
        layers.append({
            "name": info.name, "type": info.type, "bottoms": list(info.bottoms),
            "tops": list(info.tops), "top_shapes": [list(s) for s in info.top_shapes],
            "in_place": list(info.in_place),
            "params": [{"shape": list(p.shape), "lr_mult": p.lr_mult, "decay_mult": p.decay_mult,
                        "shared_from": list(p.owner) if p.owner else None} for p in info.params],
            "param_count": info.param_count, "macs": info.counts.macs,
            "flops": info.counts.flops, "loss_weights": list(info.loss_weights),
            "need_backward": info.need_backward, "summary": info.defn.summary(info.param),
        })
    return {
        "name": analysis.name, "phase": analysis.phase, "convention": CONVENTION,
        "inputs": list(analysis.inputs), "outputs": list(analysis.outputs),
        "blobs": {k: list(v) for k, v in analysis.blobs.items()}, "layers": layers,
        "totals": {
            "batch": t.batch, "params": t.params, "macs": t.macs, "flops": t.flops,
            "macs_per_item": t.macs_per_item,
            "caffe_memory_required_for_data": t.caffe_data_bytes,
            "activation_bytes": t.activation_bytes, "param_bytes": t.param_bytes,
            "grad_bytes": t.grad_bytes, "solver_type": solver_type,
            "history_bytes": t.history_bytes(solver_type),
            "history_bytes_by_solver": {s: t.history_bytes(s) for s in HISTORY_BLOBS},
            "inference_bytes": mem.inference.total,  # predicted peaks (see "memory")
            "training_bytes": mem.training.total,
        },
        "memory": mem.as_dict(),
    }


def print_table(analysis: NetAnalysis, solver_type: str = "SGD", file: TextIO | None = None,
                device: str = "cpu") -> None:
    """Aligned plain-text table (bold headings on a terminal).

    Written by hand rather than with rich's Table: rich measures every cell through its
    layout engine (~2 ms per row), so GoogLeNet's 250-row report took 0.5 s to print.
    """
    out = file or sys.stdout
    tty = out.isatty()
    bold = (lambda s: f"\033[1m{s}\033[0m") if tty else (lambda s: s)
    t = totals(analysis)
    peaks = predict(analysis, solver_type, device)
    heads = ("#", "layer", "type", "config", "top shape", "params", "MACs", "memory")
    right = {0, 5, 6, 7}
    rows = []
    for info in analysis.layers:
        mem = sum(4 * _prod(s) for s, ip in zip(info.top_shapes, info.in_place) if not ip)
        shapes = ", ".join(_dims(s) + (" (in-place)" if ip else "")
                           for s, ip in zip(info.top_shapes, info.in_place))
        rows.append((str(info.index), info.name, info.type, info.defn.summary(info.param), shapes,
                     f"{info.param_count:,}" if info.param_count else "",
                     human(info.counts.macs) if info.counts.macs else "",
                     human_bytes(mem) if mem and not info.is_split else ""))
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(heads)]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    write = out.write
    write(bold(f"{analysis.name or 'net'} — phase {analysis.phase}, batch {t.batch}") + "\n")
    write(bold(line(heads)) + "\n")
    write("".join(line(r) + "\n" for r in rows))
    write(f"{CONVENTION}\n\n")
    write(f"{bold('params')} {t.params:,} ({human_bytes(t.param_bytes)})   "
          f"{bold('MACs')} {human(t.macs)} ({human(t.macs_per_item)}/item)   "
          f"{bold('FLOPs')} {human(t.flops)}\n")
    write(f"{bold('memory')} Caffe 'Memory required for data' {t.caffe_data_bytes:,} B; "
          f"activations (no in-place double count) {human_bytes(t.activation_bytes)}\n")
    where = f"predicted peak, {device} float32"
    write(f"{bold('training')} ({solver_type}, {where}) {_peak(peaks.training)}\n")
    write(f"{bold('inference')} ({where}) {_peak(peaks.inference)}\n")
    write(f"outputs: {', '.join(analysis.outputs)}\n")


def _peak(peak: Peak) -> str:
    """``1.23 GiB (1,234,567 B) = params … + workspace …, at backward conv3``."""
    parts = " + ".join(f"{label} {human_bytes(v)}" for label, v in (
        ("params", peak.params), ("grads", peak.grads), ("history", peak.history),
        ("activations", peak.activations), ("workspace", peak.workspace)) if v)
    return f"{human_bytes(peak.total)} ({peak.total:,} B) = {parts}, at {peak.where}"


def _prod(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
