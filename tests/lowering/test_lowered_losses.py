"""Lowered loss layers and Accuracy, built from prototxt text into whole tiny nets.

Checks the layer-level semantics on top of the ops: which ``loss_param`` normalization a
layer ends up with (explicit, legacy ``normalize``, per-type default), ``ignore_label``,
the class axis, optional second tops, H from a BlobProto file or a third bottom — each
against a numpy reference of Caffe's Forward_cpu/Backward_cpu written here (values and
input gradients).
"""
from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch

from netdef.analysis.net import analyze
from netdef.api import load_net
from netdef.errors import NetdefError
from netdef.lowering.module import build

RNG = np.random.default_rng(1234)
FLT_MIN = float(np.finfo(np.float32).tiny)
LOG_THRESHOLD = 1e-20

# (loss_param text, the mode Caffe uses) for layers whose default is VALID
NORMS_VALID = [
    ("", "VALID"),
    ("loss_param { normalization: FULL }", "FULL"),
    ("loss_param { normalization: VALID }", "VALID"),
    ("loss_param { normalization: BATCH_SIZE }", "BATCH_SIZE"),
    ("loss_param { normalization: NONE }", "NONE"),
    ("loss_param { normalize: true }", "VALID"),
    ("loss_param { normalize: false }", "BATCH_SIZE"),
    ("loss_param { normalize: false normalization: FULL }", "FULL"),  # explicit wins
]
# SigmoidCrossEntropyLoss defaults to BATCH_SIZE
NORMS_SIGMOID = [("", "BATCH_SIZE")] + NORMS_VALID[1:]


# --- helpers ----------------------------------------------------------------------------

def net_text(layer: str, inputs: dict[str, tuple[int, ...]]) -> str:
    shapes = " ".join("shape { " + " ".join(f"dim: {d}" for d in s) + " }"
                      for s in inputs.values())
    tops = " ".join(f'top: "{n}"' for n in inputs)
    return (f'name: "t"\nlayer {{ name: "in" type: "Input" {tops} input_param {{ {shapes} }} }}\n'
            f"{layer}\n")


def build_net(layer: str, inputs: dict[str, tuple[int, ...]], phase: str = "TRAIN"):
    analysis = analyze(load_net(text=net_text(layer, inputs), phase=phase))
    return build(analysis), analysis


def with_ignore(param: str, ignore: int | None) -> str:
    """Add ``ignore_label`` to the loss_param text (creating loss_param if needed)."""
    if ignore is None:
        return param
    if "loss_param" in param:
        return param.replace("loss_param {", f"loss_param {{ ignore_label: {ignore}", 1)
    return f"loss_param {{ ignore_label: {ignore} }}"


def normalizer(mode: str, outer: int, inner: int, valid: int) -> float:
    n = {"FULL": outer * inner, "VALID": valid, "BATCH_SIZE": outer, "NONE": 1}[mode]
    return float(max(1, n))


def np_softmax(v: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(v - v.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def labels(shape, nc, ignore=None, every=3):
    lab = RNG.integers(0, nc, shape).astype(np.float32)
    if ignore is not None:
        lab.reshape(-1)[::every] = ignore
    return lab


def check(got: torch.Tensor, ref, tol: float = 1e-5) -> None:
    got_np = got.detach().numpy()
    ref = np.asarray(ref, np.float64)
    assert got_np.shape == ref.shape, (got_np.shape, ref.shape)
    np.testing.assert_allclose(got_np, ref, rtol=tol, atol=tol * max(1.0, np.abs(ref).max()))


def softmax_loss_ref(x: np.ndarray, lab: np.ndarray, axis: int, ignore, mode: str):
    """Caffe's SoftmaxWithLoss loop over (outer, inner) positions (float64)."""
    x = x.astype(np.float64)
    prob = np_softmax(x, axis)
    outer, nc = math.prod(x.shape[:axis]), x.shape[axis]
    inner = math.prod(x.shape[axis + 1:])
    p3 = prob.reshape(outer, nc, inner)
    l2 = lab.reshape(outer, inner)
    loss, valid = 0.0, 0
    grad = np.zeros_like(p3)
    for i in range(outer):
        for j in range(inner):
            lv = int(l2[i, j])
            if ignore is not None and lv == ignore:
                continue
            loss -= math.log(max(p3[i, lv, j], FLT_MIN))
            grad[i, :, j] = p3[i, :, j]
            grad[i, lv, j] -= 1
            valid += 1
    norm = normalizer(mode, outer, inner, valid)
    return loss / norm, (grad / norm).reshape(x.shape), prob


# --- SoftmaxWithLoss ------------------------------------------------------------------------

@pytest.mark.parametrize("param,mode", NORMS_VALID)
@pytest.mark.parametrize("ignore", [None, 2])
def test_softmax_with_loss(param, mode, ignore):
    x = (RNG.standard_normal((2, 4, 3, 2)) * 2).astype(np.float32)
    lab = labels((2, 1, 3, 2), 4, ignore)
    layer = ('layer { name: "loss" type: "SoftmaxWithLoss" bottom: "x" bottom: "label" '
             f'top: "loss" {with_ignore(param, ignore)} }}')
    net, analysis = build_net(layer, {"x": x.shape, "label": lab.shape})
    assert net.netdef_loss_weights == {"loss": 1.0}
    xt = torch.from_numpy(x).requires_grad_()
    out = net(x=xt, label=torch.from_numpy(lab))
    ref, gref, _ = softmax_loss_ref(x, lab, 1, ignore, mode)
    assert out["loss"].shape == ()  # Caffe's top shape ()
    check(out["loss"], ref)
    out["loss"].backward()
    check(xt.grad, gref)


@pytest.mark.parametrize("axis", [2, -1])
def test_softmax_with_loss_axis_and_prob_top(axis):
    x = (RNG.standard_normal((3, 2, 5)) * 2).astype(np.float32)
    lab = labels((3, 2), 5, ignore=4, every=4)
    layer = ('layer { name: "loss" type: "SoftmaxWithLoss" bottom: "x" bottom: "label" '
             f'top: "loss" top: "prob" softmax_param {{ axis: {axis} }} '
             'loss_param { ignore_label: 4 } }')
    net, _ = build_net(layer, {"x": x.shape, "label": lab.shape})
    assert net.netdef_loss_weights == {"loss": 1.0}  # the prob top has weight 0
    xt = torch.from_numpy(x).requires_grad_()
    out = net(x=xt, label=torch.from_numpy(lab))
    ref, gref, prob = softmax_loss_ref(x, lab, 2, 4, "VALID")
    check(out["loss"], ref)
    check(out["prob"], prob)
    assert not out["prob"].requires_grad  # Caffe does not backpropagate the prob top
    out["loss"].backward()
    check(xt.grad, gref)


def test_softmax_loss_weight_and_automatic_top():
    x = RNG.standard_normal((4, 3)).astype(np.float32)
    lab = labels((4,), 3)
    layer = ('layer { name: "loss" type: "SoftmaxWithLoss" bottom: "x" bottom: "label" '
             'top: "l" loss_weight: 0.25 }')
    net, _ = build_net(layer, {"x": x.shape, "label": lab.shape})
    assert net.netdef_loss_weights == {"l": 0.25}
    out = net(x=torch.from_numpy(x), label=torch.from_numpy(lab))
    check(out["l"], softmax_loss_ref(x, lab, 1, None, "VALID")[0])  # unweighted


# --- SigmoidCrossEntropyLoss ----------------------------------------------------------

@pytest.mark.parametrize("param,mode", NORMS_SIGMOID)
@pytest.mark.parametrize("ignore", [None, -1])
def test_sigmoid_cross_entropy(param, mode, ignore):
    x = (RNG.standard_normal((3, 2, 4)) * 3).astype(np.float32)
    t = RNG.random((3, 8)).astype(np.float32)  # same count, other shape: Caffe allows it
    if ignore is not None:
        t.reshape(-1)[::5] = ignore
    layer = ('layer { name: "loss" type: "SigmoidCrossEntropyLoss" bottom: "x" '
             f'bottom: "t" top: "loss" {with_ignore(param, ignore)} }}')
    net, _ = build_net(layer, {"x": x.shape, "t": t.shape})
    xd, td = x.reshape(-1).astype(np.float64), t.reshape(-1).astype(np.float64)
    loss, valid = 0.0, 0
    grad = np.zeros_like(xd)
    for i in range(xd.size):
        if ignore is not None and int(td[i]) == ignore:
            continue
        loss += max(xd[i], 0) - xd[i] * td[i] + math.log1p(math.exp(-abs(xd[i])))
        grad[i] = 1 / (1 + math.exp(-xd[i])) - td[i]
        valid += 1
    norm = normalizer(mode, 3, 8, valid)
    xt = torch.from_numpy(x).requires_grad_()
    out = net(x=xt, t=torch.from_numpy(t))
    check(out["loss"], loss / norm)
    out["loss"].backward()
    check(xt.grad, (grad / norm).reshape(x.shape))


# --- InfogainLoss ------------------------------------------------------------------------

def infogain_ref(x, lab, h, ignore, mode):
    x = x.astype(np.float64)
    prob = np_softmax(x, 1)
    n, nc = x.shape[:2]
    inner = math.prod(x.shape[2:])
    p3, l2 = prob.reshape(n, nc, inner), lab.reshape(n, inner)
    loss, valid = 0.0, 0
    grad = np.zeros_like(p3)
    for i in range(n):
        for j in range(inner):
            lv = int(l2[i, j])
            if ignore is not None and lv == ignore:
                continue
            for k in range(nc):
                loss -= h[lv, k] * math.log(max(p3[i, k, j], LOG_THRESHOLD))
            grad[i, :, j] = p3[i, :, j] * h[lv].sum() - h[lv]
            valid += 1
    norm = normalizer(mode, n, inner, valid)
    return loss / norm, (grad / norm).reshape(x.shape), prob


@pytest.mark.parametrize("param,mode", NORMS_VALID)
@pytest.mark.parametrize("ignore", [None, 1])
def test_infogain_from_source(tmp_path, param, mode, ignore):
    from netdef.io.blobs import write_blobproto

    x = (RNG.standard_normal((3, 4, 2)) * 2).astype(np.float32)
    lab = labels((3, 2), 4, ignore)
    h = RNG.random((4, 4)).astype(np.float32)
    src = tmp_path / "H.binaryproto"
    write_blobproto(src, h.reshape(1, 1, 4, 4))  # as Caffe's examples store H
    layer = ('layer { name: "loss" type: "InfogainLoss" bottom: "x" bottom: "label" '
             f'top: "loss" infogain_loss_param {{ source: "{src}" }} '
             f'{with_ignore(param, ignore)} }}')
    net, _ = build_net(layer, {"x": x.shape, "label": lab.shape})
    xt = torch.from_numpy(x).requires_grad_()
    out = net(x=xt, label=torch.from_numpy(lab))
    ref, gref, _ = infogain_ref(x, lab, h.astype(np.float64), ignore, mode)
    check(out["loss"], ref)
    out["loss"].backward()
    check(xt.grad, gref)
    assert "loss.infogain" not in net.state_dict()  # H is no learnable blob


def test_infogain_third_bottom_and_prob_top():
    x = (RNG.standard_normal((4, 3)) * 2).astype(np.float32)
    lab = labels((4,), 3)
    h = (RNG.random((3, 3)) + np.eye(3)).astype(np.float32)
    layer = ('layer { name: "loss" type: "InfogainLoss" bottom: "x" bottom: "label" '
             'bottom: "H" top: "loss" top: "prob" }')
    net, _ = build_net(layer, {"x": x.shape, "label": lab.shape, "H": h.shape})
    xt = torch.from_numpy(x).requires_grad_()
    out = net(x=xt, label=torch.from_numpy(lab), H=torch.from_numpy(h))
    ref, gref, prob = infogain_ref(x, lab, h.astype(np.float64), None, "VALID")
    check(out["loss"], ref)
    check(out["prob"], prob)
    out["loss"].backward()
    check(xt.grad, gref)
    # the identity H gives SoftmaxWithLoss's value
    eye = torch.eye(3)
    out = net(x=torch.from_numpy(x), label=torch.from_numpy(lab), H=eye)
    check(out["loss"], softmax_loss_ref(x, lab, 1, None, "VALID")[0])


def test_infogain_needs_a_source():
    layer = ('layer { name: "loss" type: "InfogainLoss" bottom: "x" bottom: "label" '
             'top: "loss" }')
    with pytest.raises(NetdefError) as err:
        build_net(layer, {"x": (2, 3), "label": (2,)})
    assert "source" in str(err.value) and err.value.hint


def test_infogain_source_of_the_wrong_size(tmp_path):
    from netdef.io.blobs import write_blobproto

    src = tmp_path / "H.binaryproto"
    write_blobproto(src, np.eye(4, dtype=np.float32).reshape(1, 1, 4, 4))
    layer = ('layer { name: "loss" type: "InfogainLoss" bottom: "x" bottom: "label" '
             f'top: "loss" infogain_loss_param {{ source: "{src}" }} }}')
    with pytest.raises(NetdefError) as err:
        build_net(layer, {"x": (2, 3), "label": (2,)})
    assert "3×3" in err.value.message


def test_infogain_missing_file(tmp_path):
    layer = ('layer { name: "loss" type: "InfogainLoss" bottom: "x" bottom: "label" '
             f'top: "loss" infogain_loss_param {{ source: "{tmp_path / "nope.binaryproto"}" }} }}')
    with pytest.raises(NetdefError):
        build_net(layer, {"x": (2, 3), "label": (2,)})


# --- EuclideanLoss, HingeLoss, MultinomialLogisticLoss, ContrastiveLoss ------------------

def test_euclidean_loss_both_gradients():
    a = RNG.standard_normal((4, 3, 2)).astype(np.float32)
    b = RNG.standard_normal((4, 6)).astype(np.float32)  # same count per item
    layer = ('layer { name: "loss" type: "EuclideanLoss" bottom: "a" bottom: "b" top: "loss" '
             'loss_param { normalization: FULL } }')  # EuclideanLoss ignores normalization
    net, _ = build_net(layer, {"a": a.shape, "b": b.shape})
    at, bt = torch.from_numpy(a).requires_grad_(), torch.from_numpy(b).requires_grad_()
    out = net(a=at, b=bt)
    d = a.astype(np.float64) - b.reshape(a.shape)
    check(out["loss"], (d ** 2).sum() / 4 / 2)
    out["loss"].backward()
    check(at.grad, d / 4)
    check(bt.grad, (-d / 4).reshape(b.shape))


@pytest.mark.parametrize("norm", ["", "L1", "L2"])
def test_hinge_loss(norm):
    x = (RNG.standard_normal((5, 4)) * 1.5).astype(np.float32)
    lab = np.array([0, 3, 1, 1, 2], np.float32)
    param = f"hinge_loss_param {{ norm: {norm} }}" if norm else ""
    layer = ('layer { name: "loss" type: "HingeLoss" bottom: "x" bottom: "label" '
             f'top: "loss" {param} }}')
    net, _ = build_net(layer, {"x": x.shape, "label": lab.shape})
    xd = x.astype(np.float64)
    loss, grad = 0.0, np.zeros_like(xd)
    for i in range(5):
        for j in range(4):
            t = 1.0 if j == int(lab[i]) else -1.0
            m = max(0.0, 1 - t * xd[i, j])
            if norm == "L2":
                loss += m * m
                grad[i, j] = -2 * t * m / 5
            else:
                loss += m
                grad[i, j] = -t * (m > 0) / 5
    xt = torch.from_numpy(x).requires_grad_()
    out = net(x=xt, label=torch.from_numpy(lab))
    check(out["loss"], loss / 5)
    out["loss"].backward()
    check(xt.grad, grad)


def test_multinomial_logistic_loss():
    p = np_softmax(RNG.standard_normal((4, 5)), 1).astype(np.float32)
    p[2, 3] = 0.0  # clamped to kLOG_THRESHOLD in value and in Caffe's gradient
    lab = np.array([0, 4, 3, 1], np.float32).reshape(4, 1, 1, 1)
    layer = ('layer { name: "loss" type: "MultinomialLogisticLoss" bottom: "p" '
             'bottom: "label" top: "loss" }')
    net, _ = build_net(layer, {"p": p.shape, "label": lab.shape})
    pt = torch.from_numpy(p).requires_grad_()
    out = net(p=pt, label=torch.from_numpy(lab))
    li = lab.reshape(-1).astype(int)
    sel = np.maximum(p[np.arange(4), li].astype(np.float64), LOG_THRESHOLD)
    check(out["loss"], -np.log(sel).sum() / 4)
    out["loss"].backward()
    g = np.zeros((4, 5))
    g[np.arange(4), li] = -1.0 / (4 * sel)
    check(pt.grad, g)


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("margin", [None, 1.7])
def test_contrastive_loss(legacy, margin):
    n, c = 6, 3
    a = (RNG.standard_normal((n, c, 1, 1)) * 0.5).astype(np.float32)
    b = (RNG.standard_normal((n, c, 1, 1)) * 0.5).astype(np.float32)
    sim = np.array([1, 0, 1, 0, 0, 0], np.float32).reshape(n, 1, 1, 1)
    b[4] = a[4] + 3.0  # far apart and dissimilar: no loss, no gradient
    params = []
    if margin is not None:
        params.append(f"margin: {margin}")
    if legacy:
        params.append("legacy_version: true")
    param = f"contrastive_loss_param {{ {' '.join(params)} }}" if params else ""
    layer = ('layer { name: "loss" type: "ContrastiveLoss" bottom: "a" bottom: "b" '
             f'bottom: "sim" top: "loss" {param} }}')
    net, _ = build_net(layer, {"a": a.shape, "b": b.shape, "sim": sim.shape})
    m = 1.0 if margin is None else float(np.float32(margin))
    d = (a - b).reshape(n, c).astype(np.float64)
    loss, ga = 0.0, np.zeros_like(d)
    for i in range(n):
        dsq = (d[i] ** 2).sum()
        if sim[i, 0, 0, 0]:
            loss += dsq
            ga[i] = d[i] / n
        elif legacy:
            loss += max(m - dsq, 0.0)
            ga[i] = -d[i] / n if m - dsq > 0 else 0.0
        else:
            dist = math.sqrt(dsq)
            loss += max(m - dist, 0.0) ** 2
            ga[i] = -(m - dist) / (dist + 1e-4) * d[i] / n if m - dist > 0 else 0.0
    at, bt = torch.from_numpy(a).requires_grad_(), torch.from_numpy(b).requires_grad_()
    out = net(a=at, b=bt, sim=torch.from_numpy(sim))
    check(out["loss"], loss / n / 2)
    out["loss"].backward()
    check(at.grad, ga.reshape(a.shape))
    check(bt.grad, -ga.reshape(b.shape))


# --- Accuracy ------------------------------------------------------------------------------

def accuracy_ref(x, lab, top_k, axis, ignore):
    x = x.astype(np.float64)
    outer, nc = math.prod(x.shape[:axis]), x.shape[axis]
    inner = math.prod(x.shape[axis + 1:])
    x3, l2 = x.reshape(outer, nc, inner), lab.reshape(outer, inner)
    correct, count = 0, 0
    seen, hit = np.zeros(nc), np.zeros(nc)
    for i in range(outer):
        for j in range(inner):
            lv = int(l2[i, j])
            if ignore is not None and lv == ignore:
                continue
            seen[lv] += 1
            better = sum(1 for k in range(nc) if x3[i, k, j] >= x3[i, lv, j]) - 1
            if better < top_k:
                correct += 1
                hit[lv] += 1
            count += 1
    acc = correct / count if count else 0.0
    return acc, np.where(seen > 0, hit / np.maximum(seen, 1), 0.0)


@pytest.mark.parametrize("top_k", [1, 5])
@pytest.mark.parametrize("ignore", [None, 3])
def test_accuracy(top_k, ignore):
    x = RNG.standard_normal((8, 10)).astype(np.float32)
    x[0, :] = 0.5  # a tie: counts against the true class
    lab = labels((8,), 10, ignore, every=2)
    param = f"top_k: {top_k}" + (f" ignore_label: {ignore}" if ignore is not None else "")
    layer = ('layer { name: "acc" type: "Accuracy" bottom: "x" bottom: "label" '
             f'top: "acc" top: "per_class" accuracy_param {{ {param} }} }}')
    net, _ = build_net(layer, {"x": x.shape, "label": lab.shape}, phase="TEST")
    assert net.netdef_loss_weights == {}
    xt = torch.from_numpy(x).requires_grad_()
    out = net(x=xt, label=torch.from_numpy(lab))
    acc, per_class = accuracy_ref(x, lab, top_k, 1, ignore)
    assert out["acc"].shape == () and out["per_class"].shape == (10,)
    check(out["acc"], acc)
    check(out["per_class"], per_class)
    assert not out["acc"].requires_grad  # no gradient


def test_accuracy_axis_spatial_single_top():
    x = RNG.standard_normal((2, 3, 4, 5)).astype(np.float32)
    lab = labels((2, 3, 5), 4)
    layer = ('layer { name: "acc" type: "Accuracy" bottom: "x" bottom: "label" top: "acc" '
             'accuracy_param { axis: 2 top_k: 2 } }')
    net, _ = build_net(layer, {"x": x.shape, "label": lab.shape})
    out = net(x=torch.from_numpy(x), label=torch.from_numpy(lab))
    check(out["acc"], accuracy_ref(x, lab, 2, 2, None)[0])


def test_accuracy_reference_is_not_trivial():
    """The references above can tell a right answer from a wrong one."""
    x = np.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1]], np.float32)
    lab = np.array([1, 2], np.float32)
    assert accuracy_ref(x, lab, 1, 1, None)[0] == 0.5
    assert accuracy_ref(x, lab, 2, 1, None)[0] == 0.5  # 0.1 == 0.1 tie counts against
    assert accuracy_ref(x, lab, 3, 1, None)[0] == 1.0


# --- the lowered modules themselves ------------------------------------------------------

def test_lowered_net_pickles_and_prints():
    x = RNG.standard_normal((4, 3)).astype(np.float32)
    lab = labels((4,), 3)
    layer = ('layer { name: "loss" type: "SoftmaxWithLoss" bottom: "x" bottom: "label" '
             'top: "loss" loss_param { ignore_label: 0 normalization: NONE } }')
    net, _ = build_net(layer, {"x": x.shape, "label": lab.shape})
    assert "ignore_label=0" in repr(net.loss) and "normalization=NONE" in repr(net.loss)
    again = pickle.loads(pickle.dumps(net))
    a = net(x=torch.from_numpy(x), label=torch.from_numpy(lab))["loss"]
    b = again(x=torch.from_numpy(x), label=torch.from_numpy(lab))["loss"]
    assert torch.equal(a, b)


def test_loss_layers_have_no_blobs():
    layer = ('layer { name: "loss" type: "HingeLoss" bottom: "x" bottom: "label" '
             'top: "loss" }')
    net, _ = build_net(layer, {"x": (2, 3), "label": (2,)})
    assert dict(net.named_parameters()) == {}
