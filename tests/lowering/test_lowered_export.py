"""A built LeNet is ordinary PyTorch: jit.trace, torch.export, pickling, state_dict keys."""
from __future__ import annotations

import copy
import io
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from caffe_fixtures import SHARED, net_of

LENET = SHARED / "caffe" / "examples" / "mnist" / "lenet.prototxt"
REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")


@pytest.fixture(autouse=True)
def _portable_gemm(monkeypatch):
    """Traced and exported graphs keep F.linear for InnerProduct (portable; eager CPU runs
    take oneDNN's GEMM, another summation order): the eager references here take it too,
    so they are compared like for like at 1e-6."""
    import netdef.lowering.ops.gemm as gemm

    monkeypatch.setattr(gemm, "onednn_gemm", lambda rows, weight_elements: False)


@pytest.fixture(scope="module")
def lenet():
    from netdef.analysis.net import analyze
    from netdef.api import load_net
    from netdef.layers.registry import ShapeContext
    from netdef.lowering.module import build

    if not LENET.is_file():
        pytest.skip("lenet.prototxt not present")
    analysis = analyze(load_net(LENET, phase="TEST"), ShapeContext(phase="TEST", batch=2))
    module = build(analysis, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # Caffe's default fillers are zeros: make the outputs informative
        for p in module.parameters():
            p.normal_(0, 0.1)
    return module


def test_state_dict_keys_are_caffe_blobs(lenet):
    assert list(lenet.state_dict()) == [f"{l}.{i}" for l in ("conv1", "conv2", "ip1", "ip2")
                                        for i in (0, 1)]
    assert "self.conv1(data)" in lenet.code


def test_jit_trace(lenet):
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        ref = lenet(data=x)["prob"]
        traced = torch.jit.trace(lenet, example_kwarg_inputs={"data": x}, strict=False)
        out = traced(data=x)
    assert torch.allclose(out["prob"], ref, rtol=0, atol=1e-6)
    buf = io.BytesIO()
    torch.jit.save(traced, buf)
    buf.seek(0)
    with torch.no_grad():
        assert torch.allclose(torch.jit.load(buf)(data=x)["prob"], ref, rtol=0, atol=1e-6)


def test_torch_export(lenet):
    x = torch.randn(2, 1, 28, 28)
    ep = torch.export.export(lenet, (), {"data": x})
    with torch.no_grad():
        ref = lenet(data=x)["prob"]
    out = ep.module()(data=x)
    assert torch.allclose(out["prob"], ref, rtol=0, atol=1e-6)
    # the exported program keeps the Caffe blob names as its parameters
    assert set(ep.state_dict) == set(lenet.state_dict())


def test_export_with_dynamic_batch(lenet):
    batch = torch.export.Dim("batch", min=1, max=64)
    ep = torch.export.export(lenet, (), {"data": torch.randn(2, 1, 28, 28)},
                             dynamic_shapes={"data": {0: batch}})
    x5 = torch.randn(5, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(ep.module()(data=x5)["prob"], lenet(data=x5)["prob"], atol=1e-6)


def test_pickle_and_deepcopy(lenet):
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        ref = lenet(data=x)["prob"]
        again = pickle.loads(pickle.dumps(lenet))
        assert torch.equal(again(data=x)["prob"], ref)
        assert torch.equal(copy.deepcopy(lenet)(data=x)["prob"], ref)


def test_unpickle_in_a_fresh_process(tmp_path, lenet):
    """The lowered classes are defined lazily (no torch at registry import) yet are found
    by name when a fresh interpreter unpickles a saved net."""
    path = tmp_path / "lenet.pt"
    torch.save(lenet, path)
    code = ("import torch, sys; m = torch.load(sys.argv[1], weights_only=False); "
            "print(tuple(m(data=torch.zeros(1, 1, 28, 28))['prob'].shape))")
    res = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                         cwd=REPO)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "(1, 10)"


def test_registry_import_does_not_import_torch():
    code = ("import sys; from netdef.layers import registry; registry.all_types(); "
            "from netdef.layers.families import vision, common, structure; "
            "print('torch' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "False"


def test_layer_names_with_slashes_trace_and_export():
    body = ('layer { name: "conv1/7x7_s2" type: "Convolution" bottom: "x" top: "conv1/7x7_s2" '
            'convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "gaussian" } } }\n'
            'layer { name: "conv1/relu" type: "ReLU" bottom: "conv1/7x7_s2" top: "conv1/7x7_s2" }\n'
            'layer { name: "pool/a" type: "Pooling" bottom: "conv1/7x7_s2" top: "pa" '
            'pooling_param { pool: MAX kernel_size: 3 stride: 1 pad: 1 } }\n'
            'layer { name: "pool/b" type: "Pooling" bottom: "conv1/7x7_s2" top: "pb" '
            'pooling_param { pool: AVE kernel_size: 3 stride: 2 } }\n'
            'layer { name: "cat" type: "Concat" bottom: "pa" bottom: "conv1/7x7_s2" top: "cat" }\n')
    _, module = net_of(body, {"x": (2, 3, 9, 9)})
    x = torch.randn(2, 3, 9, 9)
    with torch.no_grad():
        ref = module(x=x)
        ep = torch.export.export(module, (), {"x": x})
        got = ep.module()(x=x)
        traced = torch.jit.trace(module, example_kwarg_inputs={"x": x}, strict=False)(x=x)
    for k in ref:
        assert torch.allclose(got[k], ref[k], atol=1e-6)
        assert torch.allclose(traced[k], ref[k], atol=1e-6)
