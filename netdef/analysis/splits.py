"""Caffe's ``InsertSplits``: a blob read by several layers gets a Split layer.

Names follow Caffe exactly (they appear in its logs and weights files):
layer ``<producer>_<blob>_<top index>_split``, tops ``…_split_<k>``.  A top with an
explicit non-zero ``loss_weight`` counts as one more consumer, and the split then
carries that weight on its first top.
"""
from __future__ import annotations

from netdef.errors import GraphError
from netdef.ir.messages import LayerParameter, NetParameter
from netdef.ir.schema import loc_of, make, update


def split_layer_name(layer: str, blob: str, top_index: int) -> str:
    return f"{layer}_{blob}_{top_index}_split"


def split_blob_name(layer: str, blob: str, top_index: int, split_index: int) -> str:
    return f"{layer}_{blob}_{top_index}_split_{split_index}"


def insert_splits(net: NetParameter) -> tuple[LayerParameter, ...]:
    """The layers with Split layers inserted (input layers are not modified)."""
    layers = net.layer
    last_top: dict[str, tuple[int, int]] = {}
    source_of: dict[tuple[int, int], tuple[int, int]] = {}
    uses: dict[tuple[int, int], int] = {}
    loss_weight: dict[tuple[int, int], float] = {}
    for i, layer in enumerate(layers):
        for j, blob in enumerate(layer.bottom):
            if blob not in last_top:
                raise GraphError(f"unknown bottom blob '{blob}' (layer '{layer.name}', "
                                 f"bottom index {j})", loc=loc_of(layer, "bottom", j))
            src = last_top[blob]
            source_of[(i, j)] = src
            uses[src] = uses.get(src, 0) + 1
        for j, blob in enumerate(layer.top):
            last_top[blob] = (i, j)
        for j, w in enumerate(layer.loss_weight):
            loss_weight[(i, j)] = w
            if w:
                uses[(i, j)] = uses.get((i, j), 0) + 1
    out: list[LayerParameter] = []
    next_split: dict[tuple[int, int], int] = {}
    for i, layer in enumerate(layers):
        bottoms = list(layer.bottom)
        for j, blob in enumerate(bottoms):
            src = source_of[(i, j)]
            if uses.get(src, 0) > 1:
                k = next_split.get(src, 0)
                next_split[src] = k + 1
                bottoms[j] = split_blob_name(layers[src[0]].name, blob, src[1], k)
        copy = update(layer, bottom=bottoms) if bottoms != list(layer.bottom) else layer
        splits: list[LayerParameter] = []
        for j, blob in enumerate(layer.top):
            n = uses.get((i, j), 0)
            if n <= 1:
                continue
            w = loss_weight.get((i, j), 0.0)
            tops = [split_blob_name(layer.name, blob, j, k) for k in range(n)]
            fields = dict(name=split_layer_name(layer.name, blob, j), type="Split",
                          bottom=(blob,), top=tuple(tops))
            if w:
                fields["loss_weight"] = tuple([w] + [0.0] * (n - 1))
                next_split[(i, j)] = next_split.get((i, j), 0) + 1
            splits.append(make(LayerParameter, _loc=layer._loc, **fields))
        if splits and any(loss_weight.get((i, j), 0.0) for j in range(len(layer.top))
                          if uses.get((i, j), 0) > 1):
            copy = update(copy, loss_weight=None)  # the split carries the weight now
        out.append(copy)
        out.extend(splits)
    return tuple(out)
