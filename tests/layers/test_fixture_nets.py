"""Every layer of the six nets real Caffe ran (shared/fixtures/forward/*/net.json):
our ``params()`` and ``shapes()``, fed the recorded bottom shapes, must give exactly the
recorded param blob shapes and top shapes.  Split layers (auto-inserted by Caffe, not
in the prototxt) are checked through the Split definition.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from netdef.ir.build import BuildContext, build_message
from netdef.ir.messages import LayerParameter, NetParameter
from netdef.ir.schema import make, update
from netdef.layers import registry
from netdef.layers.registry import ShapeContext, check_arity
from netdef.syntax import parse_text

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
FORWARD = SHARED / "fixtures" / "forward"
NETS = sorted(p.parent.name for p in FORWARD.glob("*/net.json")) if FORWARD.is_dir() else []


def _net_layers(info: dict) -> dict[str, LayerParameter]:
    path = SHARED / info["prototxt_shared"]
    raw = parse_text(path.read_text(), str(path))
    net = build_message(NetParameter, raw, BuildContext(str(path)))
    return {layer.name: layer for layer in net.layer}


@pytest.mark.skipif(not FORWARD.is_dir(), reason="shared fixtures not present")
@pytest.mark.parametrize("net", NETS)
def test_caffe_recorded_shapes(net: str) -> None:
    info = json.loads((FORWARD / net / "net.json").read_text())
    blobs = {k: tuple(v) for k, v in info["blobs"].items()}
    layers = _net_layers(info)
    batch = info["blobs"][info["inputs"][0]][0]
    ctx = ShapeContext(phase="TEST", batch=batch)
    checked = 0
    for rec in info["layers"]:
        wiring = {"bottom": tuple(rec["bottoms"]), "top": tuple(rec["tops"])}
        if rec["type"] == "Split":
            layer = make(LayerParameter, name=rec["name"], type="Split", **wiring)
        else:  # Caffe rewires bottoms to split tops; the prototxt keeps the original names
            layer = update(layers[rec["name"]], **wiring)
        defn = registry.get(rec["type"])
        check_arity(defn, layer)
        bottoms = [blobs[b] for b in rec["bottoms"]]
        assert defn.params(layer, bottoms) == [tuple(s) for s in rec["params"]], rec["name"]
        assert defn.shapes(layer, bottoms, ctx) == [blobs[t] for t in rec["tops"]], rec["name"]
        checked += 1
    assert checked == len(info["layers"]) > 5


@pytest.mark.skipif(not FORWARD.is_dir(), reason="shared fixtures not present")
def test_param_counts_match_caffe() -> None:
    """The README's parameter totals follow from the per-layer param shapes."""
    import math
    for net in NETS:
        info = json.loads((FORWARD / net / "net.json").read_text())
        layers = _net_layers(info)
        blobs = {k: tuple(v) for k, v in info["blobs"].items()}
        total = sum(math.prod(s) for rec in info["layers"] if rec["type"] != "Split"
                    for s in registry.get(rec["type"]).params(layers[rec["name"]],
                                                               [blobs[b] for b in rec["bottoms"]]))
        assert total == info["param_count"], net
