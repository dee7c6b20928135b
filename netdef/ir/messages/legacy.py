"""Legacy layer messages: V1 (``layers { }`` with an enum type) and V0 (``layer { }`` inside V1)."""
from __future__ import annotations

from netdef.ir.messages.common import (BlobProto, FillerParameter, LossParameter,
                                       NetStateRule, TransformationParameter)
from netdef.ir.messages import layer_params as P
from netdef.ir.schema import ProtoEnum, message, opt, rep

__all__ = ["V0LayerParameter", "V1LayerParameter"]


@message
class V0LayerParameter:
    """The oldest layer format: every layer type's settings flattened into one message."""
    class PoolMethod(ProtoEnum):
        MAX = 0
        AVE = 1
        STOCHASTIC = 2

    name: str = opt(1, "string")
    type: str = opt(2, "string")
    num_output: int = opt(3, "uint32")
    biasterm: bool = opt(4, "bool", True)
    weight_filler: FillerParameter = opt(5, FillerParameter)
    bias_filler: FillerParameter = opt(6, FillerParameter)
    pad: int = opt(7, "uint32", 0)
    kernelsize: int = opt(8, "uint32")
    group: int = opt(9, "uint32", 1)
    stride: int = opt(10, "uint32", 1)
    pool: PoolMethod = opt(11, PoolMethod, PoolMethod.MAX)
    dropout_ratio: float = opt(12, "float", 0.5)
    local_size: int = opt(13, "uint32", 5)
    alpha: float = opt(14, "float", 1.0)
    beta: float = opt(15, "float", 0.75)
    k: float = opt(22, "float", 1.0)
    source: str = opt(16, "string")
    scale: float = opt(17, "float", 1.0)
    meanfile: str = opt(18, "string")
    batchsize: int = opt(19, "uint32")
    cropsize: int = opt(20, "uint32", 0)
    mirror: bool = opt(21, "bool", False)
    blobs: tuple[BlobProto, ...] = rep(50, BlobProto)
    blobs_lr: tuple[float, ...] = rep(51, "float")
    weight_decay: tuple[float, ...] = rep(52, "float")
    rand_skip: int = opt(53, "uint32", 0)
    det_fg_threshold: float = opt(54, "float", 0.5)
    det_bg_threshold: float = opt(55, "float", 0.5)
    det_fg_fraction: float = opt(56, "float", 0.25)
    det_context_pad: int = opt(58, "uint32", 0)
    det_crop_mode: str = opt(59, "string", "warp")
    new_num: int = opt(60, "int32", 0)
    new_channels: int = opt(61, "int32", 0)
    new_height: int = opt(62, "int32", 0)
    new_width: int = opt(63, "int32", 0)
    shuffle_images: bool = opt(64, "bool", False)
    concat_dim: int = opt(65, "uint32", 1)
    hdf5_output_param: P.HDF5OutputParameter = opt(1001, P.HDF5OutputParameter)


@message
class V1LayerParameter:
    """A layer of a legacy ``layers { }`` net: type is an enum, params per type."""
    class LayerType(ProtoEnum):
        NONE = 0
        ABSVAL = 35
        ACCURACY = 1
        ARGMAX = 30
        BNLL = 2
        CONCAT = 3
        CONTRASTIVE_LOSS = 37
        CONVOLUTION = 4
        DATA = 5
        DECONVOLUTION = 39
        DROPOUT = 6
        DUMMY_DATA = 32
        EUCLIDEAN_LOSS = 7
        ELTWISE = 25
        EXP = 38
        FLATTEN = 8
        HDF5_DATA = 9
        HDF5_OUTPUT = 10
        HINGE_LOSS = 28
        IM2COL = 11
        IMAGE_DATA = 12
        INFOGAIN_LOSS = 13
        INNER_PRODUCT = 14
        LRN = 15
        MEMORY_DATA = 29
        MULTINOMIAL_LOGISTIC_LOSS = 16
        MVN = 34
        POOLING = 17
        POWER = 26
        RELU = 18
        SIGMOID = 19
        SIGMOID_CROSS_ENTROPY_LOSS = 27
        SILENCE = 36
        SOFTMAX = 20
        SOFTMAX_LOSS = 21
        SPLIT = 22
        SLICE = 33
        TANH = 23
        WINDOW_DATA = 24
        THRESHOLD = 31

    class DimCheckMode(ProtoEnum):
        STRICT = 0
        PERMISSIVE = 1

    bottom: tuple[str, ...] = rep(2, "string")
    top: tuple[str, ...] = rep(3, "string")
    name: str = opt(4, "string")
    include: tuple[NetStateRule, ...] = rep(32, NetStateRule)
    exclude: tuple[NetStateRule, ...] = rep(33, NetStateRule)
    type: LayerType = opt(5, LayerType)
    blobs: tuple[BlobProto, ...] = rep(6, BlobProto)
    param: tuple[str, ...] = rep(1001, "string")
    blob_share_mode: tuple[DimCheckMode, ...] = rep(1002, DimCheckMode)
    blobs_lr: tuple[float, ...] = rep(7, "float")
    weight_decay: tuple[float, ...] = rep(8, "float")
    loss_weight: tuple[float, ...] = rep(35, "float")
    accuracy_param: P.AccuracyParameter = opt(27, P.AccuracyParameter)
    argmax_param: P.ArgMaxParameter = opt(23, P.ArgMaxParameter)
    concat_param: P.ConcatParameter = opt(9, P.ConcatParameter)
    contrastive_loss_param: P.ContrastiveLossParameter = opt(40, P.ContrastiveLossParameter)
    convolution_param: P.ConvolutionParameter = opt(10, P.ConvolutionParameter)
    data_param: P.DataParameter = opt(11, P.DataParameter)
    dropout_param: P.DropoutParameter = opt(12, P.DropoutParameter)
    dummy_data_param: P.DummyDataParameter = opt(26, P.DummyDataParameter)
    eltwise_param: P.EltwiseParameter = opt(24, P.EltwiseParameter)
    exp_param: P.ExpParameter = opt(41, P.ExpParameter)
    hdf5_data_param: P.HDF5DataParameter = opt(13, P.HDF5DataParameter)
    hdf5_output_param: P.HDF5OutputParameter = opt(14, P.HDF5OutputParameter)
    hinge_loss_param: P.HingeLossParameter = opt(29, P.HingeLossParameter)
    image_data_param: P.ImageDataParameter = opt(15, P.ImageDataParameter)
    infogain_loss_param: P.InfogainLossParameter = opt(16, P.InfogainLossParameter)
    inner_product_param: P.InnerProductParameter = opt(17, P.InnerProductParameter)
    lrn_param: P.LRNParameter = opt(18, P.LRNParameter)
    memory_data_param: P.MemoryDataParameter = opt(22, P.MemoryDataParameter)
    mvn_param: P.MVNParameter = opt(34, P.MVNParameter)
    pooling_param: P.PoolingParameter = opt(19, P.PoolingParameter)
    power_param: P.PowerParameter = opt(21, P.PowerParameter)
    relu_param: P.ReLUParameter = opt(30, P.ReLUParameter)
    sigmoid_param: P.SigmoidParameter = opt(38, P.SigmoidParameter)
    softmax_param: P.SoftmaxParameter = opt(39, P.SoftmaxParameter)
    slice_param: P.SliceParameter = opt(31, P.SliceParameter)
    tanh_param: P.TanHParameter = opt(37, P.TanHParameter)
    threshold_param: P.ThresholdParameter = opt(25, P.ThresholdParameter)
    window_data_param: P.WindowDataParameter = opt(20, P.WindowDataParameter)
    transform_param: TransformationParameter = opt(36, TransformationParameter)
    loss_param: LossParameter = opt(42, LossParameter)
    layer: V0LayerParameter = opt(1, V0LayerParameter)
