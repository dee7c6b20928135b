"""How a drawn net looks: colours per layer category, node shapes, label text.

Everything visual lives here so :mod:`netdef.render.graph` only decides *what* is
drawn.  Colours are a soft pastel palette (readable black text on every fill, still
distinguishable when printed in grey), one per registry ``category``.
"""
from __future__ import annotations

from dataclasses import dataclass
from html import escape
from typing import Sequence

FONT = "Helvetica,Arial,sans-serif"
FONT_SIZE = "11"
EDGE_FONT_SIZE = "9"
SMALL = 9  # point size of secondary label lines
GREY = "#555555"
EDGE_COLOR = "#4d4d4d"
EDGE_LABEL_COLOR = "#1f3f77"


@dataclass(frozen=True)
class CategoryStyle:
    fill: str
    border: str
    title: str  # legend text


CATEGORIES: dict[str, CategoryStyle] = {
    "data": CategoryStyle("#c7e9c0", "#31a354", "data / input"),
    "conv": CategoryStyle("#c6dbef", "#3182bd", "convolution"),
    "pool": CategoryStyle("#fdd0a2", "#e6550d", "pooling"),
    "norm": CategoryStyle("#dadaeb", "#756bb1", "normalisation"),
    "act": CategoryStyle("#fde0ef", "#c51b7d", "activation"),
    "fc": CategoryStyle("#a1d99b", "#238b45", "fully connected"),
    "loss": CategoryStyle("#fcbba1", "#cb181d", "loss"),
    "structure": CategoryStyle("#f0f0b0", "#a8a832", "concat / slice / eltwise"),
    "recurrent": CategoryStyle("#c7eae5", "#35978f", "recurrent"),
    "other": CategoryStyle("#e8e8e8", "#666666", "other"),
}
# legend order
CATEGORY_ORDER = ("data", "conv", "pool", "norm", "act", "fc", "structure", "recurrent",
                  "other", "loss")


def category_style(category: str) -> CategoryStyle:
    return CATEGORIES.get(category, CATEGORIES["other"])


def node_attrs(category: str, *, is_data: bool, is_loss: bool) -> dict[str, str]:
    """Graphviz node attributes for a layer node (shape, colours)."""
    st = category_style("data" if is_data else "loss" if is_loss else category)
    attrs = {"fillcolor": st.fill, "color": st.border}
    if is_data:
        attrs.update(shape="box", style="filled,bold,rounded", peripheries="2")
    elif is_loss:
        attrs.update(shape="hexagon", style="filled,bold", margin="0.02")
    else:
        attrs.update(shape="box", style="filled,rounded")
    return attrs


GRAPH_ATTRS = {
    "fontname": FONT,
    "labelloc": "t",
    "labeljust": "c",
    "nodesep": "0.3",
    "ranksep": "0.35",
    "bgcolor": "white",
    "pad": "0.2",
}
NODE_ATTRS = {"fontname": FONT, "fontsize": FONT_SIZE, "margin": "0.08,0.04",
              "penwidth": "1.2"}
EDGE_ATTRS = {"fontname": FONT, "fontsize": EDGE_FONT_SIZE, "color": EDGE_COLOR,
              "fontcolor": EDGE_LABEL_COLOR, "arrowsize": "0.6"}


# --- text ---------------------------------------------------------------------------
def dims(shape: Sequence[int]) -> str:
    """``(10, 96, 55, 55)`` → ``96×55×55`` (the batch axis is dropped; it is in the title)."""
    per_item = tuple(shape[1:])
    return "×".join(str(d) for d in per_item) if per_item else "scalar"


def full_dims(shape: Sequence[int]) -> str:
    return "×".join(str(d) for d in shape) if shape else "scalar"


def count_text(n: int) -> str:
    """Param count: ``34.94k``, ``37.75M`` (exact below 1000)."""
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.2f}{suffix}"
    return str(n)


def mult_text(v: float) -> str:
    return "%g" % v


def h(text: str) -> str:
    """Escape text for an HTML-like Graphviz label."""
    return escape(text, quote=True)


@dataclass
class LabelLine:
    text: str
    bold: bool = False
    small: bool = False
    color: str | None = None


def html_label(lines: Sequence[LabelLine]) -> str:
    """An HTML-like label: one table row per line (Graphviz wraps it in ``<…>``)."""
    rows = []
    for line in lines:
        text = h(line.text)
        if line.bold:
            text = f"<B>{text}</B>"
        font = []
        if line.small:
            font.append(f'POINT-SIZE="{SMALL}"')
        if line.color:
            font.append(f'COLOR="{line.color}"')
        if font:
            text = f"<FONT {' '.join(font)}>{text}</FONT>"
        rows.append(f"<TR><TD>{text}</TD></TR>")
    return ('<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="1">'
            + "".join(rows) + "</TABLE>>")


def legend_label(title: str, facts: Sequence[str], categories: Sequence[str],
                 note: str | None = None) -> str:
    """The graph title: net name, facts line, and a colour key for ``categories``."""
    cells = []
    for cat in categories:
        st = category_style(cat)
        cells.append(f'<TD BGCOLOR="{st.fill}" BORDER="1" COLOR="{st.border}">'
                     f'<FONT POINT-SIZE="9">{h(st.title)}</FONT></TD>')
    span = max(1, len(cells))
    rows = [f'<TR><TD COLSPAN="{span}"><FONT POINT-SIZE="16"><B>{h(title)}</B></FONT></TD></TR>',
            f'<TR><TD COLSPAN="{span}"><FONT POINT-SIZE="10">{h(" · ".join(facts))}</FONT>'
            f'</TD></TR>']
    if note:
        rows.append(f'<TR><TD COLSPAN="{span}"><FONT POINT-SIZE="9" COLOR="{GREY}">'
                    f'{h(note)}</FONT></TD></TR>')
    if cells:
        rows.append("<TR>" + "".join(cells) + "</TR>")
    return ('<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="3" CELLPADDING="2">'
            + "".join(rows) + "</TABLE>>")
