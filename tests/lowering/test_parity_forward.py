"""Forward parity with real Caffe on the six fixture nets (README section 2, "Tolerances").

Each net is built from its prototxt in phase TEST at the fixture's batch, loaded with
the oracle's weights (stored for LeNet/cifar10_quick, regenerated bit-exactly and
sha256-checked for the big nets), fed ``input/<blob>``; every stored per-layer top
``top/<layer>/<i>`` is compared with :func:`run_layers` (bound ``1e-5·max|ref|``,
``3e-5`` for the softmax ``prob``) and the fx ``forward`` output with ``data/<output>``.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from caffe_fixtures import assert_close, blobs, build_fixture, meta, regenerate, stored_params, tops_of
from netdef.lowering.module import run_layers

TOL, SOFTMAX_TOL = 1e-5, 3e-5


def _tol(fx, layer: str) -> float:
    info = fx.analysis.layer(layer)
    return SOFTMAX_TOL if info.type == "Softmax" else TOL


def _check_net(net: str, layout: str = "nchw") -> dict[str, float]:
    fx = build_fixture("forward", net, channels_last=layout == "channels_last")
    if layout == "channels_last":
        assert fx.inputs["data"].is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        per_layer = run_layers(fx.module, fx.analysis, fx.inputs)
        outputs = fx.module(**fx.inputs)
    refs = tops_of(fx.z)
    assert refs, "fixture has no top/ arrays"
    errs = {}
    for (layer, i), ref in refs.items():
        assert layer in per_layer, f"layer {layer} of the fixture is not in the built net"
        errs[f"{layer}/{i}"] = assert_close(per_layer[layer][i], ref, _tol(fx, layer),
                                            f"top/{layer}/{i}")
    # every kept top was compared, and the dropped ones are exactly the others
    m = fx.meta
    assert len(refs) == len(m["saved_tops"]), (len(refs), len(m["saved_tops"]))
    assert set(fx.module.netdef_outputs) == set(m["outputs"])
    for name in m["outputs"]:
        assert_close(outputs[name], fx.z[f"data/{name}"], SOFTMAX_TOL, f"data/{name}")
    return errs


LAYOUTS = pytest.mark.parametrize("layout", ["nchw", "channels_last"])


@LAYOUTS
@pytest.mark.parametrize("net", ["lenet", "cifar10_quick"])
def test_small_net_forward_parity(net, layout):
    errs = _check_net(net, layout)
    assert len(errs) == len(meta("forward", net)["layers"])  # every layer, the input too


def test_small_net_all_blobs(net="cifar10_quick"):
    """``data/<blob>`` (every blob after the whole pass: in-place blobs hold the last
    writer's value) equals the fx forward's view of the same blobs."""
    fx = build_fixture("forward", net)
    with torch.no_grad():
        per_layer = run_layers(fx.module, fx.analysis, fx.inputs)
    last = {}
    for info in fx.analysis.layers:
        for t, v in zip(info.tops, per_layer[info.name]):
            last[t] = v
    for k, ref in fx.z.items():
        if k.startswith("data/"):
            assert_close(last[k[5:]], ref, SOFTMAX_TOL if k == "data/prob" else TOL, k)


@pytest.mark.parametrize("net", ["bvlc_alexnet", "bvlc_reference_caffenet", "bvlc_googlenet",
                                 "vgg16"])
@LAYOUTS
def test_big_net_forward_parity(net, layout):
    _check_net(net, layout)


def test_regeneration_matches_stored_params():
    """The big nets' weight regeneration, proven on LeNet where the arrays are stored."""
    m = meta("forward", "lenet")
    z = blobs("forward", "lenet")
    params, inputs = regenerate(m)
    stored = stored_params(z)
    assert params.keys() == stored.keys()
    for layer in params:
        for a, b in zip(params[layer], stored[layer]):
            assert a.tobytes() == b.tobytes()
    assert inputs["data"].tobytes() == z["input/data"].tobytes()


def test_parity_detects_a_wrong_weight():
    """The comparison can fail: one perturbed weight breaks LeNet's parity."""
    fx = build_fixture("forward", "lenet")
    with torch.no_grad():
        fx.module.get_submodule("conv2").blob(0)[3, 1, 2, 2] += 0.05
        tops = run_layers(fx.module, fx.analysis, fx.inputs)
    np.testing.assert_allclose(tops["conv1"][0].numpy(), fx.z["top/conv1/0"],
                               rtol=0, atol=1e-5 * np.abs(fx.z["top/conv1/0"]).max())
    with pytest.raises(AssertionError):
        assert_close(tops["conv2"][0], fx.z["top/conv2/0"], TOL)
