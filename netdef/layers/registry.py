"""The layer registry: everything netdef knows about one Caffe layer type, in one place.

Like ONNX's op schemas (attributes + shape inference side by side) or Caffe's
one-file-per-layer + ``LayerRegistry``: a :class:`LayerDef` subclass declares a type's
parameter message, bottom/top arity, learnable blob shapes, shape rule, op counts,
and how it lowers to PyTorch.  Every stage (analysis, report, draw, lowering,
training) asks the registry; none switches on type names.

Lowering methods import torch lazily so that ``compile``/``report``/``draw`` never do.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Sequence

from netdef.errors import GraphError, ShapeError

if TYPE_CHECKING:  # pragma: no cover
    from netdef.ir.messages import LayerParameter

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Counts:
    """Forward-pass work of one layer for the whole batch.

    ``macs``: multiply-accumulates (conv, fc, …).  ``flops``: floating-point
    operations, counting a MAC as 2 plus the element-wise adds/compares/exps of
    pooling, LRN, softmax, activations (see :mod:`netdef.analysis.counts`).
    """

    macs: int = 0
    flops: int = 0

    def __add__(self, other: "Counts") -> "Counts":
        return Counts(self.macs + other.macs, self.flops + other.flops)


@dataclass(frozen=True)
class MemoryContext:
    """What a layer's memory facts depend on besides its shapes.

    ``grad``: autograd records this layer (training, and a bottom or a learnable blob
    needs a gradient), so its saved tensors exist; ops that take another path without
    autograd (LRN, pooling) say so through it.  ``phase`` is the lowered module's mode
    (Dropout, BatchNorm).  ``device`` is ``"cpu"`` or ``"cuda"``: the backends differ in
    masks (CPU dropout keeps a float32 noise tensor, CUDA a bool mask) and in convolution
    workspace (oneDNN's reorders on the CPU; cuDNN's workspace is not modelled).
    ``overwrite``: the lowering may write into the bottom tensor (``LowerContext.
    overwrite_ok``: an in-place layer whose bottom is a fresh top that its producer's
    backward does not read).
    """

    phase: str = "TRAIN"
    grad: bool = True
    device: str = "cpu"
    overwrite: bool = False


@dataclass(frozen=True)
class Saved:
    """One tensor a layer's autograd graph keeps from forward to backward.

    ``kind`` is ``"bottom"`` or ``"top"`` (an existing blob, ``index`` says which: no new
    memory, but it stays alive until this layer's backward ran) or ``"new"`` (a tensor
    made inside the layer, ``nbytes`` long: LRN's scale, pooling indices, dropout masks).
    """

    kind: str
    index: int = 0
    nbytes: int = 0


@dataclass(frozen=True)
class LayerMemory:
    """How one lowered layer uses memory (consumed by :mod:`netdef.analysis.memory`).

    ``alias[j]``: bottom index whose storage top ``j`` reuses (a view, an in-place op or
    the identity), ``None`` (or missing) for a new tensor.  ``same``: the tops *are* the
    bottom tensor (no op at all: Split, Dropout at TEST), so no autograd node either.
    ``param_tops``: the tops are the layer's own learnable blobs (Parameter).
    ``diff_alias``: backward hands the top diff down as the bottom diffs without a copy
    (views, un-scaled sums, concat's narrow).  ``differentiable``: False when the
    lowering detaches (Accuracy, ArgMax, Threshold): no node, no diffs;
    ``no_grad_bottoms``: bottoms the lowering reads without a gradient path (labels,
    indices, Crop's reference); ``no_grad_tops``: tops made without one (pooling's mask,
    SoftmaxWithLoss' probabilities).  Without autograd the ``"new"`` saved tensors are
    still made and die inside the layer, so the model counts them as workspace then.
    ``workspace``/``backward_workspace``: bytes of temporaries alive inside the forward
    (beyond the tops and the new saved tensors) and the backward (beyond the bottom
    diffs and param grads).
    """

    saved: tuple[Saved, ...] = ()
    alias: tuple[int | None, ...] = ()
    same: bool = False
    param_tops: bool = False
    diff_alias: bool = False
    differentiable: bool = True
    no_grad_bottoms: tuple[int, ...] = ()
    no_grad_tops: tuple[int, ...] = ()
    workspace: int = 0
    backward_workspace: int = 0


def nbytes(shape: Sequence[int], itemsize: int = 4) -> int:
    """Bytes of a dense tensor (float32 unless ``itemsize`` says otherwise)."""
    n = itemsize
    for d in shape:
        n *= int(d)
    return n


def saves_bottoms(n: int) -> tuple[Saved, ...]:
    """Every bottom kept for backward (most ops read their inputs there)."""
    return tuple(Saved("bottom", i) for i in range(n))


@dataclass
class ShapeContext:
    """What a shape rule may need besides its bottoms."""

    phase: str = "TRAIN"  # "TRAIN" | "TEST"
    input_shapes: Mapping[str, Shape] = field(default_factory=dict)  # --input-shape, by top blob
    batch: int | None = None  # --batch: overrides the batch of inputs and data layers
    base_dir: Path | None = None  # where relative data sources are looked up (besides cwd)


class LayerDef:
    """Base of every layer type; subclasses override what their type needs.

    Class attributes declare the static facts; methods take the layer's
    :class:`~netdef.ir.messages.LayerParameter` and its bottom shapes.
    """

    type: ClassVar[str]  # Caffe's type string, e.g. "Convolution"
    param_field: ClassVar[str | None] = None  # LayerParameter field, e.g. "convolution_param"
    v1_type: ClassVar[str | None] = None  # V1LayerParameter.LayerType name, e.g. "CONVOLUTION"
    bottoms: ClassVar[tuple[int, int | None]] = (0, None)  # (min, max) like Caffe's checks
    tops: ClassVar[tuple[int, int | None]] = (0, None)
    is_loss: ClassVar[bool] = False  # top 0 gets loss_weight 1 unless the file says otherwise
    is_data: ClassVar[bool] = False  # produces data from outside the net (no bottoms)
    in_place: ClassVar[bool] = False  # computes element-wise; commonly run with top == bottom
    # the lowered backward reads this layer's own top, so a following in-place layer must
    # not overwrite it; False lets e.g. ReLU run in place on a conv/fc/pool/LRN output
    top_saved_for_backward: ClassVar[bool] = True
    category: ClassVar[str] = "other"  # for colours/legends: data, conv, pool, norm, act,
    #                                     fc, loss, structure, recurrent, other

    # --- graph facts -------------------------------------------------------------
    def allow_force_backward(self, layer: "LayerParameter", bottom_index: int) -> bool:
        """Caffe's ``AllowForceBackward``: false e.g. for loss layers' label bottom."""
        return True

    def loss_weights(self, layer: "LayerParameter", n_tops: int) -> list[float]:
        """Per-top loss weights: the file's ``loss_weight`` or the type's default."""
        if layer.loss_weight:
            return [float(w) for w in layer.loss_weight] + [0.0] * (n_tops - len(layer.loss_weight))
        return [1.0 if (self.is_loss and i == 0) else 0.0 for i in range(n_tops)]

    # --- shapes --------------------------------------------------------------------
    def params(self, layer: "LayerParameter", bottoms: Sequence[Shape]) -> list[Shape]:
        """Shapes of the learnable blobs, in Caffe's order (weights, bias, …)."""
        return []

    def shapes(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               ctx: ShapeContext) -> list[Shape]:
        """Top shapes from bottom shapes (Caffe's ``Reshape``)."""
        raise NotImplementedError(f"{self.type}: no shape rule")

    # --- counts --------------------------------------------------------------------
    def counts(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape]) -> Counts:
        """Forward MACs/FLOPs (default: none)."""
        return Counts()

    def setup_log(self, layer: "LayerParameter", tops: Sequence[Shape],
                  ctx: ShapeContext) -> list[str]:
        """Lines Caffe logs inside this layer's SetUp (data layers), before "Setting up"."""
        return []

    # --- memory ------------------------------------------------------------------------
    def memory(self, layer: "LayerParameter", bottoms: Sequence[Shape],
               tops: Sequence[Shape], ctx: MemoryContext) -> LayerMemory:
        """What the lowered layer allocates, keeps for backward and aliases.

        Default: new tops, and autograd keeps every bottom (what an op whose derivative
        reads its inputs saves: conv, fc, pooling, most element-wise ops); the backward
        allocates one diff per bottom that needs a gradient.  Types whose lowering does
        otherwise override this (checked against torch's autograd and the profiler in
        ``tests/lowering/test_lowered_memory.py``).
        """
        return LayerMemory(saved=saves_bottoms(len(bottoms)))

    # --- weights -----------------------------------------------------------------------
    def fillers(self, layer: "LayerParameter", n_blobs: int) -> list[Any]:
        """The FillerParameter initialising each learnable blob (Caffe's per-type choice).

        Default: Caffe's default filler (constant 0) for every blob.
        """
        from netdef.ir.messages import FillerParameter

        return [FillerParameter()] * n_blobs

    def param_spec(self, layer: "LayerParameter", index: int) -> Any:
        """The ParamSpec Caffe uses for learnable blob ``index`` (the file's, or default)."""
        from netdef.ir.messages import ParamSpec

        return layer.param[index] if index < len(layer.param) else ParamSpec()

    def has_learnable_blobs(self, layer: "LayerParameter") -> bool:
        """Whether this layer owns weights (duplicate names are fatal only for those)."""
        return False

    def learnable(self, layer: "LayerParameter", index: int) -> bool:
        """False for blobs the solver must not touch (BatchNorm's statistics)."""
        return True

    # --- drawing / reporting -------------------------------------------------------
    def summary(self, layer: "LayerParameter") -> str:
        """A short description of key params (``11×11/4, 96``) for tables and graphs."""
        return ""

    # --- lowering (torch imported inside) ------------------------------------------
    def lower(self, layer: "LayerParameter", ctx: Any) -> Any:
        """A ``torch.nn.Module`` computing this layer (see :mod:`netdef.lowering`)."""
        raise NotImplementedError(f"{self.type}: no PyTorch lowering")


_REGISTRY: dict[str, LayerDef] = {}
_BY_V1: dict[str, LayerDef] = {}


def register(cls: type[LayerDef]) -> type[LayerDef]:
    """Class decorator: make a layer type known to every stage."""
    inst = cls()
    if cls.type in _REGISTRY:
        raise RuntimeError(f"layer type {cls.type} registered twice")
    _REGISTRY[cls.type] = inst
    if cls.v1_type:
        _BY_V1[cls.v1_type] = inst
    return cls


def _load_all() -> None:
    # importing the family modules runs their @register decorators
    from netdef.layers import families  # noqa: F401


def get(type_name: str) -> LayerDef:
    """The definition of a layer type, or a GraphError naming the type."""
    _load_all()
    try:
        return _REGISTRY[type_name]
    except KeyError:
        raise GraphError(f"unknown layer type '{type_name}'") from None


def is_known(type_name: str) -> bool:
    _load_all()
    return type_name in _REGISTRY


def all_types() -> Mapping[str, LayerDef]:
    _load_all()
    return dict(_REGISTRY)


def by_v1_name(v1_name: str) -> LayerDef | None:
    """The type a V1 ``LayerType`` enum name upgrades to (None: no modern type)."""
    _load_all()
    return _BY_V1.get(v1_name)


def check_arity(defn: LayerDef, layer: "LayerParameter") -> None:
    """Caffe's ExactNum/Min/MaxBottomBlobs checks, as a ShapeError."""
    n_tops = len(layer.top)
    if defn.is_loss:  # Caffe's LossLayer::AutoTopBlobs adds the missing loss top
        n_tops = max(n_tops, defn.tops[0])
    for what, (lo, hi), n in (("bottom", defn.bottoms, len(layer.bottom)),
                              ("top", defn.tops, n_tops)):
        if n < lo or (hi is not None and n > hi):
            want = f"exactly {lo}" if lo == hi else (
                f"at least {lo}" if hi is None else f"{lo} to {hi}")
            raise ShapeError(f"layer '{layer.name}' ({defn.type}) takes {want} {what} "
                             f"blob(s), got {n}")
