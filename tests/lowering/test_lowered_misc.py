"""Lowered Python, Parameter, Silence and HDF5Output layers; data layers are inputs."""
from __future__ import annotations

import itertools
import pickle
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest
import torch

from netdef.analysis.net import analyze
from netdef.errors import NetdefError
from netdef.api import load_net
from netdef.layers.registry import ShapeContext
from netdef.lowering.module import build, run_layers

_IDS = itertools.count()


def unique(stem: str) -> str:
    """A module name no other test (in this process) has imported."""
    return f"{stem}_{next(_IDS)}_{id(object()):x}"


def analyse_file(path, input_shapes=None, phase="TRAIN"):
    loaded = load_net(path, phase=phase)
    ctx = ShapeContext(phase=phase, input_shapes=input_shapes or {}, base_dir=loaded.base_dir)
    return analyze(loaded, ctx)


def analyse_text(text, input_shapes=None, phase="TRAIN"):
    loaded = load_net(text=text, phase=phase)
    return analyze(loaded, ShapeContext(phase=phase, input_shapes=input_shapes or {}))


DOUBLE_LAYER = '''
import caffe


class Double(caffe.Layer):
    """Doubles (times param_str) its input; records what Caffe's PythonLayer hands it."""

    def setup(self, bottom, top):
        self.k = float(self.param_str) if self.param_str else 2.0
        self.setup_shapes = [b.data.shape for b in bottom]
        self.setup_phase = self.phase
        self.calls = []

    def reshape(self, bottom, top):
        self.calls.append("reshape")
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        self.calls.append("forward")
        top[0].data[...] = self.k * bottom[0].data

    def backward(self, top, propagate_down, bottom):
        self.calls.append(("backward", list(propagate_down)))
        if propagate_down[0]:
            bottom[0].diff[...] = self.k * top[0].diff
'''


def python_net(tmp_path, module: str, cls: str = "Double", param_str: str = "",
               extra: str = "") -> str:
    param = f' param_str: "{param_str}"' if param_str else ""
    text = textwrap.dedent(f'''\
        name: "py"
        layer {{ name: "in" type: "Input" top: "x" input_param {{ shape {{ dim: 2 dim: 3 }} }} }}
        layer {{ name: "py" type: "Python" bottom: "x" top: "y"
                python_param {{ module: "{module}" layer: "{cls}"{param} }} {extra} }}
        ''')
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    return path


# --- Python -----------------------------------------------------------------------------------

def test_python_layer_forward_backward(tmp_path):
    mod = unique("double_layer")
    (tmp_path / f"{mod}.py").write_text(DOUBLE_LAYER)
    path = python_net(tmp_path, mod, param_str="3")
    net = build(analyse_file(path, {"y": (2, 3)}))
    layer = net.py.user_layer
    assert layer.k == 3.0 and layer.setup_shapes == [(2, 3)] and layer.setup_phase == 0
    x = torch.randn(2, 3, requires_grad=True)
    y = net(x=x)["y"]
    assert layer.calls == ["reshape", "forward"]  # Caffe's Layer::Forward reshapes first
    torch.testing.assert_close(y, 3 * x.detach())
    g = torch.randn(2, 3)
    y.backward(g)
    assert layer.calls[-1] == ("backward", [True])
    torch.testing.assert_close(x.grad, 3 * g)


def test_python_layer_gradient_no_grad_and_new_batch(tmp_path):
    mod = unique("double_layer")
    (tmp_path / f"{mod}.py").write_text(DOUBLE_LAYER)
    net = build(analyse_file(python_net(tmp_path, mod), {"y": (2, 3)}))
    x = torch.randn(2, 3, dtype=torch.float32, requires_grad=True)
    # the layer computes in float32 like Caffe: compare with the exact linear map
    y = net(x=x)["y"]
    (y * torch.arange(6.0).reshape(2, 3)).sum().backward()
    torch.testing.assert_close(x.grad, 2 * torch.arange(6.0).reshape(2, 3))
    with torch.no_grad():
        y = net(x=torch.ones(2, 3))["y"]
    assert not y.requires_grad and torch.equal(y, torch.full((2, 3), 2.0))
    # a new batch size goes through reshape
    assert net(x=torch.ones(5, 3))["y"].shape == (5, 3)


def test_python_layer_test_phase_and_cwd_import(tmp_path, monkeypatch):
    mod = unique("plain_layer")
    (tmp_path / f"{mod}.py").write_text(textwrap.dedent('''
        import numpy as np

        class Plain:  # no caffe import, no constructor argument
            def setup(self, bottom, top):
                pass
            def reshape(self, bottom, top):
                top[0].reshape(bottom[0].num, 1)
                top[1].reshape(1)
            def forward(self, bottom, top):
                top[0].data[...] = bottom[0].data.sum(1, keepdims=True)
                top[1].data[...] = self.phase
            def backward(self, top, propagate_down, bottom):
                bottom[0].diff[...] = np.broadcast_to(top[0].diff, bottom[0].diff.shape)
        '''))
    monkeypatch.chdir(tmp_path)  # the net comes from text: the working directory is searched
    text = ('layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }\n'
            f'layer {{ name: "py" type: "Python" bottom: "x" top: "s" top: "ph" '
            f'python_param {{ module: "{mod}" layer: "Plain" }} }}\n')
    net = build(analyse_text(text, {"s": (2, 1), "ph": (1,)}, phase="TEST"))
    x = torch.arange(6.0).reshape(2, 3).requires_grad_()
    out = net(x=x)
    assert out["s"].flatten().tolist() == [3.0, 12.0]
    assert out["ph"].tolist() == [1.0]  # phase TEST = 1, like caffe.TEST
    out["s"].sum().backward()
    torch.testing.assert_close(x.grad, torch.ones(2, 3))


def test_python_loss_layer_in_a_net(tmp_path):
    """pycaffe's classic EuclideanLossLayer example, with a loss weight."""
    mod = unique("pyloss")
    (tmp_path / f"{mod}.py").write_text(textwrap.dedent('''
        import caffe
        import numpy as np

        class EuclideanLossLayer(caffe.Layer):
            def setup(self, bottom, top):
                if len(bottom) != 2:
                    raise Exception("Need two inputs to compute distance.")
            def reshape(self, bottom, top):
                self.diff = np.zeros_like(bottom[0].data, dtype=np.float32)
                top[0].reshape(1)
            def forward(self, bottom, top):
                self.diff[...] = bottom[0].data - bottom[1].data
                top[0].data[...] = np.sum(self.diff ** 2) / bottom[0].num / 2.
            def backward(self, top, propagate_down, bottom):
                for i in range(2):
                    if not propagate_down[i]:
                        continue
                    sign = 1 if i == 0 else -1
                    bottom[i].diff[...] = sign * self.diff / bottom[i].num
        '''))
    text = ('layer { name: "in" type: "Input" top: "a" top: "b" input_param { '
            'shape { dim: 4 dim: 3 } } }\n'
            f'layer {{ name: "loss" type: "Python" bottom: "a" bottom: "b" top: "loss" '
            f'python_param {{ module: "{mod}" layer: "EuclideanLossLayer" }} '
            'loss_weight: 1 }\n')
    (tmp_path / "net.prototxt").write_text(text)
    net = build(analyse_file(tmp_path / "net.prototxt", {"loss": (1,)}))
    assert net.netdef_loss_weights == {"loss": 1.0}
    a = torch.randn(4, 3, requires_grad=True)
    b = torch.randn(4, 3)  # no gradient wanted: propagate_down[1] is False
    loss = net(a=a, b=b)["loss"]
    d = (a - b).detach()
    torch.testing.assert_close(loss, (d ** 2).sum().reshape(1) / 4 / 2)
    loss.sum().backward()
    torch.testing.assert_close(a.grad, d / 4)


def test_python_layer_errors(tmp_path):
    path = python_net(tmp_path, unique("missing_module"))
    with pytest.raises(NetdefError) as err:
        build(analyse_file(path, {"y": (2, 3)}))
    assert "cannot import module" in err.value.message and str(tmp_path) in err.value.hint

    mod = unique("has_other")
    (tmp_path / f"{mod}.py").write_text("class Other:\n    pass\n")
    path = python_net(tmp_path, mod, cls="Double")
    with pytest.raises(NetdefError) as err:
        build(analyse_file(path, {"y": (2, 3)}))
    assert "has no class 'Double'" in err.value.message and "Other" in err.value.hint

    mod = unique("bad_import")
    (tmp_path / f"{mod}.py").write_text("import no_such_dependency_xyz\n")
    path = python_net(tmp_path, mod)
    with pytest.raises(NetdefError) as err:
        build(analyse_file(path, {"y": (2, 3)}))
    assert "no_such_dependency_xyz" in str(err.value)

    mod = unique("bad_setup")
    (tmp_path / f"{mod}.py").write_text(textwrap.dedent('''
        import caffe
        class Double(caffe.Layer):
            def setup(self, bottom, top):
                raise Exception("Need two inputs")
        '''))
    path = python_net(tmp_path, mod)
    with pytest.raises(NetdefError) as err:
        build(analyse_file(path, {"y": (2, 3)}))
    assert "setup failed" in err.value.message and "Need two inputs" in err.value.message


def test_blob_shim():
    from netdef.layers.families.misc import Blob

    b = Blob((2, 3, 4))
    assert b.shape == (2, 3, 4) and b.count == 24 and (b.num, b.channels, b.height,
                                                          b.width) == (2, 3, 4, 1)
    b.data[...] = 1.5
    b.reshape(4, 6)  # same count: values kept
    assert b.data.shape == (4, 6) and float(b.data.sum()) == 36.0
    b.reshape((5,))
    assert b.data.shape == (5,) and b.diff.shape == (5,) and float(b.data.sum()) == 0.0
    assert b.data.dtype == np.float32


# --- Parameter, Silence -----------------------------------------------------------------------

def test_parameter_layer():
    text = ('layer { name: "p" type: "Parameter" top: "w" '
            'parameter_param { shape { dim: 2 dim: 3 } } }\n')
    net = build(analyse_text(text))
    assert list(net.state_dict()) == ["p.0"] and net.netdef_inputs == ()
    with torch.no_grad():
        net.p.blob(0).copy_(torch.arange(6.0).reshape(2, 3))
    w = net()["w"]
    assert torch.equal(w, torch.arange(6.0).reshape(2, 3))
    (w * 2).sum().backward()
    assert torch.equal(net.p.blob(0).grad, torch.full((2, 3), 2.0))


def test_silence_consumes_its_bottoms():
    text = ('layer { name: "in" type: "Input" top: "x" top: "y" input_param { '
            'shape { dim: 2 } } }\n'
            'layer { name: "p" type: "Parameter" top: "w" parameter_param { shape { dim: 3 } } }\n'
            'layer { name: "quiet" type: "Silence" bottom: "x" bottom: "w" }\n')
    analysis = analyse_text(text)
    assert analysis.outputs == ("y",)
    net = build(analysis)  # Silence itself is the structure family's (structure.py)
    out = net(x=torch.ones(2), y=torch.zeros(2))
    assert list(out) == ["y"]
    assert run_layers(net, analysis, {"x": torch.ones(2), "y": torch.zeros(2)})["quiet"] == []


# --- HDF5Output --------------------------------------------------------------------------------

HDF5_NET = '''
layer { name: "in" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 3 dim: 2 dim: 4 } shape { dim: 3 } } }
layer { name: "out" type: "HDF5Output" bottom: "data" bottom: "label"
        hdf5_output_param { file_name: "FILE" } }
'''


def test_hdf5_output_writes_and_appends(tmp_path):
    target = tmp_path / "out.h5"
    net = build(analyse_text(HDF5_NET.replace("FILE", str(target))))
    assert net.netdef_outputs == ()
    target.write_bytes(b"stale")  # the first forward truncates like Caffe's H5Fcreate
    d1, d2 = torch.randn(3, 2, 4), torch.randn(3, 2, 4)
    l1, l2 = torch.tensor([0.0, 1, 2]), torch.tensor([3.0, 4, 5])
    assert net(data=d1, label=l1) == {}
    with h5py.File(target, "r") as f:
        assert f["data"].shape == (3, 2, 4, 1)  # Caffe's legacy 4-D (num, c, h, w)
        assert f["label"].shape == (3, 1, 1, 1)
        np.testing.assert_array_equal(f["data"][...].reshape(3, 2, 4), d1.numpy())
    net(data=d2, label=l2)
    with h5py.File(target, "r") as f:
        assert f["data"].dtype == np.float32 and f["data"].shape == (6, 2, 4, 1)
        np.testing.assert_array_equal(f["data"][3:].reshape(3, 2, 4), d2.numpy())
        np.testing.assert_array_equal(f["label"][...].ravel(), [0, 1, 2, 3, 4, 5])


def test_hdf5_output_relative_to_cwd_and_bad_batch(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    net = build(analyse_text(HDF5_NET.replace("FILE", "rel.h5")))
    net(data=torch.ones(3, 2, 4), label=torch.zeros(3))
    assert (tmp_path / "rel.h5").is_file()
    with pytest.raises(NetdefError):
        net(data=torch.ones(3, 2, 4), label=torch.zeros(2))


def test_hdf5_output_needs_a_file_name():
    text = HDF5_NET.replace('hdf5_output_param { file_name: "FILE" }', "")
    with pytest.raises(NetdefError) as err:
        build(analyse_text(text))
    assert err.value.hint and "file_name" in err.value.hint


# --- data layers -----------------------------------------------------------------------------

def test_data_layers_are_inputs_not_modules():
    from netdef.layers import registry

    text = ('layer { name: "dd" type: "DummyData" top: "a" top: "b" dummy_data_param { '
            'shape { dim: 2 dim: 3 } } }\n'
            'layer { name: "loss" type: "EuclideanLoss" bottom: "a" bottom: "b" top: "l" }\n')
    analysis = analyse_text(text)
    net = build(analysis)
    assert net.netdef_inputs == ("a", "b") and "dd" not in dict(net.named_children())
    out = net(a=torch.ones(2, 3), b=torch.zeros(2, 3))
    torch.testing.assert_close(out["l"], torch.tensor(1.5))  # 6 / N / 2
    with pytest.raises(NetdefError) as err:
        registry.get("DummyData").lower(analysis.layers[0].param, None)
    assert "inputs" in err.value.message


# --- whole nets ---------------------------------------------------------------------------------

def test_lowered_misc_net_pickles(tmp_path):
    text = ('layer { name: "p" type: "Parameter" top: "w" '
            'parameter_param { shape { dim: 2 } } }\n'
            'layer { name: "in" type: "Input" top: "x" top: "c" input_param { '
            'shape { dim: 2 dim: 1 dim: 2 } shape { dim: 2 dim: 1 } } }\n'
            'layer { name: "lstm" type: "LSTM" bottom: "x" bottom: "c" top: "h" '
            'recurrent_param { num_output: 2 weight_filler { type: "gaussian" } } }\n'
            f'layer {{ name: "o" type: "HDF5Output" bottom: "h" bottom: "c" '
            f'hdf5_output_param {{ file_name: "{tmp_path / "o.h5"}" }} }}\n')
    net = build(analyse_text(text))
    again = pickle.loads(pickle.dumps(net))
    x, c = torch.randn(2, 1, 2), torch.tensor([[0.0], [1.0]])
    assert torch.equal(net(x=x, c=c)["w"], again(x=x, c=c)["w"])


def test_registry_import_does_not_import_torch():
    code = ("import sys\nfrom netdef.layers import registry\nregistry.all_types()\n"
            "from netdef.layers.families import loss, misc, recurrent, data\n"
            "hasattr(loss, '__path__'); hasattr(misc, 'nothing')\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True)
