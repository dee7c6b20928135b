"""NetParameter: a whole net (modern ``layer`` and legacy ``layers``)."""
from __future__ import annotations

from netdef.ir.messages.common import BlobShape, NetState
from netdef.ir.messages.layer import LayerParameter
from netdef.ir.messages.legacy import V1LayerParameter
from netdef.ir.schema import message, opt, rep


@message
class NetParameter:
    name: str = opt(1, "string")
    input: tuple[str, ...] = rep(3, "string")
    input_shape: tuple[BlobShape, ...] = rep(8, BlobShape)
    input_dim: tuple[int, ...] = rep(4, "int32")
    force_backward: bool = opt(5, "bool", False)
    state: NetState = opt(6, NetState)
    debug_info: bool = opt(7, "bool", False)
    layer: tuple[LayerParameter, ...] = rep(100, LayerParameter)
    layers: tuple[V1LayerParameter, ...] = rep(2, V1LayerParameter)
