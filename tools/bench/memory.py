"""Predicted vs measured peak memory on the CPU (issue #9 item 4, "memory you can trust").

Nets: AlexNet (``nets/alexnet.net``, the deploy form, batch 10 — its own batch; no loss,
so the backward starts from ``prob`` with a ones gradient), VGG-16 (``nets/vgg16.net``,
batch 2 to keep the CPU run cheap) and LeNet (``lenet_train_test.prototxt`` from
../shared, batch 64, with its loss), each for training (two iterations with a Caffe
SGD update, see netdef.lowering.memory) and inference (one forward under
``torch.inference_mode``).  Goal: predicted/measured within 25%.

``ratio`` compares the peaks (params, buffers and inputs included); ``allocated_ratio``
compares only what the passes allocate on top of those start bytes — the stricter
number where params dominate.  Run: ``python tools/bench/memory.py [--threads N]``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, SHARED, write  # noqa: E402

NETS = [
    ("alexnet", REPO / "nets" / "alexnet.net", {}, 10),
    ("vgg16", REPO / "nets" / "vgg16.net", {}, 2),
    ("lenet", SHARED / "caffe" / "examples" / "mnist" / "lenet_train_test.prototxt",
     {"data": (64, 1, 28, 28)}, None),
]


def one(name: str, path, shapes: dict, batch: int | None) -> dict:  # noqa: ANN001
    import torch

    from netdef.analysis import analyze
    from netdef.analysis.memory import predict
    from netdef.api import load_net
    from netdef.cli.time_cmd import random_inputs
    from netdef.layers.registry import ShapeContext
    from netdef.lowering import memory as measure
    from netdef.lowering.module import build

    loaded = load_net(path, phase="TRAIN")
    analysis = analyze(loaded, ShapeContext(phase="TRAIN", input_shapes=shapes, batch=batch,
                                            base_dir=loaded.base_dir))
    prediction = predict(analysis, "SGD", "cpu")
    gen = torch.Generator().manual_seed(0)
    module = build(analysis, generator=gen)
    inputs = random_inputs(analysis, gen)
    where = (path.relative_to(REPO) if path.is_relative_to(REPO)
             else Path("../shared") / path.relative_to(SHARED))
    out = {"net": where.as_posix(), "batch": next(iter(inputs.values())).shape[0], "phase": "TRAIN",
           "prediction": prediction.as_dict()}
    for mode, run in (("training", lambda: measure.measure_training(module, analysis, inputs)),
                      ("inference", lambda: measure.measure_inference(module, inputs))):
        t0 = time.perf_counter()
        m = run()
        seconds = time.perf_counter() - t0
        pred = getattr(prediction, mode).total
        out[mode] = {"predicted_bytes": pred, "measured_bytes": m.peak_bytes,
                     "start_bytes": m.start_bytes, "ratio": round(pred / m.peak_bytes, 4),
                     "allocated_ratio": round((pred - m.start_bytes)
                                              / (m.peak_bytes - m.start_bytes), 4),
                     "predicted_at": getattr(prediction, mode).where,
                     "measure_seconds": round(seconds, 2), **m.as_dict()}
        print(f"{name} {mode}: predicted {pred:,} B, measured {m.peak_bytes:,} B, "
              f"ratio {out[mode]['ratio']}, allocated ratio {out[mode]['allocated_ratio']}",
              flush=True)
    return out


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (default 1: keep the machine quiet)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    results = {}
    for name, path, shapes, batch in NETS:
        if not path.exists():
            print(f"skip {name}: {path} missing")
            continue
        results[name] = one(name, path, shapes, batch)
    ratios = [r[m]["ratio"] for r in results.values() for m in ("training", "inference")]
    write("memory", {"torch": torch.__version__, "threads": args.threads, "device": "cpu",
                     "dtype": "float32", "solver": "SGD, momentum 0.9 (measured update)",
                     "results": results, "goal": "predicted/measured within 25%",
                     "met": all(0.75 <= r <= 1.25 for r in ratios)})


if __name__ == "__main__":
    main()
