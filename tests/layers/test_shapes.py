"""Shape rules and learnable-blob shapes of every registered layer type, table-driven,
plus the errors bad params must raise.  Expected values follow Caffe's Reshape /
LayerSetUp code (worked out by hand in the comments where not obvious)."""
from __future__ import annotations

from pathlib import Path
import pytest

from netdef.errors import ShapeError
from netdef.ir.build import BuildContext, build_message
from netdef.ir.messages import LayerParameter, V1LayerParameter
from netdef.layers import registry
from netdef.layers.registry import ShapeContext
from netdef.syntax import parse_text

BVLC_TYPES = """Convolution Deconvolution Pooling LRN InnerProduct ReLU PReLU ELU Sigmoid TanH
AbsVal BNLL Power Exp Log Threshold Swish Clip Dropout BatchNorm Scale Bias MVN Softmax
Eltwise Concat Slice Split Flatten Reshape Crop Tile Reduction ArgMax Embed Filter Im2col
SPP LSTM LSTMUnit RNN Input Data ImageData HDF5Data HDF5Output MemoryData DummyData
WindowData Python Accuracy Silence Parameter BatchReindex SoftmaxWithLoss EuclideanLoss
HingeLoss InfogainLoss MultinomialLogisticLoss SigmoidCrossEntropyLoss ContrastiveLoss""".split()


def lp(text: str) -> LayerParameter:
    return build_message(LayerParameter, parse_text(f'name: "l" {text}'), BuildContext(None))


def run(text: str, bottoms: list[tuple[int, ...]],
        ctx: ShapeContext | None = None) -> tuple[list, list]:
    layer = lp(text)
    defn = registry.get(layer.type)
    return defn.shapes(layer, bottoms, ctx or ShapeContext()), defn.params(layer, bottoms)


# (layer text, bottom shapes, top shapes, param blob shapes)
CASES: list[tuple[str, list, list, list]] = [
    # --- vision
    ('type: "Convolution" convolution_param { num_output: 96 kernel_size: 11 stride: 4 }',
     [(10, 3, 227, 227)], [(10, 96, 55, 55)], [(96, 3, 11, 11), (96,)]),            # AlexNet conv1
    ('type: "Convolution" convolution_param { num_output: 256 pad: 2 kernel_size: 5 group: 2 }',
     [(10, 96, 27, 27)], [(10, 256, 27, 27)], [(256, 48, 5, 5), (256,)]),          # AlexNet conv2
    ('type: "Convolution" convolution_param { num_output: 8 kernel_h: 3 kernel_w: 1 pad_h: 1 '
     'bias_term: false }', [(1, 4, 8, 8)], [(1, 8, 8, 8)], [(8, 4, 3, 1)]),
    ('type: "Convolution" convolution_param { num_output: 4 kernel_size: 3 dilation: 2 stride: 2 }',
     [(1, 2, 11, 11)], [(1, 4, 4, 4)], [(4, 2, 3, 3), (4,)]),                       # (11-5)//2+1
    ('type: "Convolution" convolution_param { num_output: 4 kernel_size: 3 }',      # 3-D
     [(2, 3, 5, 6, 7)], [(2, 4, 3, 4, 5)], [(4, 3, 3, 3, 3), (4,)]),
    ('type: "Convolution" convolution_param { num_output: 4 kernel_size: 3 axis: 2 }',  # 1-D
     [(2, 5, 3, 10)], [(2, 5, 4, 8)], [(4, 3, 3), (4,)]),
    ('type: "Convolution" top: "a" top: "b" convolution_param { num_output: 2 kernel_size: 1 }',
     [(1, 3, 4, 4), (1, 3, 4, 4)], [(1, 2, 4, 4), (1, 2, 4, 4)], [(2, 3, 1, 1), (2,)]),
    ('type: "Deconvolution" convolution_param { num_output: 16 kernel_size: 4 stride: 2 pad: 1 }',
     [(1, 8, 16, 16)], [(1, 16, 32, 32)], [(8, 16, 4, 4), (16,)]),
    ('type: "Deconvolution" convolution_param { num_output: 16 kernel_size: 64 stride: 32 group: 2 '
     'bias_term: false }', [(1, 8, 5, 5)], [(1, 16, 192, 192)], [(8, 8, 64, 64)]),  # 32·4+64
    ('type: "Im2col" convolution_param { kernel_size: 3 stride: 1 }',
     [(2, 3, 10, 10)], [(2, 27, 8, 8)], []),
    ('type: "Im2col" convolution_param { kernel_h: 2 kernel_w: 3 stride: 2 pad: 1 }',
     [(1, 4, 6, 6)], [(1, 24, 4, 3)], []),                          # (8-2)//2+1, (8-3)//2+1
    ('type: "Pooling" pooling_param { pool: MAX kernel_size: 3 stride: 2 }',
     [(10, 96, 55, 55)], [(10, 96, 27, 27)], []),
    ('type: "Pooling" pooling_param { pool: MAX kernel_size: 3 stride: 2 }',
     [(2, 64, 112, 112)], [(2, 64, 56, 56)], []),                           # GoogLeNet: ceil
    ('type: "Pooling" pooling_param { pool: MAX kernel_size: 3 stride: 2 round_mode: FLOOR }',
     [(2, 64, 112, 112)], [(2, 64, 55, 55)], []),
    ('type: "Pooling" pooling_param { pool: AVE kernel_size: 4 stride: 4 pad: 2 }',
     [(1, 1, 9, 10)], [(1, 1, 3, 3)], []),                                          # clip case
    ('type: "Pooling" pooling_param { pool: AVE global_pooling: true }',
     [(2, 1024, 7, 7)], [(2, 1024, 1, 1)], []),
    ('type: "Pooling" top: "p" top: "mask" pooling_param { pool: MAX kernel_size: 2 stride: 2 }',
     [(1, 3, 5, 5)], [(1, 3, 3, 3), (1, 3, 3, 3)], []),
    ('type: "Pooling" pooling_param { kernel_h: 3 kernel_w: 1 stride_h: 2 stride_w: 1 }',
     [(1, 2, 9, 4)], [(1, 2, 4, 4)], []),
    ('type: "SPP" spp_param { pyramid_height: 3 }',                                  # 3·(1+4+16)
     [(2, 3, 13, 13)], [(2, 63)], []),
    ('type: "SPP" spp_param { pyramid_height: 1 pool: AVE }', [(2, 3, 13, 9)], [(2, 3, 1, 1)], []),
    # --- normalisation
    ('type: "LRN" lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 }',
     [(10, 96, 55, 55)], [(10, 96, 55, 55)], []),
    ('type: "BatchNorm"', [(2, 16, 4, 4)], [(2, 16, 4, 4)], [(16,), (16,), (1,)]),
    ('type: "BatchNorm"', [(8, 5)], [(8, 5)], [(5,), (5,), (1,)]),
    ('type: "MVN" mvn_param { across_channels: true }', [(2, 3, 4, 4)], [(2, 3, 4, 4)], []),
    ('type: "Scale"', [(2, 16, 4, 4)], [(2, 16, 4, 4)], [(16,)]),
    ('type: "Scale" scale_param { bias_term: true }', [(2, 16, 4, 4)], [(2, 16, 4, 4)],
     [(16,), (16,)]),
    ('type: "Scale" scale_param { num_axes: -1 }', [(2, 16, 4, 4)], [(2, 16, 4, 4)], [(16, 4, 4)]),
    ('type: "Scale" scale_param { axis: 0 num_axes: 2 }', [(2, 16, 4)], [(2, 16, 4)], [(2, 16)]),
    ('type: "Scale" scale_param { num_axes: 0 }', [(2, 16, 4)], [(2, 16, 4)], [()]),
    ('type: "Scale"', [(2, 16, 4, 4), (16,)], [(2, 16, 4, 4)], []),
    ('type: "Scale" scale_param { axis: 0 }', [(2, 16, 4, 4), (2, 16)], [(2, 16, 4, 4)], []),
    ('type: "Scale" scale_param { bias_term: true }',                # bias spans bottom[1]
     [(2, 16, 4, 4), (16, 4)], [(2, 16, 4, 4)], [(16, 4)]),
    ('type: "Bias"', [(2, 16, 4, 4)], [(2, 16, 4, 4)], [(16,)]),
    ('type: "Bias" bias_param { axis: -1 }', [(2, 16, 5)], [(2, 16, 5)], [(5,)]),
    ('type: "Bias"', [(2, 16, 4, 4), (16, 4, 4)], [(2, 16, 4, 4)], []),
    # --- dense / reducing
    ('type: "InnerProduct" inner_product_param { num_output: 4096 }',
     [(10, 256, 6, 6)], [(10, 4096)], [(4096, 9216), (4096,)]),
    ('type: "InnerProduct" inner_product_param { num_output: 3 transpose: true }',
     [(4, 10)], [(4, 3)], [(10, 3), (3,)]),
    ('type: "InnerProduct" inner_product_param { num_output: 7 axis: 2 bias_term: false }',
     [(2, 3, 4, 5)], [(2, 3, 7)], [(7, 20)]),
    ('type: "InnerProduct" inner_product_param { num_output: 7 axis: -1 }',
     [(2, 3, 4)], [(2, 3, 7)], [(7, 4), (7,)]),
    ('type: "Embed" embed_param { input_dim: 100 num_output: 16 }',
     [(4, 7)], [(4, 7, 16)], [(100, 16), (16,)]),
    ('type: "Embed" embed_param { input_dim: 10 num_output: 3 bias_term: false }',
     [(5,)], [(5, 3)], [(10, 3)]),
    ('type: "Softmax"', [(10, 1000)], [(10, 1000)], []),
    ('type: "Softmax" softmax_param { axis: -1 }', [(2, 3, 4)], [(2, 3, 4)], []),
    ('type: "Eltwise"', [(2, 3, 4), (2, 3, 4)], [(2, 3, 4)], []),
    ('type: "Eltwise" eltwise_param { operation: SUM coeff: 1 coeff: -1 coeff: 0.5 }',
     [(2, 3)] * 3, [(2, 3)], []),
    ('type: "Eltwise" eltwise_param { operation: MAX }', [(5,), (5,)], [(5,)], []),
    ('type: "Reduction"', [(2, 3, 4)], [()], []),
    ('type: "Reduction" reduction_param { operation: MEAN axis: 1 }', [(2, 3, 4)], [(2,)], []),
    ('type: "Reduction" reduction_param { axis: -1 }', [(2, 3, 4)], [(2, 3)], []),
    ('type: "ArgMax"', [(10, 1000)], [(10, 1, 1)], []),
    ('type: "ArgMax" argmax_param { top_k: 5 out_max_val: true }', [(10, 1000)], [(10, 2, 5)], []),
    ('type: "ArgMax"', [(2, 3, 4, 5)], [(2, 1, 1, 1)], []),
    ('type: "ArgMax" argmax_param { axis: 1 top_k: 3 }', [(2, 5, 4)], [(2, 3, 4)], []),
    # --- neurons (same shape, in place)
    ('type: "ReLU"', [(2, 3, 4, 5)], [(2, 3, 4, 5)], []),
    ('type: "ReLU" relu_param { negative_slope: 0.1 }', [(7,)], [(7,)], []),
    ('type: "PReLU"', [(2, 3, 4, 5)], [(2, 3, 4, 5)], [(3,)]),
    ('type: "PReLU" prelu_param { channel_shared: true }', [(2, 3, 4, 5)], [(2, 3, 4, 5)], [()]),
    ('type: "ELU"', [(2, 3)], [(2, 3)], []),
    ('type: "Sigmoid"', [(2, 3)], [(2, 3)], []),
    ('type: "TanH"', [(2, 3)], [(2, 3)], []),
    ('type: "AbsVal"', [(2, 3)], [(2, 3)], []),
    ('type: "BNLL"', [(2, 3)], [(2, 3)], []),
    ('type: "Power" power_param { power: 2 scale: 0.5 shift: 1 }', [(2, 3)], [(2, 3)], []),
    ('type: "Exp" exp_param { base: 2 }', [(2, 3)], [(2, 3)], []),
    ('type: "Log"', [(2, 3)], [(2, 3)], []),
    ('type: "Threshold" threshold_param { threshold: 0.5 }', [(2, 3)], [(2, 3)], []),
    ('type: "Swish" swish_param { beta: 2 }', [(2, 3)], [(2, 3)], []),
    ('type: "Clip" clip_param { min: 0 max: 6 }', [(2, 3)], [(2, 3)], []),
    ('type: "Dropout" dropout_param { dropout_ratio: 0.5 }', [(10, 4096)], [(10, 4096)], []),
    # --- structure
    ('type: "Concat"', [(2, 64, 28, 28), (2, 128, 28, 28), (2, 32, 28, 28), (2, 32, 28, 28)],
     [(2, 256, 28, 28)], []),                                                        # inception 3a
    ('type: "Concat" concat_param { axis: 0 }', [(2, 3), (5, 3)], [(7, 3)], []),
    ('type: "Concat" concat_param { concat_dim: 0 }', [(2, 3), (5, 3)], [(7, 3)], []),  # legacy
    ('type: "Concat" concat_param { axis: -1 }', [(2, 3), (2, 4)], [(2, 7)], []),
    ('type: "Concat"', [(2, 3)], [(2, 3)], []),
    ('type: "Slice" top: "a" top: "b" top: "c" slice_param { slice_point: 2 slice_point: 5 }',
     [(2, 10, 3)], [(2, 2, 3), (2, 3, 3), (2, 5, 3)], []),
    ('type: "Slice" top: "a" top: "b"', [(4, 6)], [(4, 3), (4, 3)], []),
    ('type: "Slice" top: "a" top: "b" top: "c" slice_param { slice_dim: 2 }',
     [(2, 10, 3)], [(2, 10, 1)] * 3, []),
    ('type: "Slice" top: "a" top: "b" slice_param { axis: 0 slice_point: 1 }',
     [(3, 4)], [(1, 4), (2, 4)], []),
    ('type: "Split" top: "a" top: "b" top: "c"', [(2, 3)], [(2, 3)] * 3, []),
    ('type: "Flatten"', [(2, 3, 4, 5)], [(2, 60)], []),
    ('type: "Flatten" flatten_param { axis: 2 }', [(2, 3, 4, 5)], [(2, 3, 20)], []),
    ('type: "Flatten" flatten_param { end_axis: -2 }', [(2, 3, 4, 5)], [(2, 12, 5)], []),
    ('type: "Flatten" flatten_param { axis: 0 }', [(2, 3)], [(6,)], []),
    ('type: "Reshape" reshape_param { shape { dim: 0 dim: -1 } }', [(2, 3, 4, 5)], [(2, 60)], []),
    ('type: "Reshape" reshape_param { shape { dim: 0 dim: 0 dim: 2 dim: -1 } }',
     [(2, 3, 4, 5)], [(2, 3, 2, 10)], []),
    ('type: "Reshape" reshape_param { shape { dim: 1 } axis: 1 num_axes: 0 }',
     [(2, 8)], [(2, 1, 8)], []),                                              # insert an axis
    ('type: "Reshape" reshape_param { shape { dim: 1 } axis: -1 num_axes: 0 }',
     [(2, 8)], [(2, 8, 1)], []),
    ('type: "Reshape" reshape_param { shape { dim: 2 dim: -1 } axis: 1 num_axes: 1 }',
     [(3, 8, 5)], [(3, 2, 4, 5)], []),
    ('type: "Reshape" reshape_param { shape { dim: -1 } axis: 1 }', [(2, 3, 4)], [(2, 12)], []),
    ('type: "Reshape" reshape_param { shape { dim: 0 dim: 3 dim: 4 } }', [(2, 12)],
     [(2, 3, 4)], []),
    ('type: "Crop" crop_param { axis: 2 offset: 5 }',
     [(1, 21, 44, 44), (1, 3, 34, 34)], [(1, 21, 34, 34)], []),                     # FCN score crop
    ('type: "Crop" crop_param { axis: 1 offset: 0 offset: 2 offset: 3 }',
     [(1, 21, 44, 44), (1, 3, 34, 34)], [(1, 3, 34, 34)], []),
    ('type: "Crop" crop_param { axis: -1 }', [(2, 3, 8), (1, 1, 5)], [(2, 3, 5)], []),
    ('type: "Tile" tile_param { tiles: 3 }', [(2, 3, 4)], [(2, 9, 4)], []),
    ('type: "Tile" tile_param { axis: -1 tiles: 2 }', [(2, 3, 4)], [(2, 3, 8)], []),
    ('type: "Filter" top: "a" top: "b"', [(10, 3, 4), (10, 5), (10,)], [(10, 3, 4), (10, 5)], []),
    ('type: "Filter"', [(6, 2), (6, 1, 1)], [(6, 2)], []),
    ('type: "Silence"', [(2, 3), (4,)], [], []),
    ('type: "BatchReindex"', [(5, 3, 4), (7,)], [(7, 3, 4)], []),
    # --- recurrent
    ('type: "LSTM" recurrent_param { num_output: 8 }', [(5, 2, 10), (5, 2)],
     [(5, 2, 8)], [(32, 10), (32,), (32, 8)]),
    ('type: "LSTM" recurrent_param { num_output: 8 }', [(5, 2, 3, 4), (5, 2), (2, 6)],
     [(5, 2, 8)], [(32, 12), (32,), (32, 6), (32, 8)]),                            # + static input
    ('type: "LSTM" top: "y" top: "h" top: "c" '
     'recurrent_param { num_output: 8 expose_hidden: true }',
     [(5, 2, 10), (5, 2), (1, 2, 8), (1, 2, 8)], [(5, 2, 8), (1, 2, 8), (1, 2, 8)],
     [(32, 10), (32,), (32, 8)]),
    ('type: "RNN" recurrent_param { num_output: 8 }', [(5, 2, 10), (5, 2)],
     [(5, 2, 8)], [(8, 10), (8,), (8, 8), (8, 8), (8,)]),
    ('type: "RNN" top: "y" top: "h" recurrent_param { num_output: 8 expose_hidden: true }',
     [(5, 2, 10), (5, 2), (2, 3), (1, 2, 8)], [(5, 2, 8), (1, 2, 8)],
     [(8, 10), (8,), (8, 3), (8, 8), (8, 8), (8,)]),
    ('type: "LSTMUnit" top: "c" top: "h"', [(1, 2, 8), (1, 2, 32), (1, 2)],
     [(1, 2, 8), (1, 2, 8)], []),
    # --- data
    ('type: "Input" top: "data" input_param { shape { dim: 10 dim: 3 dim: 227 dim: 227 } }',
     [], [(10, 3, 227, 227)], []),
    ('type: "Input" top: "a" top: "b" input_param { shape { dim: 2 dim: 3 } }',
     [], [(2, 3), (2, 3)], []),
    ('type: "Input" top: "a" top: "b" input_param { shape { dim: 2 dim: 3 } shape { dim: 2 } }',
     [], [(2, 3), (2,)], []),
    ('type: "MemoryData" top: "data" top: "label" memory_data_param { batch_size: 4 channels: 3 '
     'height: 8 width: 9 }', [], [(4, 3, 8, 9), (4,)], []),
    ('type: "DummyData" top: "a" dummy_data_param { shape { dim: 2 dim: 3 } }', [], [(2, 3)], []),
    ('type: "DummyData" top: "a" top: "b" dummy_data_param { num: 2 channels: 3 channels: 1 '
     'height: 4 width: 5 }', [], [(2, 3, 4, 5), (2, 1, 4, 5)], []),
    ('type: "DummyData" top: "a" top: "b" '
     'dummy_data_param { shape { dim: 2 } shape { dim: 3 dim: 1 } }',
     [], [(2,), (3, 1)], []),
    ('type: "WindowData" top: "data" top: "label" transform_param { crop_size: 227 } '
     'window_data_param { batch_size: 128 source: "/nonexistent/window.txt" }',
     [], [(128, 3, 227, 227), (128,)], []),
    ('type: "ImageData" top: "data" top: "label" transform_param { crop_size: 224 } '
     'image_data_param { batch_size: 4 new_height: 256 new_width: 256 is_color: false }',
     [], [(4, 1, 224, 224), (4,)], []),
    ('type: "HDF5Output" bottom: "a" bottom: "b"', [(2, 3), (2,)], [], []),
    ('type: "Parameter" parameter_param { shape { dim: 3 dim: 4 } }', [], [(3, 4)], [(3, 4)]),
    # --- losses and accuracy
    ('type: "SoftmaxWithLoss"', [(10, 1000), (10,)], [()], []),
    ('type: "SoftmaxWithLoss" top: "loss" top: "prob"', [(10, 1000), (10,)], [(), (10, 1000)], []),
    ('type: "SoftmaxWithLoss"', [(2, 21, 4, 4), (2, 1, 4, 4)], [()], []),     # per-pixel labels
    ('type: "EuclideanLoss"', [(10, 5), (10, 5, 1, 1)], [()], []),
    ('type: "HingeLoss" hinge_loss_param { norm: L2 }', [(10, 5), (10,)], [()], []),
    ('type: "InfogainLoss"', [(10, 5), (10,)], [()], []),
    ('type: "InfogainLoss" top: "l" top: "p"', [(10, 5), (10,), (1, 1, 5, 5)], [(), (10, 5)], []),
    ('type: "MultinomialLogisticLoss"', [(10, 5), (10, 1, 1, 1)], [()], []),
    ('type: "SigmoidCrossEntropyLoss"', [(10, 5), (10, 5)], [()], []),
    ('type: "ContrastiveLoss"', [(10, 5, 1, 1), (10, 5, 1, 1), (10, 1, 1, 1)], [()], []),
    ('type: "ContrastiveLoss"', [(10, 5), (10, 5), (10,)], [()], []),
    ('type: "Accuracy"', [(10, 1000), (10,)], [()], []),
    ('type: "Accuracy" top: "acc" top: "per_class" accuracy_param { top_k: 5 }',
     [(10, 1000), (10,)], [(), (1000,)], []),
    ('type: "Accuracy" accuracy_param { axis: 2 }', [(2, 3, 7), (2, 3)], [()], []),
]


def _case_id(case: tuple) -> str:
    return case[0].split('"')[1]


@pytest.mark.parametrize("text,bottoms,tops,params", CASES, ids=[_case_id(c) for c in CASES])
def test_shapes_and_params(text: str, bottoms: list, tops: list, params: list) -> None:
    assert run(text, bottoms) == (tops, params)


def test_every_bvlc_type_has_a_case() -> None:
    covered = {_case_id(c) for c in CASES} | {"Data", "Python", "HDF5Data"}  # below
    assert set(BVLC_TYPES) <= covered


def test_all_61_bvlc_types_registered() -> None:
    assert len(BVLC_TYPES) == len(set(BVLC_TYPES)) == 61
    types = registry.all_types()
    assert set(BVLC_TYPES) <= set(types)
    for name in BVLC_TYPES:
        assert registry.is_known(name) and registry.get(name).type == name


def test_every_v1_type_maps_to_a_registered_type() -> None:
    names = [e.name for e in V1LayerParameter.LayerType if e.name != "NONE"]
    assert len(names) == 39
    targets = {}
    for name in names:
        defn = registry.by_v1_name(name)
        assert defn is not None, name
        assert registry.get(defn.type) is defn
        targets[name] = defn.type
    assert targets["SOFTMAX_LOSS"] == "SoftmaxWithLoss"
    assert targets["INNER_PRODUCT"] == "InnerProduct"
    assert targets["HDF5_DATA"] == "HDF5Data"
    assert targets["ABSVAL"] == "AbsVal" and targets["IM2COL"] == "Im2col"
    assert len(set(targets.values())) == 39
    assert registry.by_v1_name("NONE") is None


# --- batch overrides and data sources ---------------------------------------------------------

def test_batch_override_and_input_shapes() -> None:
    text = 'type: "Input" top: "data" input_param { shape { dim: 10 dim: 3 dim: 227 dim: 227 } }'
    assert run(text, [], ShapeContext(batch=2))[0] == [(2, 3, 227, 227)]
    ctx = ShapeContext(input_shapes={"data": (1, 3, 32, 32)})
    assert run(text, [], ctx)[0] == [(1, 3, 32, 32)]
    mem = ('type: "MemoryData" top: "d" top: "l" memory_data_param { batch_size: 4 channels: 3 '
           'height: 8 width: 9 }')
    assert run(mem, [], ShapeContext(batch=7))[0] == [(7, 3, 8, 9), (7,)]


DATA = ('type: "Data" top: "data" top: "label" transform_param { crop_size: 227 } '
        'data_param { source: "{src}" backend: LMDB batch_size: 256 }')


def test_data_from_input_shape() -> None:
    text = DATA.replace("{src}", "/nonexistent_lmdb")
    ctx = ShapeContext(input_shapes={"data": (64, 3, 256, 256)})
    assert run(text, [], ctx)[0] == [(64, 3, 227, 227), (64,)]
    ctx = ShapeContext(input_shapes={"data": (64, 3, 256, 256)}, batch=5)
    assert run(text, [], ctx)[0] == [(5, 3, 227, 227), (5,)]


def test_data_without_source_asks_for_input_shape() -> None:
    with pytest.raises(ShapeError) as e:
        run(DATA.replace("{src}", "/nonexistent_lmdb"), [])
    assert "'l'" in e.value.message and "--input-shape data=N,C,H,W" in (e.value.hint or "")


def _write_lmdb(path: Path, records: list[bytes]) -> None:
    import lmdb
    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i, rec in enumerate(records):
            txn.put(f"{i:08d}".encode(), rec)
    env.close()


def test_data_reads_first_datum_from_lmdb(tmp_path: Path) -> None:
    import numpy as np
    from netdef.io.blobs import encode_datum
    _write_lmdb(tmp_path / "db", [encode_datum(np.zeros((3, 240, 250), np.uint8), 1)])
    text = DATA.replace("{src}", "db")
    assert run(text, [], ShapeContext(base_dir=tmp_path))[0] == [(256, 3, 227, 227), (256,)]
    nocrop = text.replace("transform_param { crop_size: 227 } ", "").replace('top: "label" ', "")
    assert run(nocrop, [], ShapeContext(base_dir=tmp_path, batch=2))[0] == [(2, 3, 240, 250)]


def test_data_reads_encoded_datum(tmp_path: Path) -> None:
    import io
    from PIL import Image
    from netdef.io.blobs import encode_datum
    buf = io.BytesIO()
    Image.new("L", (20, 10)).save(buf, format="PNG")
    _write_lmdb(tmp_path / "db", [encode_datum(buf.getvalue(), 0, encoded=True)])
    text = DATA.replace("{src}", str(tmp_path / "db")).replace("crop_size: 227", "crop_size: 8")
    assert run(text, [])[0] == [(256, 1, 8, 8), (256,)]
    forced = text.replace("crop_size: 8", "crop_size: 8 force_color: true")
    assert run(forced, [])[0] == [(256, 3, 8, 8), (256,)]


def test_image_data_reads_first_image(tmp_path: Path) -> None:
    from PIL import Image
    Image.new("RGB", (40, 30)).save(tmp_path / "a.png")
    (tmp_path / "list.txt").write_text("a.png 3\n")
    text = ('type: "ImageData" top: "data" top: "label" image_data_param { source: "list.txt" '
            f'root_folder: "{tmp_path}/" batch_size: 2 }}')
    assert run(text, [], ShapeContext(base_dir=tmp_path))[0] == [(2, 3, 30, 40), (2,)]
    with pytest.raises(ShapeError, match="first image"):
        run(text.replace("list.txt", "missing.txt"), [])


def test_hdf5_data_reads_dataset_shapes(tmp_path: Path) -> None:
    import h5py
    import numpy as np
    with h5py.File(tmp_path / "train.h5", "w") as f:
        f["data"] = np.zeros((100, 3, 8, 8), np.float32)
        f["label"] = np.zeros((100,), np.float32)
    (tmp_path / "list.txt").write_text(f"{tmp_path / 'train.h5'}\n")
    text = ('type: "HDF5Data" top: "data" top: "label" hdf5_data_param { source: "list.txt" '
            'batch_size: 16 }')
    ctx = ShapeContext(base_dir=tmp_path)
    assert run(text, [], ctx)[0] == [(16, 3, 8, 8), (16,)]
    with pytest.raises(ShapeError, match="no dataset 'extra'"):
        run(text.replace('top: "label"', 'top: "extra"'), [], ctx)


def test_python_layer_needs_input_shapes() -> None:
    text = 'type: "Python" top: "data" python_param { module: "m" layer: "L" }'
    with pytest.raises(ShapeError) as e:
        run(text, [])
    assert "--input-shape data=" in (e.value.hint or "")
    assert run(text, [], ShapeContext(input_shapes={"data": (2, 3)}))[0] == [(2, 3)]


# --- errors ----------------------------------------------------------------------------------

ERRORS: list[tuple[str, list, str]] = [
    ('type: "Convolution" convolution_param { kernel_size: 3 }', [(1, 3, 8, 8)], "num_output"),
    ('type: "Convolution" convolution_param { num_output: 4 kernel_size: 11 }', [(1, 3, 8, 8)],
     "exceeds the padded input"),
    ('type: "Convolution" convolution_param { num_output: 4 kernel_size: 3 group: 2 }',
     [(1, 3, 8, 8)], "group 2 must divide"),
    ('type: "Convolution" top: "a" top: "b" convolution_param { num_output: 4 kernel_size: 1 }',
     [(1, 3, 8, 8), (1, 3, 4, 4)], "same shape"),
    ('type: "InnerProduct"', [(2, 3)], "num_output"),
    ('type: "Pooling" pooling_param { kernel_size: 2 }', [(2, 3, 4)], "4 axes"),
    ('type: "Pooling" pooling_param { kernel_size: 9 }', [(1, 1, 4, 4)],
     "exceeds the padded input"),
    ('type: "Pooling" top: "a" top: "b" pooling_param { pool: AVE kernel_size: 2 }',
     [(1, 1, 4, 4)], "only MAX"),
    ('type: "LRN" lrn_param { local_size: 4 }', [(1, 3, 4, 4)], "odd"),
    ('type: "SPP" spp_param { pyramid_height: 4 }', [(1, 3, 3, 3)], "too small"),
    ('type: "Concat"', [(2, 3, 4), (2, 5, 5)], "outside the concat axis"),
    ('type: "Concat"', [(2, 3), (2, 3, 1)], "does not match"),
    ('type: "Concat" concat_param { axis: 0 concat_dim: 1 }', [(2, 3)], "not both"),
    ('type: "Eltwise"', [(2, 3), (2, 4)], "bottom shapes differ"),
    ('type: "Eltwise" eltwise_param { coeff: 1 }', [(2, 3), (2, 3)], "one coefficient per bottom"),
    ('type: "Eltwise" eltwise_param { operation: PROD coeff: 1 coeff: 2 }', [(2, 3), (2, 3)],
     "only for SUM"),
    ('type: "Reshape" reshape_param { shape { dim: -1 dim: -1 } }', [(2, 3)], "more than one -1"),
    ('type: "Reshape" reshape_param { shape { dim: -1 dim: 4 } }', [(2, 3)], "not divisible"),
    ('type: "Reshape" reshape_param { shape { dim: 5 } }', [(2, 3)], "6"),
    ('type: "Reshape" reshape_param { shape { dim: 0 dim: 0 dim: 0 } }', [(2, 3)], "no axis 2"),
    ('type: "Slice" top: "a" top: "b"', [(2, 3)], "evenly divide"),
    ('type: "Slice" top: "a" top: "b" slice_param { slice_point: 1 slice_point: 2 }', [(2, 3)],
     "need 3 tops"),
    ('type: "Slice" top: "a" top: "b" slice_param { slice_point: 3 }', [(2, 3)],
     "increase strictly"),
    ('type: "Crop" crop_param { axis: 2 offset: 12 }', [(1, 3, 44, 44), (1, 3, 34, 34)],
     "cannot crop"),
    ('type: "Crop" crop_param { axis: 1 offset: 1 offset: 2 }', [(1, 3, 8, 8), (1, 3, 4, 4)],
     "offsets"),
    ('type: "Flatten" flatten_param { axis: 2 end_axis: 1 }', [(2, 3, 4)], "end_axis"),
    ('type: "Tile"', [(2, 3)], "tiles must be positive"),
    ('type: "Softmax" softmax_param { axis: 4 }', [(2, 3)], "axis 4 is out of range"),
    ('type: "ArgMax" argmax_param { top_k: 4 }', [(2, 3)], "exceeds"),
    ('type: "Scale"', [(2, 16, 4, 4), (8,)], "does not match"),
    ('type: "Scale" scale_param { axis: 2 num_axes: 3 }', [(2, 16, 4, 4)], "extends past"),
    ('type: "Embed" embed_param { num_output: 3 }', [(2,)], "input_dim"),
    ('type: "PReLU"', [(5,)], "at least 2 axes"),
    ('type: "SoftmaxWithLoss"', [(10, 5), (10, 2)], "number of labels"),
    ('type: "SoftmaxWithLoss"', [(10, 5), (9,)], "same first dimension"),
    ('type: "EuclideanLoss"', [(10, 5), (10, 4)], "same dimension"),
    ('type: "SigmoidCrossEntropyLoss"', [(10, 5), (10, 4)], "same count"),
    ('type: "MultinomialLogisticLoss"', [(10, 5), (10, 2)], "one value per item"),
    ('type: "InfogainLoss"', [(10, 5), (10,), (4, 4)], "5×5"),
    ('type: "ContrastiveLoss"', [(10, 5, 2, 1), (10, 5, 2, 1), (10,)], "(N, C, 1, 1)"),
    ('type: "Accuracy" accuracy_param { top_k: 6 }', [(10, 5), (10,)],
     "exceeds the number of classes"),
    ('type: "BatchReindex"', [(5, 3), (2, 2)], "1-D"),
    ('type: "Filter"', [(4, 3), (5,)], "differ in the first axis"),
    ('type: "LSTM" recurrent_param { num_output: 8 }', [(5, 2, 10), (4, 2)], "cont must be"),
    ('type: "LSTM"', [(5, 2, 10), (5, 2)], "num_output"),
    ('type: "RNN" recurrent_param { num_output: 8 expose_hidden: true }',
     [(5, 2, 10), (5, 2), (1, 2, 7)], "initial state"),
    ('type: "LSTMUnit"', [(1, 2, 8), (1, 2, 16), (1, 2)], "gates must be"),
    ('type: "Input" top: "data"', [], "no shape for input 'data'"),
    ('type: "Input" top: "a" top: "b" top: "c" input_param { shape { dim: 1 } shape { dim: 2 } }',
     [], "2 shapes for 3 tops"),
    ('type: "DummyData" top: "a" top: "b" top: "c" dummy_data_param { shape { dim: 1 } '
     'shape { dim: 2 } }', [], "once or once per top"),
    ('type: "DummyData" dummy_data_param { num: 1 shape { dim: 1 } }', [], "both shape and legacy"),
    ('type: "MemoryData" top: "a" top: "b" memory_data_param { batch_size: 4 }', [], "positive"),
    ('type: "ImageData" top: "a" top: "b" image_data_param { new_height: 4 }', [], "together"),
    ('type: "WindowData" top: "a" top: "b" window_data_param { batch_size: 2 }', [], "crop_size"),
    ('type: "Data" top: "a" data_param { source: "x" }', [], "batch_size"),
]


@pytest.mark.parametrize("text,bottoms,fragment", ERRORS, ids=[_case_id(c) for c in ERRORS])
def test_bad_params_raise_shape_error(text: str, bottoms: list, fragment: str) -> None:
    layer = lp(text)
    defn = registry.get(layer.type)
    with pytest.raises(ShapeError) as e:
        defn.shapes(layer, bottoms, ShapeContext())
        defn.params(layer, bottoms)
    assert fragment in e.value.message
    assert e.value.message.startswith(f"layer 'l' ({layer.type}): ")
