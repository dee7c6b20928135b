"""Caffe's ``FilterNet``: keep the layers whose include/exclude rules meet the NetState.

A ``train_val`` file thus yields a TRAIN and a TEST net.  The log lines are Caffe's
own (they appear in its init logs), phases printed as numbers as Caffe does.
"""
from __future__ import annotations

from netdef.errors import GraphError
from netdef.ir.messages import LayerParameter, NetParameter, NetState, NetStateRule, Phase
from netdef.ir.schema import has, loc_of, make, update


def make_state(phase: str | Phase = "TRAIN", level: int = 0,
               stages: tuple[str, ...] = ()) -> NetState:
    """A NetState as Caffe's tools build it (phase, level and stages all set)."""
    ph = phase if isinstance(phase, Phase) else Phase[str(phase).upper()]
    return make(NetState, phase=ph, level=level, stage=tuple(stages))


def state_meets_rule(state: NetState, rule: NetStateRule, layer_name: str,
                     log: list[str] | None = None) -> bool:
    """Caffe's ``StateMeetsRule`` (every set condition of the rule must hold)."""
    def note(msg: str) -> bool:
        if log is not None:
            log.append(msg)
        return False

    if has(rule, "phase") and rule.phase != state.phase:
        return note(f"The NetState phase ({int(state.phase)}) differed from the phase "
                    f"({int(rule.phase)}) specified by a rule in layer {layer_name}")
    if has(rule, "min_level") and state.level < rule.min_level:
        return note(f"The NetState level ({state.level}) is above the min_level "
                    f"({rule.min_level}) specified by a rule in layer {layer_name}")
    if has(rule, "max_level") and state.level > rule.max_level:
        return note(f"The NetState level ({state.level}) is above the max_level "
                    f"({rule.max_level}) specified by a rule in layer {layer_name}")
    for stage in rule.stage:
        if stage not in state.stage:
            return note(f"The NetState did not contain stage '{stage}' specified by a "
                        f"rule in layer {layer_name}")
    for stage in rule.not_stage:
        if stage in state.stage:
            return note(f"The NetState contained a not_stage '{stage}' specified by a "
                        f"rule in layer {layer_name}")
    return True


def layer_included(state: NetState, layer: LayerParameter, log: list[str] | None = None) -> bool:
    if layer.include and layer.exclude:
        raise GraphError(f"layer '{layer.name}' has both include and exclude rules",
                         loc=loc_of(layer, "exclude"),
                         hint="Caffe allows either include rules or exclude rules, not both")
    included = not layer.include
    for rule in layer.exclude:
        if included and state_meets_rule(state, rule, layer.name, log):
            included = False
    for rule in layer.include:
        if not included and state_meets_rule(state, rule, layer.name, log):
            included = True
    return included


def filter_net(net: NetParameter, state: NetState | None = None,
               log: list[str] | None = None) -> NetParameter:
    """The net with ``state`` set and only the layers that state includes."""
    if state is not None:
        net = update(net, state=state)
    kept = tuple(l for l in net.layer if layer_included(net.state, l, log))
    return update(net, layer=kept)
