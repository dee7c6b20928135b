"""Static facts (arity, flags, force-backward), op counts and summaries of the layer types."""
from __future__ import annotations

import pytest

from netdef.errors import ShapeError
from netdef.ir.build import BuildContext, build_message
from netdef.ir.messages import LayerParameter
from netdef.ir.schema import fields_of
from netdef.layers import registry
from netdef.layers.registry import Counts, ShapeContext, check_arity
from netdef.syntax import parse_text

CATEGORIES = {"data", "conv", "pool", "norm", "act", "fc", "loss", "structure", "recurrent",
              "other"}
IN_PLACE = {"ReLU", "PReLU", "ELU", "Sigmoid", "TanH", "AbsVal", "BNLL", "Power", "Exp", "Log",
            "Threshold", "Swish", "Clip", "Dropout", "BatchNorm", "Scale", "Bias"}
LOSSES = {"SoftmaxWithLoss", "EuclideanLoss", "HingeLoss", "InfogainLoss",
          "MultinomialLogisticLoss", "SigmoidCrossEntropyLoss", "ContrastiveLoss"}
DATA = {"Input", "Data", "ImageData", "HDF5Data", "MemoryData", "DummyData", "WindowData"}


def lp(text: str) -> LayerParameter:
    return build_message(LayerParameter, parse_text(f'name: "l" {text}'), BuildContext(None))


def test_static_facts() -> None:
    layer_fields = fields_of(LayerParameter)
    for name, defn in registry.all_types().items():
        assert defn.category in CATEGORIES, name
        assert defn.param_field is None or defn.param_field in layer_fields, name
        assert defn.in_place == (name in IN_PLACE), name
        assert defn.is_loss == (name in LOSSES), name
        assert defn.is_data == (name in DATA), name
        lo, hi = defn.bottoms
        assert hi is None or lo <= hi
        if defn.is_data:
            assert defn.bottoms == (0, 0), name


@pytest.mark.parametrize("name,bottoms,tops", [
    ("Convolution", (1, None), (1, None)), ("Pooling", (1, 1), (1, 2)),
    ("Eltwise", (2, None), (1, 1)),
    ("Concat", (1, None), (1, 1)), ("Slice", (1, 1), (1, None)), ("Silence", (1, None), (0, 0)),
    ("Crop", (2, 2), (1, 1)), ("Filter", (2, None), (1, None)), ("SoftmaxWithLoss", (2, 2), (1, 2)),
    ("InfogainLoss", (2, 3), (1, 2)), ("ContrastiveLoss", (3, 3), (1, 1)),
    ("Accuracy", (2, 2), (1, 2)),
    ("ImageData", (0, 0), (2, 2)), ("Data", (0, 0), (1, 2)), ("Input", (0, 0), (1, None)),
    ("HDF5Output", (2, 2), (0, 0)), ("LSTMUnit", (3, 3), (2, 2)), ("LSTM", (2, 5), (1, 3)),
    ("RNN", (2, 4), (1, 2)), ("Scale", (1, 2), (1, 1)), ("Parameter", (0, 0), (1, 1)),
    ("BatchReindex", (2, 2), (1, 1)), ("ReLU", (1, 1), (1, 1)), ("Python", (0, None), (0, None)),
])
def test_arity(name: str, bottoms: tuple, tops: tuple) -> None:
    defn = registry.get(name)
    assert (defn.bottoms, defn.tops) == (bottoms, tops)


def test_check_arity_uses_declared_counts() -> None:
    check_arity(registry.get("Eltwise"), lp('type: "Eltwise" bottom: "a" bottom: "b" top: "c"'))
    with pytest.raises(ShapeError, match="at least 2 bottom"):
        check_arity(registry.get("Eltwise"), lp('type: "Eltwise" bottom: "a" top: "c"'))
    with pytest.raises(ShapeError, match="exactly 2 top"):
        check_arity(registry.get("ImageData"), lp('type: "ImageData" top: "data"'))


@pytest.mark.parametrize("name,refused", [
    ("SoftmaxWithLoss", {1}), ("MultinomialLogisticLoss", {1}), ("InfogainLoss", {1}),
    ("HingeLoss", {1}), ("SigmoidCrossEntropyLoss", {1}), ("EuclideanLoss", set()),
    ("ContrastiveLoss", {2}), ("LSTM", {1}), ("RNN", {1}), ("LSTMUnit", {2}),
    # Caffe does not override AllowForceBackward for these (its Backward refuses instead)
    ("Accuracy", set()), ("BatchReindex", set()), ("Filter", set()), ("Convolution", set()),
])
def test_allow_force_backward(name: str, refused: set) -> None:
    defn, layer = registry.get(name), lp(f'type: "{name}"')
    assert {i for i in range(4) if not defn.allow_force_backward(layer, i)} == refused


def test_loss_weights() -> None:
    loss = registry.get("SoftmaxWithLoss")
    assert loss.loss_weights(lp('type: "SoftmaxWithLoss"'), 2) == [1.0, 0.0]
    assert loss.loss_weights(lp('type: "SoftmaxWithLoss" loss_weight: 0.5'), 1) == [0.5]
    assert registry.get("Accuracy").loss_weights(lp('type: "Accuracy"'), 1) == [0.0]


def counts(text: str, bottoms: list) -> Counts:
    layer = lp(text)
    defn = registry.get(layer.type)
    return defn.counts(layer, bottoms, defn.shapes(layer, bottoms, ShapeContext()))


CONV1 = 10 * 96 * 55 * 55 * 3 * 11 * 11  # N·out·H'·W'·(in/g)·kh·kw
CONV2 = 256 * 27 * 27 * 48 * 25


@pytest.mark.parametrize("text,bottoms,want", [
    ('type: "Convolution" convolution_param { num_output: 96 kernel_size: 11 stride: 4 }',
     [(10, 3, 227, 227)], Counts(CONV1, 2 * CONV1 + 10 * 96 * 55 * 55)),
    ('type: "Convolution" convolution_param { num_output: 256 pad: 2 kernel_size: 5 group: 2 '
     'bias_term: false }', [(1, 96, 27, 27)], Counts(CONV2, 2 * CONV2)),
    # deconv (1,16,8,8)→(1,8,16,16) costs what the conv (1,8,16,16)→(1,16,8,8) costs
    ('type: "Deconvolution" convolution_param { num_output: 8 kernel_size: 2 stride: 2 '
     'bias_term: false }',
     [(1, 16, 8, 8)], Counts(16 * 8 * 8 * 8 * 4, 2 * 16 * 8 * 8 * 8 * 4)),
    ('type: "InnerProduct" inner_product_param { num_output: 4096 }', [(10, 9216)],
     Counts(10 * 9216 * 4096, 2 * 10 * 9216 * 4096 + 10 * 4096)),
    ('type: "Pooling" pooling_param { pool: MAX kernel_size: 3 stride: 2 }', [(1, 2, 7, 7)],
     Counts(0, 2 * 3 * 3 * 9)),
    ('type: "Pooling" pooling_param { pool: AVE global_pooling: true }', [(1, 2, 7, 7)],
     Counts(0, 2 * 50)),
    ('type: "LRN" lrn_param { local_size: 5 }', [(1, 2, 3, 3)], Counts(0, 18 * 14)),
    ('type: "LRN" lrn_param { local_size: 3 norm_region: WITHIN_CHANNEL }', [(1, 2, 3, 3)],
     Counts(0, 18 * 22)),
    ('type: "Softmax"', [(2, 10)], Counts(0, 60)),
    ('type: "ReLU"', [(2, 10)], Counts(0, 20)),
    ('type: "TanH"', [(2, 10)], Counts(0, 20)),
    ('type: "Dropout"', [(2, 10)], Counts(0, 0)),
    ('type: "Eltwise"', [(2, 10)] * 3, Counts(0, 40)),
    ('type: "Eltwise" eltwise_param { coeff: 1 coeff: -1 }', [(2, 10)] * 2, Counts(0, 20 + 40)),
    ('type: "BatchNorm"', [(2, 3, 2, 2)], Counts(0, 48)),
    ('type: "Scale" scale_param { bias_term: true }', [(2, 3, 2, 2)], Counts(0, 48)),
    ('type: "Scale"', [(2, 3, 2, 2)], Counts(0, 24)),
    ('type: "Concat"', [(2, 3), (2, 3)], Counts(0, 0)),
    ('type: "LSTM" recurrent_param { num_output: 4 }', [(5, 2, 3), (5, 2)],
     Counts(5 * 2 * 16 * (3 + 4), 2 * 5 * 2 * 16 * 7 + 5 * 2 * (16 * 2 + 10 * 4))),
    ('type: "RNN" recurrent_param { num_output: 4 }', [(5, 2, 3), (5, 2)],
     Counts(5 * 2 * 4 * (3 + 8), 2 * 5 * 2 * 4 * 11 + 5 * 2 * 4 * 6)),
    ('type: "SoftmaxWithLoss"', [(10, 5), (10,)], Counts(0, 150 + 10)),
    ('type: "Accuracy"', [(10, 5), (10,)], Counts(0, 50)),
])
def test_counts(text: str, bottoms: list, want: Counts) -> None:
    assert counts(text, bottoms) == want


@pytest.mark.parametrize("text,want", [
    ('type: "Convolution" convolution_param { num_output: 96 kernel_size: 11 stride: 4 }',
     "11×11/4, 96"),
    ('type: "Convolution" convolution_param { num_output: 256 pad: 2 kernel_size: 5 group: 2 }',
     "5×5/1, 256, p2, g2"),
    ('type: "Convolution" convolution_param { num_output: 64 kernel_size: 3 pad: 2 dilation: 2 }',
     "3×3/1, 64, p2, d2"),
    ('type: "Convolution" convolution_param { num_output: 8 kernel_h: 3 kernel_w: 1 stride_h: 2 '
     'stride_w: 1 }', "3×1/2×1, 8"),
    ('type: "Deconvolution" convolution_param { num_output: 21 kernel_size: 64 stride: 32 }',
     "64×64/32, 21"),
    ('type: "Pooling" pooling_param { pool: MAX kernel_size: 3 stride: 2 }', "MAX 3/2"),
    ('type: "Pooling" pooling_param { pool: AVE kernel_size: 3 stride: 1 pad: 1 }', "AVE 3/1, p1"),
    ('type: "Pooling" pooling_param { pool: AVE global_pooling: true }', "AVE global"),
    ('type: "InnerProduct" inner_product_param { num_output: 4096 }', "4096"),
    ('type: "LRN" lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 }', "5, α=0.0001, β=0.75"),
    ('type: "Dropout" dropout_param { dropout_ratio: 0.5 }', "0.5"),
    ('type: "ReLU"', ""),
    ('type: "ReLU" relu_param { negative_slope: 0.1 }', "slope=0.1"),
    ('type: "Eltwise" eltwise_param { operation: MAX }', "MAX"),
    ('type: "Input" input_param { shape { dim: 10 dim: 3 dim: 227 dim: 227 } }', "10×3×227×227"),
    ('type: "Reshape" reshape_param { shape { dim: 0 dim: -1 } }', "0,-1"),
])
def test_summary(text: str, want: str) -> None:
    layer = lp(text)
    assert registry.get(layer.type).summary(layer) == want


def test_every_type_summarises_a_bare_layer() -> None:
    for name, defn in registry.all_types().items():
        assert isinstance(defn.summary(lp(f'type: "{name}"')), str), name

