"""Graph checks Caffe makes while building a net, with better wording.

Run on a filtered modern net: unknown layer types (all listed at once), duplicate
layer names, bottoms that no earlier layer produced (incl. "cycles": a bottom made
only by a later layer), tops produced twice without being in-place, layer arity.
"""
from __future__ import annotations

from typing import Callable

from netdef.errors import GraphError
from netdef.ir.messages import NetParameter
from netdef.ir.schema import loc_of


def check_layer_types(net: NetParameter, is_known: Callable[[str], bool],
                      known_names: Callable[[], list[str]]) -> None:
    unknown = [(l, l.type) for l in net.layer if not is_known(l.type)]
    if not unknown:
        return
    import difflib

    names = sorted({t for _, t in unknown})
    first = unknown[0][0]
    where = ", ".join(f"'{t}' (layer '{l.name}', line {(loc_of(l, 'type') or loc_of(l)).line})"
                      if loc_of(l) else f"'{t}' (layer '{l.name}')" for l, t in unknown[:8])
    more = f" and {len(unknown) - 8} more" if len(unknown) > 8 else ""
    hints = []
    for t in names:
        close = difflib.get_close_matches(t, known_names(), n=1, cutoff=0.6)
        if close:
            hints.append(f"'{t}' → did you mean '{close[0]}'?")
    hint = "; ".join(hints) if hints else "`netdef layers` lists the known types"
    noun = "type" if len(names) == 1 else "types"
    raise GraphError(f"unknown layer {noun} {', '.join(repr(n) for n in names)}: {where}{more}",
                     loc=loc_of(first, "type"), text=first.type, hint=hint)


def check_graph(net: NetParameter,
                has_weights: Callable[[object], bool] = lambda layer: False) -> list[str]:
    """Names, bottoms and tops as Caffe's ``Net::Init`` checks them; returns warnings.

    Caffe itself accepts duplicate layer names (BVLC's mnist_autoencoder has two
    ``loss`` layers); they only break weight copying by name, so a duplicate is an
    error when either layer has weights, a warning otherwise.
    """
    warnings: list[str] = []
    seen_layers: dict[str, int] = {}
    producer: dict[str, str] = {}  # blob -> layer that last wrote it
    all_tops: dict[str, str] = {}  # blob -> first producer, for "made later" hints
    for layer in net.layer:
        for t in layer.top:
            all_tops.setdefault(t, layer.name)
    for index, layer in enumerate(net.layer):
        if layer.name in seen_layers:
            other = net.layer[seen_layers[layer.name]]
            msg = f"duplicate layer name '{layer.name}' (also layer #{seen_layers[layer.name]})"
            if layer.param or other.param or has_weights(layer) or has_weights(other):
                raise GraphError(msg, loc=loc_of(layer, "name"), text=layer.name,
                                 hint="layer names must be unique: weights are matched by name")
            warnings.append(f"{loc_of(layer, 'name')}: warning: {msg}")
        seen_layers[layer.name] = index
        for i, b in enumerate(layer.bottom):
            if b not in producer:
                hint = None
                if b in all_tops:
                    hint = (f"'{b}' is made by layer '{all_tops[b]}', which comes later: layers "
                            "run in file order, so this would be a cycle")
                else:
                    close = _close(b, list(producer))
                    hint = f"did you mean '{close}'?" if close else \
                        "add a layer (or an Input) that produces it"
                raise GraphError(
                    f"unknown bottom blob '{b}' (layer '{layer.name}', bottom index {i})",
                    loc=loc_of(layer, "bottom", i), text=b, hint=hint)
        bottoms = list(layer.bottom)
        local: set[str] = set()
        for j, t in enumerate(layer.top):
            in_place = j < len(bottoms) and bottoms[j] == t
            if t in local or (t in producer and not in_place):
                raise GraphError(
                    f"top blob '{t}' produced by multiple sources (layer '{layer.name}' "
                    f"and layer '{producer[t] if t in producer else layer.name}')",
                    loc=loc_of(layer, "top", j), text=t,
                    hint="in-place layers must name the same blob as bottom and top at the "
                         "same index; otherwise give the top a new name")
            local.add(t)
        for t in layer.top:
            producer[t] = layer.name
    return warnings


def _close(name: str, candidates: list[str]) -> str | None:
    import difflib

    m = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return m[0] if m else None
