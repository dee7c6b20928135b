"""Peak memory of one training iteration and of one inference forward, predicted.

What is predicted is what the lowered net (:func:`netdef.lowering.module.build`, one fx
graph called as a whole) allocates in PyTorch, float32, counted the way ``netdef time
--memory`` measures it: the peak of the bytes alive, params and inputs included.

The model is a simulation over ``analysis.layers`` in order, on *buffers* (storages)
rather than blobs, because views, in-place ops and Split tops share storage:

* **forward**: each layer allocates its new tops (aliases — views, in-place ops — reuse
  the bottom's buffer; Split-like layers hand on the very bottom tensor), the new
  tensors autograd saves and, for an instant, its workspace; a tensor dies after its
  last consumer ran (the fx graph drops it) unless the caller holds it (inputs, the
  outputs ``forward`` returns) or a node saved it.  Inference is the same without
  saved tensors (``torch.inference_mode``: freed tensors return at once; what a layer
  would save is still made, and dies inside it); a node none of whose tops can reach an
  output any more is dropped with its saved tensors when the forward ends;
* **backward** (training), in reverse layer order from ``Σ loss_weight·loss`` (or, for a
  net without a loss, from every output with a ones gradient): a layer whose tops got a
  diff runs — it allocates its workspace, one diff per bottom that needs a gradient
  (a diff reaching a tensor that already has one is added into it in place and dies;
  when both are shared — pass-through diffs — the sum is a new tensor) and its param
  grads (they stay), then frees what it saved and its top diffs.  The ones gradients of
  a loss-less net belong to the caller until the backward ends.  Nodes that no diff
  reaches keep their saved tensors to the end of the iteration;
* **solver update**: params without a grad get a zero one (Caffe's diff always exists),
  and the solver's temporaries (``UPDATE_WORKSPACE`` param-sized lists) exist briefly.

What each layer type allocates, saves and aliases is declared on its registry entry
(:meth:`netdef.layers.registry.LayerDef.memory`); nothing here looks at type names.
Params (every learnable or not blob, shared ones once) are alive throughout; training
counts the solver history (one blob per learnable param for SGD/Nesterov/AdaGrad/RMSProp,
two for AdaDelta/Adam) as alive throughout too — the steady state from iteration 2 on;
the first iteration allocates it in the update and peaks no higher.  Workspace terms
model PyTorch's CPU kernels (oneDNN convolution reorders) unless ``device="cuda"``,
where cuDNN's workspace is not modelled.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from netdef.analysis.counts import HISTORY_BLOBS
from netdef.analysis.net import LayerInfo, NetAnalysis
from netdef.errors import NetdefError
from netdef.layers.registry import LayerMemory, MemoryContext, nbytes

# param-sized temporaries of one update (netdef.training.solvers): SGD works in place;
# Nesterov makes the update list; AdaGrad sqrt(h); RMSProp g² and sqrt(h); AdaDelta g²,
# the ratio and one of its operands (or a second g²); Adam g², sqrt(v) and the update.
UPDATE_WORKSPACE = {"SGD": 0, "Nesterov": 1, "AdaGrad": 1, "RMSProp": 2, "AdaDelta": 3,
                    "Adam": 3}
DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class Peak:
    """Bytes alive at the worst moment of a pass, by kind.

    ``activations``: inputs, blobs, what autograd saved and diffs alive then;
    ``workspace``: temporaries of the op running then (and diffs being summed).
    """

    total: int
    params: int
    grads: int
    history: int
    activations: int
    workspace: int
    where: str  # "forward conv1", "backward conv1", "solver update", "start"

    def as_dict(self) -> dict[str, Any]:
        return {"peak_bytes": self.total, "params": self.params, "grads": self.grads,
                "history": self.history, "activations": self.activations,
                "workspace": self.workspace, "at": self.where}


@dataclass(frozen=True)
class MemoryPrediction:
    """Predicted peaks of one training iteration and one inference forward."""

    training: Peak
    inference: Peak
    solver_type: str
    device: str
    param_bytes: int  # every blob, shared ones once
    learnable_bytes: int  # those the solver updates (grads and history)
    input_bytes: int  # data/Input tops (the caller's tensors)
    saved_bytes: int  # distinct tensors autograd keeps when the training forward ends
    backward_from: str  # "loss" | "outputs" | "nothing"

    def as_dict(self) -> dict[str, Any]:
        return {"device": self.device, "solver_type": self.solver_type,
                "dtype": "float32", "param_bytes": self.param_bytes,
                "learnable_bytes": self.learnable_bytes, "input_bytes": self.input_bytes,
                "saved_for_backward_bytes": self.saved_bytes,
                "backward_from": self.backward_from,
                "training": self.training.as_dict(), "inference": self.inference.as_dict()}


def predict(analysis: NetAnalysis, solver_type: str = "SGD",
            device: str = "cpu") -> MemoryPrediction:
    """Simulate one training iteration and one inference forward (see the module doc)."""
    if solver_type not in HISTORY_BLOBS:
        raise NetdefError(f"unknown solver type '{solver_type}'",
                          hint="valid types: " + ", ".join(HISTORY_BLOBS))
    if device not in DEVICES:
        raise NetdefError(f"memory is predicted for cpu or cuda, not '{device}'",
                          hint="pass --device cpu or cuda")
    params, learnable = _param_bytes(analysis)
    history = HISTORY_BLOBS[solver_type] * learnable
    train = _Simulation(analysis, training=True, device=device)
    train.forward()
    saved = train.saved_bytes()
    train.backward()
    train.update(learnable * UPDATE_WORKSPACE[solver_type])
    infer = _Simulation(analysis, training=False, device=device)
    infer.forward()
    return MemoryPrediction(train.result(params, history), infer.result(params, 0), solver_type,
                            device, params, learnable, infer.input_bytes, saved,
                            train.backward_from)


def _param_bytes(analysis: NetAnalysis) -> tuple[int, int]:
    """(all blobs, learnable blobs) in bytes, shared blobs counted at their owner."""
    total = learnable = 0
    for info in analysis.layers:
        for k, p in enumerate(info.params):
            if p.owner is None:
                total += nbytes(p.shape)
                if info.defn.learnable(info.param, k):
                    learnable += nbytes(p.shape)
    return total, learnable


@dataclass(eq=False)
class _Tensor:
    """One tensor of the simulated run: its storage, and whether it needs a gradient."""

    buf: int | None  # None: a param (no activation memory)
    grad: bool
    param: tuple[str, int] | None = None  # for param tops: the blob whose grad it feeds
    node: int | None = None  # the layer whose autograd node made it


@dataclass
class _Node:
    """A layer that autograd recorded."""

    saved: list[int | None] = field(default_factory=list)


class _Simulation:
    """Buffers with reference counts; peak = fixed + live + the instant's transients."""

    def __init__(self, analysis: NetAnalysis, *, training: bool, device: str) -> None:
        self.analysis = analysis
        self.training = training
        self.device = device
        self.size: dict[int, int] = {}
        self.kind: dict[int, str] = {}
        self.refs: dict[int, int] = {}
        self.live = {"act": 0, "grad": 0}
        self.next_id = 0
        self.best: tuple[int, int, int, int, str] = (0, 0, 0, 0, "start")  # total, act, grad, ws
        self.input_bytes = 0
        self.facts: dict[int, LayerMemory] = {}
        self.nodes: dict[int, _Node] = {}
        self.bottoms: dict[int, list[_Tensor]] = {}
        self.tops: dict[int, list[_Tensor]] = {}
        self.pending: dict[int, int] = {}  # id(tensor) -> buffer of its diff
        self.param_grads: dict[tuple[str, int], int] = {}
        self.backward_from = "nothing"
        self.uses: dict[int, int] = {}  # id(tensor) -> forward reads still to come
        self.outputs: dict[str, _Tensor] = {}  # what forward returns, by blob

    # --- buffers -------------------------------------------------------------------
    def new(self, size: int, kind: str = "act") -> int:
        b = self.next_id
        self.next_id += 1
        self.size[b], self.kind[b], self.refs[b] = size, kind, 1
        self.live[kind] += size
        return b

    def hold(self, b: int | None) -> None:
        if b is not None:
            self.refs[b] += 1

    def drop(self, b: int | None) -> None:
        if b is None:
            return
        self.refs[b] -= 1
        if self.refs[b] == 0:
            self.live[self.kind[b]] -= self.size.pop(b)
            del self.refs[b], self.kind[b]

    def check(self, where: str, workspace: int = 0) -> None:
        total = self.live["act"] + self.live["grad"] + workspace
        if total > self.best[0]:
            self.best = (total, self.live["act"], self.live["grad"], workspace, where)

    def result(self, params: int, history: int) -> Peak:
        total, act, grad, ws, where = self.best
        return Peak(params + history + total, params, grad, history, act, ws, where)

    def saved_bytes(self) -> int:
        bufs = {b for n in self.nodes.values() for b in n.saved if b is not None}
        return sum(self.size[b] for b in bufs)

    # --- forward -------------------------------------------------------------------
    def forward(self) -> None:
        layers = self.analysis.layers
        reads, final = _reads_and_finals(layers)
        held = set(self.analysis.outputs) | {
            t for info in layers for t, w in zip(info.tops, info.loss_weights) if w}
        current: dict[str, _Tensor] = {}
        producer: dict[str, LayerInfo] = {}  # blob -> the layer whose top it is now
        phase = self.analysis.phase
        for i, info in enumerate(layers):
            ins = [current[b] for b in info.bottoms]
            self.bottoms[i] = ins
            overwrite = _may_overwrite(info, producer)
            for t in info.tops:
                producer[t] = info
            outs = self._run_forward(i, info, ins, phase, overwrite)
            self.tops[i] = outs
            for k, (name, t) in enumerate(zip(info.tops, outs)):
                current[name] = t
                self.uses[id(t)] = self.uses.get(id(t), 0) + reads.get((i, k), 0)
                if info.defn.is_data or (name in held and final[name] == (i, k)):
                    self.hold(t.buf)  # the caller's reference, never dropped
            for t in ins:  # the fx graph drops a value after its last use
                self.uses[id(t)] -= 1
                if self.uses[id(t)] == 0:
                    self.drop(t.buf)
            for t in set(outs) - set(ins):  # a new value nobody reads or returns
                if self.uses[id(t)] == 0:
                    self.uses[id(t)] = -1
                    self.drop(t.buf)
        self.outputs = {name: current[name] for name in held}
        self._drop_dead_nodes()
        self.check("end of forward")

    def _drop_dead_nodes(self) -> None:
        """Nodes that no returned tensor's graph reaches are freed by autograd (with
        their saved tensors) once their tops die: here, when the forward ends."""
        alive: set[int] = set()
        stack = [t.node for t in self.outputs.values() if t.node is not None]
        while stack:
            i = stack.pop()
            if i in alive:
                continue
            alive.add(i)
            stack.extend(t.node for t in self.bottoms[i] if t.node is not None)
        for i in [i for i in self.nodes if i not in alive]:
            for b in self.nodes.pop(i).saved:
                self.drop(b)

    def _run_forward(self, i: int, info: LayerInfo, ins: list[_Tensor], phase: str,
                     overwrite: bool) -> list[_Tensor]:
        defn = info.defn
        if defn.is_data:
            outs = []
            for shape in info.top_shapes:
                size = nbytes(shape)
                self.input_bytes += size
                outs.append(_Tensor(self.new(size), False))
            self.check(f"forward {info.name}")
            return outs
        learnable = any(defn.learnable(info.param, k) for k in range(len(info.params)))
        ctx = MemoryContext(phase, self.training, self.device, overwrite)
        facts = defn.memory(info.param, info.bottom_shapes, info.top_shapes, ctx)
        needs = self.training and facts.differentiable and (learnable or any(
            t.grad for j, t in enumerate(ins) if j not in facts.no_grad_bottoms))
        if needs != ctx.grad:
            ctx = MemoryContext(phase, needs, self.device, overwrite)
            facts = defn.memory(info.param, info.bottom_shapes, info.top_shapes, ctx)
        self.facts[i] = facts
        if facts.same:
            return [ins[0]] * len(info.tops)
        outs = []
        for k, shape in enumerate(info.top_shapes):
            if facts.param_tops:
                p = info.params[k] if k < len(info.params) else None
                key = (p.owner or (info.name, k)) if p is not None else None
                outs.append(_Tensor(None, needs, key))
                continue
            j = facts.alias[k] if k < len(facts.alias) else None
            if j is not None:
                self.hold(ins[j].buf)
                outs.append(_Tensor(ins[j].buf, needs))
            else:
                outs.append(_Tensor(self.new(nbytes(shape)), needs))
        for k in facts.no_grad_tops:
            if k < len(outs):
                outs[k].grad = False
        workspace = facts.workspace
        if not needs:  # what the layer would save is made anyway, and dies inside it
            workspace += sum(s.nbytes for s in facts.saved if s.kind == "new")
        if needs:
            node = _Node()
            for s in facts.saved:
                if s.kind == "new":
                    node.saved.append(self.new(s.nbytes))
                    continue
                t = (ins if s.kind == "bottom" else outs)[s.index]
                self.hold(t.buf)
                node.saved.append(t.buf)
            self.nodes[i] = node
        self.check(f"forward {info.name}", workspace)
        for t in outs:
            t.node = i if needs else None
        return outs

    # --- backward ------------------------------------------------------------------
    def backward(self) -> None:
        layers = self.analysis.layers
        final = {name: t for i, info in enumerate(layers)
                 for name, t in zip(info.tops, self.tops[i])}
        roots = [(name, info.top_shapes[k]) for info in layers
                 for k, (name, w) in enumerate(zip(info.tops, info.loss_weights))
                 if w and final[name].grad]
        self.backward_from = "loss" if roots else "outputs"
        if not roots:
            shapes = {t: s for info in layers for t, s in zip(info.tops, info.top_shapes)}
            roots = [(o, shapes[o]) for o in self.analysis.outputs if final[o].grad]
            if not roots:
                self.backward_from = "nothing"
        held: list[int] = []  # the ones gradients: the caller's list holds them
        for name, shape in roots:  # loss weights (0-D) or ones for the outputs
            b = self.new(nbytes(shape))
            if self.backward_from == "outputs":
                self.hold(b)
                held.append(b)
            self._add_diff(final[name], b, nbytes(shape), [])
        self.check("backward start")
        for i in range(len(layers) - 1, -1, -1):
            node = self.nodes.get(i)
            if node is None:
                continue
            diffs = [self.pending.pop(id(t)) for t in self.tops[i] if id(t) in self.pending]
            if not diffs:
                continue  # no diff reaches it: it never runs, its saved tensors stay
            info, facts = layers[i], self.facts[i]
            transient: list[int] = []
            for j, (t, shape) in enumerate(zip(self.bottoms[i], info.bottom_shapes)):
                if not t.grad or j in facts.no_grad_bottoms:
                    continue
                if facts.diff_alias:
                    self.hold(diffs[0])
                    self._add_diff(t, diffs[0], nbytes(shape), transient)
                else:
                    self._add_diff(t, self.new(nbytes(shape)), nbytes(shape), transient)
            for k, p in enumerate(info.params):
                if info.defn.learnable(info.param, k):
                    self._param_grad(p.owner or (info.name, k), nbytes(p.shape), transient)
            self.check(f"backward {info.name}", facts.backward_workspace)
            for b in transient + node.saved + diffs:
                self.drop(b)
            del self.nodes[i]
        for b in list(self.pending.values()) + held:
            self.drop(b)
        self.pending.clear()

    def _add_diff(self, t: _Tensor, b: int, size: int, transient: list[int]) -> None:
        """A diff for ``t``: kept until its producer's backward, or added into the one
        it already has (then it dies right after this layer's backward)."""
        if t.param is not None:  # a Parameter top: the diff is the blob's grad
            self.drop(b)
            self._param_grad(t.param, size, transient)
        elif id(t) in self.pending:
            old = self.pending[id(t)]
            if self.refs[old] == 1:  # added into the old diff in place
                transient.append(b)
            elif self.refs[b] == 1:  # ... or into the new one
                self.pending[id(t)] = b
                transient.append(old)
            else:  # both shared: old + new is a new tensor
                self.pending[id(t)] = self.new(size)
                transient.extend((old, b))
        else:
            self.pending[id(t)] = b

    def _param_grad(self, key: tuple[str, int], size: int, transient: list[int]) -> None:
        """The first grad of a blob stays (AccumulateGrad steals it); later ones are
        added in place and die."""
        if key in self.param_grads:
            transient.append(self.new(size, "grad"))
        else:
            self.param_grads[key] = self.new(size, "grad")

    # --- update --------------------------------------------------------------------
    def update(self, workspace: int) -> None:
        for info in self.analysis.layers:
            for k, p in enumerate(info.params):
                if p.owner is None and info.defn.learnable(info.param, k):
                    key = (info.name, k)
                    if key not in self.param_grads:  # CaffeSolver._grads: zeros
                        self.param_grads[key] = self.new(nbytes(p.shape), "grad")
        self.check("solver update", workspace)


def _may_overwrite(info: LayerInfo, producer: dict[str, LayerInfo]) -> bool:
    """:func:`netdef.lowering.module.build`'s rule (``_may_overwrite``, restated here
    without torch): an in-place layer may write into its bottom tensor when that is the
    fresh top of a real layer (not a net input, not a Split's alias) whose backward does
    not read it."""
    if not (info.in_place and info.in_place[0] and info.bottoms):
        return False
    src = producer.get(info.bottoms[0])
    return (src is not None and not src.defn.is_data and not src.is_split
            and not src.defn.top_saved_for_backward)


def _reads_and_finals(layers: tuple[LayerInfo, ...]
                      ) -> tuple[dict[tuple[int, int], int], dict[str, tuple[int, int]]]:
    """How often each blob version (layer, top) is read, and each name's last version."""
    where: dict[str, tuple[int, int]] = {}
    reads: dict[tuple[int, int], int] = {}
    for i, info in enumerate(layers):
        for b in info.bottoms:
            reads[where[b]] = reads.get(where[b], 0) + 1
        for k, t in enumerate(info.tops):
            where[t] = (i, k)
    return reads, where
