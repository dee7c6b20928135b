"""Loading trained weights into a built net and saving them back (netdef.lowering.weights)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from caffe_fixtures import FIXTURES, SHARED, assert_close, blobs, net_of
from netdef.errors import WeightsError
from netdef.io.caffemodel import read_weights
from netdef.lowering import weights as W

MODELS = FIXTURES / "caffemodels"
LENET = SHARED / "caffe" / "examples" / "mnist" / "lenet.prototxt"


def _lenet():
    from netdef.analysis.net import analyze
    from netdef.api import load_net
    from netdef.layers.registry import ShapeContext
    from netdef.lowering.module import build

    if not LENET.is_file() or not (MODELS / "lenet_v2.caffemodel").is_file():
        pytest.skip("LeNet prototxt / caffemodels not present")
    analysis = analyze(load_net(LENET, phase="TEST"), ShapeContext(phase="TEST", batch=2))
    return analysis, build(analysis)


def test_v1_v2_hdf5_give_bit_identical_outputs():
    analysis, module = _lenet()
    z = blobs("forward", "lenet")
    x = torch.from_numpy(z["input/data"])
    names = [l.name for l in analysis.layers]
    outs = {}
    for f in ("lenet_v2.caffemodel", "lenet_v1.caffemodel", "lenet.caffemodel.h5"):
        with torch.no_grad():
            for p in module.parameters():
                p.zero_()
        report = W.load_file(module, MODELS / f, net_layers=names)
        assert report.loaded == ["conv1", "conv2", "ip1", "ip2"]
        assert report.ignored == [] and report.missing == []
        with torch.no_grad():
            outs[f] = module(data=x)["prob"]
    v2, v1, h5 = outs.values()
    assert torch.equal(v2, v1) and torch.equal(v2, h5)
    assert_close(v2, z["data/prob"], 3e-5)
    # and the loaded blobs are exactly the fixture's params
    for layer in ("conv1", "conv2", "ip1", "ip2"):
        for i in range(2):
            got = module.get_submodule(layer).blob(i).detach().numpy()
            assert got.tobytes() == z[f"param/{layer}/{i}"].tobytes()


def test_save_is_byte_identical_to_caffe(tmp_path):
    """Net::ToProto: every layer with its LayerParameter and phase, blobs as shape + data."""
    analysis, module = _lenet()
    W.load_file(module, MODELS / "lenet_v1.caffemodel")
    out = tmp_path / "lenet.caffemodel"
    W.save(module, out, analysis)
    assert out.read_bytes() == (MODELS / "lenet_v2.caffemodel").read_bytes()


def test_save_hdf5_round_trip(tmp_path):
    analysis, module = _lenet()
    W.load_file(module, MODELS / "lenet_v2.caffemodel")
    out = tmp_path / "lenet.caffemodel.h5"
    W.save(module, out, analysis)
    got, ref = read_weights(out), read_weights(MODELS / "lenet.caffemodel.h5")
    assert got.format == "hdf5" and list(got) == list(ref)  # every layer, param-less too
    for layer in ref:
        assert len(got[layer]) == len(ref[layer])
        for a, b in zip(got[layer], ref[layer]):
            assert a.shape == b.shape and a.tobytes() == b.tobytes()


def test_save_includes_split_layers(tmp_path):
    """Caffe's auto-inserted Split layers are layers of the set-up net: ToProto writes them."""
    body = ('layer { name: "a" type: "ReLU" bottom: "x" top: "a" }\n'
            'layer { name: "b" type: "Scale" bottom: "x" top: "b" }\n')
    analysis, module = net_of(body, {"x": (2, 3)})
    W.save(module, tmp_path / "w.caffemodel", analysis)
    w = read_weights(tmp_path / "w.caffemodel", net=True)
    assert list(w) == ["x", "x_x_0_split", "a", "b"]
    assert [l.phase.name for l in w.net.layer] == ["TEST"] * 4
    assert [a.shape for a in w["b"]] == [(3,)]
    # and loading that file back ignores nothing (the split layer is a layer of the net)
    report = W.load_file(module, tmp_path / "w.caffemodel", net_layers=[l.name for l in analysis.layers])
    assert report.ignored == [] and report.loaded == ["b"]


def _weights(**layers):
    return {k: [np.asarray(a, np.float32) for a in v] for k, v in layers.items()}


def test_load_ignores_unknown_layers_and_reports_missing():
    body = ('layer { name: "s" type: "Scale" bottom: "x" top: "y" scale_param { bias_term: true } }\n'
            'layer { name: "t" type: "Bias" bottom: "y" top: "z" }\n')
    _, module = net_of(body, {"x": (2, 3)})
    report = W.load(module, _weights(s=[[1, 2, 3], [4, 5, 6]], other=[[1.0]]))
    assert report.loaded == ["s"] and report.ignored == ["other"] and report.missing == ["t"]
    assert report.log == ["Ignoring source layer other"]
    assert module.get_submodule("s").blob(1).tolist() == [4, 5, 6]


def test_load_errors_are_caffes():
    body = 'layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y" inner_product_param { num_output: 4 } }\n'
    _, module = net_of(body, {"x": (2, 3)})
    before = module.get_submodule("ip").blob(0).detach().clone()
    with pytest.raises(WeightsError, match="Incompatible number of blobs for layer ip"):
        W.load(module, _weights(ip=[np.zeros((4, 3))]))
    with pytest.raises(WeightsError, match=r"Cannot copy param 0 weights from layer 'ip'; "
                                           r"shape mismatch.  Source param shape is 3 4 \(12\); "
                                           r"target param shape is 4 3 \(12\)"):
        W.load(module, _weights(ip=[np.zeros((3, 4)), np.zeros(4)]))
    # a failed load copies nothing
    assert torch.equal(module.get_submodule("ip").blob(0), before)


def test_load_legacy_4d_blobs_right_aligned():
    body = 'layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y" inner_product_param { num_output: 4 } }\n'
    _, module = net_of(body, {"x": (2, 3)})
    w = W.state(module)
    legacy = {"ip": [w["ip"][0].reshape(1, 1, 4, 3) + 1, w["ip"][1].reshape(1, 1, 1, 4) + 1]}

    class Legacy(dict):
        pass

    src = Legacy(legacy)
    src.legacy = {"ip": (True, True)}
    W.load(module, src)
    assert np.array_equal(W.state(module)["ip"][0], w["ip"][0] + 1)
    # a non-legacy 4-D blob must match exactly
    with pytest.raises(WeightsError, match="shape mismatch"):
        W.load(module, _weights(ip=[w["ip"][0].reshape(1, 1, 4, 3), w["ip"][1]]))


def test_shared_params_are_one_blob():
    body = ('layer { name: "a" type: "InnerProduct" bottom: "x" top: "a" param { name: "w" } '
            'inner_product_param { num_output: 3 bias_term: false } }\n'
            'layer { name: "b" type: "InnerProduct" bottom: "x" top: "b" param { name: "w" } '
            'inner_product_param { num_output: 3 bias_term: false } }\n')
    _, module = net_of(body, {"x": (2, 3)})
    assert module.get_submodule("a").blob(0) is module.get_submodule("b").blob(0)
    eye = np.eye(3, dtype=np.float32)
    W.load(module, _weights(a=[eye * 2], b=[eye * 5]))  # file order: the last writer wins
    x = torch.ones(2, 3)
    out = module(x=x)
    assert out["a"].tolist() == [[5.0] * 3] * 2 == out["b"].tolist()
    assert len(list(module.parameters())) == 1
