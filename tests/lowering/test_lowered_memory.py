"""Predicted peak memory (netdef.analysis.memory) against the profiler
(netdef.lowering.memory) on the CPU: whole nets within 25%, and each layer type's
declared facts (LayerDef.memory) within a few percent on a one-layer net."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import CAFFE
from netdef.analysis import analyze
from netdef.analysis.memory import predict
from netdef.api import load_net
from netdef.cli.time_cmd import random_inputs
from netdef.layers.registry import ShapeContext
from netdef.lowering import memory as measure
from netdef.lowering.module import build

LENET_TRAIN = CAFFE / "examples" / "mnist" / "lenet_train_test.prototxt"

# conv → in-place ReLU → LRN → MAX pool → conv → in-place ReLU → AVE pool → fc → in-place
# ReLU → in-place Dropout → fc → SoftmaxWithLoss
TINY = """name: "tiny"
layer { name: "data" type: "Input" top: "data" top: "label"
  input_param { shape { dim: 16 dim: 3 dim: 32 dim: 32 } shape { dim: 16 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 16 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "norm1" type: "LRN" bottom: "conv1" top: "norm1" lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 } }
layer { name: "pool1" type: "Pooling" bottom: "norm1" top: "pool1" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
  convolution_param { num_output: 32 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2" pooling_param { pool: AVE kernel_size: 2 stride: 2 } }
layer { name: "fc1" type: "InnerProduct" bottom: "pool2" top: "fc1"
  inner_product_param { num_output: 64 weight_filler { type: "gaussian" std: 0.05 } } }
layer { name: "relu3" type: "ReLU" bottom: "fc1" top: "fc1" }
layer { name: "drop1" type: "Dropout" bottom: "fc1" top: "fc1" dropout_param { dropout_ratio: 0.5 } }
layer { name: "fc2" type: "InnerProduct" bottom: "fc1" top: "fc2"
  inner_product_param { num_output: 10 weight_filler { type: "gaussian" std: 0.05 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc2" bottom: "label" top: "loss" }
"""


def _analysis(path: Path, phase: str = "TRAIN", shapes: dict | None = None):  # noqa: ANN202
    loaded = load_net(path, phase=phase)
    return analyze(loaded, ShapeContext(phase=phase, input_shapes=shapes or {},
                                        base_dir=loaded.base_dir))


def _ratios(analysis) -> tuple[float, float, object]:  # noqa: ANN001
    gen = torch.Generator().manual_seed(0)
    module = build(analysis, generator=gen)
    inputs = random_inputs(analysis, gen)
    train = measure.measure_training(module, analysis, inputs)
    infer = measure.measure_inference(module, inputs)
    p = predict(analysis)
    assert train.start_bytes == infer.start_bytes == p.param_bytes + p.input_bytes
    assert train.backward_from == p.backward_from
    return p.training.total / train.peak_bytes, p.inference.total / infer.peak_bytes, p


def test_lenet_within_25_percent() -> None:
    if not LENET_TRAIN.exists():
        pytest.skip("../shared is not beside the repo")
    train, infer, p = _ratios(_analysis(LENET_TRAIN, shapes={"data": (64, 1, 28, 28)}))
    assert 0.75 <= train <= 1.25 and 0.75 <= infer <= 1.25, (train, infer)
    # activations, not params, dominate LeNet's peaks: the check means something
    assert p.training.activations + p.training.workspace > p.param_bytes


def test_tiny_conv_pool_lrn_dropout_net_within_25_percent(tmp_path: Path) -> None:
    path = tmp_path / "tiny.net"
    path.write_text(TINY)
    train, infer, p = _ratios(_analysis(path))
    assert 0.75 <= train <= 1.25 and 0.75 <= infer <= 1.25, (train, infer)
    assert p.training.activations > 4 * p.param_bytes


# --- one layer type at a time ----------------------------------------------------------
# data (4×16×16×16 floats = 64 KiB) → Bias (a fresh top that needs a gradient and keeps
# nothing) → the layer(s) under test; a net without a loss back-propagates ones from its
# outputs.  Tolerance: a few percent (the model counts a few freed-early temporaries).
HEAD = """name: "one"
layer { name: "data" type: "Input" top: "data" top: "label"
  input_param { shape { dim: 4 dim: 16 dim: 16 dim: 16 } shape { dim: 4 } } }
layer { name: "head" type: "Bias" bottom: "data" top: "x" bias_param { filler { type: "gaussian" } } }
"""
LAYERS = {
    "relu_in_place": 'layer { name: "r" type: "ReLU" bottom: "x" top: "x" }',
    "relu_after_sigmoid": 'layer { name: "s" type: "Sigmoid" bottom: "x" top: "s" } '
                          'layer { name: "r" type: "ReLU" bottom: "s" top: "s" }',
    "relu_on_a_split_blob": 'layer { name: "s" type: "Sigmoid" bottom: "x" top: "s" } '
                            'layer { name: "r" type: "ReLU" bottom: "x" top: "x" }',
    "leaky_relu": 'layer { name: "r" type: "ReLU" bottom: "x" top: "x" '
                  'relu_param { negative_slope: 0.1 } }',
    "prelu": 'layer { name: "r" type: "PReLU" bottom: "x" top: "x" }',
    "tanh": 'layer { name: "r" type: "TanH" bottom: "x" top: "x" }',
    "absval": 'layer { name: "r" type: "AbsVal" bottom: "x" top: "x" }',
    "power": 'layer { name: "r" type: "Power" bottom: "x" top: "y" '
             'power_param { power: 2 scale: 2 shift: 1 } }',
    "dropout": 'layer { name: "r" type: "Dropout" bottom: "x" top: "x" }',
    "lrn": 'layer { name: "r" type: "LRN" bottom: "x" top: "y" }',
    "lrn_within_channel": 'layer { name: "r" type: "LRN" bottom: "x" top: "y" '
                          'lrn_param { norm_region: WITHIN_CHANNEL } }',
    "batch_norm": 'layer { name: "r" type: "BatchNorm" bottom: "x" top: "x" }',
    "scale": 'layer { name: "r" type: "Scale" bottom: "x" top: "x" scale_param { bias_term: true } }',
    "mvn": 'layer { name: "r" type: "MVN" bottom: "x" top: "y" }',
    "softmax": 'layer { name: "r" type: "Softmax" bottom: "x" top: "y" }',
    "max_pool": 'layer { name: "r" type: "Pooling" bottom: "x" top: "y" '
                'pooling_param { pool: MAX kernel_size: 3 stride: 2 } }',
    "max_pool_padded_path": 'layer { name: "r" type: "Pooling" bottom: "x" top: "y" '
                            'pooling_param { pool: MAX kernel_size: 2 stride: 3 } }',
    "ave_pool": 'layer { name: "r" type: "Pooling" bottom: "x" top: "y" '
                'pooling_param { pool: AVE kernel_size: 2 stride: 2 } }',
    "conv": 'layer { name: "r" type: "Convolution" bottom: "x" top: "y" '
            'convolution_param { num_output: 32 kernel_size: 3 pad: 1 } }',
    "deconv": 'layer { name: "r" type: "Deconvolution" bottom: "x" top: "y" '
              'convolution_param { num_output: 8 kernel_size: 2 stride: 2 } }',
    "fc_relu": 'layer { name: "r" type: "InnerProduct" bottom: "x" top: "y" '
               'inner_product_param { num_output: 64 } } '
               'layer { name: "q" type: "ReLU" bottom: "y" top: "y" }',
    "eltwise_sum_3": 'layer { name: "s" type: "Sigmoid" bottom: "x" top: "s" } '
                     'layer { name: "r" type: "Eltwise" bottom: "x" bottom: "s" bottom: "x" top: "y" }',
    "eltwise_max": 'layer { name: "s" type: "Sigmoid" bottom: "x" top: "s" } '
                   'layer { name: "r" type: "Eltwise" bottom: "x" bottom: "s" top: "y" '
                   'eltwise_param { operation: MAX } }',
    "concat": 'layer { name: "s" type: "Sigmoid" bottom: "x" top: "s" } '
              'layer { name: "r" type: "Concat" bottom: "x" bottom: "s" top: "y" }',
    "slice_flatten": 'layer { name: "r" type: "Slice" bottom: "x" top: "y" top: "z" '
                     'slice_param { axis: 1 } } layer { name: "f" type: "Flatten" bottom: "z" top: "w" }',
    "crop": 'layer { name: "p" type: "Pooling" bottom: "x" top: "s" '
            'pooling_param { pool: AVE kernel_size: 2 stride: 2 } } '
            'layer { name: "r" type: "Crop" bottom: "x" bottom: "s" top: "y" }',
    "euclidean_loss": 'layer { name: "s" type: "Sigmoid" bottom: "x" top: "s" } '
                      'layer { name: "r" type: "EuclideanLoss" bottom: "x" bottom: "s" top: "y" }',
    "argmax": 'layer { name: "r" type: "ArgMax" bottom: "x" top: "y" }',
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_memory_facts_match_the_profiler(tmp_path: Path, name: str) -> None:
    path = tmp_path / "one.net"
    path.write_text(HEAD + LAYERS[name] + "\n")
    train, infer, _ = _ratios(_analysis(path))
    assert 0.95 <= train <= 1.05, f"training predicted/measured {train:.3f}"
    assert 0.95 <= infer <= 1.05, f"inference predicted/measured {infer:.3f}"
