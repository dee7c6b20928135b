"""Data-parallel training throughput: 1 process vs N processes (torchrun, gloo / NCCL).

CPU: the digits fixture net (``../shared/fixtures/train``, HDF5 data), 200 iterations,
display every 20; ``OMP_NUM_THREADS`` = cores / processes, so both runs use every core.
Two scalings, as Caffe's ``-gpu`` would be used:

* **weak**: every rank keeps the net's batch (50): N ranks train an N×50 batch per update;
* **strong**: the same global batch, split: 1×50 vs 2×25 (the parity setting of the tests).

Throughput is samples/s over iterations 20…200 (the first display interval, with warm-up,
is left out), from the ``Iteration N (… Ys/20 iters)`` times rank 0 prints, which include
the gradient all-reduce; the wall time of the whole command (start-up included) is also
recorded.  Scaling efficiency = samples/s(N) / (N × samples/s(1)).

GPU (only when CUDA is available): AlexNet (``nets/alexnet_train_val.net`` with its Data
layers replaced by DummyData, batch 256 per GPU) on 1 GPU vs all GPUs (``--gpus all``).

    python tools/bench/ddp.py [--iterations 200] [--repeats 3] [--out PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, RESULTS, SHARED, machine  # noqa: E402

FIXTURES = SHARED / "fixtures" / "train"
TIMING = re.compile(r"^Iteration (\d+) \((\S+) iter/s, (\S+)s/(\d+) iters\), loss = (\S+)$", re.M)
DISPLAY = 20


def solver_text(net: str, iterations: int, *, prefix: str, mode: str = "CPU",
                base_lr: float = 0.01) -> str:
    return (f'net: "{net}"\ntest_iter: 1\ntest_interval: 1000000\ntest_initialization: false\n'
            f"display: {DISPLAY}\naverage_loss: 1\nmax_iter: {iterations}\nsnapshot: 0\n"
            f'snapshot_after_train: false\nsnapshot_prefix: "{prefix}"\nrandom_seed: 1\n'
            f'solver_mode: {mode}\ntype: "SGD"\nbase_lr: {base_lr}\nmomentum: 0.9\n'
            f'weight_decay: 0.0005\nlr_policy: "fixed"\n')


def run(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[str, float]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return proc.stdout, wall


def steady_rate(log: str, samples_per_iter: int) -> dict[str, float]:
    """samples/s over the display intervals after the first one."""
    rows = [(int(m[1]), float(m[3]), int(m[4])) for m in TIMING.finditer(log)]
    steady = [r for r in rows if r[0] > DISPLAY]
    if not steady:
        raise RuntimeError("no timing lines in the log:\n" + log[-2000:])
    seconds = sum(r[1] for r in steady)
    iters = sum(r[2] for r in steady)
    return {"iterations_timed": iters, "seconds": seconds, "iter_per_s": iters / seconds,
            "samples_per_s": iters * samples_per_iter / seconds}


def train_cmd(nproc: int, solver: str, extra: list[str], port: int | None = None) -> list[str]:
    tail = ["-m", "netdef", "train", solver, "--no-plot", *extra]
    if nproc == 1:
        return [sys.executable, *tail]
    launcher = ["--standalone"] if port is None else ["--master_port", str(port)]
    return [sys.executable, "-m", "torch.distributed.run", *launcher,
            "--nproc_per_node", str(nproc), *tail]


def cpu_digits(iterations: int, repeats: int, nproc: int) -> dict:
    cores = os.cpu_count() or 1
    work = Path(tempfile.mkdtemp(prefix="netdef_ddp_bench_")) / "train"
    shutil.copytree(FIXTURES, work, ignore=shutil.ignore_patterns("snap_iter_*", "caffe.log",
                                                                  "lock.mdb"))
    nets = {50: "digits_net.prototxt", 25: "digits_net_b25.prototxt"}
    # (label, processes, batch per rank, OMP threads per process); the first is the baseline
    configs = [(f"1 process, batch 50, {cores} threads", 1, 50, cores),
               ("1 process, batch 50, 1 thread", 1, 50, 1),
               (f"{nproc} processes, batch 50 each (weak), {max(1, cores // nproc)} thread(s) each",
                nproc, 50, max(1, cores // nproc))]
    if nproc == 2:
        configs.append((f"2 processes, batch 25 each (strong: global 50), "
                        f"{max(1, cores // 2)} thread(s) each", 2, 25, max(1, cores // 2)))
    if cores == 1:
        configs.pop(1)
    results = []
    for label, n, batch, threads in configs:
        solver = work / f"bench_{n}x{batch}.prototxt"
        solver.write_text(solver_text(nets[batch], iterations, prefix=f"bench_{n}x{batch}"))
        env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS=str(threads))
        runs = []
        for _ in range(repeats):
            log, wall = run(train_cmd(n, solver.name, ["--weights", "init.caffemodel"]), work, env)
            runs.append({**steady_rate(log, n * batch), "wall_s": wall})
        best = statistics.median(r["samples_per_s"] for r in runs)
        results.append({"config": label, "processes": n, "batch_per_rank": batch,
                        "omp_threads": threads, "median_samples_per_s": best,
                        "median_wall_s": statistics.median(r["wall_s"] for r in runs),
                        "runs": runs})
        print(f"{label}: {best:.0f} samples/s", file=sys.stderr)
    base = results[0]["median_samples_per_s"]  # 1 process using every core
    best1 = max(r["median_samples_per_s"] for r in results if r["processes"] == 1)
    for r in results:
        if r["processes"] > 1:
            r["speedup"] = r["median_samples_per_s"] / base
            r["scaling_efficiency"] = r["speedup"] / r["processes"]
            r["speedup_vs_best_single"] = r["median_samples_per_s"] / best1
            r["scaling_efficiency_vs_best_single"] = r["speedup_vs_best_single"] / r["processes"]
    shutil.rmtree(work.parent, ignore_errors=True)
    return {"net": "digits (fixtures/train, 3658 params, HDF5)", "iterations": iterations,
            "repeats": repeats, "results": results}


def alexnet_net(batch: int) -> str:
    """nets/alexnet_train_val.net with both Data layers replaced by one DummyData layer."""
    text = (REPO / "nets/alexnet_train_val.net").read_text()
    blocks, depth, start, head_end = [], 0, None, None
    for i, ch in enumerate(text):
        if ch == "{":
            if depth == 0:
                start = text.rfind("layer", 0, i)
                head_end = head_end if head_end is not None else start
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0 and start is not None:
                blocks.append(text[start:i + 1])
    head = text[:head_end]
    keep = [b for b in blocks if not re.search(r'type:\s*"Data"', b)]
    dummy = ('layer {\n  name: "data"\n  type: "DummyData"\n  top: "data"\n  top: "label"\n'
             '  dummy_data_param {\n    data_filler { type: "gaussian" std: 1 }\n'
             '    data_filler { type: "constant" value: 1 }\n'
             f'    shape {{ dim: {batch} dim: 3 dim: 227 dim: 227 }}\n'
             f'    shape {{ dim: {batch} }}\n  }}\n}}\n')
    return head + dummy + "\n".join(keep) + "\n"


def gpu_alexnet(iterations: int) -> dict:
    import torch

    if not torch.cuda.is_available():
        return {"skipped": "CUDA is not available on this machine "
                           f"(torch {torch.__version__}): no GPU run"}
    n = torch.cuda.device_count()
    work = Path(tempfile.mkdtemp(prefix="netdef_ddp_alexnet_"))
    batch = 256
    (work / "alexnet_dummy.net").write_text(alexnet_net(batch))
    (work / "solver.prototxt").write_text(
        solver_text("alexnet_dummy.net", iterations, prefix="alexnet", mode="GPU"))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    results = []
    for gpus in ([0], list(range(n))) if n > 1 else ([0],):
        spec = ",".join(map(str, gpus))
        log, wall = run([sys.executable, "-m", "netdef", "train", "solver.prototxt", "--no-plot",
                         "--gpus", spec], work, env)
        results.append({"gpus": spec, "batch_per_gpu": batch, "wall_s": wall,
                        **steady_rate(log, len(gpus) * batch)})
    if len(results) > 1:
        r = results[1]
        r["speedup"] = r["samples_per_s"] / results[0]["samples_per_s"]
        r["scaling_efficiency"] = r["speedup"] / len(r["gpus"].split(","))
    shutil.rmtree(work, ignore_errors=True)
    out: dict = {"net": "AlexNet (DummyData, batch 256 per GPU)", "iterations": iterations,
                 "gpus": [torch.cuda.get_device_name(i) for i in range(n)], "results": results}
    if n == 1:
        out["note"] = "one GPU visible: no multi-GPU comparison"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--nproc", type=int, default=2, help="processes of the CPU run (default 2)")
    ap.add_argument("--gpu-iterations", type=int, default=100)
    ap.add_argument("--out", type=Path, default=RESULTS / "ddp.json")
    args = ap.parse_args()
    data = {"benchmark": "ddp", "machine": machine(),
            "load_average_before": os.getloadavg() if hasattr(os, "getloadavg") else None,
            "cpu_digits": cpu_digits(args.iterations, args.repeats, args.nproc),
            "gpu_alexnet": gpu_alexnet(args.gpu_iterations)}
    data["load_average_after"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=1) + "\n")
    print(json.dumps(data, indent=1))


if __name__ == "__main__":
    main()
