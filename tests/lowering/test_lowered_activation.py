"""Lowered neuron layers, PReLU and Dropout vs numpy formulas (Caffe's *_layer.cpp)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from caffe_fixtures import net_of, run_net

RNG = np.random.default_rng(2)


def randn(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def close(x, ref, tol=1e-5):
    x = x.detach().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    assert x.shape == ref.shape, (x.shape, ref.shape)
    np.testing.assert_allclose(x, ref, rtol=0, atol=tol * max(np.abs(ref).max(), 1e-30))


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


# (type, param text, numpy forward, numpy derivative or None, input transform)
NEURONS = [
    ("ReLU", "", lambda x: np.maximum(x, 0), lambda x: (x > 0) * 1.0, None),
    ("ReLU", "relu_param { negative_slope: 0.1 }", lambda x: np.where(x > 0, x, 0.1 * x),
     lambda x: np.where(x > 0, 1.0, 0.1), None),
    ("ELU", "elu_param { alpha: 0.5 }", lambda x: np.where(x > 0, x, 0.5 * (np.exp(x) - 1)),
     lambda x: np.where(x > 0, 1.0, 0.5 * np.exp(x)), None),
    ("Sigmoid", "", sigmoid, lambda x: sigmoid(x) * (1 - sigmoid(x)), None),
    ("TanH", "", np.tanh, lambda x: 1 - np.tanh(x) ** 2, None),
    ("AbsVal", "", np.abs, np.sign, None),
    ("BNLL", "", lambda x: np.where(x > 0, x + np.log1p(np.exp(-x)), np.log1p(np.exp(x))),
     sigmoid, lambda x: x * 10),
    ("Power", "power_param { power: 2 scale: 0.5 shift: 1 }", lambda x: (1 + 0.5 * x) ** 2,
     lambda x: 2 * 0.5 * (1 + 0.5 * x), None),
    ("Power", "power_param { power: 0.5 scale: 2 shift: 3 }", lambda x: np.sqrt(3 + 2 * x),
     lambda x: 1 / np.sqrt(3 + 2 * x), np.abs),
    ("Power", "power_param { power: 3 scale: 0 shift: 2 }", lambda x: np.full_like(x, 8.0),
     lambda x: np.zeros_like(x), None),
    ("Exp", "", np.exp, np.exp, None),
    ("Exp", "exp_param { base: 2 scale: 0.5 shift: 1 }", lambda x: 2.0 ** (1 + 0.5 * x),
     lambda x: np.log(2) * 0.5 * 2.0 ** (1 + 0.5 * x), None),
    ("Log", "", np.log, lambda x: 1 / x, lambda x: np.abs(x) + 0.1),
    ("Log", "log_param { base: 10 scale: 2 shift: 1 }", lambda x: np.log10(1 + 2 * x),
     lambda x: 2 / ((1 + 2 * x) * np.log(10)), lambda x: np.abs(x)),
    ("Threshold", "threshold_param { threshold: 0.3 }", lambda x: (x > 0.3).astype(np.float32),
     None, None),
    ("Swish", "swish_param { beta: 2 }", lambda x: x * sigmoid(2 * x),
     lambda x: sigmoid(2 * x) + 2 * x * sigmoid(2 * x) * (1 - sigmoid(2 * x)), None),
    ("Clip", "clip_param { min: -0.5 max: 0.7 }", lambda x: np.clip(x, -0.5, 0.7),
     lambda x: ((x >= -0.5) & (x <= 0.7)) * 1.0, None),
]


@pytest.mark.parametrize("type_, param, fwd, grad, prep", NEURONS,
                         ids=[f"{n[0]}-{i}" for i, n in enumerate(NEURONS)])
def test_neuron_in_place(type_, param, fwd, grad, prep):
    """Run in place (top == bottom) like the prototxts do; the input tensor is untouched."""
    x = randn(2, 3, 4, 5)
    if prep is not None:
        x = prep(x).astype(np.float32)
    body = f'layer {{ name: "n" type: "{type_}" bottom: "x" top: "x" {param} }}\n'
    _, out, inputs = run_net(body, {"x": x}, grad=grad is not None)
    close(out["x"], fwd(x.astype(np.float64)))
    assert np.array_equal(inputs["x"].detach().numpy(), x)  # no write into the bottom
    if grad is not None:
        out["x"].backward(torch.ones_like(out["x"]))
        close(inputs["x"].grad, grad(x.astype(np.float64)), 1e-4)


def test_prelu_channelwise_and_shared():
    body = ('layer { name: "p" type: "PReLU" bottom: "x" top: "y" }\n'
            'layer { name: "q" type: "PReLU" bottom: "x" top: "z" '
            'prelu_param { channel_shared: true filler { type: "constant" value: 0.5 } } }\n')
    x = randn(2, 3, 4)
    module, out, inputs = run_net(body, {"x": x}, grad=True)
    p, q = module.get_submodule("p"), module.get_submodule("q")
    assert p.blob(0).tolist() == [0.25] * 3  # Caffe's default filler: constant 0.25
    assert tuple(q.blob(0).shape) == () and float(q.blob(0).detach()) == 0.5
    close(out["y"], np.where(x > 0, x, 0.25 * x))
    close(out["z"], np.where(x > 0, x, 0.5 * x))
    with torch.no_grad():
        p.blob(0).copy_(torch.tensor([0.1, -1.0, 2.0]))
    y = module(x=inputs["x"])["y"]
    a = np.array([0.1, -1.0, 2.0], np.float32)[None, :, None]
    close(y, np.where(x > 0, x, a * x))
    y.sum().backward()
    close(p.blob(0).grad, np.where(x > 0, 0, x).sum((0, 2)))  # d/da = x where x <= 0


def test_dropout_train_scales_kept_units_and_test_is_identity():
    body = ('layer { name: "d" type: "Dropout" bottom: "x" top: "x" '
            'dropout_param { dropout_ratio: 0.3 } }\n')
    x = np.abs(randn(4, 50, 50)) + 1
    torch.manual_seed(0)
    module, out, inputs = run_net(body, {"x": x}, phase="TRAIN", grad=True)
    y = out["x"].detach().numpy()
    kept = y != 0
    assert abs(kept.mean() - 0.7) < 0.01
    close(y[kept], (x / np.float32(0.7))[kept])
    out["x"].backward(torch.ones_like(out["x"]))
    close(inputs["x"].grad, kept / np.float32(0.7))
    module.eval()
    t = torch.from_numpy(x)
    assert module(x=t)["x"] is t
    _, out_test, _ = run_net(body, {"x": x}, phase="TEST")
    assert np.array_equal(out_test["x"].numpy(), x)


def test_neuron_layers_have_no_blobs():
    body = "".join(f'layer {{ name: "n{i}" type: "{t}" bottom: "x" top: "x" {p} }}\n'
                   for i, (t, p, *_rest) in enumerate(NEURONS))
    _, module = net_of(body, {"x": (2, 3)})
    assert list(module.parameters()) == []
