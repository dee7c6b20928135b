"""A solver's nets, as Caffe's ``Solver::InitTrainNet`` / ``InitTestNets`` choose them.

One train net (``train_net_param`` | ``train_net`` | ``net_param`` | ``net``) and the test
nets (``test_net_param``s, ``test_net`` files, then instances of the generic net to fill
``test_iter``), each with its NetState (phase, then the net's own state, then
``train_state``/``test_state[i]`` merged).  Each is analysed, lowered to a module and
given data sources; test nets share the train net's parameter tensors (Caffe's
``ShareTrainedLayersWith``), so testing always sees the current weights.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from netdef.analysis import NetAnalysis, analyze
from netdef.api import LoadedNet, prepare_net, read_net
from netdef.errors import Loc, SolverError
from netdef.ir.messages import NetParameter, NetState, SolverParameter
from netdef.ir.schema import has, loc_of
from netdef.layers.registry import ShapeContext


@dataclass
class CompiledNet:
    """One net of a solver: its analysis, lowered module and data sources."""

    label: str  # "train" or "test #k"
    source: str  # where the definition came from (file path or "inline")
    analysis: NetAnalysis
    module: Any  # netdef.lowering.module.CaffeNet
    sources: list[Any] = field(default_factory=list)  # DataSource / Prefetcher per data layer
    device: torch.device = torch.device("cpu")
    runner: Any = None  # what forward calls instead of ``module`` (``--compile``)

    @property
    def loss_weights(self) -> dict[str, float]:
        return dict(self.module.netdef_loss_weights)

    def next_inputs(self) -> dict[str, torch.Tensor]:
        """One batch from every data layer, as tensors on the net's device."""
        feed: dict[str, torch.Tensor] = {}
        for src in self.sources:
            for name, arr in src.next_batch().items():
                t = arr if isinstance(arr, torch.Tensor) else torch.from_numpy(arr)
                feed[name] = t if t.device == self.device else t.to(self.device, non_blocking=True)
        return feed

    def forward(self) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Caffe's ``Net::Forward(&loss)``: outputs and Σ loss_weight·top (float32)."""
        outputs = (self.runner or self.module)(**self.next_inputs())
        loss: torch.Tensor | None = None
        for top, w in self.module.netdef_loss_weights.items():
            term = outputs[top].sum() if w == 1 else w * outputs[top].sum()
            loss = term if loss is None else loss + term
        if loss is None:
            loss = torch.zeros((), dtype=torch.float32, device=self.device)
        return outputs, loss

    def close(self) -> None:
        for src in self.sources:
            close = getattr(src, "close", None)
            if close:
                close()


def resolve_path(name: str, solver_dir: Path | None) -> Path:
    """Caffe opens paths relative to the working directory; netdef also tries the solver's."""
    p = Path(name)
    if p.is_absolute() or p.exists() or solver_dir is None:
        return p
    alt = solver_dir / p
    return alt if alt.exists() else p


def _merge_state(phase: str, *states: NetState) -> NetState:
    """``NetState::MergeFrom`` in order: set scalars overwrite, stages append."""
    from netdef.ir.state import make_state

    level, stages = 0, []
    for s in states:
        if has(s, "level"):
            level = s.level
        stages.extend(s.stage)
    return make_state(phase, level, tuple(stages))


def _net_definitions(solver: SolverParameter, solver_path: str | None
                     ) -> tuple[tuple[str, NetParameter | str], list[tuple[str, NetParameter | str]]]:
    """(train definition, [test definitions]) as (origin, inline NetParameter or path)."""
    train_fields = [f for f in ("train_net_param", "train_net", "net_param", "net")
                    if has(solver, f)]
    where = Loc(solver_path, 1, 1)
    if len(train_fields) != 1:
        raise SolverError(
            "a solver needs exactly one train net" + (f" (found {', '.join(train_fields)})"
                                                      if train_fields else ""),
            loc=loc_of(solver, train_fields[1]) if len(train_fields) > 1 else where,
            hint="set one of net, net_param, train_net, train_net_param")
    f = train_fields[0]
    train = (f, getattr(solver, f))
    tests: list[tuple[str, NetParameter | str]] = [("test_net_param", p) for p in solver.test_net_param]
    tests += [("test_net", p) for p in solver.test_net]
    generic = [g for g in ("net_param", "net") if has(solver, g)]
    n_generic = len(solver.test_iter) - len(tests)
    if generic:
        if n_generic < 0:
            raise SolverError(f"{len(tests)} test nets but only {len(solver.test_iter)} test_iter",
                              loc=loc_of(solver, "test_iter"), hint="give one test_iter per test net")
        tests += [(generic[0], getattr(solver, generic[0]))] * n_generic
    elif n_generic != 0:
        raise SolverError(f"test_iter is given {len(solver.test_iter)} times for {len(tests)} "
                          "test nets", loc=loc_of(solver, "test_iter") or where,
                          hint="give one test_iter per test net")
    if solver.test_state and len(solver.test_state) != len(tests):
        raise SolverError(f"{len(solver.test_state)} test_state for {len(tests)} test nets",
                          loc=loc_of(solver, "test_state"))
    return train, tests


def _load(defn: NetParameter | str, solver_dir: Path | None) -> tuple[NetParameter, str | None, list[str]]:
    warnings: list[str] = []
    if isinstance(defn, str):
        path = resolve_path(defn, solver_dir)
        return read_net(path, warnings=warnings), str(path), warnings
    from netdef.ir.upgrade import net_needs_upgrade, upgrade_net

    return (upgrade_net(defn) if net_needs_upgrade(defn) else defn), None, warnings


def compile_solver_nets(solver: SolverParameter, solver_path: str | None, *, device: torch.device,
                        rank: int = 0, world: int = 1, log: list[str] | None = None,
                        with_data: bool = True, channels_last: bool | None = False
                        ) -> tuple[CompiledNet, list[CompiledNet]]:
    """Build the train net and the test nets (sharing the train net's parameters).

    ``channels_last``: the nets' memory layout (``None``: netdef's default for the device,
    :func:`netdef.lowering.runtime.channels_last_pays`)."""
    from netdef.lowering.module import build
    from netdef.lowering.runtime import choose_layout

    log = log if log is not None else []
    solver_dir = Path(solver_path).resolve().parent if solver_path else None
    (train_origin, train_def), test_defs = _net_definitions(solver, solver_path)

    def make(defn: NetParameter | str, origin: str, phase: str, state_parts: list[NetState],
             label: str) -> CompiledNet:
        net, path, warnings = _load(defn, solver_dir)
        state = _merge_state(phase, net.state, *state_parts)
        loaded = prepare_net(net, path=path, phase=phase, level=state.level,
                             stages=tuple(state.stage), warnings=tuple(warnings))
        base = loaded.base_dir or Path.cwd()
        analysis = analyze(loaded, ShapeContext(phase=phase, base_dir=base))
        log.extend(analysis.log)
        module = build(analysis)
        module.to(device)
        choose_layout(module, device, channels_last)
        module.train(phase == "TRAIN")
        compiled = CompiledNet(label, path or "inline", analysis, module, device=device)
        if with_data:
            compiled.sources = _make_sources(loaded, phase, base, rank, world,
                                             solver.random_seed)
        return compiled

    kind = "file" if isinstance(train_def, str) else "parameters"
    log.append(f"Creating training net {'from net file: ' + train_def if kind == 'file' else 'specified in ' + train_origin + '.'}")
    train = make(train_def, train_origin, "TRAIN", [solver.train_state], "train")
    tests: list[CompiledNet] = []
    for i, (origin, defn) in enumerate(test_defs):
        what = f"net file: {defn}" if isinstance(defn, str) else f"{origin}."
        log.append(f"Creating test net (#{i}) specified by {what}")
        parts = [solver.test_state[i]] if solver.test_state else []
        test = make(defn, origin, "TEST", parts, f"test #{i}")
        share_parameters(train.module, test.module)
        tests.append(test)
    return train, tests


def _make_sources(loaded: LoadedNet, phase: str, base_dir: Path, rank: int, world: int,
                  seed: int) -> list[Any]:
    from netdef.layers import registry
    from netdef.training.data import make_source

    sources = []
    cwd = os.getcwd()
    for layer in loaded.net.layer:
        if not registry.get(layer.type).is_data or layer.type == "Input":
            continue
        sources.append(make_source(layer, phase, base_dir, rank=rank, world=world,
                                   seed=None if seed < 0 else seed))
    del cwd
    return sources


def share_parameters(src: torch.nn.Module, dst: torch.nn.Module) -> int:
    """Caffe's ``ShareTrainedLayersWith``: same-named layers use the same tensors."""
    shared = 0
    src_children = dict(src.named_children())
    for name, child in dst.named_children():
        other = src_children.get(name)
        if other is None:
            continue
        for key, p in list(child._parameters.items()):
            q = other._parameters.get(key)
            if q is not None and p is not None and q.shape == p.shape:
                child._parameters[key] = q
                shared += 1
    return shared
