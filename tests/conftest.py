"""Shared test helpers: where the real Caffe files and fixtures live."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

# pytest runs with -n 2 on 2 cores: one OpenMP thread per worker (and per subprocess it
# starts).  Two spinning OpenMP teams per core made single ops up to 12× slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CAFFE = SHARED / "caffe"
FIXTURES = SHARED / "fixtures"
NETS = REPO / "nets"


def need_shared() -> None:
    if not CAFFE.is_dir():
        pytest.skip("../shared (real Caffe files) is not beside the repo")


def bvlc_files() -> list[Path]:
    """Every real .prototxt under ../shared/caffe (nets and solvers)."""
    if not CAFFE.is_dir():
        return []
    return sorted(CAFFE.rglob("*.prototxt"))


def is_solver_file(path: Path) -> bool:
    from netdef.api import looks_like_solver
    return looks_like_solver(path.read_text())


# Data layers whose LMDB/HDF5 source is not on disk need their shapes (batch from the file)
BVLC_NET_SHAPES: dict[str, list[str]] = {
    "examples/cifar10/cifar10_full_sigmoid_train_test.prototxt": ["data=100,3,32,32"],
    "examples/cifar10/cifar10_full_sigmoid_train_test_bn.prototxt": ["data=100,3,32,32"],
    "examples/cifar10/cifar10_full_train_test.prototxt": ["data=100,3,32,32"],
    "examples/cifar10/cifar10_quick_train_test.prototxt": ["data=100,3,32,32"],
    "examples/hdf5_classification/nonlinear_auto_test.prototxt": ["data=10,4", "label=10"],
    "examples/hdf5_classification/nonlinear_auto_train.prototxt": ["data=10,4", "label=10"],
    "examples/hdf5_classification/nonlinear_train_val.prototxt": ["data=10,4", "label=10"],
    "examples/hdf5_classification/train_val.prototxt": ["data=10,4", "label=10"],
    "examples/mnist/lenet_train_test.prototxt": ["data=64,1,28,28"],
    "examples/mnist/mnist_autoencoder.prototxt": ["data=100,1,28,28"],
    "examples/pycaffe/linreg.prototxt": ["loss=1"],  # a Python loss layer: shape unknowable
    "examples/siamese/mnist_siamese_train_test.prototxt": ["pair_data=64,2,28,28"],
    "models/bvlc_alexnet/train_val.prototxt": ["data=256,3,227,227"],
    "models/bvlc_googlenet/train_val.prototxt": ["data=32,3,224,224"],
    "models/bvlc_reference_caffenet/train_val.prototxt": ["data=256,3,227,227"],
}
# the TEST phase of the autoencoder only has data layers for a stage (as its solver's
# test_state says): without one, Caffe too finds no producer of 'data'
BVLC_TEST_ARGS: dict[str, list[str]] = {
    "examples/mnist/mnist_autoencoder.prototxt": ["--stage", "test-on-test"],
}
