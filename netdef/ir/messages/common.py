"""Messages shared by nets, layers, weights and solvers (caffe.proto facts)."""
from __future__ import annotations

from netdef.ir.schema import ProtoEnum, message, opt, rep


class Phase(ProtoEnum):
    TRAIN = 0
    TEST = 1


@message
class BlobShape:
    dim: tuple[int, ...] = rep(1, "int64", packed=True)


@message
class BlobProto:
    shape: BlobShape = opt(7, BlobShape)
    data: tuple[float, ...] = rep(5, "float", packed=True)
    diff: tuple[float, ...] = rep(6, "float", packed=True)
    double_data: tuple[float, ...] = rep(8, "double", packed=True)
    double_diff: tuple[float, ...] = rep(9, "double", packed=True)
    num: int = opt(1, "int32", 0)
    channels: int = opt(2, "int32", 0)
    height: int = opt(3, "int32", 0)
    width: int = opt(4, "int32", 0)


@message
class BlobProtoVector:
    blobs: tuple[BlobProto, ...] = rep(1, BlobProto)


@message
class Datum:
    channels: int = opt(1, "int32")
    height: int = opt(2, "int32")
    width: int = opt(3, "int32")
    data: bytes = opt(4, "bytes")
    label: int = opt(5, "int32")
    float_data: tuple[float, ...] = rep(6, "float")
    encoded: bool = opt(7, "bool", False)


@message
class FillerParameter:
    class VarianceNorm(ProtoEnum):
        FAN_IN = 0
        FAN_OUT = 1
        AVERAGE = 2

    type: str = opt(1, "string", "constant")
    value: float = opt(2, "float", 0.0)
    min: float = opt(3, "float", 0.0)
    max: float = opt(4, "float", 1.0)
    mean: float = opt(5, "float", 0.0)
    std: float = opt(6, "float", 1.0)
    sparse: int = opt(7, "int32", -1)
    variance_norm: VarianceNorm = opt(8, VarianceNorm, VarianceNorm.FAN_IN)


@message
class NetState:
    phase: Phase = opt(1, Phase, Phase.TEST)
    level: int = opt(2, "int32", 0)
    stage: tuple[str, ...] = rep(3, "string")


@message
class NetStateRule:
    phase: Phase = opt(1, Phase)
    min_level: int = opt(2, "int32")
    max_level: int = opt(3, "int32")
    stage: tuple[str, ...] = rep(4, "string")
    not_stage: tuple[str, ...] = rep(5, "string")


@message
class ParamSpec:
    class DimCheckMode(ProtoEnum):
        STRICT = 0
        PERMISSIVE = 1

    name: str = opt(1, "string")
    share_mode: DimCheckMode = opt(2, DimCheckMode)
    lr_mult: float = opt(3, "float", 1.0)
    decay_mult: float = opt(4, "float", 1.0)


@message
class TransformationParameter:
    scale: float = opt(1, "float", 1.0)
    mirror: bool = opt(2, "bool", False)
    crop_size: int = opt(3, "uint32", 0)
    mean_file: str = opt(4, "string")
    mean_value: tuple[float, ...] = rep(5, "float")
    force_color: bool = opt(6, "bool", False)
    force_gray: bool = opt(7, "bool", False)


@message
class LossParameter:
    class NormalizationMode(ProtoEnum):
        FULL = 0
        VALID = 1
        BATCH_SIZE = 2
        NONE = 3

    ignore_label: int = opt(1, "int32")
    normalization: NormalizationMode = opt(3, NormalizationMode, NormalizationMode.VALID)
    normalize: bool = opt(2, "bool")
