"""Drawing nets with Graphviz (``netdef draw``); see :mod:`netdef.render.graph`."""
from netdef.render.graph import DrawOptions, build_graph, plan, render

__all__ = ["DrawOptions", "build_graph", "plan", "render"]
