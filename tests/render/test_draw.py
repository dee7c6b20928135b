"""`netdef draw`: the DOT it writes is parsed back by real Graphviz (`dot -Tjson`).

Checked: one node per drawn layer (in-place layers folded, Split layers hidden), blob
shapes on the edges, the labels, the output formats' magic bytes, the behaviour without
Graphviz, and that every real BVLC net draws.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CAFFE, NETS, REPO, bvlc_files, is_solver_file, need_shared
from netdef.api import load_net
from netdef.cli.main import main

DOT = shutil.which("dot")
needs_dot = pytest.mark.skipif(DOT is None, reason="Graphviz `dot` is not installed")

ALEXNET = NETS / "alexnet.net"
VGG16 = NETS / "vgg16.net"
BVLC_ALEXNET = CAFFE / "models/bvlc_alexnet/deploy.prototxt"
GOOGLENET = CAFFE / "models/bvlc_googlenet/deploy.prototxt"

from conftest import BVLC_NET_SHAPES as NET_ARGS, BVLC_TEST_ARGS as TEST_ARGS  # noqa: E402
BVLC_NETS = [p for p in bvlc_files() if not is_solver_file(p)]


def _rel(p: Path) -> str:
    return p.relative_to(CAFFE).as_posix()


def _net_args(path: Path, phase: str) -> list[str]:
    out: list[str] = []
    for item in NET_ARGS.get(_rel(path), []):
        out += ["--input-shape", item]
    if phase == "TEST":
        out += TEST_ARGS.get(_rel(path), [])
    return out


# --- helpers ------------------------------------------------------------------------
class Drawn:
    """The JSON of `dot -Tjson` for a written .dot file, indexed by layer name."""

    def __init__(self, data: dict) -> None:
        self.data = data
        self.nodes = data.get("objects", [])
        self.edges = data.get("edges", [])
        self.by_gvid = {n["_gvid"]: n for n in self.nodes}
        self.by_layer = {n["id"]: n for n in self.nodes}

    def label(self, layer: str) -> str:
        return self.by_layer[layer]["label"]

    def edge_labels(self, tail: str, head: str) -> list[str]:
        return [e.get("label", "").strip() for e in self.edges
                if self.by_gvid[e["tail"]]["id"] == tail and self.by_gvid[e["head"]]["id"] == head]

    def out_edges(self, tail: str) -> list[str]:
        return [self.by_gvid[e["head"]]["id"] for e in self.edges
                if self.by_gvid[e["tail"]]["id"] == tail]

    def in_edges(self, head: str) -> list[str]:
        return [self.by_gvid[e["tail"]]["id"] for e in self.edges
                if self.by_gvid[e["head"]]["id"] == head]


def draw_json(tmp_path: Path, net: Path, *extra: str) -> Drawn:
    out = tmp_path / f"{net.stem}.dot"
    assert main(["draw", str(net), "-o", str(out), *extra]) == 0
    text = subprocess.run([DOT, "-Tjson", str(out)], check=True, capture_output=True).stdout
    return Drawn(json.loads(text))


def expected_nodes(net: Path, *, expand: bool, phase: str = "TRAIN",
                   stages: tuple[str, ...] = ()) -> int:
    """Layers of the filtered net (no Splits: they are inserted later), in-place ones
    (every top is also a bottom at the same index) left out unless ``expand``."""
    layers = load_net(net, phase=phase, stages=stages).net.layer
    if expand:
        return len(layers)
    return sum(1 for l in layers
               if not (l.top and len(l.top) == len(l.bottom)
                       and all(t == b for t, b in zip(l.top, l.bottom))))


def cli(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "netdef", "draw", *args], capture_output=True,
                          text=True, env=env, cwd=cwd or REPO, timeout=120)


# --- structure ----------------------------------------------------------------------
@needs_dot
@pytest.mark.parametrize("net", [ALEXNET, BVLC_ALEXNET], ids=["nets/alexnet", "bvlc/deploy"])
def test_alexnet_nodes_edges_and_labels(tmp_path: Path, net: Path) -> None:
    if net is BVLC_ALEXNET:
        need_shared()
    d = draw_json(tmp_path, net)
    assert len(d.nodes) == expected_nodes(net, expand=False) == 15  # 24 layers, 9 in-place
    assert "relu1" not in d.by_layer and "drop6" not in d.by_layer
    assert d.edge_labels("pool5", "fc6") == ["256×6×6"]
    assert d.edge_labels("conv1", "norm1") == ["96×55×55"]  # conv1's blob, ReLU'd in place
    assert d.edge_labels("data", "conv1") == ["3×227×227"]
    assert d.edge_labels("fc8", "prob") == ["1000"]
    assert len(d.edges) == 14  # a chain
    conv1 = d.label("conv1")
    assert "11×11/4" in conv1 and "96" in conv1 and "Convolution" in conv1
    assert "34.94k params" in conv1
    assert "+ ReLU" in conv1
    fc6 = d.label("fc6")
    assert "+ ReLU" in fc6 and "+ Dropout" in fc6 and "37.75M params" in fc6
    assert "MAX 3/2" in d.label("pool1")
    title = d.data["label"]
    for word in ("AlexNet", "phase TRAIN", "batch 10", "60.97M params", "GMACs", "MiB"):
        assert word in title, word


@needs_dot
def test_alexnet_expand_inplace(tmp_path: Path) -> None:
    d = draw_json(tmp_path, ALEXNET, "--expand-inplace")
    assert len(d.nodes) == expected_nodes(ALEXNET, expand=True) == 24
    assert d.edge_labels("conv1", "relu1") == ["96×55×55"]
    assert d.edge_labels("relu1", "norm1") == ["96×55×55"]
    assert d.edge_labels("fc6", "relu6") == ["4096"]
    assert "+ ReLU" not in d.label("conv1")
    assert "ReLU" in d.label("relu1")


@needs_dot
def test_vgg16(tmp_path: Path) -> None:
    d = draw_json(tmp_path, VGG16)
    n = expected_nodes(VGG16, expand=False)
    assert len(d.nodes) == n
    assert len(d.edges) == n - 1
    assert d.edge_labels("pool5", "fc6") == ["512×7×7"]
    assert d.edge_labels("conv1_1", "conv1_2") == ["64×224×224"]
    assert "3×3/1, 64, p1" in d.label("conv1_1")
    d = draw_json(tmp_path, VGG16, "--expand-inplace")
    assert len(d.nodes) == expected_nodes(VGG16, expand=True)


@needs_dot
def test_googlenet_splits_hidden_fan_out_and_fan_in(tmp_path: Path) -> None:
    need_shared()
    d = draw_json(tmp_path, GOOGLENET)
    n = expected_nodes(GOOGLENET, expand=False)
    assert len(d.nodes) == n
    assert not [name for name in d.by_layer if name.endswith("_split")]
    assert d.edge_labels("pool1/3x3_s2", "pool1/norm1") == ["64×56×56"]
    # the Split after pool2 is hidden: the pool feeds the 4 branches directly
    assert sorted(d.out_edges("pool2/3x3_s2")) == [
        "inception_3a/1x1", "inception_3a/3x3_reduce", "inception_3a/5x5_reduce",
        "inception_3a/pool"]
    assert set(d.edge_labels("pool2/3x3_s2", "inception_3a/pool")) == {"192×28×28"}
    # Concat fan-in: one edge per branch, each with its own shape
    assert sorted(d.in_edges("inception_3a/output")) == [
        "inception_3a/1x1", "inception_3a/3x3", "inception_3a/5x5", "inception_3a/pool_proj"]
    assert d.edge_labels("inception_3a/3x3", "inception_3a/output") == ["128×28×28"]
    assert d.edge_labels("inception_3a/output", "inception_3b/1x1") == ["256×28×28"]
    assert d.edge_labels("pool5/7x7_s1", "loss3/classifier") == ["1024×1×1"]
    assert "+ Dropout" in d.label("pool5/7x7_s1")
    d = draw_json(tmp_path, GOOGLENET, "--expand-inplace")
    assert len(d.nodes) == expected_nodes(GOOGLENET, expand=True)


@needs_dot
def test_train_val_with_data_and_loss_layers(tmp_path: Path) -> None:
    d = draw_json(tmp_path, NETS / "alexnet_train_val.net", "--input-shape", "data=32,3,227,227",
                  "--display-lrm")
    # a multi-top producer names the blob on its edges; the title has the batch
    assert d.edge_labels("data", "conv1") == ["data: 3×227×227"]
    assert d.edge_labels("data", "loss") == ["label: scalar"]
    assert "batch 32" in d.data["label"]
    assert "lr_mult 1, 2" in d.label("conv1")
    assert d.by_layer["data"]["peripheries"] == "2"
    assert d.by_layer["loss"]["shape"] == "hexagon"
    assert d.by_layer["data"]["fillcolor"] != d.by_layer["conv1"]["fillcolor"] \
        != d.by_layer["loss"]["fillcolor"]
    assert "⇒ loss" in d.label("loss")
    d = draw_json(tmp_path, NETS / "alexnet_train_val.net", "--input-shape", "data=32,3,227,227",
                  "--phase", "TEST")
    assert "phase TEST" in d.data["label"] and "accuracy" in d.by_layer


@needs_dot
def test_no_shapes_and_rankdir(tmp_path: Path) -> None:
    d = draw_json(tmp_path, ALEXNET, "--no-shapes", "--rankdir", "lr")
    assert d.edge_labels("pool5", "fc6") == [""]
    assert d.data["rankdir"] == "LR"


@needs_dot
def test_batch_override_changes_the_title_not_the_edges(tmp_path: Path) -> None:
    d = draw_json(tmp_path, ALEXNET, "--batch", "64")
    assert "batch 64" in d.data["label"]
    assert d.edge_labels("conv1", "norm1") == ["96×55×55"]


# --- output formats -----------------------------------------------------------------
@needs_dot
@pytest.mark.parametrize("fmt,magic", [("svg", (b"<svg", b"<?xml")), ("png", (b"\x89PNG",)),
                                       ("pdf", (b"%PDF",))])
def test_output_formats(tmp_path: Path, fmt: str, magic: tuple[bytes, ...]) -> None:
    out = tmp_path / f"alexnet.{fmt}"
    assert main(["draw", str(ALEXNET), "-o", str(out)]) == 0
    data = out.read_bytes()
    assert len(data) > 1000
    assert data.startswith(magic), data[:20]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # atomic write


@needs_dot
def test_default_output_is_net_name_svg_in_cwd(tmp_path: Path) -> None:
    r = cli(str(ALEXNET), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "AlexNet.svg").read_bytes().lstrip().startswith((b"<svg", b"<?xml"))


def test_dot_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["draw", str(ALEXNET), "-o", "-"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("digraph") and "96×55×55" in out


def test_bad_output_name_and_unwritable_dir(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["draw", str(ALEXNET), "-o", str(tmp_path / "x.jpeg2")]) == 2
    assert "output format" in capsys.readouterr().err
    assert main(["draw", str(ALEXNET), "-o", str(tmp_path / "no/such/dir/x.dot")]) == 2
    err = capsys.readouterr().err
    assert "cannot write" in err and "Traceback" not in err


def test_missing_data_shape_is_a_clean_error(tmp_path: Path) -> None:
    r = cli(str(NETS / "alexnet_train_val.net"), "-o", str(tmp_path / "x.dot"))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and "--input-shape" in r.stderr


# --- without Graphviz -----------------------------------------------------------------
def _no_dot_env(tmp_path: Path) -> dict[str, str]:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    env = dict(os.environ, PATH=str(empty))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def test_without_dot_writing_dot_works_with_a_note(tmp_path: Path) -> None:
    out = tmp_path / "a.dot"
    r = cli(str(ALEXNET), "-o", str(out), env=_no_dot_env(tmp_path))
    assert r.returncode == 0, r.stderr
    assert out.read_text(encoding="utf-8").startswith("digraph")
    notes = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(notes) == 1, r.stderr
    assert "apt-get install graphviz" in notes[0] and "brew install graphviz" in notes[0]


@pytest.mark.parametrize("fmt", ["png", "svg", "pdf"])
def test_without_dot_rendering_fails_cleanly(tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"a.{fmt}"
    r = cli(str(ALEXNET), "-o", str(out), env=_no_dot_env(tmp_path))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    errors = [l for l in lines if "error:" in l]
    assert len(errors) == 1 and "dot" in errors[0], r.stderr
    assert len(lines) <= 2  # the error and its hint
    assert "apt-get install graphviz" in r.stderr
    assert not out.exists()


def test_draw_does_not_import_torch(tmp_path: Path) -> None:
    code = ("import sys; from netdef.cli.main import main; "
            f"rc = main(['draw', {str(ALEXNET)!r}, '-o', {str(tmp_path / 'a.dot')!r}]); "
            "assert rc == 0; assert 'torch' not in sys.modules, 'torch imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                       timeout=120)
    assert r.returncode == 0, r.stderr


# --- every real net ---------------------------------------------------------------------
def test_the_shared_folder_has_29_nets() -> None:
    need_shared()
    assert len(BVLC_NETS) >= 29
    assert set(NET_ARGS) <= {_rel(p) for p in BVLC_NETS}


@needs_dot
@pytest.mark.parametrize("net", BVLC_NETS, ids=_rel)
@pytest.mark.parametrize("phase", ["TRAIN", "TEST"])
def test_every_bvlc_net_draws(tmp_path: Path, net: Path, phase: str) -> None:
    out = tmp_path / "net.dot"
    args = _net_args(net, phase)
    rc = main(["draw", str(net), "-o", str(out), "--phase", phase, *args])
    assert rc == 0
    text = subprocess.run([DOT, "-Tjson", str(out)], check=True, capture_output=True).stdout
    d = Drawn(json.loads(text))
    stages = tuple(a for a, prev in zip(args[1:], args) if prev == "--stage")
    assert len(d.nodes) == expected_nodes(net, expand=False, phase=phase, stages=stages)
    assert all(e.get("label", "").strip() for e in d.edges)  # every blob has its shape


@needs_dot
def test_one_bvlc_net_to_svg_via_subprocess(tmp_path: Path) -> None:
    need_shared()
    out = tmp_path / "g.svg"
    r = cli(str(CAFFE / "models/bvlc_googlenet/train_val.prototxt"), "-o", str(out),
            "--input-shape", "data=32,3,224,224")
    assert r.returncode == 0, r.stderr
    svg = out.read_text(encoding="utf-8")
    assert "<svg" in svg and "inception_5b/output" in svg and "loss1/loss1" in svg
