"""``netdef time NET --memory``: measured peaks printed next to the prediction."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import CAFFE
from netdef.cli.main import main

LENET_TRAIN = CAFFE / "examples" / "mnist" / "lenet_train_test.prototxt"
RATIO = re.compile(r"^  predicted/measured (\d+\.\d+)$")
BYTES = re.compile(r"^  (predicted|measured) +([\d,]+) B ")

NET = """name: "small"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 8 dim: 3 dim: 16 dim: 16 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 8 kernel_size: 3 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "fc" inner_product_param { num_output: 10 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""


def _run(capsys, *argv) -> tuple[int, str, str]:  # noqa: ANN001
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _sections(out: str) -> dict[str, dict]:
    """{"training"|"inference": {"ratio": r, "predicted": B, "measured": B}}."""
    res: dict[str, dict] = {}
    cur = None
    for line in out.splitlines():
        if line.startswith(("training (", "inference (")):
            cur = res.setdefault(line.split(" ")[0], {})
        elif cur is not None and (m := RATIO.match(line)):
            cur["ratio"] = float(m[1])
        elif cur is not None and (m := BYTES.match(line)):
            cur[m[1]] = int(m[2].replace(",", ""))
    return res


def test_time_memory_lenet(capsys) -> None:  # noqa: ANN001
    if not LENET_TRAIN.exists():
        pytest.skip("../shared is not beside the repo")
    rc, out, err = _run(capsys, "time", LENET_TRAIN, "--input-shape", "data=64,1,28,28",
                        "--memory", "--device", "cpu")
    assert rc == 0, err
    assert out.startswith("Memory: LeNet, phase TRAIN, cpu, float32")
    assert "loss = Σ loss_weight·loss tops" in out
    s = _sections(out)
    assert set(s) == {"training", "inference"}
    for part in s.values():
        assert 0.75 <= part["ratio"] <= 1.25
        assert part["ratio"] == pytest.approx(part["predicted"] / part["measured"], abs=1e-3)
    assert "*** Benchmark" not in out  # --memory replaces the timing


def test_time_memory_without_loss_and_forward_only(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    net = tmp_path / "small.net"
    net.write_text(NET)
    rc, out, err = _run(capsys, "time", net, "--memory", "--device", "cpu")
    assert rc == 0, err
    assert "no loss: backward from every output with a ones gradient" in out
    assert all(0.75 <= p["ratio"] <= 1.25 for p in _sections(out).values())
    rc, out, err = _run(capsys, "time", net, "--memory", "--forward-only", "--device", "cpu")
    assert rc == 0, err
    assert set(_sections(out)) == {"inference"}


@pytest.mark.parametrize("extra,words", [
    (["--dtype", "bfloat16"], "--memory measures float32 nets"),
    (["--channels-last"], "--memory does not support --channels-last"),
    (["--device", "meta"], "--memory measures on cpu or cuda"),
])
def test_time_memory_bad_input_exits_2(tmp_path: Path, capsys, extra, words) -> None:  # noqa: ANN001
    net = tmp_path / "small.net"
    net.write_text(NET)
    rc, out, err = _run(capsys, "time", net, "--memory", *extra)
    assert rc == 2
    lines = [l for l in err.splitlines() if l.strip()]
    assert "error" in lines[0] and words in lines[0] and "Traceback" not in err, err
