"""``netdef run`` and ``netdef time`` end to end (in-process ``main``; small nets).

``run`` is checked against the real-Caffe LeNet fixture (``forward/lenet``: its input fed
as .npy, its weights from ``caffemodels/lenet_v2.caffemodel``), ``time`` by parsing its
``caffe time``-format output; the per-layer backward method is checked against one
fused autograd pass."""
from __future__ import annotations

import re
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from netdef.cli.main import main

from conftest import CAFFE, FIXTURES

LENET = CAFFE / "examples" / "mnist" / "lenet.prototxt"
LENET_TRAIN = CAFFE / "examples" / "mnist" / "lenet_train_test.prototxt"
LENET_WEIGHTS = FIXTURES / "caffemodels" / "lenet_v2.caffemodel"
LENET_BLOBS = FIXTURES / "forward" / "lenet" / "blobs.npz"

TINY = """name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "fc" type: "InnerProduct" bottom: "conv" top: "fc"
  inner_product_param { num_output: 7 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""

# a TRAIN net with a Split (conv feeds two layers), an in-place ReLU, labels for a loss
# and an Accuracy, and a scaled second loss
BRANCHY = """name: "branchy"
layer { name: "data" type: "Input" top: "data" top: "label"
  input_param { shape { dim: 3 dim: 2 dim: 6 dim: 6 } shape { dim: 3 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 3 kernel_size: 3 weight_filler { type: "gaussian" std: 0.3 }
                      bias_filler { type: "gaussian" std: 0.1 } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "fa" type: "InnerProduct" bottom: "conv" top: "fa"
  inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "fb" type: "InnerProduct" bottom: "conv" top: "fb"
  inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "sum" type: "Eltwise" bottom: "fa" bottom: "fb" top: "sum" }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "sum" bottom: "label" top: "loss" }
layer { name: "acc" type: "Accuracy" bottom: "sum" bottom: "label" top: "acc" }
layer { name: "l2" type: "EuclideanLoss" bottom: "fa" bottom: "fb" top: "l2" loss_weight: 0.5 }
"""


def need_lenet() -> None:
    if not (LENET.is_file() and LENET_WEIGHTS.is_file() and LENET_BLOBS.is_file()):
        pytest.skip("the LeNet fixture (../shared) is not beside the repo")


@pytest.fixture(scope="module")
def lenet_blobs() -> dict[str, np.ndarray]:
    need_lenet()
    with np.load(LENET_BLOBS) as z:
        return {k: z[k] for k in z.files}


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _npz(path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


TOP_ROW = re.compile(r"^\s+(\d+)\s+(\d+)\s+(-?[\d.]+(?:e[-+]\d+)?)(?:\s+(.*))?$")


def _top_rows(out: str) -> list[list[tuple[int, int, float, str]]]:
    """Per item: [(rank, class, value, label)] from `run`'s top-k table."""
    items: list[list] = []
    for line in out.splitlines():
        if re.match(r"^\S+\[\d+\].*: top-\d+$", line):
            items.append([])
        elif (m := TOP_ROW.match(line)) and items:
            items[-1].append((int(m[1]), int(m[2]), float(m[3]), m[4] or ""))
    return items


# --------------------------------------------------------------------------- run

def test_run_lenet_npy_matches_caffe(tmp_path, capsys, lenet_blobs) -> None:
    x = tmp_path / "x.npy"
    np.save(x, lenet_blobs["input/data"])  # batch 2; the net says 64: re-analysed
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"digit {i}\n" for i in range(10)))
    out_npz = tmp_path / "out.npz"
    rc, out, err = _run(capsys, "run", LENET, "--weights", LENET_WEIGHTS, "--input",
                        f"data={x}", "--labels", labels, "--save", out_npz)
    assert rc == 0, err
    saved = _npz(out_npz)
    assert list(saved) == ["prob"]
    want = lenet_blobs["data/prob"]
    assert saved["prob"].dtype == np.float32 and saved["prob"].shape == want.shape
    assert np.abs(saved["prob"] - want).max() <= 3e-5 * np.abs(want).max()
    # top-5 of each item, in order, with the labels file's lines
    items = _top_rows(out)
    assert len(items) == 2 and "probability" in out
    for n, rows in enumerate(items):
        assert [r[0] for r in rows] == [1, 2, 3, 4, 5]
        assert [r[1] for r in rows] == list(np.argsort(-want[n], kind="stable")[:5])
        np.testing.assert_allclose([r[2] for r in rows], np.sort(want[n])[::-1][:5], atol=2e-6)
        assert [r[3] for r in rows] == [f"digit {r[1]}" for r in rows]
    assert not list(tmp_path.glob(".out.npz.*"))  # the atomic temp file is gone


def test_run_save_all_keys_and_values(tmp_path, capsys, lenet_blobs) -> None:
    x = tmp_path / "x.npy"
    np.save(x, lenet_blobs["input/data"])
    out_npz = tmp_path / "all.npz"
    rc, _, err = _run(capsys, "run", LENET, "--weights", LENET_WEIGHTS, "--input", x,
                      "--save", out_npz, "--save-all", "--top", "0")
    assert rc == 0, err
    saved = _npz(out_npz)
    blobs = ["data", "conv1", "pool1", "conv2", "pool2", "ip1", "ip2", "prob"]
    layers = ["data", "conv1", "pool1", "conv2", "pool2", "ip1", "relu1", "ip2", "prob"]
    assert set(saved) == set(blobs) | {f"{layer}/0" for layer in layers}
    assert all(v.dtype == np.float32 for v in saved.values())
    for layer in layers:  # every layer's top right after it ran
        want = lenet_blobs[f"top/{layer}/0"]
        assert np.abs(saved[f"{layer}/0"] - want).max() <= 3e-5 * max(np.abs(want).max(), 1)
    for blob in blobs:  # final blob values (ip1 after the in-place relu1)
        want = lenet_blobs[f"data/{blob}"]
        assert np.abs(saved[blob] - want).max() <= 3e-5 * max(np.abs(want).max(), 1)
    np.testing.assert_array_equal(saved["conv1"], saved["conv1/0"])
    assert np.all(saved["ip1"] >= 0) and saved["ip1/0"].min() < 0  # in-place: final vs per-layer


def test_run_single_item_npy_and_random_weights_warning(tmp_path, capsys, lenet_blobs) -> None:
    x = tmp_path / "one.npy"
    np.save(x, lenet_blobs["input/data"][0])  # (1, 28, 28): one item, batch axis added
    out_npz = tmp_path / "o.npz"
    rc, out, err = _run(capsys, "run", LENET, "--input", x, "--save", out_npz, "--top", "3")
    assert rc == 0, err
    assert "no --weights" in err and "random" in err
    assert _npz(out_npz)["prob"].shape == (1, 10)
    assert [len(r) for r in _top_rows(out)] == [3]


def _tiny_net(tmp_path):
    net = tmp_path / "tiny.net"
    net.write_text(TINY)
    return net


def test_run_image_preprocessing_wiring(tmp_path, capsys) -> None:
    net = _tiny_net(tmp_path)
    rgb = np.random.RandomState(0).randint(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    out_npz = tmp_path / "o.npz"
    rc, _, err = _run(capsys, "run", net, "--input", f"data={tmp_path / 'a.png'}",
                      "--mean-value", "104,117,123", "--scale", "0.5", "--save", out_npz,
                      "--save-all", "--top", "0")
    assert rc == 0, err
    data = _npz(out_npz)["data"]
    # pycaffe: float [0,1] * 255, RGB->BGR, minus the (BGR) mean, times the input scale
    want = (rgb.transpose(2, 0, 1)[::-1] / np.float32(255) * np.float32(255)
            - np.array([104, 117, 123], np.float32)[:, None, None]) * np.float32(0.5)
    assert data.shape == (1, 3, 8, 8)
    np.testing.assert_allclose(data[0], want, atol=1e-4)


def test_run_images_make_a_batch_with_resize_and_mean_file(tmp_path, capsys) -> None:
    from netdef.io.blobs import write_blobproto
    from netdef.lowering import runtime as rt

    net = _tiny_net(tmp_path)
    rs = np.random.RandomState(1)
    paths = []
    for i, size in enumerate([(8, 8), (11, 13)]):
        p = tmp_path / f"im{i}.png"
        Image.fromarray(rs.randint(0, 256, size + (3,), dtype=np.uint8)).save(p)
        paths.append(p)
    mean = rs.uniform(0, 255, (1, 3, 8, 8)).astype(np.float32)
    write_blobproto(tmp_path / "mean.binaryproto", mean)
    out_npz = tmp_path / "o.npz"
    rc, out, err = _run(capsys, "run", net, "--input", paths[0], "--input", f"data={paths[1]}",
                        "--mean-file", tmp_path / "mean.binaryproto", "--no-swap",
                        "--save", out_npz, "--save-all")
    assert rc == 0, err
    saved = _npz(out_npz)
    assert saved["data"].shape == (2, 3, 8, 8) and saved["prob"].shape == (2, 7)
    for n, p in enumerate(paths):
        want = rt.preprocess(rt.load_image(p), (3, 8, 8),
                             rt.Preprocess(swap=False, mean=mean[0]))
        np.testing.assert_allclose(saved["data"][n], want, atol=1e-4)
    assert len(_top_rows(out)) == 2 and str(paths[1]) in out


@pytest.mark.parametrize("case", ["missing_file", "wrong_shape", "unknown_blob", "not_image",
                                  "save_all_alone", "bad_mean", "missing_weights",
                                  "no_input"])
def test_run_bad_inputs_exit_2_one_line(tmp_path, capsys, case) -> None:
    net = _tiny_net(tmp_path)
    good = tmp_path / "good.npy"
    np.save(good, np.zeros((1, 3, 8, 8), np.float32))
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((2, 1, 8, 8), np.float32))
    (tmp_path / "notes.txt").write_text("hello")
    argv = {
        "missing_file": ["--input", f"data={tmp_path / 'nope.npy'}"],
        "wrong_shape": ["--input", f"data={bad}"],
        "unknown_blob": ["--input", f"pixels={good}"],
        "not_image": ["--input", f"data={tmp_path / 'notes.txt'}"],
        "save_all_alone": ["--input", f"data={good}", "--save-all"],
        "bad_mean": ["--input", f"data={good}", "--mean-value", "1,x"],
        "missing_weights": ["--input", f"data={good}", "--weights", tmp_path / "w.caffemodel"],
        "no_input": [],
    }[case]
    words = {"missing_file": "no such file", "wrong_shape": "does not fit",
             "unknown_blob": "unknown input blob 'pixels'", "not_image": "cannot read image",
             "save_all_alone": "--save-all needs --save", "bad_mean": "bad --mean-value",
             "missing_weights": "cannot read weights", "no_input": "no --input for blob"}[case]
    rc, out, err = _run(capsys, "run", net, *argv)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "error" in lines[0] and words in lines[0], err
    assert "Traceback" not in err


# --------------------------------------------------------------------------- time

LAYER_LINE = re.compile(r"^(.{10,})\t(forward|backward): (\S+) ms\.$")


def _parse_time(out: str) -> dict:
    lines = out.splitlines()
    assert "*** Benchmark begins ***" in lines and lines[-1] == "*** Benchmark ends ***"
    res: dict = {"iterations": [], "layers": {}}
    for line in lines:
        if m := re.match(r"^Testing for (\d+) iterations\.$", line):
            res["n"] = int(m[1])
        elif m := re.match(r"^Iteration: (\d+) (forward-backward|forward) time: (\S+) ms\.$",
                           line):
            res["iterations"].append(float(m[3]))
        elif m := LAYER_LINE.match(line):
            name = m[1]
            assert len(name) == 10 or not name.startswith(" "), repr(name)  # setw(10)
            res["layers"].setdefault(name.strip(), {})[m[2]] = float(m[3])
        elif m := re.match(r"^(Average Forward pass|Average Backward pass|"
                           r"Average Forward-Backward|Total Time): (\S+) ms\.$", line):
            res[m[1]] = float(m[2])
        elif m := re.match(r"^Initial loss: (\S+)$", line):
            res["loss"] = float(m[1])
    return res


def test_time_lenet_output_format(capsys) -> None:
    need_lenet()
    rc, out, err = _run(capsys, "time", LENET, "--phase", "TEST", "--batch", "4",
                        "--iterations", "2", "--device", "cpu")
    assert rc == 0, err
    res = _parse_time(out)
    names = ["data", "conv1", "pool1", "conv2", "pool2", "ip1", "relu1", "ip2", "prob"]
    assert list(res["layers"]) == names
    assert "Average time per layer: " in out.splitlines()
    assert f"{'conv1':>10}\tforward: " in out
    assert res["n"] == 2 and len(res["iterations"]) == 2
    assert all(t > 0 for t in res["iterations"])
    for name in names:
        assert set(res["layers"][name]) == {"forward", "backward"}
        assert res["layers"][name]["forward"] >= 0 and res["layers"][name]["backward"] >= 0
    for name in ("conv1", "conv2", "ip1", "ip2"):  # real work: positive, params' grads too
        assert res["layers"][name]["forward"] > 0 and res["layers"][name]["backward"] > 0
    for key in ("Average Forward pass", "Average Backward pass", "Average Forward-Backward",
                "Total Time"):
        assert res[key] > 0
    assert res["loss"] == 0  # no loss layer in the deploy net: Caffe prints 0
    assert out.splitlines()[:4] == ["Use CPU.", "Performing Forward", "Initial loss: 0",
                                    "Performing Backward"]


def test_time_train_net_with_labels_and_forward_only(tmp_path, capsys) -> None:
    net = tmp_path / "branchy.net"
    net.write_text(BRANCHY)
    rc, out, err = _run(capsys, "time", net, "--iterations", "2", "--device", "cpu")
    assert rc == 0, err
    res = _parse_time(out)
    assert {"data", "conv", "relu", "fa", "fb", "sum", "loss", "acc", "l2"} <= set(res["layers"])
    assert any(n.endswith("_split") for n in res["layers"])  # Caffe's Split layers are timed
    assert 0 < res["loss"] < float("inf")
    rc, out, err = _run(capsys, "time", net, "--iterations", "2", "--forward-only")
    assert rc == 0, err
    res = _parse_time(out)
    assert all(set(v) == {"forward"} for v in res["layers"].values())
    assert "Average Backward pass" not in res and res["Average Forward pass"] > 0
    assert "Iteration: 1 forward time: " in out


def test_time_random_labels_are_in_range(tmp_path) -> None:
    from netdef.analysis import analyze
    from netdef.api import load_net
    from netdef.cli.time_cmd import random_inputs

    net = tmp_path / "branchy.net"
    net.write_text(BRANCHY)
    a = analyze(load_net(net))
    for seed in range(5):
        feeds = random_inputs(a, torch.Generator().manual_seed(seed))
        lab = feeds["label"]
        assert lab.shape == (3,) and torch.all(lab == lab.round())
        assert lab.min() >= 0 and lab.max() <= 4
        assert feeds["data"].shape == (3, 2, 6, 6)


def test_time_per_layer_backward_equals_fused_autograd(tmp_path) -> None:
    """StepNet's one-autograd-call-per-layer backward gives the fused pass's gradients."""
    from netdef.analysis import analyze
    from netdef.api import load_net
    from netdef.cli.time_cmd import StepNet, random_inputs
    from netdef.lowering.module import build

    net = tmp_path / "branchy.net"
    net.write_text(BRANCHY)
    a = analyze(load_net(net))
    module = build(a, generator=torch.Generator().manual_seed(0))
    inputs = random_inputs(a, torch.Generator().manual_seed(1))
    step = StepNet(module, a, inputs, torch.device("cpu"), None)
    loss = step.forward()
    step.backward()
    stepped = {k: p.grad.clone() for k, p in module.named_parameters()}
    for p in module.parameters():
        p.grad = None
    outs = module(**inputs)
    fused = sum(w * outs[t].sum() for t, w in module.netdef_loss_weights.items())
    assert abs(float(fused.detach()) - loss) < 1e-5 * max(1.0, abs(loss))
    fused.backward()
    assert set(stepped) == {k for k, p in module.named_parameters() if p.grad is not None}
    for k, p in module.named_parameters():
        torch.testing.assert_close(stepped[k], p.grad, rtol=1e-5, atol=1e-6)


def test_run_compiled_lenet_matches_caffe(tmp_path, capsys, lenet_blobs) -> None:
    """``--compile``: inductor's kernels give Caffe's outputs (same bound as eager)."""
    torch._dynamo.reset()
    x = tmp_path / "x.npy"
    np.save(x, lenet_blobs["input/data"])
    out_npz = tmp_path / "out.npz"
    rc, out, err = _run(capsys, "run", LENET, "--weights", LENET_WEIGHTS, "--input",
                        f"data={x}", "--save", out_npz, "--compile", "--top", "0")
    assert rc == 0, err
    assert "--compile unavailable" not in err  # this machine has a C++ compiler
    want = lenet_blobs["data/prob"]
    got = _npz(out_npz)["prob"]
    assert got.shape == want.shape and np.abs(got - want).max() <= 3e-5 * np.abs(want).max()
    torch._dynamo.reset()


def test_time_compile_runs_the_whole_graph_and_falls_back_without_compiler(
        capsys, monkeypatch) -> None:  # noqa: ANN001
    need_lenet()
    real_compile = torch.compile

    def no_compiler(gm, example_inputs):  # noqa: ANN001, ANN202 - a failing dynamo backend
        raise OSError("no working C++ compiler (test backend)")

    monkeypatch.setattr(torch, "compile", lambda m, **kw: real_compile(m, backend=no_compiler))
    torch._dynamo.reset()
    rc, out, err = _run(capsys, "time", LENET, "--phase", "TEST", "--batch", "4",
                        "--iterations", "2", "--device", "cpu", "--compile")
    torch._dynamo.reset()
    assert rc == 0, err
    assert sum("netdef: --compile unavailable (" in ln for ln in err.splitlines()) == 1
    res = _parse_time(out)
    assert res["layers"] == {}  # one graph: no per-layer lines
    assert "Average time per layer: not measured (--compile runs the net as one graph)" in out
    assert res["n"] == 2 and len(res["iterations"]) == 2
    for key in ("Average Forward pass", "Average Backward pass", "Average Forward-Backward",
                "Total Time"):
        assert res[key] > 0
    assert res["loss"] == 0
