"""The front half of the pipeline, as one call per file kind.

``load_net``: read → parse (syntax) → type (ir.build) → upgrade legacy forms →
filter by NetState → validate.  ``load_solver`` does the same for solver files.
Nothing here imports torch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from netdef.errors import GraphError, NetdefError
from netdef.ir.build import BuildContext, build_message
from netdef.ir.messages import NetParameter, NetState, SolverParameter
from netdef.ir.schema import Loc
from netdef.ir.state import filter_net, make_state
from netdef.ir.upgrade import net_needs_upgrade, upgrade_net, upgrade_solver
from netdef.ir.validate import check_graph, check_layer_types
from netdef.layers import registry
from netdef.syntax import parse_text, read_source


@dataclass(frozen=True)
class LoadedNet:
    """A net file after the front half of the pipeline."""

    path: str | None
    full: NetParameter  # upgraded, all phases
    net: NetParameter  # filtered for ``state``, validated
    state: NetState
    warnings: tuple[str, ...] = ()
    upgrade_log: tuple[str, ...] = ()
    filter_log: tuple[str, ...] = ()

    @property
    def base_dir(self) -> Path | None:
        return Path(self.path).resolve().parent if self.path else None


def parse_net_text(text: str, file: str | None = None,
                   warnings: list[str] | None = None) -> NetParameter:
    """Text → typed NetParameter (no upgrade, no filtering)."""
    ctx = BuildContext(file, known_layer_type=_known_any)
    net = build_message(NetParameter, parse_text(text, file), ctx, Loc(file, 1, 1))
    if warnings is not None:
        warnings.extend(ctx.warnings)
    return net


def _known_any(type_name: str) -> bool:
    """Known modern type or V1 enum name (fork fields error only for known types)."""
    return registry.is_known(type_name) or registry.by_v1_name(type_name) is not None


def read_net(path: str | Path | None = None, *, text: str | None = None,
             warnings: list[str] | None = None,
             upgrade_log: list[str] | None = None) -> NetParameter:
    """Read, parse and upgrade a net file (all phases)."""
    file = str(path) if path is not None else None
    if text is None:
        if path is None:
            raise NetdefError("no net given")
        text = read_source(path)
    net = parse_net_text(text, file, warnings)
    if net_needs_upgrade(net):
        net = upgrade_net(net, log=upgrade_log, file=file)
    return net


def prepare_net(net: NetParameter, *, path: str | None = None, phase: str = "TRAIN",
                level: int = 0, stages: tuple[str, ...] = (),
                warnings: tuple[str, ...] = (), upgrade_log: tuple[str, ...] = ()) -> LoadedNet:
    """Filter an upgraded net for a NetState and validate the result."""
    state = make_state(phase, level, stages)
    flog: list[str] = []
    filtered = filter_net(net, state, flog)
    if not filtered.layer:
        raise GraphError(f"the net has no layers in phase {state.phase.name}",
                         loc=Loc(path, 1, 1) if path else None,
                         hint="check the include/exclude rules, --phase, --stage, --level")
    check_layer_types(filtered, registry.is_known, lambda: sorted(registry.all_types()))
    for layer in filtered.layer:
        try:
            registry.check_arity(registry.get(layer.type), layer)
        except NetdefError as exc:
            from netdef.ir.schema import loc_of
            raise exc.with_loc(loc_of(layer)) from None
    warnings = tuple(warnings) + tuple(check_graph(
        filtered, lambda l: registry.get(l.type).has_learnable_blobs(l)))
    return LoadedNet(path, net, filtered, state, warnings, tuple(upgrade_log), tuple(flog))


def load_net(path: str | Path | None = None, *, text: str | None = None, phase: str = "TRAIN",
             level: int = 0, stages: tuple[str, ...] = ()) -> LoadedNet:
    """The whole front half for one net file."""
    warnings: list[str] = []
    ulog: list[str] = []
    net = read_net(path, text=text, warnings=warnings, upgrade_log=ulog)
    return prepare_net(net, path=str(path) if path is not None else None, phase=phase,
                       level=level, stages=stages, warnings=tuple(warnings),
                       upgrade_log=tuple(ulog))


def load_solver(path: str | Path | None = None, *, text: str | None = None,
                log: list[str] | None = None) -> SolverParameter:
    """Read, parse and upgrade a solver file (``solver_type`` enum → ``type``)."""
    file = str(path) if path is not None else None
    if text is None:
        if path is None:
            raise NetdefError("no solver given")
        text = read_source(path)
    ctx = BuildContext(file, known_layer_type=_known_any)
    solver = build_message(SolverParameter, parse_text(text, file), ctx, Loc(file, 1, 1))
    return upgrade_solver(solver, log=log, file=file)


def looks_like_solver(text: str) -> bool:
    """Cheap sniff used by the CLI to route a file to the solver or net loader."""
    import re

    solver_field = re.search(r"^\s*(base_lr|lr_policy|max_iter|train_net|test_iter|solver_mode|"
                             r"net_param|train_net_param)\s*:?", text, re.M)
    top_level_layer = re.search(r"^layers?\s*:?\s*\{", text, re.M)  # column 0 only
    return bool(solver_field) and not top_level_layer
