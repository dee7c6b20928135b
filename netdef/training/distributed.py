"""Data-parallel training: Caffe's multi-GPU ``caffe train -gpu 0,1`` on ``torch.distributed``.

Caffe 1.0 (``parallel.cpp``, NCCL ``P2PSync``) runs one solver per GPU: every solver reads
its own part of the data, computes the gradient of its own batch, the gradients are
summed over the GPUs and scaled by ``1 / solver_count`` ("loss functions divide
gradients by the batch size, so to compensate for split batch, the root solver divides
by number of solvers"), and every solver applies the same update.  netdef does the same
with one process per device, started by ``torchrun`` (or ``netdef train --gpus 0,1``):

* **Gradients**: after the ``iter_size`` forward/backward passes the gradient list is
  flattened into buckets (one dtype and device each, ≤ 32 MiB), all-reduced (sum) and
  divided by the world size.  With a per-rank batch ``B`` and ``N`` ranks one update is
  the update of one ``N·B`` batch (losses are batch means), then clipping, ``iter_size``
  normalisation, regularisation and the solver step run on every rank from the same
  averaged gradient, so weights and solver history stay identical everywhere (checked
  by a checksum at the end of the run).
* **Data**: the train stream is dealt round-robin by batches (rank ``k`` gets stream
  batches ``k, k+N, …``, :mod:`netdef.training.data.base`), so the union of one
  iteration's batches is the single-process stream's next ``N`` batches.
* **Logging**: only rank 0 writes (stdout log, snapshots, curve, plot); the other ranks
  write nothing.  The loss and train outputs rank 0 prints are the **means over all
  ranks** (Caffe prints the root solver's own loss), so a 2×25 run prints the loss of
  the 50-batch run and its curve compares with a single-process one.
* **Tests and snapshots**: rank 0 only; the other ranks wait at a barrier (with a long
  timeout, ``NETDEF_DIST_SLOW_TIMEOUT``, default 3600 s).  Snapshots hold per-parameter
  history and count train batches of the whole stream, so any world size can resume
  from any snapshot.
* **Start**: every rank checks that all ranks compiled the same nets and solver (a hash
  of the definitions, all-gathered), then rank 0's weights and history are broadcast
  (as Caffe's P2PSync does), so unseeded random fillers cannot diverge.
* **Failures**: training collectives time out after ``NETDEF_DIST_TIMEOUT`` seconds
  (default 30); a rank that dies closes its sockets and the others fail at once with
  ``rank k lost: …`` (a :class:`~netdef.errors.NetdefError`, exit 2).  Control
  messages (losses, train outputs, stop requests, barriers) go over gloo on the CPU: on
  NCCL as their own small all-reduce before the gradients', so a dead peer is noticed
  there before an NCCL all-reduce is entered; on gloo inside the gradient buffer (one
  collective per iteration: gloo's latency, ~1 ms, is a whole digits iteration).
  Start-up checks and the final checksum go through torchrun's key-value store, and a
  rank that fails on its own announces why there, so the others report its error.
* **Signals**: SIGINT/SIGHUP requests are agreed on by all ranks at the next
  iteration, so every rank stops (or snapshots) at the same iteration.
"""
from __future__ import annotations

import hashlib
import io
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Mapping, Sequence

import torch

from netdef.errors import NetdefError
from netdef.training.loop import Trainer
from netdef.training.lr_policy import f32

__all__ = ["Launch", "from_env", "parse_gpus", "launch_command", "launch_torchrun",
           "pick_backend", "rank_device", "ProcessGroup", "RankLost", "DistributedTrainer",
           "net_fingerprint", "state_checksum"]

ENV_TIMEOUT = "NETDEF_DIST_TIMEOUT"  # seconds; every training collective
ENV_SLOW_TIMEOUT = "NETDEF_DIST_SLOW_TIMEOUT"  # seconds; waiting for rank 0's tests/snapshots
ENV_BACKEND = "NETDEF_DIST_BACKEND"  # override: gloo, nccl, mpi, ucc
ENV_DIE_AT = "NETDEF_TEST_DIE_AT_ITER"  # tests: SIGKILL a rank at this iteration …
ENV_DIE_RANK = "NETDEF_TEST_DIE_RANK"  # … this rank (default 1)
ENV_DIE_HOW = "NETDEF_TEST_DIE_HOW"  # kill (SIGKILL itself, default) or hang (sleep)
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_SLOW_TIMEOUT_S = 3600.0
BUCKET_BYTES = 32 << 20


# ---------------------------------------------------------------------------- launch
@dataclass(frozen=True)
class Launch:
    """Where this process sits in a ``torchrun`` job (its environment variables)."""

    rank: int
    world: int
    local_rank: int
    local_world: int


def from_env(environ: Mapping[str, str] | None = None) -> Launch | None:
    """The ``torchrun`` environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), or None."""
    env = os.environ if environ is None else environ
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return None
    try:
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
        local_rank = int(env.get("LOCAL_RANK", rank))
        local_world = int(env.get("LOCAL_WORLD_SIZE", world))
    except ValueError as exc:
        raise NetdefError(f"bad torchrun environment: {exc}",
                          hint="RANK, WORLD_SIZE and LOCAL_RANK must be integers") from None
    if world < 1 or not 0 <= rank < world or not 0 <= local_rank < max(local_world, 1):
        raise NetdefError(f"bad torchrun environment: RANK={rank} WORLD_SIZE={world} "
                          f"LOCAL_RANK={local_rank}", hint="need 0 <= RANK < WORLD_SIZE")
    return Launch(rank, world, local_rank, local_world)


def parse_gpus(spec: str, count: int | None = None) -> list[int]:
    """``--gpus 0,1`` / ``--gpus all`` → device ids (Caffe's ``-gpu``); needs CUDA."""
    if count is None:
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise NetdefError(f"--gpus {spec}: no CUDA GPU is visible "
                          f"(torch {torch.__version__}, torch.cuda.is_available() is False)",
                          hint="train on the CPU without --gpus, or with several processes: "
                               "torchrun --nproc_per_node N -m netdef train SOLVER")
    text = spec.strip().lower()
    if text == "all":
        return list(range(count))
    try:
        ids = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise NetdefError(f"--gpus {spec}: expected comma-separated device ids or 'all'",
                          hint="e.g. --gpus 0,1") from None
    if not ids:
        raise NetdefError("--gpus: no device id given", hint="e.g. --gpus 0,1 or --gpus all")
    bad = [i for i in ids if not 0 <= i < count]
    if bad:
        raise NetdefError(f"--gpus {spec}: device {bad[0]} does not exist ({count} visible)",
                          hint=f"valid ids are 0..{count - 1}")
    if len(set(ids)) != len(ids):
        raise NetdefError(f"--gpus {spec}: a device is listed twice")
    return ids


def launch_command(args_tail: Sequence[str], nproc: int) -> list[str]:
    """The ``torchrun`` command line that runs ``netdef train`` on ``nproc`` local ranks."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            "--nproc_per_node", str(nproc), "-m", "netdef", *args_tail]


def launch_torchrun(args_tail: Sequence[str], gpus: Sequence[int]) -> int:
    """Run ``netdef train`` on ``gpus`` through torchrun (one process each); its exit code."""
    env = dict(os.environ)
    visible = env.get("CUDA_VISIBLE_DEVICES")
    names = [s.strip() for s in visible.split(",")] if visible else None
    env["CUDA_VISIBLE_DEVICES"] = ",".join(names[i] if names else str(i) for i in gpus)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // len(gpus))))
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        env.pop(key, None)
    proc = subprocess.Popen(launch_command(args_tail, len(gpus)), env=env)
    try:
        return proc.wait()
    except KeyboardInterrupt:  # the ranks got the SIGINT too: they snapshot and stop
        return proc.wait()


def pick_backend(device: torch.device) -> str:
    """NCCL on CUDA, gloo on the CPU (``NETDEF_DIST_BACKEND`` overrides); must exist."""
    import torch.distributed as dist

    if not dist.is_available():
        raise NetdefError("this PyTorch build has no torch.distributed",
                          hint="install a PyTorch wheel built with distributed support")
    backend = os.environ.get(ENV_BACKEND) or ("nccl" if device.type == "cuda" else "gloo")
    backend = backend.lower()
    available = {"gloo": dist.is_gloo_available, "nccl": dist.is_nccl_available,
                 "mpi": dist.is_mpi_available,
                 "ucc": getattr(dist, "is_ucc_available", lambda: False)}
    if backend not in available:
        raise NetdefError(f"unknown torch.distributed backend '{backend}'",
                          hint="use gloo (CPU) or nccl (CUDA)")
    if not available[backend]():
        hint = ("NCCL needs a CUDA build of PyTorch on Linux; use --device cpu for gloo"
                if backend == "nccl" else "install a PyTorch build with this backend")
        raise NetdefError(f"the {backend} backend is not available in this PyTorch build "
                          f"(torch {torch.__version__})", hint=hint)
    if backend == "nccl" and device.type != "cuda":
        raise NetdefError("the nccl backend needs CUDA devices", hint="use gloo on the CPU")
    return backend


def rank_device(device: torch.device, launch: Launch) -> torch.device:
    """One device per local rank: ``cuda:LOCAL_RANK`` (Caffe: one solver per GPU)."""
    if device.type != "cuda":
        return device
    n = torch.cuda.device_count()
    if launch.local_rank >= n:
        raise NetdefError(f"local rank {launch.local_rank} has no GPU ({n} visible)",
                          hint="start at most one process per GPU (--nproc_per_node)")
    torch.cuda.set_device(launch.local_rank)
    return torch.device("cuda", launch.local_rank)


def _seconds(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise NetdefError(f"{name}={raw!r} is not a number of seconds") from None
    if value <= 0:
        raise NetdefError(f"{name} must be positive (got {raw})")
    return value


# ---------------------------------------------------------------------------- groups
class RankLost(NetdefError):
    """Another rank died, hung or failed: this rank stops (and does not announce it)."""


def _job_store() -> Any:
    """The process group's key-value store (torchrun's), under a netdef prefix; or None."""
    import torch.distributed as dist

    try:
        from torch.distributed import distributed_c10d as c10d

        base = c10d._get_default_store()
    except Exception:  # a private API: fall back to collectives
        return None
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return dist.PrefixStore(f"netdef/{attempt}/", base)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _is_dead(pid: int) -> bool:
    """True when ``pid`` on this host has exited (a zombie counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True
    except (OSError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


class ProcessGroup:
    """The job's process groups and every collective netdef uses, with clear failures.

    ``data``: the backend's group (NCCL on CUDA, gloo on the CPU) for gradients;
    ``ctrl``: gloo on the CPU, same timeout, for losses/flags (= ``data`` on the CPU);
    ``slow``: gloo with the long timeout, for start-up and for waiting on rank 0.
    """

    def __init__(self, launch: Launch, device: torch.device) -> None:
        import torch.distributed as dist

        self.rank, self.world = launch.rank, launch.world
        self.device = device
        self.backend = pick_backend(device)
        self.timeout_s = _seconds(ENV_TIMEOUT, DEFAULT_TIMEOUT_S)
        self.slow_timeout_s = _seconds(ENV_SLOW_TIMEOUT, DEFAULT_SLOW_TIMEOUT_S)
        timeout = timedelta(seconds=self.timeout_s)
        kwargs: dict[str, Any] = {}
        if self.backend == "nccl":
            kwargs["device_id"] = device
        try:
            if not dist.is_initialized():
                dist.init_process_group(self.backend, rank=self.rank, world_size=self.world,
                                        timeout=timeout, **kwargs)
            self.data = dist.group.WORLD
            self.ctrl = (self.data if self.backend == "gloo"
                         else dist.new_group(backend="gloo", timeout=timeout))
            self.slow = dist.new_group(backend="gloo",
                                       timeout=timedelta(seconds=self.slow_timeout_s))
        except NetdefError:
            raise
        except Exception as exc:  # rendezvous/store/backend failures
            raise NetdefError(
                f"rank {self.rank} of {self.world} could not join the {self.backend} process "
                f"group: {_first_line(exc)}",
                hint="check MASTER_ADDR/MASTER_PORT (torchrun --master_addr/--master_port or "
                     "--rdzv-endpoint) and that every node can reach it") from None
        self.store = _job_store()
        self.peers: list[tuple[str, int]] = []
        self.peers = [(h, int(pid)) for h, pid in (
            v.split("\0") for v in self.exchange("peer", f"{socket.gethostname()}\0{os.getpid()}",
                                                  "start-up"))]
        self._buckets: list[tuple[list[int], torch.Tensor]] | None = None
        self._layout: tuple | None = None
        self._carrier: int | None = None

    # -- errors ---------------------------------------------------------------------
    def lost(self, exc: BaseException, what: str) -> RankLost:
        """The NetdefError for a failed collective: which rank died, or a timeout."""
        host = socket.gethostname()
        dead = [r for r, (h, pid) in enumerate(self.peers)
                if r != self.rank and h == host and _is_dead(pid)]
        if not dead and self.world == 2:
            dead = [1 - self.rank]
        detail = _first_line(exc)
        failed = self.failure()
        if failed:
            return RankLost(f"stopped during {what}: {failed} (rank {self.rank} of "
                            f"{self.world} stops)")
        timed_out = "timeout" in detail.lower() or "timed out" in detail.lower()
        if dead:
            who = "rank " + ", ".join(map(str, dead))
            msg = f"{who} lost during {what}: {detail}"
        else:
            msg = f"a rank was lost during {what}: {detail}"
        hint = (f"no answer within the {self.timeout_s:g} s timeout ({ENV_TIMEOUT})"
                if timed_out else "the other ranks stop too; that rank's own error (or torchrun's "
                     "summary: exit code, signal) tells why it ended")
        return RankLost(f"{msg} (rank {self.rank} of {self.world} stops)", hint=hint)

    def failure(self) -> str | None:
        """What a rank that failed on its own announced (``announce_failure``), if any."""
        try:
            if self.store is not None and self.store.check(["failed"]):
                return self.store.get("failed").decode(errors="replace")
        except Exception:  # the store's host is gone too
            pass
        return None

    def announce_failure(self, message: str) -> None:
        """Tell the other ranks why this rank stops (they report it instead of a reset)."""
        try:
            if self.store is not None:
                self.store.compare_set("failed", "", f"rank {self.rank}: {message}")
        except Exception:
            pass

    def exchange(self, key: str, value: str, what: str) -> list[str]:
        """Every rank's ``value`` through the job's key-value store (no peer sockets).

        Waits up to the long timeout for slow ranks, but stops at once when a rank
        announced a failure, so a rank that fails before the start-up check (a missing
        data file on one node) is reported by every rank.
        """
        if self.store is None:
            return [str(v) for v in self.all_gather_object(value, what=what, slow=True)]
        import time

        keys = [f"{key}/{r}" for r in range(self.world)]
        try:
            self.store.set(keys[self.rank], value)
            deadline = time.monotonic() + self.slow_timeout_s
            while not self.store.check(keys):
                failed = self.failure()
                if failed:
                    raise RankLost(f"stopped during {what}: {failed}")
                if time.monotonic() > deadline:
                    missing = [r for r, k in enumerate(keys) if not self.store.check([k])]
                    raise NetdefError(f"rank(s) {missing} did not reach {what} within "
                                      f"{self.slow_timeout_s:g} s ({ENV_SLOW_TIMEOUT})")
                time.sleep(0.02)
            return [self.store.get(k).decode() for k in keys]
        except NetdefError:
            raise
        except Exception as exc:
            raise NetdefError(f"the job's store failed during {what}: {_first_line(exc)}",
                              hint="the node running the rendezvous (torchrun on node 0) "
                                   "ended or is unreachable") from None

    def _run(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except NetdefError:
            raise
        except Exception as exc:  # DistBackendError, DistNetworkError, RuntimeError …
            raise self.lost(exc, what) from None

    # -- collectives ----------------------------------------------------------------
    def all_gather_object(self, obj: Any, *, what: str, slow: bool = False) -> list[Any]:
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        self._run(what, dist.all_gather_object, out, obj, group=self.slow if slow else self.ctrl)
        return out

    def barrier(self, what: str, flags: Sequence[float] = ()) -> list[float]:
        """Wait for every rank (long timeout); returns the sums of ``flags`` over ranks."""
        import torch.distributed as dist

        t = torch.tensor([1.0, *flags], dtype=torch.float64)
        self._run(what, dist.all_reduce, t, group=self.slow)
        if int(t[0]) != self.world:
            raise NetdefError(f"barrier during {what} counted {int(t[0])} of {self.world} ranks")
        return t[1:].tolist()

    def mean_values(self, values: Sequence[float], what: str) -> list[float]:
        """Each value summed over the ranks (gloo, CPU, float64) and divided by the world."""
        import torch.distributed as dist

        t = torch.tensor(list(values), dtype=torch.float64)
        self._run(what, dist.all_reduce, t, group=self.ctrl)
        return (t / self.world).tolist()

    def broadcast(self, tensors: Sequence[torch.Tensor], what: str) -> None:
        """Rank 0's values into ``tensors`` everywhere (one buffer per dtype/device)."""
        import torch.distributed as dist

        for idx, flat in self._flatten(list(tensors), BUCKET_BYTES):
            self._run(what, dist.broadcast, flat, src=0, group=self._group_for(flat, self.slow))
            self._scatter_back([tensors[i] for i in idx], flat)

    def fuses_control(self) -> bool:
        """On gloo the control values ride in the gradient buffer: one collective per step."""
        return self.backend == "gloo"

    def reduce_grads(self, grads: Sequence[torch.Tensor], extra: Sequence[float] = (),
                     what: str = "the gradient all-reduce") -> list[float] | None:
        """Average the gradient list over the ranks in place (bucketed all-reduce).

        ``extra`` values (losses, outputs, flags) are appended to the first float32 CPU
        bucket and averaged with it (gloo: each collective costs ~1 ms of latency on a
        small machine, as much as a digits iteration); returns their means, or None
        when no bucket can carry them (then nothing of ``extra`` was reduced).
        """
        import torch.distributed as dist

        layout = (tuple((g.dtype, g.device, g.numel()) for g in grads), len(extra))
        if layout != self._layout:
            self._layout = layout
            self._buckets = self._flatten(list(grads), BUCKET_BYTES)
            self._carrier = next((k for k, (_, flat) in enumerate(self._buckets)
                                  if flat.dtype == torch.float32 and flat.device.type == "cpu"
                                  and self._group_for(flat, self.ctrl) is self.ctrl), None)
            if extra and self._carrier is not None:
                idx, flat = self._buckets[self._carrier]
                self._buckets[self._carrier] = (idx, torch.empty(flat.numel() + len(extra)))
        carried = bool(extra) and self._carrier is not None
        works = []
        for k, (idx, flat) in enumerate(self._buckets or []):
            offset = 0
            with torch.no_grad():
                for i in idx:
                    n = grads[i].numel()
                    flat[offset:offset + n].copy_(grads[i].reshape(-1))
                    offset += n
                if carried and k == self._carrier:
                    flat[offset:] = torch.tensor(list(extra), dtype=torch.float32)
            works.append(self._run(what, dist.all_reduce, flat,
                                   group=self._group_for(flat, self.ctrl), async_op=True))
        for (idx, flat), work in zip(self._buckets or [], works):
            self._run(what, work.wait)
            flat.div_(self.world)
            self._scatter_back([grads[i] for i in idx], flat)
        if not carried:
            return None
        return self._buckets[self._carrier][1][-len(extra):].tolist()

    def _group_for(self, flat: torch.Tensor, cpu_group: Any) -> Any:
        """The data group where it handles ``flat``'s device (NCCL: CUDA, gloo: CPU)."""
        on_cuda = flat.device.type == "cuda"
        return self.data if on_cuda == (self.backend == "nccl") else cpu_group

    @staticmethod
    def _flatten(tensors: list[torch.Tensor], limit: int) -> list[tuple[list[int], torch.Tensor]]:
        """Buckets of tensor indices (same dtype/device, ≤ limit bytes) with a flat buffer."""
        groups: dict[tuple, list[list[int]]] = {}
        sizes: dict[tuple, int] = {}
        for i, t in enumerate(tensors):
            key = (t.dtype, t.device)
            nbytes = t.numel() * t.element_size()
            if key not in groups or sizes[key] + nbytes > limit and groups[key][-1]:
                groups.setdefault(key, []).append([])
                sizes[key] = 0
            groups[key][-1].append(i)
            sizes[key] += nbytes
        out = []
        for (dtype, device), buckets in groups.items():
            for idx in buckets:
                n = sum(tensors[i].numel() for i in idx)
                flat = torch.empty(n, dtype=dtype, device=device)
                torch.cat([tensors[i].detach().reshape(-1) for i in idx], out=flat)
                out.append((idx, flat))
        return out

    @staticmethod
    def _scatter_back(tensors: list[torch.Tensor], flat: torch.Tensor) -> None:
        offset = 0
        with torch.no_grad():
            for t in tensors:
                n = t.numel()
                t.copy_(flat[offset:offset + n].view_as(t))
                offset += n

    def close(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


# ---------------------------------------------------------------------------- checks
def net_fingerprint(solver: Any, train: Any, tests: Sequence[Any]) -> str:
    """Hashes of the solver and of every compiled net (definition, param names and shapes),
    as ``"solver=…;train net=…;test net #0=…"``."""
    from netdef.ir.text import to_text

    def digest(*parts: str) -> str:
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]

    items = [("solver", digest(to_text(solver)))]
    for i, net in enumerate([train, *tests]):
        params = [f"{n}:{tuple(p.shape)}:{p.dtype}" for n, p in net.module.named_parameters()]
        items.append(("train net" if i == 0 else f"test net #{i - 1}",
                      digest(to_text(net.analysis.loaded.net), *params)))
    return ";".join(f"{k}={v}" for k, v in items)


def state_checksum(tensors: Sequence[torch.Tensor]) -> str:
    """A hash of the exact bytes of ``tensors`` (weights and solver history)."""
    h = hashlib.blake2b(digest_size=16)
    for t in tensors:
        h.update(t.detach().to("cpu").contiguous().numpy().tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------- trainer
_LEVEL = {None: 0, "snapshot": 1, "stop": 2}


class DistributedTrainer(Trainer):
    """:class:`Trainer` on one rank of a data-parallel job (see module doc).

    Tests and snapshots run on rank 0 while the others wait; losses and train outputs
    are averaged over the ranks before rank 0 prints them; SIGINT/SIGHUP requests are
    agreed on by all ranks (``requested`` is the agreed value).
    """

    def __init__(self, param: Any, train: Any, tests: list[Any], *, group: ProcessGroup,
                 out: Any = None, progress: bool = False) -> None:
        self.group = group
        self._pending: str | None = None
        self._agreed: str | None = None
        self._grads_reduced = False
        super().__init__(param, train, tests, out=out, rank=group.rank, world=group.world,
                         reduce_grads=self._reduce_grads, reduce_outputs=self._reduce_outputs,
                         progress=progress)
        die = os.environ.get(ENV_DIE_AT)
        self._die_at = int(die) if die else None
        self._die_rank = int(os.environ.get(ENV_DIE_RANK, "1"))

    # -- agreed stop/snapshot requests ----------------------------------------------
    @property  # type: ignore[override]
    def requested(self) -> str | None:
        return self.__dict__.get("_agreed")

    @requested.setter
    def requested(self, value: str | None) -> None:
        if value is None:  # the loop consumed a request (same on every rank)
            self.__dict__["_agreed"] = None
        elif _LEVEL[value] > _LEVEL[self.__dict__.get("_pending")]:  # a signal, this rank
            self.__dict__["_pending"] = value

    def _flags(self) -> list[float]:
        p = self.__dict__.get("_pending")
        self.__dict__["_pending"] = None
        return [1.0 if p == "snapshot" else 0.0, 1.0 if p == "stop" else 0.0]

    def _agree(self, sums: Sequence[float]) -> None:
        snap, stop = sums[-2], sums[-1]
        agreed = "stop" if stop > 0 else "snapshot" if snap > 0 else None
        if _LEVEL[agreed] > _LEVEL[self.__dict__.get("_agreed")]:
            self.__dict__["_agreed"] = agreed

    # -- hooks ----------------------------------------------------------------------
    def _reduce_outputs(self, losses: list[float], outputs: dict[str, torch.Tensor],
                        grads: list[torch.Tensor | None] | None = None
                        ) -> tuple[list[float], dict[str, torch.Tensor]]:
        """Means over the ranks of the losses and train outputs (and stop/snapshot
        requests).  Given ``grads`` (a training step) on gloo, the gradients are averaged
        in the same collective and the following ``reduce_grads`` call does nothing."""
        if self._die_at is not None and self.iter == self._die_at and self.rank == self._die_rank:
            _die()
        names = [n for n in self.train.analysis.outputs if n in outputs]
        flat = [t.detach().float().cpu().reshape(-1) for t in (outputs[n] for n in names)]
        values = [*losses, *(v for t in flat for v in t.tolist()), *self._flags()]
        what = f"iteration {self.iter}"
        means = None
        if grads is not None and self.group.fuses_control():
            means = self.group.reduce_grads(self._full_grads(grads), values, what)
            self._grads_reduced = True
        if means is None:
            means = self.group.mean_values(values, what)
        self._agree([m * self.world for m in means[-2:]])
        new_losses = [f32(v) for v in means[:len(losses)]]
        reduced = dict(outputs)
        pos = len(losses)
        for n, t in zip(names, flat):
            chunk = means[pos:pos + t.numel()]
            pos += t.numel()
            reduced[n] = torch.tensor(chunk, dtype=torch.float32).reshape(outputs[n].shape)
        return new_losses, reduced

    def _full_grads(self, grads: list[torch.Tensor | None]) -> list[torch.Tensor]:
        full = []
        for p, g in zip(self.params, grads):
            if g is None:  # keep the layout equal on every rank
                p.grad = torch.zeros_like(p)
                g = p.grad
            full.append(g)
        return full

    def _reduce_grads(self, grads: list[torch.Tensor | None]) -> None:
        if self._grads_reduced:  # done with the losses in _reduce_outputs
            self._grads_reduced = False
            return
        self.group.reduce_grads(self._full_grads(grads))

    # -- rank 0 only, the others wait -----------------------------------------------
    def test_all(self) -> None:
        if self.rank == 0:
            super().test_all()
        self._agree(self.group.barrier(f"the test at iteration {self.iter}", self._flags()))

    def snapshot(self) -> None:
        if self.rank == 0:
            super().snapshot()
        self._agree(self.group.barrier(f"the snapshot at iteration {self.iter}", self._flags()))

    def write_curve(self) -> None:
        if self.rank == 0:
            super().write_curve()

    # -- start and end --------------------------------------------------------------
    def state_tensors(self) -> list[torch.Tensor]:
        return [*self.params, *self.solver.history()]

    def sync_start(self, fingerprint: str) -> None:
        """Same nets on every rank, then rank 0's weights, buffers and history everywhere."""
        prints = self.group.exchange("fingerprint", fingerprint, "the start-up check")
        if len(set(prints)) != 1:
            parts = [dict(item.split("=", 1) for item in fp.split(";")) for fp in prints]
            what = [k for k in parts[0] if len({str(p.get(k)) for p in parts}) > 1] or ["layout"]
            groups: dict[str, list[int]] = {}
            for r, fp in enumerate(prints):
                groups.setdefault(fp, []).append(r)
            ranks = " vs ".join("rank" + ("s " if len(g) > 1 else " ") + ",".join(map(str, g))
                                for g in groups.values())
            raise NetdefError(
                f"the ranks compiled different nets or solvers: {', '.join(what)} differ "
                f"({ranks})",
                hint="every rank must run the same solver, nets and netdef version; "
                     "check the files on every node")
        module = self.train.module
        tensors = [*module.parameters(), *module.buffers(), *self.solver.history()]
        self.group.broadcast([t.data for t in tensors], "the start-up broadcast")

    def restore(self, path: str) -> None:
        super().restore(path)
        self.group.broadcast([t.data for t in self.state_tensors()], "the resume broadcast")

    def check_in_sync(self) -> str:
        """All ranks hold bit-identical weights and history (else a NetdefError)."""
        mine = state_checksum(self.state_tensors())
        sums = self.group.exchange("checksum", mine, "the final check")
        if len(set(sums)) != 1:
            raise NetdefError("the ranks' weights or solver history diverged: "
                              + ", ".join(f"rank {r}: {s[:12]}" for r, s in enumerate(sums)),
                              hint="a bug in netdef's gradient averaging; please report it")
        self.log(f"All {self.world} ranks hold identical weights and solver history "
                 f"(checksum {mine})")
        return mine


def _die() -> None:
    """Tests only (``NETDEF_TEST_DIE_AT_ITER``): crash hard, or hang, like a broken rank."""
    if os.environ.get(ENV_DIE_HOW, "kill") == "hang":
        import time

        while True:
            time.sleep(1)
    os.kill(os.getpid(), signal.SIGKILL)


def null_output() -> io.TextIOBase:
    """Where ranks other than 0 write their log: nowhere."""
    return open(os.devnull, "w")  # noqa: SIM115


def install_sigterm(rank: int) -> None:
    """torchrun SIGTERMs the surviving ranks when one fails: say so and exit cleanly."""
    def handler(signum: int, frame: object) -> None:
        raise NetdefError(f"rank {rank} terminated by its launcher (SIGTERM); "
                          "torchrun stops every rank when one of them fails")
    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        pass
