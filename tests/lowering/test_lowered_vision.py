"""Lowered Convolution, Deconvolution, Im2col, Pooling, SPP vs independent numpy loops
written from Caffe's CPU code (im2col / col2im, PoolingLayer::Forward_cpu)."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from caffe_fixtures import net_of, run_net

FLT_MAX = np.float32(3.4028234663852886e38)
RNG = np.random.default_rng(0)


def randn(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def close(x, ref, tol=1e-5):
    x = x.detach().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    assert x.shape == ref.shape, (x.shape, ref.shape)
    np.testing.assert_allclose(x, ref, rtol=0, atol=tol * max(np.nanmax(np.abs(ref)), 1e-30),
                               equal_nan=True)


# --------------------------------------------------------------------------- references
def np_conv(x, w, b, stride, pad, dil, group):
    """N-D grouped convolution of (N, C, *sp) by (O, C/g, *k): output rounds down."""
    n, c = x.shape[:2]
    o, cg = w.shape[:2]
    k = w.shape[2:]
    nsp = len(k)
    xp = np.pad(x.astype(np.float64), [(0, 0), (0, 0)] + [(p, p) for p in pad])
    out_sp = [(x.shape[2 + i] + 2 * pad[i] - (dil[i] * (k[i] - 1) + 1)) // stride[i] + 1
              for i in range(nsp)]
    y = np.zeros((n, o, *out_sp))
    og = o // group
    for pos in itertools.product(*[range(s) for s in out_sp]):
        idx = tuple(slice(pos[i] * stride[i], pos[i] * stride[i] + dil[i] * (k[i] - 1) + 1, dil[i])
                    for i in range(nsp))
        for g in range(group):
            patch = xp[(slice(None), slice(g * cg, (g + 1) * cg)) + idx]  # (N, C/g, *k)
            wg = w[g * og:(g + 1) * og].astype(np.float64)  # (O/g, C/g, *k)
            y[(slice(None), slice(g * og, (g + 1) * og)) + pos] = np.tensordot(
                patch, wg, axes=(list(range(1, 2 + nsp)), list(range(1, 2 + nsp))))
    if b is not None:
        y += b.reshape((1, -1) + (1,) * nsp)
    return y


def np_deconv(x, w, b, stride, pad, dil, group):
    """Transposed conv as Caffe's col2im scatter: weights (C, O/g, *k)."""
    n, c = x.shape[:2]
    og = w.shape[1]
    k = w.shape[2:]
    nsp = len(k)
    cg = c // group
    full = [stride[i] * (x.shape[2 + i] - 1) + dil[i] * (k[i] - 1) + 1 for i in range(nsp)]
    y = np.zeros((n, og * group, *full))
    for pos in itertools.product(*[range(s) for s in x.shape[2:]]):
        for kk in itertools.product(*[range(s) for s in k]):
            at = tuple(pos[i] * stride[i] + kk[i] * dil[i] for i in range(nsp))
            for g in range(group):
                xv = x[(slice(None), slice(g * cg, (g + 1) * cg)) + pos].astype(np.float64)
                wv = w[(slice(g * cg, (g + 1) * cg), slice(None)) + kk].astype(np.float64)
                y[(slice(None), slice(g * og, (g + 1) * og)) + at] += xv @ wv
    crop = tuple(slice(pad[i], full[i] - pad[i]) for i in range(nsp))
    y = y[(slice(None), slice(None)) + crop]
    if b is not None:
        y += b.reshape((1, -1) + (1,) * nsp)
    return y


def caffe_pool_size(size, k, s, p, ceil=True):
    q = (size + 2 * p - k) / s
    out = (math.ceil(q) if ceil else math.floor(q)) + 1
    if p > 0 and (out - 1) * s >= size + p:
        out -= 1
    return out


def np_pool(x, method, k, s, p, ceil=True):
    """PoolingLayer::Forward_cpu, literally (float32 arithmetic, -FLT_MAX start, mask)."""
    n, c, h, w = x.shape
    oh, ow = caffe_pool_size(h, k[0], s[0], p[0], ceil), caffe_pool_size(w, k[1], s[1], p[1], ceil)
    y = np.zeros((n, c, oh, ow), np.float32)
    mask = np.full((n, c, oh, ow), -1.0, np.float32)
    for i, j in itertools.product(range(oh), range(ow)):
        hs, ws = i * s[0] - p[0], j * s[1] - p[1]
        he, we = min(hs + k[0], h + p[0]), min(ws + k[1], w + p[1])
        pool_size = (he - hs) * (we - ws)
        hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
        if method == "MAX":
            best = np.full((n, c), -FLT_MAX, np.float32)
            for hh, ww in itertools.product(range(hs, he), range(ws, we)):
                v = x[:, :, hh, ww]
                better = v > best
                best = np.where(better, v, best)
                mask[:, :, i, j] = np.where(better, hh * w + ww, mask[:, :, i, j])
            y[:, :, i, j] = best
        else:
            tot = np.zeros((n, c), np.float32)
            for hh, ww in itertools.product(range(hs, he), range(ws, we)):
                tot += x[:, :, hh, ww]
            with np.errstate(invalid="ignore", divide="ignore"):
                y[:, :, i, j] = tot / np.float32(pool_size)
    return y, mask


def conv_param(**kw):
    return " ".join(f"{k}: {str(v).lower() if isinstance(v, bool) else v}" for k, v in kw.items())


# --------------------------------------------------------------------------- convolution
@pytest.mark.parametrize("kw, shape", [
    (dict(num_output=4, kernel_size=3), (2, 3, 7, 6)),
    (dict(num_output=6, kernel_size=3, stride=2, pad=1, group=3), (2, 3, 9, 8)),
    (dict(num_output=4, kernel_h=3, kernel_w=2, stride_h=1, stride_w=2, pad_h=2, pad_w=0,
          dilation=2, bias_term=False), (1, 2, 8, 9)),
    (dict(num_output=2, kernel_size=2, stride=1, pad=1), (2, 2, 4, 5, 3)),  # 3-D
    (dict(num_output=3, kernel_size=3, stride=2), (2, 2, 9)),  # 1-D
])
def test_convolution(kw, shape):
    body = (f'layer {{ name: "c" type: "Convolution" bottom: "x" top: "y" '
            f'convolution_param {{ {conv_param(**kw)} weight_filler {{ type: "gaussian" }} '
            f'bias_filler {{ type: "gaussian" }} }} }}\n')
    x = randn(*shape)
    module, out, _ = run_net(body, {"x": x})
    conv = module.get_submodule("c")
    w = conv.blob(0).detach().numpy()
    b = conv.blob(1).detach().numpy() if kw.get("bias_term", True) else None
    assert conv.num_blobs == (2 if b is not None else 1)
    nsp = len(shape) - 2
    k = (kw["kernel_h"], kw["kernel_w"]) if "kernel_h" in kw else (kw["kernel_size"],) * nsp
    s = (kw["stride_h"], kw["stride_w"]) if "stride_h" in kw else (kw.get("stride", 1),) * nsp
    p = (kw["pad_h"], kw["pad_w"]) if "pad_h" in kw else (kw.get("pad", 0),) * nsp
    d = (kw.get("dilation", 1),) * nsp
    assert w.shape[2:] == k
    close(out["y"], np_conv(x, w, b, s, p, d, kw.get("group", 1)))


def test_convolution_channel_axis_and_several_bottoms():
    """axis: 2 makes axes 0-1 batch axes; two bottoms share the weights, one top each."""
    body = ('layer { name: "c" type: "Convolution" bottom: "x" bottom: "x2" top: "y" top: "y2" '
            'convolution_param { num_output: 3 kernel_size: 2 axis: 2 '
            'weight_filler { type: "gaussian" } bias_filler { type: "gaussian" } } }\n')
    x, x2 = randn(2, 3, 4, 5, 5), randn(2, 3, 4, 5, 5)
    module, out, _ = run_net(body, {"x": x, "x2": x2})
    conv = module.get_submodule("c")
    w, b = conv.blob(0).detach().numpy(), conv.blob(1).detach().numpy()
    assert out["y"].shape == (2, 3, 3, 4, 4)
    for name, inp in (("y", x), ("y2", x2)):
        ref = np_conv(inp.reshape(6, 4, 5, 5), w, b, (1, 1), (0, 0), (1, 1), 1)
        close(out[name], ref.reshape(2, 3, 3, 4, 4))


@pytest.mark.parametrize("kw, shape", [
    (dict(num_output=3, kernel_size=4, stride=2, pad=1), (2, 2, 3, 4)),
    (dict(num_output=4, kernel_size=3, stride=3, group=2, bias_term=False), (1, 4, 3, 2)),
    (dict(num_output=2, kernel_size=3, stride=2, dilation=2, pad=2), (1, 3, 4, 4)),
])
def test_deconvolution(kw, shape):
    body = (f'layer {{ name: "d" type: "Deconvolution" bottom: "x" top: "y" '
            f'convolution_param {{ {conv_param(**kw)} weight_filler {{ type: "gaussian" }} '
            f'bias_filler {{ type: "gaussian" }} }} }}\n')
    x = randn(*shape)
    module, out, _ = run_net(body, {"x": x})
    d = module.get_submodule("d")
    w = d.blob(0).detach().numpy()
    assert w.shape[:2] == (shape[1], kw["num_output"] // kw.get("group", 1))
    b = d.blob(1).detach().numpy() if kw.get("bias_term", True) else None
    k, s, p, dl = kw["kernel_size"], kw.get("stride", 1), kw.get("pad", 0), kw.get("dilation", 1)
    close(out["y"], np_deconv(x, w, b, (s, s), (p, p), (dl, dl), kw.get("group", 1)))


def test_deconvolution_bilinear_filler_upsamples():
    body = ('layer { name: "up" type: "Deconvolution" bottom: "x" top: "y" '
            'convolution_param { num_output: 1 kernel_size: 4 stride: 2 pad: 1 bias_term: false '
            'weight_filler { type: "bilinear" } } }\n')
    x = np.ones((1, 1, 3, 3), np.float32)
    _, out, _ = run_net(body, {"x": x})
    # a constant image stays constant inside (bilinear interpolation), edges get less weight
    assert out["y"].shape == (1, 1, 6, 6)
    close(out["y"][0, 0, 1:-1, 1:-1], np.ones((4, 4), np.float32))


@pytest.mark.parametrize("kw, shape", [
    (dict(kernel_size=3, stride=2, pad=1), (2, 3, 6, 7)),
    (dict(kernel_h=2, kernel_w=3, dilation=2), (1, 2, 7, 8)),
    (dict(kernel_size=3, stride=2), (2, 2, 9)),  # 1-D
])
def test_im2col(kw, shape):
    body = (f'layer {{ name: "i" type: "Im2col" bottom: "x" top: "y" '
            f'convolution_param {{ {conv_param(**kw)} }} }}\n')
    x = randn(*shape)
    _, out, _ = run_net(body, {"x": x})
    nsp = len(shape) - 2
    k = (kw["kernel_h"], kw["kernel_w"]) if "kernel_h" in kw else (kw["kernel_size"],) * nsp
    s, p, d = (kw.get("stride", 1),) * nsp, (kw.get("pad", 0),) * nsp, (kw.get("dilation", 1),) * nsp
    # im2col == convolution with one-hot filters, rows ordered (c, *kernel)
    c = shape[1]
    eye = np.eye(c * int(np.prod(k)), dtype=np.float32).reshape((c * int(np.prod(k)), c) + k)
    close(out["y"], np_conv(x, eye, None, s, p, d, 1))


# --------------------------------------------------------------------------- pooling
POOL_CASES = [
    # (pooling_param, input shape): the torch-native and the explicit-padding paths
    ("pool: MAX kernel_size: 3 stride: 2", (2, 3, 32, 32)),  # 32 -> 16, clipped last window
    ("pool: AVE kernel_size: 3 stride: 2", (2, 3, 8, 8)),
    ("pool: MAX kernel_size: 3 stride: 2 pad: 1", (1, 2, 7, 6)),
    ("pool: AVE kernel_size: 3 stride: 2 pad: 1", (1, 2, 7, 6)),  # divisor clipped to H + p
    ("pool: AVE kernel_size: 3 stride: 1 pad: 2", (1, 2, 5, 6)),  # pad > k/2: torch refuses
    ("pool: MAX kernel_size: 3 stride: 1 pad: 2", (1, 2, 5, 6)),
    ("pool: MAX kernel_size: 2 stride: 3", (1, 2, 7, 7)),
    ("pool: MAX kernel_size: 1 stride: 2", (1, 2, 4, 4)),  # last window beyond the image
    ("pool: AVE kernel_size: 1 stride: 2", (1, 2, 4, 4)),  # 0 / 0 there, as in Caffe
    ("pool: AVE kernel_h: 2 kernel_w: 3 stride_h: 1 stride_w: 2 pad_h: 1 pad_w: 1", (2, 2, 5, 8)),
    ("pool: MAX kernel_size: 3 stride: 2 round_mode: FLOOR", (1, 2, 8, 8)),
    ("pool: AVE kernel_size: 3 stride: 2 pad: 1 round_mode: FLOOR", (1, 2, 8, 9)),
]


@pytest.mark.parametrize("param, shape", POOL_CASES)
def test_pooling_matches_caffe_loops(param, shape):
    body = f'layer {{ name: "p" type: "Pooling" bottom: "x" top: "y" pooling_param {{ {param} }} }}\n'
    x = randn(*shape)
    _, out, _ = run_net(body, {"x": x})
    words = param.split()
    kv = {k.rstrip(":"): v for k, v in zip(words[::2], words[1::2])}
    k = (int(kv["kernel_h"]), int(kv["kernel_w"])) if "kernel_h" in kv else (int(kv["kernel_size"]),) * 2
    s = (int(kv["stride_h"]), int(kv["stride_w"])) if "stride_h" in kv else (int(kv.get("stride", 1)),) * 2
    p = (int(kv["pad_h"]), int(kv["pad_w"])) if "pad_h" in kv else (int(kv.get("pad", 0)),) * 2
    ref, _ = np_pool(x, kv["pool"], k, s, p, kv.get("round_mode", "CEIL") == "CEIL")
    close(out["y"], ref)


def test_pooling_mask_top_and_ties():
    body = ('layer { name: "p" type: "Pooling" bottom: "x" top: "y" top: "mask" '
            'pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 } }\n')
    x = np.round(randn(2, 2, 7, 8) * 2)  # many ties: the first maximum (row-major) wins
    _, out, _ = run_net(body, {"x": x})
    ref, mask = np_pool(x, "MAX", (3, 3), (2, 2), (1, 1))
    close(out["y"], ref)
    assert np.array_equal(out["mask"].numpy(), mask)
    # the explicit-padding path (pad > kernel/2) gives the same mask convention
    body2 = body.replace("kernel_size: 3 stride: 2 pad: 1", "kernel_size: 3 stride: 1 pad: 2")
    _, out2, _ = run_net(body2, {"x": x})
    ref2, mask2 = np_pool(x, "MAX", (3, 3), (1, 1), (2, 2))
    close(out2["y"], ref2)
    assert np.array_equal(out2["mask"].numpy(), mask2)


def test_pooling_max_gradient_goes_to_first_maximum():
    body = ('layer { name: "p" type: "Pooling" bottom: "x" top: "y" '
            'pooling_param { pool: MAX kernel_size: 2 stride: 2 } }\n')
    x = np.array([[[[1, 1], [1, 0]]]], np.float32)
    _, out, inputs = run_net(body, {"x": x}, grad=True)
    out["y"].sum().backward()
    assert inputs["x"].grad.numpy().ravel().tolist() == [1, 0, 0, 0]


def test_global_pooling():
    body = ('layer { name: "g" type: "Pooling" bottom: "x" top: "y" '
            'pooling_param { pool: AVE global_pooling: true } }\n'
            'layer { name: "m" type: "Pooling" bottom: "x" top: "z" '
            'pooling_param { pool: MAX global_pooling: true } }\n')
    x = randn(2, 3, 5, 7)
    module, out, _ = run_net(body, {"x": x})
    close(out["y"], x.mean((2, 3), keepdims=True))
    close(out["z"], x.max((2, 3), keepdims=True))
    # another spatial size than analysed: global pooling follows the input
    y = module.get_submodule("g")(torch.from_numpy(x[:, :, :3, :4].copy()))
    close(y, x[:, :, :3, :4].mean((2, 3), keepdims=True))


def test_stochastic_pooling_test_phase_weighted_average():
    body = ('layer { name: "p" type: "Pooling" bottom: "x" top: "y" '
            'pooling_param { pool: STOCHASTIC kernel_size: 3 stride: 2 } }\n')
    x = np.abs(randn(2, 2, 7, 8)) + 0.1
    _, out, _ = run_net(body, {"x": x})
    n, c, h, w = x.shape
    oh, ow = caffe_pool_size(h, 3, 2, 0), caffe_pool_size(w, 3, 2, 0)
    ref = np.zeros((n, c, oh, ow), np.float32)
    for i, j in itertools.product(range(oh), range(ow)):
        win = x[:, :, i * 2:min(i * 2 + 3, h), j * 2:min(j * 2 + 3, w)].astype(np.float64)
        ref[:, :, i, j] = (win ** 2).sum((2, 3)) / win.sum((2, 3))
    close(out["y"], ref)


def test_stochastic_pooling_train_samples_by_value():
    body = ('layer { name: "p" type: "Pooling" bottom: "x" top: "y" '
            'pooling_param { pool: STOCHASTIC kernel_h: 1 kernel_w: 2 stride_h: 1 stride_w: 2 } }\n')
    x = np.tile(np.array([1.0, 3.0], np.float32), (1, 1, 4, 2000))  # windows (1, 3)
    torch.manual_seed(0)
    module, out, _ = run_net(body, {"x": x}, phase="TRAIN")
    y = out["y"].numpy()
    assert set(np.unique(y)) <= {1.0, 3.0}
    assert abs((y == 3.0).mean() - 0.75) < 0.02  # picked with probability x / sum(x)
    module.eval()  # TEST behaviour again: (1 + 9) / (1 + 3)
    close(module(x=torch.from_numpy(x))["y"], np.full((1, 1, 4, 2000), 2.5, np.float32))


def _spp_ref(x, height, method):
    n, c, h, w = x.shape
    outs = []
    for level in range(height):
        bins = 2 ** level
        kh, kw = math.ceil(h / bins), math.ceil(w / bins)
        ph, pw = (kh * bins - h + 1) // 2, (kw * bins - w + 1) // 2
        y, _ = np_pool(x, method, (kh, kw), (kh, kw), (ph, pw))
        outs.append(y)
    if height == 1:
        return outs[0]
    return np.concatenate([o.reshape(n, -1) for o in outs], 1)


@pytest.mark.parametrize("height, method, shape", [(3, "MAX", (2, 3, 13, 11)),
                                                    (2, "AVE", (1, 2, 7, 9)),
                                                    (1, "MAX", (1, 2, 5, 5))])
def test_spp(height, method, shape):
    body = (f'layer {{ name: "s" type: "SPP" bottom: "x" top: "y" '
            f'spp_param {{ pyramid_height: {height} pool: {method} }} }}\n')
    x = randn(*shape)
    _, out, _ = run_net(body, {"x": x})
    close(out["y"], _spp_ref(x, height, method))


def test_conv_fillers_follow_the_file():
    body = ('layer { name: "c" type: "Convolution" bottom: "x" top: "y" convolution_param { '
            'num_output: 64 kernel_size: 5 weight_filler { type: "gaussian" std: 0.5 } '
            'bias_filler { type: "constant" value: 0.25 } } }\n'
            'layer { name: "d" type: "Convolution" bottom: "x" top: "z" convolution_param { '
            'num_output: 2 kernel_size: 1 } }\n')
    _, module = net_of(body, {"x": (1, 8, 6, 6)})
    w = module.get_submodule("c").blob(0).detach().numpy()
    assert abs(w.std() - 0.5) < 0.02 and abs(w.mean()) < 0.02
    assert np.all(module.get_submodule("c").blob(1).detach().numpy() == 0.25)
    # Caffe's default filler is constant 0 for both blobs
    assert not module.get_submodule("d").blob(0).any() and not module.get_submodule("d").blob(1).any()
