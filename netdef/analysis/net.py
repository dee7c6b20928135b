"""Caffe's ``Net::Init`` without allocating anything: shapes, params, backward flags.

The pipeline is Caffe's own (see design notes): filtered net → :func:`insert_splits`
→ per layer: connect bottoms/tops, run the registry's shape rule, record params and
sharing → decide backward computation from the loss → collect outputs.  Every step
appends the line Caffe's glog would print, so :attr:`NetAnalysis.log` is the init log.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from netdef.analysis.splits import insert_splits
from netdef.api import LoadedNet
from netdef.errors import GraphError, NetdefError, ShapeError
from netdef.ir.messages import LayerParameter, ParamSpec
from netdef.ir.schema import has, loc_of
from netdef.ir.text import to_text
from netdef.layers import registry
from netdef.layers.registry import Counts, Shape, ShapeContext


@dataclass(frozen=True)
class ParamInfo:
    """One learnable blob of a layer."""

    shape: Shape
    lr_mult: float
    decay_mult: float
    name: str  # ParamSpec.name ("" when unnamed)
    owner: tuple[str, int] | None  # (layer, index) owning a shared blob; None if own

    @property
    def count(self) -> int:
        return _prod(self.shape)


@dataclass(frozen=True)
class LayerInfo:
    """One layer after setup (Split layers included)."""

    index: int
    name: str
    type: str
    param: LayerParameter
    bottoms: tuple[str, ...]
    tops: tuple[str, ...]
    bottom_shapes: tuple[Shape, ...]
    top_shapes: tuple[Shape, ...]
    in_place: tuple[bool, ...]  # per top: same blob as the bottom at that index
    params: tuple[ParamInfo, ...]
    loss_weights: tuple[float, ...]
    counts: Counts
    need_backward: bool
    bottom_need_backward: tuple[bool, ...]
    is_split: bool

    @property
    def defn(self) -> registry.LayerDef:
        return registry.get(self.type)

    @property
    def param_count(self) -> int:
        """Learnable values this layer owns (shared blobs count at their owner)."""
        return sum(p.count for p in self.params if p.owner is None)


@dataclass(frozen=True)
class NetAnalysis:
    """Everything the report, draw, lowering and training stages need about a net."""

    name: str
    phase: str
    layers: tuple[LayerInfo, ...]
    blobs: dict[str, Shape]  # every blob (in-place blobs once)
    inputs: tuple[str, ...]  # tops of Input layers (Caffe's net inputs)
    outputs: tuple[str, ...]  # blobs nobody consumes, alphabetical (Caffe's order)
    log: tuple[str, ...]  # Caffe's init log lines, without glog prefixes
    memory_caffe_bytes: int  # Caffe's "Memory required for data"
    loaded: LoadedNet = field(repr=False, compare=False)

    def layer(self, name: str) -> LayerInfo:
        for info in self.layers:
            if info.name == name:
                return info
        raise KeyError(name)

    @property
    def param_count(self) -> int:
        return sum(info.param_count for info in self.layers)


def _prod(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def shape_string(shape: Shape) -> str:
    """Caffe's ``Blob::shape_string``: ``10 96 55 55 (2904000)``."""
    dims = "".join(f"{d} " for d in shape)
    return f"{dims}({_prod(shape)})"


def format_number(v: float) -> str:
    """C++ ``ostream << float`` with default precision (%g, 6 digits)."""
    return "%g" % v


# glog keeps at most 29,998 characters of one message including its prefix
# ("I20261123 04:23:05.888490 19633 net.cpp:53] ", 44 characters with a 5-digit thread
# id); Caffe's net dump is one message, so big nets are cut there in real logs.
GLOG_MESSAGE_BUDGET = 29_998 - 44


def _glog_message(text: str) -> list[str]:
    """The lines glog writes for one (possibly truncated) multi-line message."""
    text = text[:GLOG_MESSAGE_BUDGET]
    return text[:-1].split("\n") if text.endswith("\n") else text.split("\n")


def analyze(loaded: LoadedNet, ctx: ShapeContext | None = None) -> NetAnalysis:
    """Run Caffe's Net::Init over a loaded net (see module doc)."""
    ctx = ctx or ShapeContext(phase=loaded.state.phase.name, base_dir=loaded.base_dir)
    net = loaded.net
    log: list[str] = list(loaded.filter_log)
    log.extend(_glog_message("Initializing net from parameters: \n" + to_text(net)))
    layers = insert_splits(net)

    shapes: dict[str, Shape] = {}
    need_bw: dict[str, bool] = {}
    available: set[str] = set()
    inputs: list[str] = []
    memory = 0
    param_owner: dict[str, tuple[str, int, Shape, int]] = {}
    infos: list[LayerInfo] = []
    for index, layer in enumerate(layers):
        defn = registry.get(layer.type)
        name = layer.name
        log.append(f"Creating layer {name}")
        log.append(f"Creating Layer {name}")
        if layer.propagate_down and len(layer.propagate_down) != len(layer.bottom):
            raise GraphError(f"layer '{name}': propagate_down has {len(layer.propagate_down)} "
                             f"values for {len(layer.bottom)} bottoms",
                             loc=loc_of(layer, "propagate_down"),
                             hint="give one propagate_down per bottom, or none")
        need_backward = False
        bottom_nb: list[bool] = []
        for j, b in enumerate(layer.bottom):
            log.append(f"{name} <- {b}")
            available.discard(b)
            nb = need_bw.get(b, False)
            if layer.propagate_down:
                nb = bool(layer.propagate_down[j])
            bottom_nb.append(nb)
            need_backward |= need_bw.get(b, False)
        tops = list(layer.top)
        in_place = []
        for j, t in enumerate(tops):
            ip = j < len(layer.bottom) and layer.bottom[j] == t
            in_place.append(ip)
            log.append(f"{name} -> {t} (in-place)" if ip else f"{name} -> {t}")
            available.add(t)
            if layer.type == "Input":
                inputs.append(t)
        if defn.is_loss and not tops:  # Caffe's AutoTopBlobs for loss layers
            tops.append("(automatic)")
            in_place.append(False)
            log.append(f"{name} -> (automatic)")
        bottom_shapes = tuple(shapes[b] for b in layer.bottom)
        try:
            top_shapes = tuple(tuple(int(d) for d in s)
                               for s in defn.shapes(layer, bottom_shapes, ctx))
            param_shapes = tuple(tuple(int(d) for d in s)
                                 for s in defn.params(layer, bottom_shapes))
            counts = defn.counts(layer, bottom_shapes, top_shapes)
        except NetdefError as exc:
            if not exc.message.startswith(f"layer '{name}'"):
                exc.message = f"layer '{name}' ({layer.type}): {exc.message}"
            raise exc.with_loc(loc_of(layer)) from None
        if len(top_shapes) != len(tops):
            raise ShapeError(f"layer '{name}' ({layer.type}) makes {len(top_shapes)} tops but "
                             f"{len(tops)} are named", loc=loc_of(layer, "top"))
        log.extend(defn.setup_log(layer, top_shapes, ctx))
        log.append(f"Setting up {name}")
        loss_weights = tuple(defn.loss_weights(layer, len(tops)))
        for t, s, w in zip(tops, top_shapes, loss_weights):
            shapes[t] = s
            log.append(f"Top shape: {shape_string(s)}")
            if w:
                log.append(f"    with loss weight {format_number(w)}")
            memory += _prod(s)
        log.append(f"Memory required for data: {memory * 4}")
        if len(layer.param) > len(param_shapes):
            raise GraphError(f"too many param specs for layer '{name}': {len(layer.param)} "
                             f"given, the layer has {len(param_shapes)} learnable blobs",
                             loc=loc_of(layer, "param", len(param_shapes)))
        params = []
        for k, pshape in enumerate(param_shapes):
            spec = defn.param_spec(layer, k)
            need_backward |= spec.lr_mult != 0
            params.append(_append_param(layer, k, pshape, spec, param_owner, log))
        for t in tops:
            need_bw[t] = need_backward
        infos.append(LayerInfo(index, name, layer.type, layer, tuple(layer.bottom), tuple(tops),
                               bottom_shapes, top_shapes, tuple(in_place), tuple(params),
                               loss_weights, counts, need_backward, tuple(bottom_nb),
                               layer.type == "Split"))
    infos = _decide_backward(infos, log, loaded.net.force_backward)
    outputs = tuple(sorted(available))
    for o in outputs:
        log.append(f"This network produces output {o}")
    log.append("Network initialization done.")
    return NetAnalysis(net.name, loaded.state.phase.name, tuple(infos), shapes, tuple(inputs),
                       outputs, tuple(log), memory * 4, loaded)


def _append_param(layer: LayerParameter, k: int, shape: Shape, spec: ParamSpec,
                  owners: dict[str, tuple[str, int, Shape, int]], log: list[str]) -> ParamInfo:
    """Caffe's ``AppendParam``: named params are shared, with shape checks."""
    pname = spec.name if has(spec, "name") else ""
    if not pname or pname not in owners:
        if pname:
            owners[pname] = (layer.name, k, shape, int(spec.share_mode))
        return ParamInfo(shape, spec.lr_mult, spec.decay_mult, pname, None)
    owner_layer, owner_k, owner_shape, _ = owners[pname]
    log.append(f"Sharing parameters '{pname}' owned by layer '{owner_layer}', "
               f"param index {owner_k}")
    permissive = has(spec, "share_mode") and spec.share_mode.name == "PERMISSIVE"
    ok = _prod(owner_shape) == _prod(shape) if permissive else owner_shape == shape
    if not ok:
        what = "count" if permissive else "shape"
        raise ShapeError(
            f"cannot share param '{pname}' owned by layer '{owner_layer}' with layer "
            f"'{layer.name}'; {what} mismatch: owner param shape is "
            f"{shape_string(owner_shape)}; sharing param shape is {shape_string(shape)}",
            loc=loc_of(layer, "param", k),
            hint="shared params must have the same shape (or the same count with "
                 "share_mode: PERMISSIVE)")
    return ParamInfo(shape, spec.lr_mult, spec.decay_mult, pname, (owner_layer, owner_k))


def _decide_backward(infos: list[LayerInfo], log: list[str],
                     force_backward: bool) -> list[LayerInfo]:
    """Caffe's backward pass over the net: prune what does not reach a loss."""
    import dataclasses

    under_loss: set[str] = set()
    skip_backp: set[str] = set()
    out = list(infos)
    for i in range(len(out) - 1, -1, -1):
        info = out[i]
        contributes = False
        skip_down = True
        for t, w in zip(info.tops, info.loss_weights):
            if w or t in under_loss:
                contributes = True
            if t not in skip_backp:
                skip_down = False
            if contributes and not skip_down:
                break
        need = info.need_backward
        bottom_nb = list(info.bottom_need_backward)
        if need and skip_down:
            need = False
            bottom_nb = [False] * len(bottom_nb)
        if not contributes:
            need = False
        log.append(f"{info.name} needs backward computation." if need
                   else f"{info.name} does not need backward computation.")
        for j, b in enumerate(info.bottoms):
            if contributes:
                under_loss.add(b)
            else:
                bottom_nb[j] = False
            if not bottom_nb[j]:
                skip_backp.add(b)
        out[i] = dataclasses.replace(info, need_backward=need,
                                     bottom_need_backward=tuple(bottom_nb))
    if force_backward:
        for i, info in enumerate(out):
            defn = info.defn
            bottom_nb = tuple(nb or defn.allow_force_backward(info.param, j)
                              for j, nb in enumerate(info.bottom_need_backward))
            out[i] = dataclasses.replace(info, need_backward=True, bottom_need_backward=bottom_nb)
    return out
