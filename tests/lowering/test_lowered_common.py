"""Lowered InnerProduct, Embed, Softmax, Eltwise, Reduction, ArgMax vs numpy."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from caffe_fixtures import net_of, run_net

RNG = np.random.default_rng(1)


def randn(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def close(x, ref, tol=1e-5):
    x = x.detach().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    assert x.shape == ref.shape, (x.shape, ref.shape)
    np.testing.assert_allclose(x, ref, rtol=0, atol=tol * max(np.abs(ref).max(), 1e-30))


GAUSS = 'weight_filler { type: "gaussian" } bias_filler { type: "gaussian" }'


@pytest.mark.parametrize("extra, shape", [("", (2, 3, 4, 5)), ("axis: 2", (2, 3, 4, 5)),
                                          ("axis: -1", (2, 3, 4)), ("transpose: true", (3, 6)),
                                          ("bias_term: false", (2, 7))])
def test_inner_product(extra, shape):
    body = (f'layer {{ name: "ip" type: "InnerProduct" bottom: "x" top: "y" '
            f'inner_product_param {{ num_output: 4 {extra} {GAUSS} }} }}\n')
    x = randn(*shape)
    module, out, _ = run_net(body, {"x": x})
    ip = module.get_submodule("ip")
    w = ip.blob(0).detach().numpy()
    axis = 2 if "axis: 2" in extra else (len(shape) - 1 if "axis: -1" in extra else 1)
    xf = x.reshape(shape[:axis] + (-1,)).astype(np.float64)
    ref = xf @ (w if "transpose" in extra else w.T)
    if "bias_term: false" not in extra:
        ref = ref + ip.blob(1).detach().numpy()
    else:
        assert ip.num_blobs == 1
    close(out["y"], ref)


def test_embed():
    body = (f'layer {{ name: "e" type: "Embed" bottom: "i" top: "y" '
            f'embed_param {{ input_dim: 7 num_output: 3 {GAUSS} }} }}\n')
    idx = np.array([[0, 6, 2.0], [3.9, 3, 1]], np.float32)  # floats, truncated to int
    module, out, _ = run_net(body, {"i": idx})
    e = module.get_submodule("e")
    w, b = e.blob(0).detach().numpy(), e.blob(1).detach().numpy()
    close(out["y"], w[idx.astype(int)] + b)
    out["y"].sum().backward()  # the table gets row counts as gradient
    assert e.blob(0).grad[3].tolist() == [2.0] * 3 and e.blob(0).grad[4].tolist() == [0.0] * 3
    with pytest.raises(IndexError):
        module(i=torch.tensor([[7.0, 0, 0], [0, 0, 0]]))


@pytest.mark.parametrize("axis", [1, 2, -1, 0])
def test_softmax(axis):
    body = f'layer {{ name: "s" type: "Softmax" bottom: "x" top: "y" softmax_param {{ axis: {axis} }} }}\n'
    x = randn(2, 3, 4) * 5
    _, out, _ = run_net(body, {"x": x})
    e = np.exp(x - x.max(axis, keepdims=True))
    close(out["y"], e / e.sum(axis, keepdims=True))


def test_eltwise_sum_prod_max():
    a, b, c = randn(2, 3, 4), randn(2, 3, 4), randn(2, 3, 4)
    b[0, 0, :2] = a[0, 0, :2]  # ties between bottoms 0 and 1: bottom 1 wins
    c[1, 1, :2] = np.maximum(a, b)[1, 1, :2]  # a later bottom must be strictly larger
    body = ('layer { name: "s" type: "Eltwise" bottom: "a" bottom: "b" bottom: "c" top: "sum" '
            'eltwise_param { operation: SUM coeff: 0.5 coeff: -2 coeff: 1 } }\n'
            'layer { name: "s1" type: "Eltwise" bottom: "a" bottom: "b" top: "sum1" }\n'
            'layer { name: "p" type: "Eltwise" bottom: "a" bottom: "b" bottom: "c" top: "prod" '
            'eltwise_param { operation: PROD } }\n'
            'layer { name: "m" type: "Eltwise" bottom: "a" bottom: "b" bottom: "c" top: "max" '
            'eltwise_param { operation: MAX } }\n')
    _, out, inputs = run_net(body, {"a": a, "b": b, "c": c}, grad=True)
    close(out["sum"], 0.5 * a - 2 * b + c)
    close(out["sum1"], a + b)
    close(out["prod"], a * b * c)
    close(out["max"], np.maximum(np.maximum(a, b), c))
    out["max"].sum().backward()
    # Caffe's argmax: 0 if a > b else 1; then i if x_i > running max
    idx = np.where(a > b, 0, 1)
    idx = np.where(c > np.maximum(a, b), 2, idx)
    for i, name in enumerate("abc"):
        assert np.array_equal(inputs[name].grad.numpy(), (idx == i).astype(np.float32)), name


@pytest.mark.parametrize("op", ["SUM", "ASUM", "SUMSQ", "MEAN"])
@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_reduction(op, axis):
    body = (f'layer {{ name: "r" type: "Reduction" bottom: "x" top: "y" '
            f'reduction_param {{ operation: {op} axis: {axis} coeff: -1.5 }} }}\n')
    x = randn(2, 3, 4)
    _, out, _ = run_net(body, {"x": x})
    ax = axis % 3
    flat = x.reshape(x.shape[:ax] + (-1,)).astype(np.float64)
    ref = {"SUM": flat.sum(-1), "ASUM": np.abs(flat).sum(-1), "SUMSQ": (flat ** 2).sum(-1),
           "MEAN": flat.mean(-1)}[op] * -1.5
    close(out["y"], np.asarray(ref))
    assert tuple(out["y"].shape) == x.shape[:ax]


def test_argmax():
    x = np.array([[3, 1, 3, 2], [0, 5, 5, 5]], np.float32).reshape(2, 4, 1)
    body = ('layer { name: "a" type: "ArgMax" bottom: "x" top: "y" argmax_param { top_k: 2 } }\n'
            'layer { name: "v" type: "ArgMax" bottom: "x" top: "z" '
            'argmax_param { top_k: 2 out_max_val: true } }\n'
            'layer { name: "ax" type: "ArgMax" bottom: "x" top: "w" argmax_param { axis: 1 } }\n'
            'layer { name: "axv" type: "ArgMax" bottom: "x" top: "u" '
            'argmax_param { axis: 1 top_k: 3 out_max_val: true } }\n')
    _, out, _ = run_net(body, {"x": x})
    # equal values: the larger index ranks first (std::partial_sort on (value, index) pairs)
    assert out["y"].shape == (2, 1, 2)
    assert out["y"].reshape(2, 2).tolist() == [[2, 0], [3, 2]]
    assert out["z"].shape == (2, 2, 2)
    assert out["z"].tolist() == [[[2, 0], [3, 3]], [[3, 2], [5, 5]]]
    assert out["w"].reshape(2).tolist() == [2, 3]
    assert out["u"].reshape(2, 3).tolist() == [[3, 3, 2], [5, 5, 5]]


def test_argmax_top_of_lenet_style_scores_matches_numpy():
    x = randn(5, 10)
    body = 'layer { name: "a" type: "ArgMax" bottom: "x" top: "y" }\n'
    _, out, _ = run_net(body, {"x": x})
    assert out["y"].reshape(5).tolist() == x.argmax(1).tolist()


def test_inner_product_fillers():
    body = ('layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y" inner_product_param { '
            'num_output: 300 weight_filler { type: "xavier" } bias_filler { type: "constant" value: 2 } } }\n'
            'layer { name: "e" type: "Embed" bottom: "x" top: "z" embed_param { input_dim: 5 '
            'num_output: 4 weight_filler { type: "uniform" min: 3 max: 4 } } }\n')
    _, module = net_of(body, {"x": (2, 100)})
    w = module.get_submodule("ip").blob(0).detach().numpy()
    lim = np.sqrt(3.0 / 100)
    assert w.min() >= -lim and w.max() <= lim and w.max() > 0.9 * lim
    assert np.all(module.get_submodule("ip").blob(1).detach().numpy() == 2)
    e = module.get_submodule("e")
    assert e.blob(0).min() >= 3 and e.blob(0).max() <= 4 and not e.blob(1).any()
