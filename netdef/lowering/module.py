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
  Split layers are free (the blob is reused; autograd sums the gradients).
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


@dataclass
class LowerContext:
    """What :meth:`LayerDef.lower` gets besides its LayerParameter."""

    info: LayerInfo
    phase: str  # "TRAIN" | "TEST"
    blobs: list[nn.Parameter]  # learnable blobs (shared ones already resolved)

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
          device: torch.device | str | None = None) -> CaffeNet:
    """Lower an analysed net (see module doc); parameters are filled by Caffe's fillers."""
    from netdef.lowering.fillers import fill_blob

    root = nn.Module()
    owned: dict[tuple[str, int], nn.Parameter] = {}
    graph = fx.Graph()
    env: dict[str, fx.Node] = {}
    inputs: list[str] = []
    loss_weights: dict[str, float] = {}
    for info in analysis.layers:
        defn = info.defn
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
            module = defn.lower(info.param, LowerContext(info, analysis.phase, blobs))
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
