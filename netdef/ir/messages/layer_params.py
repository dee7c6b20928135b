"""The per-layer-type ``*_param`` messages of LayerParameter (caffe.proto facts)."""
from __future__ import annotations

from netdef.ir.messages.common import BlobShape, FillerParameter
from netdef.ir.schema import ProtoEnum, message, opt, rep, req

__all__ = [
    "AccuracyParameter", "ArgMaxParameter", "ClipParameter", "ConcatParameter",
    "BatchNormParameter", "BiasParameter", "ContrastiveLossParameter",
    "ConvolutionParameter", "CropParameter", "DataParameter", "DropoutParameter",
    "DummyDataParameter", "EltwiseParameter", "ELUParameter", "EmbedParameter",
    "ExpParameter", "FlattenParameter", "HDF5DataParameter", "HDF5OutputParameter",
    "HingeLossParameter", "ImageDataParameter", "InfogainLossParameter",
    "InnerProductParameter", "InputParameter", "LogParameter", "LRNParameter",
    "MemoryDataParameter", "MVNParameter", "ParameterParameter", "PoolingParameter",
    "PowerParameter", "PythonParameter", "RecurrentParameter", "ReductionParameter",
    "ReLUParameter", "ReshapeParameter", "ScaleParameter", "SigmoidParameter",
    "SliceParameter", "SoftmaxParameter", "SwishParameter", "TanHParameter",
    "TileParameter", "ThresholdParameter", "WindowDataParameter", "SPPParameter",
    "PReLUParameter",
]


@message
class AccuracyParameter:
    """Accuracy layer: top-k classification accuracy."""
    top_k: int = opt(1, "uint32", 1)
    axis: int = opt(2, "int32", 1)
    ignore_label: int = opt(3, "int32")


@message
class ArgMaxParameter:
    """ArgMax layer: indices (and optionally values) of the top-k entries."""
    out_max_val: bool = opt(1, "bool", False)
    top_k: int = opt(2, "uint32", 1)
    axis: int = opt(3, "int32")


@message
class ClipParameter:
    """Clip layer: clamp to [min, max] (both required)."""
    min: float = req(1, "float")
    max: float = req(2, "float")


@message
class ConcatParameter:
    """Concat layer: join bottoms along an axis."""
    axis: int = opt(2, "int32", 1)
    concat_dim: int = opt(1, "uint32", 1)


@message
class BatchNormParameter:
    """BatchNorm layer: running statistics and epsilon."""
    use_global_stats: bool = opt(1, "bool")
    moving_average_fraction: float = opt(2, "float", 0.999)
    eps: float = opt(3, "float", 1e-5)


@message
class BiasParameter:
    """Bias layer: add a (learned or bottom-given) bias."""
    axis: int = opt(1, "int32", 1)
    num_axes: int = opt(2, "int32", 1)
    filler: FillerParameter = opt(3, FillerParameter)


@message
class ContrastiveLossParameter:
    """ContrastiveLoss layer: margin and formulation."""
    margin: float = opt(1, "float", 1.0)
    legacy_version: bool = opt(2, "bool", False)


@message
class ConvolutionParameter:
    """Convolution / Deconvolution layer geometry, fillers and engine."""
    class Engine(ProtoEnum):
        DEFAULT = 0
        CAFFE = 1
        CUDNN = 2

    num_output: int = opt(1, "uint32")
    bias_term: bool = opt(2, "bool", True)
    pad: tuple[int, ...] = rep(3, "uint32")
    kernel_size: tuple[int, ...] = rep(4, "uint32")
    stride: tuple[int, ...] = rep(6, "uint32")
    dilation: tuple[int, ...] = rep(18, "uint32")
    pad_h: int = opt(9, "uint32", 0)
    pad_w: int = opt(10, "uint32", 0)
    kernel_h: int = opt(11, "uint32")
    kernel_w: int = opt(12, "uint32")
    stride_h: int = opt(13, "uint32")
    stride_w: int = opt(14, "uint32")
    group: int = opt(5, "uint32", 1)
    weight_filler: FillerParameter = opt(7, FillerParameter)
    bias_filler: FillerParameter = opt(8, FillerParameter)
    engine: Engine = opt(15, Engine, Engine.DEFAULT)
    axis: int = opt(16, "int32", 1)
    force_nd_im2col: bool = opt(17, "bool", False)


@message
class CropParameter:
    """Crop layer: starting axis and per-axis offsets."""
    axis: int = opt(1, "int32", 2)
    offset: tuple[int, ...] = rep(2, "uint32")


@message
class DataParameter:
    """Data layer: database source, batching and legacy transforms."""
    class DB(ProtoEnum):
        LEVELDB = 0
        LMDB = 1

    source: str = opt(1, "string")
    batch_size: int = opt(4, "uint32")
    rand_skip: int = opt(7, "uint32", 0)
    backend: DB = opt(8, DB, DB.LEVELDB)
    scale: float = opt(2, "float", 1.0)
    mean_file: str = opt(3, "string")
    crop_size: int = opt(5, "uint32", 0)
    mirror: bool = opt(6, "bool", False)
    force_encoded_color: bool = opt(9, "bool", False)
    prefetch: int = opt(10, "uint32", 4)


@message
class DropoutParameter:
    """Dropout layer: drop probability."""
    dropout_ratio: float = opt(1, "float", 0.5)


@message
class DummyDataParameter:
    """DummyData layer: filled blobs of given shapes."""
    data_filler: tuple[FillerParameter, ...] = rep(1, FillerParameter)
    shape: tuple[BlobShape, ...] = rep(6, BlobShape)
    num: tuple[int, ...] = rep(2, "uint32")
    channels: tuple[int, ...] = rep(3, "uint32")
    height: tuple[int, ...] = rep(4, "uint32")
    width: tuple[int, ...] = rep(5, "uint32")


@message
class EltwiseParameter:
    """Eltwise layer: element-wise product, sum or max."""
    class EltwiseOp(ProtoEnum):
        PROD = 0
        SUM = 1
        MAX = 2

    operation: EltwiseOp = opt(1, EltwiseOp, EltwiseOp.SUM)
    coeff: tuple[float, ...] = rep(2, "float")
    stable_prod_grad: bool = opt(3, "bool", True)


@message
class ELUParameter:
    """ELU layer: alpha."""
    alpha: float = opt(1, "float", 1.0)


@message
class EmbedParameter:
    """Embed layer: one-hot lookup table."""
    num_output: int = opt(1, "uint32")
    input_dim: int = opt(2, "uint32")
    bias_term: bool = opt(3, "bool", True)
    weight_filler: FillerParameter = opt(4, FillerParameter)
    bias_filler: FillerParameter = opt(5, FillerParameter)


@message
class ExpParameter:
    """Exp layer: base ^ (shift + scale * x)."""
    base: float = opt(1, "float", -1.0)
    scale: float = opt(2, "float", 1.0)
    shift: float = opt(3, "float", 0.0)


@message
class FlattenParameter:
    """Flatten layer: axis range to collapse."""
    axis: int = opt(1, "int32", 1)
    end_axis: int = opt(2, "int32", -1)


@message
class HDF5DataParameter:
    """HDF5Data layer: file list source and batching."""
    source: str = opt(1, "string")
    batch_size: int = opt(2, "uint32")
    shuffle: bool = opt(3, "bool", False)


@message
class HDF5OutputParameter:
    """HDF5Output layer: output file."""
    file_name: str = opt(1, "string")


@message
class HingeLossParameter:
    """HingeLoss layer: L1 or L2 norm."""
    class Norm(ProtoEnum):
        L1 = 1
        L2 = 2

    norm: Norm = opt(1, Norm, Norm.L1)


@message
class ImageDataParameter:
    """ImageData layer: image list source, resizing and legacy transforms."""
    source: str = opt(1, "string")
    batch_size: int = opt(4, "uint32", 1)
    rand_skip: int = opt(7, "uint32", 0)
    shuffle: bool = opt(8, "bool", False)
    new_height: int = opt(9, "uint32", 0)
    new_width: int = opt(10, "uint32", 0)
    is_color: bool = opt(11, "bool", True)
    scale: float = opt(2, "float", 1.0)
    mean_file: str = opt(3, "string")
    crop_size: int = opt(5, "uint32", 0)
    mirror: bool = opt(6, "bool", False)
    root_folder: str = opt(12, "string", "")


@message
class InfogainLossParameter:
    """InfogainLoss layer: infogain matrix source and axis."""
    source: str = opt(1, "string")
    axis: int = opt(2, "int32", 1)


@message
class InnerProductParameter:
    """InnerProduct (fully connected) layer."""
    num_output: int = opt(1, "uint32")
    bias_term: bool = opt(2, "bool", True)
    weight_filler: FillerParameter = opt(3, FillerParameter)
    bias_filler: FillerParameter = opt(4, FillerParameter)
    axis: int = opt(5, "int32", 1)
    transpose: bool = opt(6, "bool", False)


@message
class InputParameter:
    """Input layer: shapes of the net inputs."""
    shape: tuple[BlobShape, ...] = rep(1, BlobShape)


@message
class LogParameter:
    """Log layer: log_base(shift + scale * x)."""
    base: float = opt(1, "float", -1.0)
    scale: float = opt(2, "float", 1.0)
    shift: float = opt(3, "float", 0.0)


@message
class LRNParameter:
    """LRN layer: local response normalization."""
    class NormRegion(ProtoEnum):
        ACROSS_CHANNELS = 0
        WITHIN_CHANNEL = 1

    class Engine(ProtoEnum):
        DEFAULT = 0
        CAFFE = 1
        CUDNN = 2

    local_size: int = opt(1, "uint32", 5)
    alpha: float = opt(2, "float", 1.0)
    beta: float = opt(3, "float", 0.75)
    norm_region: NormRegion = opt(4, NormRegion, NormRegion.ACROSS_CHANNELS)
    k: float = opt(5, "float", 1.0)
    engine: Engine = opt(6, Engine, Engine.DEFAULT)


@message
class MemoryDataParameter:
    """MemoryData layer: shape of the fed batches."""
    batch_size: int = opt(1, "uint32")
    channels: int = opt(2, "uint32")
    height: int = opt(3, "uint32")
    width: int = opt(4, "uint32")


@message
class MVNParameter:
    """MVN layer: mean-variance normalization."""
    normalize_variance: bool = opt(1, "bool", True)
    across_channels: bool = opt(2, "bool", False)
    eps: float = opt(3, "float", 1e-9)


@message
class ParameterParameter:
    """Parameter layer: shape of the learned blob."""
    shape: BlobShape = opt(1, BlobShape)


@message
class PoolingParameter:
    """Pooling layer geometry, method, engine and rounding."""
    class PoolMethod(ProtoEnum):
        MAX = 0
        AVE = 1
        STOCHASTIC = 2

    class Engine(ProtoEnum):
        DEFAULT = 0
        CAFFE = 1
        CUDNN = 2

    class RoundMode(ProtoEnum):
        CEIL = 0
        FLOOR = 1

    pool: PoolMethod = opt(1, PoolMethod, PoolMethod.MAX)
    pad: int = opt(4, "uint32", 0)
    pad_h: int = opt(9, "uint32", 0)
    pad_w: int = opt(10, "uint32", 0)
    kernel_size: int = opt(2, "uint32")
    kernel_h: int = opt(5, "uint32")
    kernel_w: int = opt(6, "uint32")
    stride: int = opt(3, "uint32", 1)
    stride_h: int = opt(7, "uint32")
    stride_w: int = opt(8, "uint32")
    engine: Engine = opt(11, Engine, Engine.DEFAULT)
    global_pooling: bool = opt(12, "bool", False)
    round_mode: RoundMode = opt(13, RoundMode, RoundMode.CEIL)


@message
class PowerParameter:
    """Power layer: (shift + scale * x) ^ power."""
    power: float = opt(1, "float", 1.0)
    scale: float = opt(2, "float", 1.0)
    shift: float = opt(3, "float", 0.0)


@message
class PythonParameter:
    """Python layer: module, class and parameter string."""
    module: str = opt(1, "string")
    layer: str = opt(2, "string")
    param_str: str = opt(3, "string", "")
    share_in_parallel: bool = opt(4, "bool", False)


@message
class RecurrentParameter:
    """RNN / LSTM layers: hidden size and fillers."""
    num_output: int = opt(1, "uint32", 0)
    weight_filler: FillerParameter = opt(2, FillerParameter)
    bias_filler: FillerParameter = opt(3, FillerParameter)
    debug_info: bool = opt(4, "bool", False)
    expose_hidden: bool = opt(5, "bool", False)


@message
class ReductionParameter:
    """Reduction layer: sum / asum / sumsq / mean over trailing axes."""
    class ReductionOp(ProtoEnum):
        SUM = 1
        ASUM = 2
        SUMSQ = 3
        MEAN = 4

    operation: ReductionOp = opt(1, ReductionOp, ReductionOp.SUM)
    axis: int = opt(2, "int32", 0)
    coeff: float = opt(3, "float", 1.0)


@message
class ReLUParameter:
    """ReLU layer: leaky slope and engine."""
    class Engine(ProtoEnum):
        DEFAULT = 0
        CAFFE = 1
        CUDNN = 2

    negative_slope: float = opt(1, "float", 0.0)
    engine: Engine = opt(2, Engine, Engine.DEFAULT)


@message
class ReshapeParameter:
    """Reshape layer: new shape for an axis range."""
    shape: BlobShape = opt(1, BlobShape)
    axis: int = opt(2, "int32", 0)
    num_axes: int = opt(3, "int32", -1)


@message
class ScaleParameter:
    """Scale layer: multiply by a (learned or bottom-given) scale, optional bias."""
    axis: int = opt(1, "int32", 1)
    num_axes: int = opt(2, "int32", 1)
    filler: FillerParameter = opt(3, FillerParameter)
    bias_term: bool = opt(4, "bool", False)
    bias_filler: FillerParameter = opt(5, FillerParameter)


@message
class SigmoidParameter:
    """Sigmoid layer: engine."""
    class Engine(ProtoEnum):
        DEFAULT = 0
        CAFFE = 1
        CUDNN = 2

    engine: Engine = opt(1, Engine, Engine.DEFAULT)


@message
class SliceParameter:
    """Slice layer: split a bottom along an axis."""
    axis: int = opt(3, "int32", 1)
    slice_point: tuple[int, ...] = rep(2, "uint32")
    slice_dim: int = opt(1, "uint32", 1)


@message
class SoftmaxParameter:
    """Softmax / SoftmaxWithLoss layers: engine and axis."""
    class Engine(ProtoEnum):
        DEFAULT = 0
        CAFFE = 1
        CUDNN = 2

    engine: Engine = opt(1, Engine, Engine.DEFAULT)
    axis: int = opt(2, "int32", 1)


@message
class SwishParameter:
    """Swish layer: beta."""
    beta: float = opt(1, "float", 1.0)


@message
class TanHParameter:
    """TanH layer: engine."""
    class Engine(ProtoEnum):
        DEFAULT = 0
        CAFFE = 1
        CUDNN = 2

    engine: Engine = opt(1, Engine, Engine.DEFAULT)


@message
class TileParameter:
    """Tile layer: repeat a bottom along an axis."""
    axis: int = opt(1, "int32", 1)
    tiles: int = opt(2, "int32")


@message
class ThresholdParameter:
    """Threshold layer: step threshold."""
    threshold: float = opt(1, "float", 0.0)


@message
class WindowDataParameter:
    """WindowData layer: detection windows source and sampling."""
    source: str = opt(1, "string")
    scale: float = opt(2, "float", 1.0)
    mean_file: str = opt(3, "string")
    batch_size: int = opt(4, "uint32")
    crop_size: int = opt(5, "uint32", 0)
    mirror: bool = opt(6, "bool", False)
    fg_threshold: float = opt(7, "float", 0.5)
    bg_threshold: float = opt(8, "float", 0.5)
    fg_fraction: float = opt(9, "float", 0.25)
    context_pad: int = opt(10, "uint32", 0)
    crop_mode: str = opt(11, "string", "warp")
    cache_images: bool = opt(12, "bool", False)
    root_folder: str = opt(13, "string", "")


@message
class SPPParameter:
    """SPP layer: spatial pyramid pooling."""
    class PoolMethod(ProtoEnum):
        MAX = 0
        AVE = 1
        STOCHASTIC = 2

    class Engine(ProtoEnum):
        DEFAULT = 0
        CAFFE = 1
        CUDNN = 2

    pyramid_height: int = opt(1, "uint32")
    pool: PoolMethod = opt(2, PoolMethod, PoolMethod.MAX)
    engine: Engine = opt(6, Engine, Engine.DEFAULT)


@message
class PReLUParameter:
    """PReLU layer: slope filler and channel sharing."""
    filler: FillerParameter = opt(1, FillerParameter)
    channel_shared: bool = opt(2, "bool", False)
