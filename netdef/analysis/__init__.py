"""Stage 3: Caffe's Net::Init over the IR — shapes, params, counts, memory, init log."""
from netdef.analysis.counts import NetTotals, totals
from netdef.analysis.net import LayerInfo, NetAnalysis, analyze

__all__ = ["LayerInfo", "NetAnalysis", "NetTotals", "analyze", "totals"]
