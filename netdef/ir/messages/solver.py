"""SolverParameter (a solver prototxt) and SolverState (a .solverstate snapshot)."""
from __future__ import annotations

from netdef.ir.messages.common import BlobProto, NetState
from netdef.ir.messages.net import NetParameter
from netdef.ir.schema import ProtoEnum, message, opt, rep

__all__ = ["SolverParameter", "SolverState"]


@message
class SolverParameter:
    """Training settings: which net(s), learning-rate schedule, snapshots, solver type."""
    class SnapshotFormat(ProtoEnum):
        HDF5 = 0
        BINARYPROTO = 1

    class SolverMode(ProtoEnum):
        CPU = 0
        GPU = 1

    class SolverType(ProtoEnum):
        SGD = 0
        NESTEROV = 1
        ADAGRAD = 2
        RMSPROP = 3
        ADADELTA = 4
        ADAM = 5

    net: str = opt(24, "string")
    net_param: NetParameter = opt(25, NetParameter)
    train_net: str = opt(1, "string")
    test_net: tuple[str, ...] = rep(2, "string")
    train_net_param: NetParameter = opt(21, NetParameter)
    test_net_param: tuple[NetParameter, ...] = rep(22, NetParameter)
    train_state: NetState = opt(26, NetState)
    test_state: tuple[NetState, ...] = rep(27, NetState)
    test_iter: tuple[int, ...] = rep(3, "int32")
    test_interval: int = opt(4, "int32", 0)
    test_compute_loss: bool = opt(19, "bool", False)
    test_initialization: bool = opt(32, "bool", True)
    base_lr: float = opt(5, "float")
    display: int = opt(6, "int32")
    average_loss: int = opt(33, "int32", 1)
    max_iter: int = opt(7, "int32")
    iter_size: int = opt(36, "int32", 1)
    lr_policy: str = opt(8, "string")
    gamma: float = opt(9, "float")
    power: float = opt(10, "float")
    momentum: float = opt(11, "float")
    weight_decay: float = opt(12, "float")
    regularization_type: str = opt(29, "string", "L2")
    stepsize: int = opt(13, "int32")
    stepvalue: tuple[int, ...] = rep(34, "int32")
    clip_gradients: float = opt(35, "float", -1.0)
    snapshot: int = opt(14, "int32", 0)
    snapshot_prefix: str = opt(15, "string")
    snapshot_diff: bool = opt(16, "bool", False)
    snapshot_format: SnapshotFormat = opt(37, SnapshotFormat, SnapshotFormat.BINARYPROTO)
    solver_mode: SolverMode = opt(17, SolverMode, SolverMode.GPU)
    device_id: int = opt(18, "int32", 0)
    random_seed: int = opt(20, "int64", -1)
    type: str = opt(40, "string", "SGD")
    delta: float = opt(31, "float", 1e-8)
    momentum2: float = opt(39, "float", 0.999)
    rms_decay: float = opt(38, "float", 0.99)
    debug_info: bool = opt(23, "bool", False)
    snapshot_after_train: bool = opt(28, "bool", True)
    solver_type: SolverType = opt(30, SolverType, SolverType.SGD)
    layer_wise_reduce: bool = opt(41, "bool", True)
    weights: tuple[str, ...] = rep(42, "string")


@message
class SolverState:
    """What a solver snapshot stores besides the weights: iteration and history."""
    iter: int = opt(1, "int32")
    learned_net: str = opt(2, "string")
    history: tuple[BlobProto, ...] = rep(3, BlobProto)
    current_step: int = opt(4, "int32", 0)
