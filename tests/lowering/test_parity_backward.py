"""Backward parity with real Caffe on LeNet and cifar10_quick (README section 2).

The oracle fed a random ``diff/<output>`` into the TEST net and ran Backward; here that
diff is the gradient of the fx ``forward`` output (``torch.autograd.backward``).  Checked,
bound ``1e-4·max|ref|``: every ``param_diff/<layer>/<i>`` against the parameters'
``.grad``, every ``bottom_diff/<layer>/<j>`` (the gradient w.r.t. the tensor the layer
was fed: for in-place ReLU its input) and every ``diff/<blob>``.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from caffe_fixtures import assert_close, build_fixture

TOL = 1e-4


def _fed_tensors(fx):
    """Run the layers one by one keeping the graph: ``{(layer, j): tensor fed as bottom j}``
    and the outputs; every fed tensor retains its gradient."""
    children = dict(fx.module.named_children())
    blobs = {k: v for k, v in fx.inputs.items()}
    fed = {}
    for info in fx.analysis.layers:
        if info.defn.is_data:
            continue
        args = [blobs[b] for b in info.bottoms]
        for j, a in enumerate(args):
            if a.requires_grad and not a.is_leaf:
                a.retain_grad()
            fed[(info.name, j)] = a
        res = args[0] if info.is_split else children[info.name](*args)
        tops = list(res) if isinstance(res, (tuple, list)) else [res]
        for t, v in zip(info.tops, tops):
            blobs[t] = v
    return fed, blobs


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("net", ["lenet", "cifar10_quick"])
def test_param_diffs_through_fx_forward(net, layout):
    fx = build_fixture("backward", net, channels_last=layout == "channels_last")
    z = fx.z
    data = {k: v.clone().requires_grad_() for k, v in fx.inputs.items()}
    fx.module.zero_grad()
    out = fx.module(**data)
    names = list(fx.meta["outputs"])
    torch.autograd.backward([out[n] for n in names],
                            [torch.from_numpy(z[f"diff/{n}"]) for n in names])
    checked = 0
    for layer, sub in fx.module.named_children():
        for i in range(sub.num_blobs):
            ref = z[f"param_diff/{layer}/{i}"]
            assert_close(sub.blob(i).grad, ref, TOL, f"param_diff/{layer}/{i}")
            checked += 1
    assert checked == sum(1 for k in z if k.startswith("param_diff/"))
    assert checked == sum(len(layer["params"]) for layer in fx.meta["layers"])
    for name in fx.meta["inputs"]:
        if f"diff/{name}" in z:
            assert_close(data[name].grad, z[f"diff/{name}"], TOL, f"diff/{name}")


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("net", ["lenet", "cifar10_quick"])
def test_bottom_diffs_per_layer(net, layout):
    # every blob version must survive to read its gradient: no in-place overwrites
    fx = build_fixture("backward", net, overwrite=False, channels_last=layout == "channels_last")
    z = fx.z
    fx.inputs = {k: v.clone().requires_grad_() for k, v in fx.inputs.items()}
    fed, blobs = _fed_tensors(fx)
    names = list(fx.meta["outputs"])
    torch.autograd.backward([blobs[n] for n in names],
                            [torch.from_numpy(z[f"diff/{n}"]) for n in names])
    keys = [k for k in z if k.startswith("bottom_diff/")]
    assert keys
    for k in keys:
        layer, j = k[len("bottom_diff/"):].rsplit("/", 1)
        assert_close(fed[(layer, int(j))].grad, z[k], TOL, k)
    # diff/<blob> after the whole pass: the gradient w.r.t. the blob's first consumer's
    # input (in-place layers overwrite the diff with their input gradient)
    first = {}
    for info in fx.analysis.layers:
        for j, b in enumerate(info.bottoms):
            first.setdefault(b, (info.name, j))
    for k in (k for k in z if k.startswith("diff/")):
        blob = k[5:]
        if blob in first:
            assert_close(fed[first[blob]].grad, z[k], TOL, k)


def test_backward_parity_can_fail():
    """A wrong gradient (a ReLU that lets negatives through backward) is caught."""
    fx = build_fixture("backward", "lenet")
    z = fx.z
    fx.module.zero_grad()
    relu = fx.module.get_submodule("relu1")
    relu.forward = lambda x: x + (torch.relu(x) - x).detach()  # same forward, identity backward
    out = fx.module(**fx.inputs)
    out["prob"].backward(torch.from_numpy(z["diff/prob"]))
    ref = z["param_diff/ip1/0"]
    err = np.abs(fx.module.get_submodule("ip1").blob(0).grad.numpy() - ref).max()
    assert err > TOL * np.abs(ref).max()
