"""A :class:`~netdef.analysis.net.NetAnalysis` as a Graphviz graph.

Two steps: :func:`plan` decides what is drawn (plain data, easy to test), and
:func:`to_digraph` turns a plan into a :class:`graphviz.Digraph` using the looks in
:mod:`netdef.render.style`.

* one node per layer; layers are coloured by their registry ``category``; data and
  loss layers get their own shapes;
* blobs are edges, labelled with their shape without the batch axis (the batch is in
  the title);
* in-place layers (ReLU, Dropout, BatchNorm, Scale… with ``top == bottom``) are folded
  into the node of the layer that produced the blob, as extra ``+ Type`` lines, like
  Netron does — ``expand_inplace`` draws them as nodes of their own;
* Caffe's auto-inserted Split layers are never drawn: edges go straight from the
  producer to every consumer.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from netdef.render import style
from netdef.render.style import LabelLine

if TYPE_CHECKING:  # pragma: no cover
    import graphviz

    from netdef.analysis.net import LayerInfo, NetAnalysis

RANKDIRS = ("TB", "LR", "BT", "RL")


@dataclass(frozen=True)
class DrawOptions:
    rankdir: str = "TB"
    show_shapes: bool = True  # label edges with blob shapes
    expand_inplace: bool = False  # draw in-place layers as nodes of their own
    display_lrm: bool = False  # show lr_mult of learnable blobs (Caffe's --display_lrm)


@dataclass
class NodePlan:
    id: str
    layer: "LayerInfo"
    folded: list["LayerInfo"] = field(default_factory=list)  # in-place layers merged in
    outputs: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)  # net outputs

    @property
    def category(self) -> str:
        return self.layer.defn.category

    @property
    def layers(self) -> list["LayerInfo"]:
        return [self.layer, *self.folded]


@dataclass(frozen=True)
class EdgePlan:
    tail: str  # node id
    head: str  # node id
    blob: str  # the blob as the consumer names it (Split tops resolved to the original)
    shape: tuple[int, ...]
    named: bool  # the producer has several tops: say which one


@dataclass
class Plan:
    name: str
    phase: str
    nodes: list[NodePlan]
    edges: list[EdgePlan]
    folded_any: bool
    splits_hidden: int


@dataclass
class _Source:
    node: NodePlan
    blob: str
    shape: tuple[int, ...]


def _foldable(info: "LayerInfo", src: dict[str, _Source]) -> NodePlan | None:
    """The node an in-place layer folds into, or None if it must stay a node."""
    if not info.tops or len(info.bottoms) != len(info.tops) or not all(info.in_place):
        return None
    owners = {id(src[b].node) for b in info.bottoms if b in src}
    if len(owners) != 1 or any(b not in src for b in info.bottoms):
        return None
    return src[info.bottoms[0]].node


def plan(analysis: "NetAnalysis", options: DrawOptions = DrawOptions()) -> Plan:
    """Decide nodes and edges (see the module doc)."""
    nodes: list[NodePlan] = []
    edges: list[EdgePlan] = []
    src: dict[str, _Source] = {}  # blob name (as consumers see it) → who produced it
    folded_any = False
    splits = 0
    for info in analysis.layers:
        if info.is_split:
            splits += 1
            origin = src.get(info.bottoms[0]) if info.bottoms else None
            if origin is not None:
                for t in info.tops:
                    src[t] = origin
            continue
        target = None if options.expand_inplace else _foldable(info, src)
        if target is not None:
            target.folded.append(info)
            folded_any = True
            for t, s in zip(info.tops, info.top_shapes):
                src[t] = _Source(target, t, s)
            continue
        node = NodePlan(f"L{info.index}", info)
        nodes.append(node)
        for b in info.bottoms:
            origin = src.get(b)
            if origin is None:  # cannot happen after validation; draw nothing
                continue
            multi = len([t for t in origin.node.layer.tops if t != "(automatic)"]) > 1
            edges.append(EdgePlan(origin.node.id, node.id, origin.blob, origin.shape, multi))
        for t, s in zip(info.tops, info.top_shapes):
            src[t] = _Source(node, t, s)
    for out in analysis.outputs:
        origin = src.get(out)
        if origin is not None:
            origin.node.outputs.append((out, origin.shape))
    return Plan(analysis.name, analysis.phase, nodes, edges, folded_any, splits)


# --- labels -------------------------------------------------------------------------
def _params_line(info: "LayerInfo", display_lrm: bool) -> str:
    parts = []
    n = info.param_count
    if n:
        parts.append(f"{style.count_text(n)} params")
    elif info.params:
        owners = sorted({p.owner[0] for p in info.params if p.owner})
        parts.append(f"params shared with {', '.join(owners)}" if owners else "shared params")
    if display_lrm and info.params:
        parts.append("lr_mult " + ", ".join(style.mult_text(p.lr_mult) for p in info.params))
    return " · ".join(parts)


def _summary(info: "LayerInfo") -> str:
    try:
        return info.defn.summary(info.param)
    except Exception:  # noqa: BLE001 - a summary is decoration; never fail a drawing
        return ""


def node_label(node: NodePlan, options: DrawOptions) -> str:
    info = node.layer
    lines = [LabelLine(info.name, bold=True)]
    summary = _summary(info)
    if summary:
        lines.append(LabelLine(f"{info.type} · {summary}" if len(summary) < 28 else info.type))
        if len(summary) >= 28:
            lines.append(LabelLine(summary, small=True))
    else:
        lines.append(LabelLine(info.type))
    extra = _params_line(info, options.display_lrm)
    if extra:
        lines.append(LabelLine(extra, small=True, color=style.GREY))
    for f in node.folded:
        text = f"+ {f.type}"
        s = _summary(f)
        if s:
            text += f" {s}"
        p = _params_line(f, options.display_lrm)
        if p:
            text += f" ({p})"
        lines.append(LabelLine(text, small=True, color=style.category_style(f.defn.category).border))
    for blob, shape in node.outputs:
        text = f"⇒ {blob}"
        if options.show_shapes:
            text += f": {style.dims(shape)}"
        lines.append(LabelLine(text, small=True, color=style.EDGE_LABEL_COLOR))
    return style.html_label(lines)


def edge_label(edge: EdgePlan, options: DrawOptions) -> str:
    if options.show_shapes:
        shape = style.dims(edge.shape)
        return f"{edge.blob}: {shape}" if edge.named else shape
    return edge.blob if edge.named else ""


def _facts(analysis: "NetAnalysis") -> list[str]:
    from netdef.analysis.counts import human, human_bytes, totals

    t = totals(analysis)
    return [f"phase {analysis.phase}", f"batch {t.batch}",
            f"{style.count_text(t.params)} params", f"{human(t.macs, 'MACs')}",
            f"Caffe memory {human_bytes(t.caffe_data_bytes)}"]


def to_digraph(analysis: "NetAnalysis", p: Plan, options: DrawOptions) -> "graphviz.Digraph":
    import graphviz

    g = graphviz.Digraph(name=_dot_id(p.name or "net"), engine="dot")
    g.attr("graph", rankdir=options.rankdir, **style.GRAPH_ATTRS)
    g.attr("node", **style.NODE_ATTRS)
    g.attr("edge", **style.EDGE_ATTRS)
    cats = []
    for node in p.nodes:
        for info in node.layers:
            c = "data" if info.defn.is_data else "loss" if info.defn.is_loss else info.defn.category
            if c not in cats:
                cats.append(c)
    cats = [c for c in style.CATEGORY_ORDER if c in cats] + [c for c in cats
                                                             if c not in style.CATEGORY_ORDER]
    notes = []
    if p.folded_any:
        notes.append("+ lines: in-place layers folded into their producer")
    if p.splits_hidden:
        notes.append(f"{p.splits_hidden} Split layer{'s' if p.splits_hidden > 1 else ''} hidden")
    if options.show_shapes:
        notes.append("edges: blob shape per item (C×H×W)")
    g.attr("graph", label=style.legend_label(p.name or "net", _facts(analysis), cats,
                                             "; ".join(notes) or None))
    seen_ids: set[str] = set()
    for node in p.nodes:
        info = node.layer
        attrs = style.node_attrs(info.defn.category, is_data=info.defn.is_data,
                                 is_loss=info.defn.is_loss)
        svg_id = info.name
        k = 1
        while svg_id in seen_ids:
            k += 1
            svg_id = f"{info.name}#{k}"
        seen_ids.add(svg_id)
        tip = "; ".join(f"{l.name} ({l.type})" for l in node.layers)
        g.node(node.id, label=node_label(node, options), id=_esc(svg_id), tooltip=_esc(tip),
               **attrs)
    for e in p.edges:
        label = edge_label(e, options)
        attrs = {"tooltip": _esc(f"{e.blob}: {style.full_dims(e.shape)}")}
        if label:
            attrs["label"] = _esc("  " + label)  # air between the line and its text
        g.edge(e.tail, e.head, **attrs)
    return g


def _esc(text: str) -> str:
    """Text for a quoted DOT string: backslashes and quotes escaped (the graphviz package
    leaves backslashes alone, as DOT escapes like ``\\n`` go through it)."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


def build_graph(analysis: "NetAnalysis", options: DrawOptions = DrawOptions()) -> "graphviz.Digraph":
    """The whole drawing of ``analysis`` as a :class:`graphviz.Digraph`."""
    import warnings

    with warnings.catch_warnings():  # text is escaped here; no quoting advice on stderr
        warnings.simplefilter("ignore")
        return to_digraph(analysis, plan(analysis, options), options)


def _dot_id(name: str) -> str:
    return name if name.replace("_", "a").isalnum() else "net"


# --- output -------------------------------------------------------------------------
FORMATS = ("svg", "png", "pdf", "dot")
INSTALL_HINT = ("install Graphviz: `apt-get install graphviz` (Debian/Ubuntu) or "
                "`brew install graphviz` (macOS)")


def dot_available() -> bool:
    import shutil

    return shutil.which("dot") is not None


def render(g: "graphviz.Digraph", fmt: str) -> bytes:
    """The bytes of ``g`` in ``fmt`` (``dot`` needs no Graphviz; the rest run ``dot``)."""
    from netdef.errors import ToolError

    if fmt == "dot":
        return g.source.encode("utf-8")
    if fmt not in FORMATS:
        raise ToolError(f"unknown output format '{fmt}'",
                        hint=f"use one of {', '.join(FORMATS)}")
    if not dot_available():
        raise ToolError(f"cannot render {fmt}: Graphviz `dot` was not found on PATH",
                        hint=INSTALL_HINT + "; or write .dot, which needs no Graphviz")
    import graphviz

    try:
        return g.pipe(format=fmt)
    except graphviz.ExecutableNotFound:
        raise ToolError(f"cannot render {fmt}: Graphviz `dot` could not be run",
                        hint=INSTALL_HINT) from None
    except graphviz.CalledProcessError as exc:
        err = exc.stderr.decode("utf-8", "replace") if isinstance(exc.stderr, bytes) else str(
            exc.stderr or "")
        first = next((l.strip() for l in err.splitlines() if l.strip()), f"exit {exc.returncode}")
        raise ToolError(f"Graphviz `dot` failed: {first}") from None
