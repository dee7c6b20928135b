"""IR → one ``torch.fx.GraphModule`` with a straight-line ``forward``.

The analysis already ran Caffe's Net::Init (splits, shapes, param sharing); here each
layer's registry entry builds a small ``nn.Module`` (:meth:`LayerDef.lower`) and the
net is stitched into an fx graph once, so ``forward`` has no per-call interpretation:
``print(module.code)`` shows plain Python, and ``torch.compile``/``torch.export`` work.

Conventions (documented for users and exporters):

* submodules are named after the Caffe layers; a layer's learnable blobs are its
  parameters ``"0"``, ``"1"`` … so ``state_dict`` keys are ``<layer>.<i>`` exactly as
  in a caffemodel; blobs shared by ``param { name }`` are one ``Parameter``;
* inputs are the tops of data/Input layers, passed by blob name;
* ``forward`` returns a dict of the net's outputs by blob name (Caffe's output order);
* in-place layers rebind their blob: later consumers see the overwritten value, and
  Split layers are free (the blob is reused; autograd sums the gradients).  Where no one
  else can read the old value (see :func:`_may_overwrite`) an in-place ReLU really
  writes into its bottom tensor, as Caffe does: one blob less, no copy.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import fx, nn

from netdef.analysis.net import LayerInfo, NetAnalysis
from netdef.errors import NetdefError


class LayerModule(nn.Module):
    """Base of lowered layers: holds the Caffe blobs as parameters ``"0"``, ``"1"`` …"""

    def __init__(self, blobs: Sequence[nn.Parameter] = ()) -> None:
        super().__init__()
        for i, p in enumerate(blobs):
            self.register_parameter(str(i), p)

    def blob(self, i: int) -> torch.Tensor:
        return self._parameters[str(i)]  # type: ignore[return-value]

    @property
    def num_blobs(self) -> int:
        return len(self._parameters)

    # --- inference folding (netdef.lowering.fold) ---------------------------------------
    def channel_affine(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(a, b)`` when this layer, as it runs now, is ``y = a[c]·x + b[c]`` per channel
        of axis 1 (BatchNorm with global stats, Scale, Bias); ``None`` otherwise."""
        return None

    def absorb_channel_affine(self, a: torch.Tensor, b: torch.Tensor) -> "LayerModule | None":
        """A new module computing ``a[c]·self(x) + b[c]`` (a convolution folds it into its
        weights and bias), or ``None`` when this layer cannot absorb it."""
        return None

    # --- frozen inference (runtime.CompiledRunner(freeze=True)) --------------------------
    def freeze_weights(self) -> None:
        """Prepare copies of the weights laid out for inference kernels (InnerProduct:
        oneDNN's blocked weight), used only by compiled graphs that run without grad.
        The weights are then taken as fixed: call again after changing them."""


@dataclass
class LowerContext:
    """What :meth:`LayerDef.lower` gets besides its LayerParameter."""

    info: LayerInfo
    phase: str  # "TRAIN" | "TEST"
    blobs: list[nn.Parameter]  # learnable blobs (shared ones already resolved)
    # an in-place layer may really write into its bottom: the bottom is a fresh tensor of
    # a producer whose backward does not read it (not a net input, not a Split's alias)
    overwrite_ok: bool = False

    @property
    def training(self) -> bool:
        return self.phase == "TRAIN"


class CaffeNet(fx.GraphModule):
    """The lowered net; ``forward(**inputs) -> {output blob: tensor}``."""

    netdef_inputs: tuple[str, ...]
    netdef_outputs: tuple[str, ...]
    netdef_loss_weights: dict[str, float]  # top blob -> loss weight (Caffe's objective)
    netdef_phase: str


def build(analysis: NetAnalysis, *, fill: bool = True, generator: torch.Generator | None = None,
          device: torch.device | str | None = None, overwrite: bool = True) -> CaffeNet:
    """Lower an analysed net (see module doc); parameters are filled by Caffe's fillers.

    ``overwrite``: Caffe's in-place layers may write into their bottom tensor where that
    is safe (``LowerContext.overwrite_ok``), saving a blob per layer; ``False`` keeps every
    blob version (to read the gradient of each, as the per-layer parity tests do).
    """
    from netdef.lowering.fillers import fill_blob

    root = nn.Module()
    owned: dict[tuple[str, int], nn.Parameter] = {}
    graph = fx.Graph()
    env: dict[str, fx.Node] = {}
    inputs: list[str] = []
    loss_weights: dict[str, float] = {}
    producer: dict[str, LayerInfo] = {}  # blob -> the layer whose top it is now
    for info in analysis.layers:
        defn = info.defn
        overwrite_ok = overwrite and _may_overwrite(info, producer)
        for t in info.tops:
            producer[t] = info
        if defn.is_data:
            for top in info.tops:
                env[top] = graph.placeholder(_identifier(top, env))
                inputs.append(top)
            continue
        blobs = []
        fillers = defn.fillers(info.param, len(info.params))
        for k, p in enumerate(info.params):
            if p.owner is not None:
                blobs.append(owned[p.owner])
                continue
            data = torch.empty(p.shape, dtype=torch.float32)
            if fill:
                fill_blob(data, fillers[k], generator)
            param = nn.Parameter(data, requires_grad=defn.learnable(info.param, k))
            owned[(info.name, k)] = param
            blobs.append(param)
        try:
            module = defn.lower(info.param, LowerContext(info, analysis.phase, blobs, overwrite_ok))
        except NotImplementedError as exc:
            raise NetdefError(f"layer '{info.name}': {exc}") from None
        if "." in info.name:  # torch module names cannot hold dots (state_dict keys use them)
            raise NetdefError(f"layer name '{info.name}' contains '.', which PyTorch module "
                              "names cannot hold", loc=info.param._loc,
                              hint="rename the layer (weights are matched by name)")
        root.add_module(info.name, module)
        args = tuple(env[b] for b in info.bottoms)
        if info.is_split:
            for t in info.tops:
                env[t] = args[0]
            continue
        node = graph.call_module(info.name, args)
        if len(info.tops) == 1:
            env[info.tops[0]] = node
        else:
            for j, t in enumerate(info.tops):
                env[t] = graph.call_function(_getitem, (node, j))
        for t, w in zip(info.tops, info.loss_weights):
            if w:
                loss_weights[t] = float(w)
    # the net's outputs, plus loss-weighted tops that other layers consume (the objective)
    results = {o: env[o] for o in analysis.outputs}
    results.update({t: env[t] for t in loss_weights if t not in results})
    graph.output(results)
    module = CaffeNet(root, graph, class_name=_class_name(analysis.name))
    module.netdef_inputs = tuple(inputs)
    module.netdef_outputs = tuple(analysis.outputs)
    module.netdef_loss_weights = loss_weights
    module.netdef_phase = analysis.phase
    module.train(analysis.phase == "TRAIN")
    if device is not None:
        module.to(device)
    return module


def _may_overwrite(info: LayerInfo, producer: dict[str, LayerInfo]) -> bool:
    """May ``info`` (an in-place layer) write into its bottom tensor?  Only when nothing
    else can see the old value: the bottom's producer is a real layer (not a net input,
    whose tensor belongs to the caller, nor a Split, whose tops alias one tensor) whose
    backward does not read its top (``LayerDef.top_saved_for_backward``)."""
    if not (info.in_place and info.in_place[0] and info.bottoms):
        return False
    src = producer.get(info.bottoms[0])
    return (src is not None and not src.defn.is_data and not src.is_split
            and not src.defn.top_saved_for_backward)


def _getitem(x: Any, i: int) -> Any:
    return x[i]


def _identifier(name: str, taken: dict[str, Any]) -> str:
    ident = "".join(c if c.isalnum() or c == "_" else "_" for c in name) or "blob"
    if ident[0].isdigit():
        ident = "b_" + ident
    return ident


def _class_name(name: str) -> str:
    ident = "".join(c for c in (name or "Net").title() if c.isalnum())
    return ident if ident and not ident[0].isdigit() else "Net" + ident


def run_layers(module: CaffeNet, analysis: NetAnalysis,
               inputs: dict[str, torch.Tensor]) -> dict[str, list[torch.Tensor]]:
    """Every layer's tops right after it ran (Caffe's per-layer view; in-place safe).

    For parity checks and ``--save-all``: runs the same submodules one by one.
    """
    blobs = dict(inputs)
    out: dict[str, list[torch.Tensor]] = {}
    children = dict(module.named_children())  # Split layers are not (the graph never calls them)
    for info in analysis.layers:
        if info.defn.is_data:
            out[info.name] = [blobs[t] for t in info.tops]
            continue
        args = [blobs[b] for b in info.bottoms]
        res = args[0] if info.is_split else children[info.name](*args)
        tops = [res] * len(info.tops) if info.is_split else (
            list(res) if isinstance(res, (tuple, list)) else [res])
        for t, v in zip(info.tops, tops):
            blobs[t] = v
        out[info.name] = [v.detach().clone() for v in tops]
    return out
