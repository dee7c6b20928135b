"""Exact param counts, MACs and shapes of the shipped and the BVLC nets."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import (BVLC_NET_SHAPES, BVLC_TEST_ARGS, CAFFE, NETS, bvlc_files, is_solver_file,
                      need_shared)
from netdef.analysis import analyze, totals
from netdef.api import load_net
from netdef.cli.common import parse_input_shapes
from netdef.layers.registry import ShapeContext


def run(path: Path, phase: str = "TEST", shapes: list[str] | None = None,
        stages: tuple[str, ...] = ()):  # noqa: ANN201
    loaded = load_net(path, phase=phase, stages=stages)
    ctx = ShapeContext(phase=phase, input_shapes=parse_input_shapes(shapes or []),
                       base_dir=loaded.base_dir)
    return analyze(loaded, ctx)


ALEX, CAFFE_NET, VGG16, VGG19 = 60_965_224, 60_965_224, 138_357_544, 143_667_240


@pytest.mark.parametrize("name,params", [("alexnet", ALEX), ("caffenet", CAFFE_NET),
                                         ("vgg16", VGG16), ("vgg19", VGG19)])
def test_shipped_nets_param_counts_deploy_and_train_val(name: str, params: int) -> None:
    assert run(NETS / f"{name}.net").param_count == params
    size = 227 if "net" in name and not name.startswith("vgg") else 224
    train = run(NETS / f"{name}_train_val.net", "TRAIN", [f"data=32,3,{size},{size}"])
    assert train.param_count == params
    assert train.layer("loss").top_shapes == ((),)


@pytest.mark.parametrize("rel,params", [
    ("models/bvlc_alexnet/deploy.prototxt", ALEX),
    ("models/bvlc_reference_caffenet/deploy.prototxt", CAFFE_NET),
    ("models/bvlc_googlenet/deploy.prototxt", 6_998_552),
])
def test_bvlc_param_counts(rel: str, params: int) -> None:
    need_shared()
    assert run(CAFFE / rel).param_count == params


def test_googlenet_train_val_with_aux_heads() -> None:
    need_shared()
    a = run(CAFFE / "models/bvlc_googlenet/train_val.prototxt", "TRAIN", ["data=32,3,224,224"])
    assert a.param_count == 13_378_280
    losses = [l.name for l in a.layers if l.loss_weights and any(l.loss_weights)]
    assert losses == ["loss1/loss", "loss2/loss", "loss3/loss3"]
    assert [l.loss_weights[0] for l in a.layers if l.name in losses] == pytest.approx([0.3, 0.3, 1.0], rel=1e-7)


def test_fixture_vgg_counts() -> None:
    need_shared()
    fx = CAFFE.parent / "fixtures/nets"
    assert run(fx / "vgg16_deploy.prototxt").param_count == VGG16
    assert run(fx / "vgg19_deploy.prototxt").param_count == VGG19


def test_alexnet_shapes() -> None:
    a = run(NETS / "alexnet.net")
    assert a.blobs["conv1"] == (10, 96, 55, 55)
    assert a.blobs["pool1"] == (10, 96, 27, 27)
    assert a.blobs["pool5"] == (10, 256, 6, 6)
    assert a.blobs["fc6"] == (10, 4096)
    assert a.layer("conv2").params[0].shape == (256, 48, 5, 5)


def test_googlenet_ceil_pooling() -> None:
    need_shared()
    a = run(CAFFE / "models/bvlc_googlenet/deploy.prototxt")
    assert a.blobs["pool1/3x3_s2"] == (10, 64, 56, 56)
    assert a.blobs["conv1/7x7_s2"] == (10, 64, 112, 112)


@pytest.mark.parametrize("path,stated", [
    (NETS / "alexnet.net", "724.4 M"), (NETS / "caffenet.net", "724.4 M"),
    (NETS / "vgg16.net", "15.47 G"), (NETS / "vgg19.net", "19.63 G"),
    (CAFFE / "models/bvlc_googlenet/deploy.prototxt", "1.58 G"),
], ids=["alexnet", "caffenet", "vgg16", "vgg19", "googlenet"])
def test_macs_per_image(path: Path, stated: str) -> None:
    """MACs per image equal the published figure to the digits it is stated with."""
    if not path.exists():
        pytest.skip("missing")
    t = totals(run(path))
    number, unit = stated.split()
    decimals = len(number.split(".")[1])
    scaled = t.macs_per_item / {"M": 1e6, "G": 1e9}[unit]
    assert f"{scaled:.{decimals}f}" == number
    assert t.flops >= 2 * t.macs  # FLOPs count 2 per MAC plus element-wise work


def test_memory_totals_are_consistent() -> None:
    t = totals(run(NETS / "alexnet.net"))
    assert t.caffe_data_bytes == 83_232_440  # in-place tops counted again, as Caffe
    assert t.activation_bytes < t.caffe_data_bytes  # honest: each blob once
    assert t.param_bytes == 4 * ALEX
    assert t.history_bytes("Adam") == 2 * t.history_bytes("SGD") == 8 * ALEX


def test_shared_params_counted_once() -> None:
    need_shared()
    a = run(CAFFE / "examples/siamese/mnist_siamese_train_test.prototxt", "TRAIN",
            ["pair_data=64,2,28,28"])
    single = sum(l.param_count for l in a.layers if not l.name.endswith("_p"))
    assert a.param_count == single
    assert any(p.owner for l in a.layers for p in l.params)
    assert any("Sharing parameters 'conv1_w' owned by layer 'conv1'" in line for line in a.log)


NET_FILES = [p for p in bvlc_files() if not is_solver_file(p)]


@pytest.mark.parametrize("path", NET_FILES, ids=lambda p: p.relative_to(CAFFE).as_posix())
@pytest.mark.parametrize("phase", ["TRAIN", "TEST"])
def test_every_bvlc_net_gets_every_shape(path: Path, phase: str) -> None:
    rel = path.relative_to(CAFFE).as_posix()
    stages = tuple(BVLC_TEST_ARGS.get(rel, [None, None])[1:]) if phase == "TEST" else ()
    a = run(path, phase, BVLC_NET_SHAPES.get(rel), tuple(s for s in stages if s))
    produced = {t for l in a.layers for t in l.tops}
    assert produced <= set(a.blobs)
    for info in a.layers:
        assert len(info.top_shapes) == len(info.tops)
        assert all(all(d > 0 for d in s) for s in info.top_shapes), info.name
