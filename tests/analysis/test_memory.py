"""Predicted peak memory (netdef.analysis.memory): exact bytes for a net computed by hand,
solver history/workspace, the report's lines and JSON, and no torch import.

The measured side (profiler vs prediction) is tests/lowering/test_lowered_memory.py."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CAFFE, NETS, REPO
from netdef.analysis import analyze
from netdef.analysis.memory import predict
from netdef.api import load_net
from netdef.cli.main import main
from netdef.errors import NetdefError
from netdef.layers.registry import ShapeContext

# data 2×3×8×8 → conv 16@3×3 (oneDNN's channel block: no padding) → in-place ReLU → MAX pool 2/2 → fc 5 → SoftmaxWithLoss
TINY = """name: "tiny"
layer { name: "data" type: "Input" top: "data" top: "label"
  input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } shape { dim: 2 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 16 kernel_size: 3 } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "fc"
  inner_product_param { num_output: 5 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }
"""


def _analyse(tmp_path: Path, text: str, phase: str = "TRAIN"):  # noqa: ANN202
    path = tmp_path / "net.net"
    path.write_text(text)
    loaded = load_net(path, phase=phase)
    return analyze(loaded, ShapeContext(phase=phase, base_dir=loaded.base_dir))


def test_tiny_net_by_hand(tmp_path: Path) -> None:
    """Every byte of both peaks, worked out from the rules in the layer docstrings."""
    f = 4  # float32
    data, label = 2 * 3 * 8 * 8 * f, 2 * f
    conv_top, pool_top, fc_top, loss_top = 2 * 16 * 6 * 6 * f, 2 * 16 * 3 * 3 * f, 2 * 5 * f, f
    conv_w, conv_b, fc_w, fc_b = 16 * 3 * 3 * 3 * f, 16 * f, 5 * 144 * f, 5 * f
    params = conv_w + conv_b + fc_w + fc_b
    indices = 2 * 16 * 3 * 3 * 8  # max pooling's int64 indices
    log_softmax, label_saved = fc_top, 2 * 12  # + int64 labels and float valid mask
    label_checks = 2 * 16
    conv_fwd_ws = max(data + conv_w, conv_top)  # oneDNN: reordered input+weight or output
    conv_bwd_ws = conv_top + data + conv_w  # reordered top diff, input, weight diff

    p = predict(_analyse(tmp_path, TINY))
    assert p.param_bytes == p.learnable_bytes == params == 4692
    assert p.input_bytes == data + label
    assert p.backward_from == "loss"

    # inference: inputs stay; conv peaks with its workspace (ReLU then overwrites conv's top)
    inf = p.inference
    assert (inf.where, inf.params, inf.grads, inf.history) == ("forward conv", params, 0, 0)
    assert inf.activations == data + label + conv_top
    assert inf.workspace == conv_fwd_ws
    assert inf.total == params + data + label + conv_top + conv_fwd_ws == 15452

    # training forward keeps: data (conv's input), the conv/ReLU buffer (ReLU's output,
    # pool's input), pool's indices, pool's top (fc's input), the log-softmax and labels;
    # fc's top dies after the loss read it
    saved_end = data + conv_top + indices + pool_top + log_softmax + label_saved
    assert p.saved_bytes == saved_end
    # backward, from the loss: diffs flow fc → pool → relu → conv; at conv's backward the
    # conv top diff, the inputs, the loss top and every param grad are alive, plus its
    # workspace — the peak (the update adds nothing for SGD)
    tr = p.training
    assert (tr.where, tr.params, tr.history) == ("backward conv", params, params)
    assert tr.grads == params
    assert tr.activations == data + label + loss_top + conv_top
    assert tr.workspace == conv_bwd_ws
    assert tr.total == 3 * params + data + label + loss_top + conv_top + conv_bwd_ws == 28104
    # the forward peak (conv with its workspace) and the loss layer stay below it
    fwd_conv = data + label + conv_top + conv_fwd_ws
    fwd_loss = (data + label + conv_top + indices + pool_top + fc_top + loss_top + log_softmax
                + label_saved + fc_top + label_checks)
    assert max(fwd_conv, fwd_loss) + params < tr.total - 2 * params


def test_history_and_update_workspace_follow_the_solver(tmp_path: Path) -> None:
    a = _analyse(tmp_path, TINY)
    sgd, adam = predict(a, "SGD"), predict(a, "Adam")
    assert sgd.training.history == sgd.learnable_bytes
    assert adam.training.history == 2 * adam.learnable_bytes
    assert adam.inference == sgd.inference
    assert adam.training.total >= sgd.training.total + adam.learnable_bytes


def test_bad_solver_and_device(tmp_path: Path) -> None:
    a = _analyse(tmp_path, TINY)
    with pytest.raises(NetdefError, match="unknown solver type 'sgd'"):
        predict(a, "sgd")
    with pytest.raises(NetdefError, match="cpu or cuda"):
        predict(a, "SGD", "mps")


def test_dropout_test_phase_is_free_and_train_keeps_a_mask(tmp_path: Path) -> None:
    net = TINY.replace('layer { name: "fc"', 'layer { name: "drop" type: "Dropout" '
                       'bottom: "pool" top: "pool" }\nlayer { name: "fc"')
    base = predict(_analyse(tmp_path, TINY))
    train = predict(_analyse(tmp_path, net))
    pool_top = 2 * 16 * 3 * 3 * 4
    # TRAIN: a new top and the CPU's float32 noise are kept; the pool top itself is not
    # saved any more (fc reads dropout's top instead)
    assert train.saved_bytes == base.saved_bytes + pool_top
    cuda = predict(_analyse(tmp_path, net), device="cuda")
    assert cuda.saved_bytes == base.saved_bytes + pool_top // 4  # bool mask
    test = predict(_analyse(tmp_path, net, "TEST"))
    assert test.inference.total == predict(_analyse(tmp_path, TINY, "TEST")).inference.total


def test_net_without_loss_backprops_from_outputs() -> None:
    loaded = load_net(NETS / "alexnet.net", phase="TRAIN")
    p = predict(analyze(loaded, ShapeContext(phase="TRAIN", base_dir=loaded.base_dir)))
    assert p.backward_from == "outputs"
    assert p.param_bytes == 4 * 60_965_224
    assert p.training.grads <= p.learnable_bytes
    assert p.training.total > 3 * p.param_bytes > p.inference.total


def test_report_lines_and_json(capsys: pytest.CaptureFixture) -> None:
    assert main(["report", str(NETS / "alexnet.net")]) == 0
    out = capsys.readouterr().out
    assert "memory Caffe 'Memory required for data' 83,232,440 B" in out
    train = [l for l in out.splitlines() if l.startswith("training (SGD, predicted peak, cpu")]
    infer = [l for l in out.splitlines() if l.startswith("inference (predicted peak, cpu")]
    assert len(train) == len(infer) == 1
    for line in train + infer:
        assert "params 232.56 MiB" in line and "activations" in line and ", at " in line
    assert "history 232.56 MiB" in train[0] and "grads" in train[0]
    assert main(["report", str(NETS / "alexnet.net"), "--json", "--solver-type", "Adam"]) == 0
    d = json.loads(capsys.readouterr().out)
    mem = d["memory"]
    assert mem["solver_type"] == "Adam" and mem["device"] == "cpu"
    assert mem["training"]["history"] == 2 * mem["learnable_bytes"]
    for part in ("training", "inference"):
        m = mem[part]
        assert m["peak_bytes"] == sum(m[k] for k in ("params", "grads", "history",
                                                      "activations", "workspace"))
    assert d["totals"]["training_bytes"] == mem["training"]["peak_bytes"]
    assert d["totals"]["inference_bytes"] == mem["inference"]["peak_bytes"]


def test_report_bad_solver_type_exits_2(capsys: pytest.CaptureFixture) -> None:
    assert main(["report", str(NETS / "alexnet.net"), "--solver-type", "Foo"]) == 2
    err = capsys.readouterr().err
    assert "unknown solver type 'Foo'" in err and "Traceback" not in err


def test_report_does_not_import_torch() -> None:
    code = ("import sys; from netdef.cli.main import main; "
            f"rc = main(['report', {str(NETS / 'vgg16.net')!r}, '--json']); "
            "assert rc == 0; assert 'torch' not in sys.modules, 'torch imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                       timeout=120)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("rel,shapes", [
    ("models/bvlc_googlenet/train_val.prototxt", {"data": (8, 3, 224, 224), "label": (8,)}),
    ("examples/siamese/mnist_siamese_train_test.prototxt", {"pair_data": (8, 2, 28, 28)}),
    ("examples/mnist/mnist_autoencoder.prototxt", {"data": (8, 1, 28, 28)}),
    ("examples/cifar10/cifar10_full_sigmoid_train_test_bn.prototxt", {"data": (8, 3, 32, 32)}),
])
def test_bvlc_nets_predict(rel: str, shapes: dict) -> None:
    """Every layer type these use declares its memory; training costs more than inference."""
    path = CAFFE / rel
    if not path.exists():
        pytest.skip("../shared is not beside the repo")
    loaded = load_net(path, phase="TRAIN")
    a = analyze(loaded, ShapeContext(phase="TRAIN", input_shapes=shapes,
                                     base_dir=loaded.base_dir))
    p = predict(a)
    assert p.training.total > p.inference.total > p.param_bytes
    assert p.saved_bytes > 0 and p.backward_from == "loss"
