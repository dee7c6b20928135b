"""Lowered Concat, Slice, Split, Silence, Flatten, Reshape, Crop, Tile, Filter,
BatchReindex vs numpy indexing."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from caffe_fixtures import net_of, run_net

RNG = np.random.default_rng(4)


def randn(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def same(x, ref):
    x = x.detach().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    assert x.shape == ref.shape, (x.shape, ref.shape)
    assert np.array_equal(x, ref)


@pytest.mark.parametrize("param, axis", [("", 1), ("concat_param { axis: 0 }", 0),
                                         ("concat_param { axis: -1 }", 2),
                                         ("concat_param { concat_dim: 2 }", 2)])
def test_concat(param, axis):
    shape = [2, 3, 4]
    a = randn(*shape)
    shape[axis] = 5
    b = randn(*shape)
    body = f'layer {{ name: "c" type: "Concat" bottom: "a" bottom: "b" top: "y" {param} }}\n'
    _, out, inputs = run_net(body, {"a": a, "b": b}, grad=True)
    same(out["y"], np.concatenate([a, b], axis))
    g = torch.from_numpy(randn(*out["y"].shape))
    out["y"].backward(g)
    same(inputs["b"].grad, np.split(g.numpy(), [a.shape[axis]], axis)[1])


@pytest.mark.parametrize("param, n_tops, axis, points", [
    ("slice_param { slice_point: 1 slice_point: 4 }", 3, 1, [1, 4]),
    ("slice_param { axis: 2 }", 2, 2, [3]),
    ("slice_param { axis: -1 slice_point: 5 }", 2, 2, [5]),
    ("slice_param { slice_dim: 0 }", 2, 0, [1]),
])
def test_slice(param, n_tops, axis, points):
    x = randn(2, 6, 6)
    tops = " ".join(f'top: "t{i}"' for i in range(n_tops))
    body = f'layer {{ name: "s" type: "Slice" bottom: "x" {tops} {param} }}\n'
    _, out, inputs = run_net(body, {"x": x}, grad=True)
    for i, part in enumerate(np.split(x, points, axis)):
        same(out[f"t{i}"], part)
    sum(out[f"t{i}"].sum() * (i + 1) for i in range(n_tops)).backward()
    ref = np.concatenate([np.full(p.shape, i + 1, np.float32)
                          for i, p in enumerate(np.split(x, points, axis))], axis)
    same(inputs["x"].grad, ref)


def test_split_inserted_for_shared_blobs_sums_gradients():
    body = ('layer { name: "a" type: "Power" bottom: "x" top: "a" power_param { scale: 2 } }\n'
            'layer { name: "b" type: "Power" bottom: "x" top: "b" power_param { scale: 3 } }\n')
    x = randn(2, 3)
    analysis, module = net_of(body, {"x": x.shape})
    assert any(info.is_split for info in analysis.layers)
    xt = torch.from_numpy(x).requires_grad_()
    out = module(x=xt)
    (out["a"].sum() + out["b"].sum()).backward()
    same(xt.grad, np.full(x.shape, 5.0, np.float32))
    # the Split module itself (never called by the builder) is the identity
    from netdef.layers.registry import get
    from netdef.lowering.module import LowerContext

    info = next(i for i in analysis.layers if i.is_split)
    split = get("Split").lower(info.param, LowerContext(info, "TEST", []))
    t = torch.ones(2)
    assert all(y is t for y in split(t))


def test_silence_swallows_its_bottoms():
    body = ('layer { name: "r" type: "ReLU" bottom: "x" top: "r" }\n'
            'layer { name: "s" type: "Silence" bottom: "r" bottom: "y" }\n'
            'layer { name: "o" type: "AbsVal" bottom: "x" top: "o" }\n')
    _, module = net_of(body, {"x": (2, 3), "y": (2,)})
    out = module(x=torch.ones(2, 3), y=torch.ones(2))
    assert list(out) == ["o"]


@pytest.mark.parametrize("param, ref_shape", [("", (2, 60)), ("flatten_param { axis: 2 }", (2, 3, 20)),
                                              ("flatten_param { axis: 0 end_axis: 1 }", (6, 4, 5)),
                                              ("flatten_param { axis: -2 }", (2, 3, 20))])
def test_flatten(param, ref_shape):
    x = randn(2, 3, 4, 5)
    body = f'layer {{ name: "f" type: "Flatten" bottom: "x" top: "y" {param} }}\n'
    _, out, _ = run_net(body, {"x": x})
    same(out["y"], x.reshape(ref_shape))


@pytest.mark.parametrize("param, ref_shape", [
    ("shape { dim: 0 dim: -1 }", (2, 60)),
    ("shape { dim: 0 dim: 2 dim: -1 dim: 5 }", (2, 2, 6, 5)),
    ("shape { dim: 2 dim: 2 } axis: 2 num_axes: 1", (2, 3, 2, 2, 5)),
    ("shape { dim: -1 } axis: 1 num_axes: 2", (2, 12, 5)),
    ("shape { dim: 1 dim: 1 } axis: -1 num_axes: 0", (2, 3, 4, 5, 1, 1)),
    ("shape { dim: 0 dim: 0 dim: 20 }", (2, 3, 20)),
])
def test_reshape(param, ref_shape):
    x = randn(2, 3, 4, 5)
    body = f'layer {{ name: "r" type: "Reshape" bottom: "x" top: "y" reshape_param {{ {param} }} }}\n'
    module, out, _ = run_net(body, {"x": x})
    same(out["y"], x.reshape(ref_shape))
    # copied (0) and inferred (-1) dims follow the input: another batch size works
    if param.startswith("shape { dim: 0"):
        x5 = randn(5, 3, 4, 5)
        same(module(x=torch.from_numpy(x5))["y"], x5.reshape((5,) + ref_shape[1:]))


@pytest.mark.parametrize("param, ref_shape, sl", [
    ("", (2, 5, 3, 4), np.s_[:, :, 0:3, 0:4]),
    ("crop_param { offset: 1 }", (2, 5, 3, 4), np.s_[:, :, 1:4, 1:5]),
    ("crop_param { axis: 1 offset: 2 offset: 1 offset: 3 }", (2, 2, 3, 4), np.s_[:, 2:4, 1:4, 3:7]),
    ("crop_param { axis: -1 offset: 2 }", (2, 5, 6, 4), np.s_[:, :, :, 2:6]),
])
def test_crop(param, ref_shape, sl):
    x = randn(2, 5, 6, 7)
    body = f'layer {{ name: "c" type: "Crop" bottom: "x" bottom: "r" top: "y" {param} }}\n'
    _, out, inputs = run_net(body, {"x": x, "r": np.zeros(ref_shape, np.float32)}, grad=True)
    same(out["y"], x[sl])
    out["y"].sum().backward()
    g = np.zeros_like(x)
    g[sl] = 1
    same(inputs["x"].grad, g)
    assert inputs["r"].grad is None  # Caffe: no gradient to the reference bottom


@pytest.mark.parametrize("param, axis", [("tile_param { tiles: 3 }", 1),
                                         ("tile_param { tiles: 2 axis: -1 }", 2),
                                         ("tile_param { tiles: 2 axis: 0 }", 0)])
def test_tile(param, axis):
    x = randn(2, 3, 4)
    body = f'layer {{ name: "t" type: "Tile" bottom: "x" top: "y" {param} }}\n'
    _, out, inputs = run_net(body, {"x": x}, grad=True)
    tiles = int(param.split("tiles: ")[1].split()[0])
    # Caffe: for each outer index, the inner block x[i, axis:] copied ``tiles`` times
    outer = int(np.prod(x.shape[:axis]))
    ref = np.concatenate([x.reshape(outer, -1)] * tiles, 1).reshape(
        x.shape[:axis] + (x.shape[axis] * tiles,) + x.shape[axis + 1:])
    same(out["y"], ref)
    out["y"].sum().backward()
    same(inputs["x"].grad, np.full(x.shape, float(tiles), np.float32))


def test_filter():
    a, b = randn(4, 3), randn(4, 2, 2)
    sel = np.array([1, 0, 0.5, 0], np.float32).reshape(4, 1)
    body = ('layer { name: "f" type: "Filter" bottom: "a" bottom: "b" bottom: "s" '
            'top: "fa" top: "fb" }\n')
    _, out, inputs = run_net(body, {"a": a, "b": b, "s": sel}, grad=True)
    same(out["fa"], a[[0, 2]])
    same(out["fb"], b[[0, 2]])
    out["fa"].sum().backward()
    same(inputs["a"].grad, np.array([[1] * 3, [0] * 3, [1] * 3, [0] * 3], np.float32))
    body1 = 'layer { name: "f" type: "Filter" bottom: "a" bottom: "s" top: "fa" }\n'
    _, out1, _ = run_net(body1, {"a": a, "s": np.zeros((4, 1), np.float32)})
    assert tuple(out1["fa"].shape) == (0, 3)


def test_batch_reindex():
    x = randn(3, 2, 2)
    idx = np.array([2, 0, 2, 1, 2], np.float32)
    body = 'layer { name: "r" type: "BatchReindex" bottom: "x" bottom: "i" top: "y" }\n'
    _, out, inputs = run_net(body, {"x": x, "i": idx})
    same(out["y"], x[[2, 0, 2, 1, 2]])
    xt = torch.from_numpy(x).requires_grad_()
    _, module = net_of(body, {"x": x.shape, "i": idx.shape})
    module(x=xt, i=torch.from_numpy(idx))["y"].sum().backward()
    same(xt.grad, np.array([1, 1, 3], np.float32)[:, None, None] * np.ones_like(x))
