"""Inference folding of Convolution → BatchNorm → Scale/Bias (netdef.lowering.fold).

The folded net must compute what the unfolded one computes (bound 1e-5 of the output's
range; the weights are rescaled once, so only float rounding differs), with fewer
graph nodes, and must leave alone every chain that cannot fold.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from caffe_fixtures import net_of
from netdef.lowering.fold import FoldedLayer, fold_inference

RNG = np.random.default_rng(11)

CONV = ('layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{top}" '
        'convolution_param {{ num_output: 4 kernel_size: 3 pad: 1 {extra} '
        'weight_filler {{ type: "gaussian" std: 0.5 }} bias_filler {{ type: "gaussian" std: 1 }} }} }}\n')
BN = 'layer {{ name: "{name}" type: "BatchNorm" bottom: "{b}" top: "{b}" {extra} }}\n'
SCALE = ('layer {{ name: "{name}" type: "Scale" bottom: "{b}" top: "{b}" '
         'scale_param {{ bias_term: {bias} }} }}\n')
RELU = 'layer {{ name: "{name}" type: "ReLU" bottom: "{b}" top: "{b}" }}\n'


def _randomise(module: torch.nn.Module) -> None:
    """Non-trivial BatchNorm statistics (factor s = 2) and Scale/Bias values."""
    with torch.no_grad():
        for name, sub in module.named_children():
            kind = type(sub).__name__
            if kind == "LoweredBatchNorm":
                sub.blob(0).copy_(torch.from_numpy(RNG.normal(0, 1, sub.blob(0).shape)))
                sub.blob(1).copy_(torch.from_numpy(RNG.uniform(0.5, 3, sub.blob(1).shape)))
                sub.blob(2).fill_(2.0)
            elif kind in ("LoweredScale", "LoweredBias"):
                for i in range(sub.num_blobs):
                    sub.blob(i).copy_(torch.from_numpy(RNG.normal(0, 1, sub.blob(i).shape)))


def _numpy_reference(module, x: np.ndarray) -> np.ndarray:
    """conv → (x - mean/s)/sqrt(var/s + eps) → γx + β → ReLU in float64."""
    conv, bn, sc = module.conv1, module.bn1, module.sc1
    w = conv.blob(0).detach().double()
    y = torch.nn.functional.conv2d(torch.from_numpy(x).double(), w,
                                   conv.blob(1).detach().double(), padding=1).numpy()
    s = float(bn.blob(2))
    mean = bn.blob(0).detach().double().numpy() / s
    var = bn.blob(1).detach().double().numpy() / s
    y = (y - mean[None, :, None, None]) / np.sqrt(var + 1e-5)[None, :, None, None]
    y = y * sc.blob(0).detach().double().numpy()[None, :, None, None] \
        + sc.blob(1).detach().double().numpy()[None, :, None, None]
    return np.maximum(y, 0)


def test_conv_bn_scale_relu_folds_to_one_convolution():
    body = (CONV.format(name="conv1", bottom="x", top="c", extra="")
            + BN.format(name="bn1", b="c", extra="") + SCALE.format(name="sc1", b="c", bias="true")
            + RELU.format(name="relu1", b="c"))
    _, module = net_of(body, {"x": (2, 3, 7, 7)})
    _randomise(module)
    module.eval()
    folded, folds = fold_inference(module)
    assert [(f.layer, f.into) for f in folds] == [("bn1", "conv1"), ("sc1", "conv1")]
    calls = [n.target for n in folded.graph.nodes if n.op == "call_module"]
    assert calls == ["conv1", "relu1"]
    assert isinstance(folded.bn1, FoldedLayer) and isinstance(folded.sc1, FoldedLayer)
    x = RNG.standard_normal((2, 3, 7, 7)).astype(np.float32)
    ref = _numpy_reference(module, x)
    with torch.no_grad():
        got = folded(x=torch.from_numpy(x))["c"].numpy()
        plain = module(x=torch.from_numpy(x))["c"].numpy()
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5 * np.abs(ref).max())
    np.testing.assert_allclose(plain, ref, rtol=0, atol=1e-5 * np.abs(ref).max())
    # the original keeps its own parameters (weights I/O and training read those)
    assert module.conv1.blob(0).data_ptr() != folded.conv1.blob(0).data_ptr()
    assert [n.target for n in module.graph.nodes if n.op == "call_module"] == \
        ["conv1", "bn1", "sc1", "relu1"]


def test_bias_layer_and_conv_without_bias_fold():
    body = (CONV.format(name="conv1", bottom="x", top="c", extra="bias_term: false")
            + 'layer { name: "b1" type: "Bias" bottom: "c" top: "c" }\n')
    _, module = net_of(body, {"x": (1, 3, 5, 5)})
    _randomise(module)
    module.eval()
    folded, folds = fold_inference(module)
    assert [(f.layer, f.into) for f in folds] == [("b1", "conv1")]
    x = torch.from_numpy(RNG.standard_normal((1, 3, 5, 5)).astype(np.float32))
    with torch.no_grad():
        a, b = module(x=x)["c"], folded(x=x)["c"]
    assert float((a - b).abs().max()) <= 1e-5 * float(a.abs().max())


@pytest.mark.parametrize("body,why", [
    (CONV.format(name="conv1", bottom="x", top="c", extra="")
     + 'layer { name: "other" type: "ReLU" bottom: "c" top: "r" }\n'
     + BN.format(name="bn1", b="c", extra=""), "the conv top has another reader"),
    (CONV.format(name="conv1", bottom="x", top="c", extra="")
     + BN.format(name="bn1", b="c", extra="batch_norm_param { use_global_stats: false }"),
     "batch statistics"),
    ('layer { name: "conv1" type: "Deconvolution" bottom: "x" top: "c" convolution_param { '
     'num_output: 4 kernel_size: 3 } }\n' + BN.format(name="bn1", b="c", extra=""),
     "a deconvolution"),
])
def test_chains_that_cannot_fold_are_left_alone(body, why):
    _, module = net_of(body, {"x": (1, 3, 5, 5)})
    module.eval()
    folded, folds = fold_inference(module)
    assert folds == [], why


def test_training_modules_are_not_folded():
    body = CONV.format(name="conv1", bottom="x", top="c", extra="") + BN.format(
        name="bn1", b="c", extra="")
    _, module = net_of(body, {"x": (2, 3, 5, 5)}, phase="TRAIN")
    assert module.training
    folded, folds = fold_inference(module)
    assert folded is module and folds == []
