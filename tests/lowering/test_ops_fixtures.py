"""Pooling / LRN / conv / inner product against the real-Caffe fixtures (../shared/fixtures).

Layer parameters are those of the BVLC prototxts the fixtures were made from; bounds
are the README's (max|x - ref| / max|ref| <= 1e-5, forward and backward)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from netdef.lowering.ops import caffe_conv, caffe_inner_product, caffe_pool2d, lrn

FIX = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures"


def blobs(kind: str, net: str):
    path = FIX / kind / net / "blobs.npz"
    if not path.is_file():
        pytest.skip(f"fixture {path} not present")
    return np.load(path)


def close(x, ref, tol=1e-5):
    x = x.detach().numpy() if isinstance(x, torch.Tensor) else x
    assert x.shape == ref.shape, (x.shape, ref.shape)
    np.testing.assert_allclose(x, ref, rtol=0, atol=tol * np.abs(ref).max())


def t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


@pytest.mark.parametrize("net", ["bvlc_alexnet", "bvlc_reference_caffenet"])
def test_alexnet_lrn_and_pooling(net):
    z = blobs("forward", net)
    # AlexNet: relu -> norm -> pool; CaffeNet: relu -> pool -> norm.  LRN k defaults to 1.
    for stage in ("1", "2"):
        chain = [("relu", "norm", "pool"), ("relu", "pool", "norm")][net != "bvlc_alexnet"]
        x = z[f"top/{chain[0]}{stage}/0"]
        for layer in chain[1:]:
            y = (lrn(t(x), 5, 1e-4, 0.75) if layer == "norm" else caffe_pool2d(t(x), "MAX", 3, 2))
            ref = z[f"top/{layer}{stage}/0"]
            close(y, ref)
            x = ref
    close(caffe_pool2d(t(z["top/relu5/0"]), "MAX", 3, 2), z["top/pool5/0"])


def test_googlenet_pools_and_lrn():
    z = blobs("forward", "bvlc_googlenet")
    close(lrn(t(z["top/pool1/3x3_s2/0"]), 5, 1e-4, 0.75), z["top/pool1/norm1/0"])
    close(caffe_pool2d(t(z["top/pool2/3x3_s2/0"]), "MAX", 3, 1, 1), z["top/inception_3a/pool/0"])
    close(caffe_pool2d(t(z["top/inception_3b/output/0"]), "MAX", 3, 2), z["top/pool3/3x3_s2/0"])
    close(caffe_pool2d(t(z["top/inception_5b/output/0"]), "AVE", 7, 1), z["top/pool5/7x7_s1/0"])
    assert z["top/pool1/3x3_s2/0"].shape[-1] == 56  # 112 -> 56 (ceil), not 55


def _pool_backward(z, x_key, layer, method, k, s):
    x = t(z[x_key]).requires_grad_()
    y = caffe_pool2d(x, method, k, s)
    close(y, z[f"top/{layer}/0"])
    y.backward(t(z[f"diff/{layer}"]))
    close(x.grad, z[f"bottom_diff/{layer}/0"])


def test_cifar10_quick_conv_pool_backward():
    z = blobs("backward", "cifar10_quick")
    conv1 = caffe_conv(t(z["input/data"]), t(z["param/conv1/0"]), t(z["param/conv1/1"]), 1, 2)
    close(conv1, z["top/conv1/0"])
    _pool_backward(z, "top/conv1/0", "pool1", "MAX", 3, 2)  # 32 -> 16: ceil keeps the clipped window
    _pool_backward(z, "top/relu2/0", "pool2", "AVE", 3, 2)
    _pool_backward(z, "top/relu3/0", "pool3", "AVE", 3, 2)


def test_lenet_conv_pool_ip_backward():
    z = blobs("backward", "lenet")
    close(caffe_conv(t(z["input/data"]), t(z["param/conv1/0"]), t(z["param/conv1/1"])), z["top/conv1/0"])
    _pool_backward(z, "top/conv1/0", "pool1", "MAX", 2, 2)
    _pool_backward(z, "top/conv2/0", "pool2", "MAX", 2, 2)
    x = t(z["top/pool2/0"]).requires_grad_()
    w = t(z["param/ip1/0"]).requires_grad_()
    y = caffe_inner_product(x, w, t(z["param/ip1/1"]))
    close(y, z["top/ip1/0"])
    y.backward(t(z["diff/ip1"]))
    close(x.grad, z["bottom_diff/ip1/0"])
    close(w.grad, z["param_diff/ip1/0"])
