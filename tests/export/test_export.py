"""``netdef export``: every format against netdef's own forward.

LeNet, AlexNet (``nets/alexnet.net``, batch 2) and GoogLeNet deploy (batch 1) are
built, filled with He-normal random blobs from a fixed seed (the prototxts' own
gaussian(0.01) fillers make AlexNet's softmax flat to 1e-6, which would hide errors),
exported to ``py`` / ``torchscript`` / ``export`` / ``onnx`` and run back:
max |diff| ≤ 1e-5 · max |netdef| (ONNX with onnxruntime: 1e-4).  The ``py`` files are
also imported by a fresh interpreter that has only torch (netdef blocked), and LeNet
with the real caffemodel must give Caffe's own ``prob`` (the forward fixture).
Two synthetic nets cover the other layer types of the emitter table.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
LENET = SHARED / "caffe" / "examples" / "mnist" / "lenet.prototxt"
ALEXNET = REPO / "nets" / "alexnet.net"
GOOGLENET = SHARED / "caffe" / "models" / "bvlc_googlenet" / "deploy.prototxt"
LENET_WEIGHTS = SHARED / "fixtures" / "caffemodels" / "lenet_v2.caffemodel"
LENET_FORWARD = SHARED / "fixtures" / "forward" / "lenet" / "blobs.npz"

NETS = {"lenet": (LENET, 2), "alexnet": (ALEXNET, 2), "googlenet": (GOOGLENET, 1)}
# Inputs of pixel-like scale make LRN matter (with unit inputs its k + alpha/n*sum x^2 is
# 1 + 1e-4 and LRN is invisible in the outputs); the classifier feeding the softmax is
# scaled so that the logits' std is about 3 (an informative softmax, neither flat nor
# one-hot).  net_case checks both, so that a drift cannot silently weaken the tests.
INPUT_STD = {"lenet": 1.0, "alexnet": 30.0, "googlenet": 30.0}
LOGIT_SCALE = {"lenet": 1.0, "alexnet": 0.03, "googlenet": 0.022}
TOL = {"py": 1e-5, "torchscript": 1e-5, "export": 1e-5, "onnx": 1e-4}
SUFFIX = {"py": ".py", "torchscript": ".ts.pt", "export": ".pt2", "onnx": ".onnx"}
# layer types the exporter refuses on purpose (state carried across batches, user code,
# file output, a matrix read from a file); every other type must have an emitter
UNSUPPORTED = {"LSTM", "RNN", "LSTMUnit", "Python", "HDF5Output", "InfogainLoss"}

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning",
                                        "ignore::UserWarning", "ignore::FutureWarning")


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():  # noqa: ANN202
    """Single-threaded torch for this module: on a busy 2-core machine OpenMP's waiting
    threads made one GoogLeNet forward take 1-4 s instead of 0.25 s."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def rel_err(got, ref) -> float:  # noqa: ANN001
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    scale = float(np.abs(ref).max()) or 1.0
    return float(np.abs(got - ref).max()) / scale


def analyse(path: Path | None, batch: int | None = None, *, text: str | None = None,
            phase: str = "TEST"):  # noqa: ANN201
    from netdef.analysis.net import analyze
    from netdef.api import load_net
    from netdef.layers.registry import ShapeContext

    loaded = load_net(path, text=text, phase=phase)
    return analyze(loaded, ShapeContext(phase=phase, batch=batch))


def he_fill(analysis, module, seed: int) -> None:  # noqa: ANN001
    """Random blobs: He-normal weights, N(0, 0.1) biases; BatchNorm gets valid statistics
    (positive variance, factor 2) so that s != 1 is exercised."""
    gen = torch.Generator().manual_seed(seed)
    children = dict(module.named_children())
    with torch.no_grad():
        for info in analysis.layers:
            mod = children.get(info.name)
            if mod is None or not len(mod._parameters):
                continue
            blobs = [mod._parameters[str(i)] for i in range(len(mod._parameters))]
            if info.type == "BatchNorm":
                blobs[0].copy_(torch.randn(blobs[0].shape, generator=gen) * 2.0)
                blobs[1].copy_((torch.rand(blobs[1].shape, generator=gen) + 0.5) * 2.0)
                blobs[2].fill_(2.0)
                continue
            for i, b in enumerate(blobs):
                if i == 0 and b.dim() >= 2:
                    std = (2.0 * b.shape[0] / b.numel()) ** 0.5
                else:
                    std = 0.1 if i else 0.5
                b.copy_(torch.randn(b.shape, generator=gen) * std)


@dataclass
class Case:
    name: str
    path: Path
    analysis: object
    module: object
    inputs: dict[str, torch.Tensor]
    ref: dict[str, np.ndarray]


_CASES: dict[str, Case] = {}


def net_case(name: str) -> Case:
    """Built once per test session: analysis, filled net, inputs and netdef's outputs."""
    if name not in _CASES:
        from netdef.lowering.module import build

        path, batch = NETS[name]
        if not path.is_file():
            pytest.skip(f"{path} not present")
        analysis = analyse(path, batch)
        module = build(analysis, fill=False)
        he_fill(analysis, module, seed=1)
        softmax = next(info for info in analysis.layers if info.type == "Softmax")
        classifier = next(info for info in analysis.layers if softmax.bottoms[0] in info.tops)
        with torch.no_grad():
            for p in dict(module.named_children())[classifier.name].parameters():
                p.mul_(LOGIT_SCALE[name])
        module.eval()
        gen = torch.Generator().manual_seed(2)
        inputs = {b: torch.randn(tuple(analysis.blobs[b]), generator=gen) * INPUT_STD[name]
                  for b in analysis.inputs}
        with torch.no_grad():
            ref = {k: v.numpy().copy() for k, v in module(**inputs).items()}
        top = float(ref["prob"].max())
        assert 0.05 < top < 0.95, f"{name}: uninformative softmax (max prob {top:.3g})"
        _CASES[name] = Case(name, path, analysis, module, inputs, ref)
    return _CASES[name]


@pytest.fixture(scope="module")
def outdir(tmp_path_factory) -> Path:  # noqa: ANN001
    return tmp_path_factory.mktemp("exports")


_EXPORTS: dict[tuple[str, str], object] = {}


def exported(name: str, fmt: str, outdir: Path):  # noqa: ANN201
    from netdef.export import export

    key = (name, fmt)
    if key not in _EXPORTS:
        case = net_case(name)
        out = outdir / f"{name}_export{SUFFIX[fmt]}"
        _EXPORTS[key] = export(case.analysis, case.module, fmt, out, source_label=str(case.path))
    return _EXPORTS[key]


# --------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("fmt", ["py", "torchscript", "export", "onnx"])
@pytest.mark.parametrize("name", list(NETS))
def test_round_trip(name: str, fmt: str, outdir: Path) -> None:
    from netdef.export import run_artifact

    if fmt == "onnx":
        pytest.importorskip("onnx")
        pytest.importorskip("onnxruntime")
    case = net_case(name)
    result = exported(name, fmt, outdir)
    assert all(p.is_file() for p in result.files)
    assert list(result.generated.outputs) == list(case.ref)
    got = run_artifact(result, case.inputs)  # reads the written files back
    for blob, ref in case.ref.items():
        err = rel_err(got[blob], ref)
        print(f"{name} {fmt} {blob}: max|diff|/max|ref| = {err:.2e}")
        assert err <= TOL[fmt], f"{name} {fmt} {blob}: {err:.3g}"
    # nothing half-written beside the result
    assert not list(outdir.glob(".*.tmp"))


def test_the_tolerance_catches_small_numeric_errors(outdir: Path) -> None:
    """The round trips can fail: AlexNet's output moves ~100x the tolerance when the
    exported LRN's beta is off by 0.1% (the test inputs make LRN matter)."""
    case = net_case("alexnet")
    net = exported("alexnet", "py", outdir).module
    lrns = [m for m in net.modules() if type(m).__name__ == "LRN"]
    assert len(lrns) == 2
    try:
        for m in lrns:
            m.beta *= 1.001
        with torch.no_grad():
            got = net(*case.inputs.values())["prob"].numpy()
    finally:
        for m in lrns:
            m.beta /= 1.001
    assert rel_err(got, case.ref["prob"]) > 10 * TOL["onnx"]


def test_py_weights_are_a_plain_state_dict(outdir: Path) -> None:
    for name in NETS:
        result = exported(name, "py", outdir)
        src, pt = result.files
        assert pt == src.with_suffix(".pt")
        state = torch.load(pt, weights_only=True)
        assert type(state) is dict and all(type(v) is torch.Tensor for v in state.values())
        assert list(state) == list(result.module.state_dict())
    lenet = torch.load(exported("lenet", "py", outdir).files[1], weights_only=True)
    assert list(lenet) == [f"{l}.{p}" for l in ("conv1", "conv2", "ip1", "ip2")
                           for p in ("weight", "bias")]
    case = net_case("lenet")
    caffe = dict(case.module.named_children())
    assert torch.equal(lenet["ip1.weight"], caffe["ip1"]._parameters["0"].detach())


def test_py_source_is_readable_and_standalone(outdir: Path) -> None:
    src = exported("googlenet", "py", outdir).files[0].read_text()
    assert "import netdef" not in src and "from netdef" not in src
    assert "pickle" not in src
    # layers are attributes named after Caffe's layers, with the original name in a comment
    assert "        # 'inception_3a/1x1': Convolution 1×1/1, 64\n" \
           "        self.inception_3a_1x1 = nn.Conv2d(192, 64, kernel_size=1)\n" in src
    assert "self.pool1_norm1 = LRN(5, alpha=0.0001, beta=0.75, k=1.0)" in src
    assert "self.pool1_3x3_s2 = nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)" in src
    assert "self.pool5_7x7_s1 = nn.AvgPool2d(kernel_size=7, stride=1)" in src
    assert "    def forward(self, data):\n" in src
    assert '            "prob": prob,\n' in src
    assert 'INPUTS = {"data": (1, 3, 224, 224)}' in src
    # the helper modules the net uses, and only those
    assert "class Concat(nn.Module)" in src and "class Eltwise" not in src
    lenet = exported("lenet", "py", outdir).files[0].read_text()
    assert "class " not in lenet.replace("class LeNet(nn.Module)", "")
    assert "        ip1 = self.ip1(pool2.flatten(1))\n" in lenet


def test_py_imports_in_a_fresh_interpreter_with_only_torch(outdir: Path) -> None:
    """``python -I``, sys.path = the output folder + the interpreter's own library
    folders, netdef's import blocked: import each generated module and load its .pt with
    weights_only=True; LeNet and AlexNet also run on the saved inputs (GoogLeNet's forward
    costs seconds on CPU and its numbers are checked in-process)."""
    names = list(NETS)
    run = ["lenet", "alexnet"]
    for name in names:
        result = exported(name, "py", outdir)
        torch.save({b: net_case(name).inputs[b] for b in result.generated.inputs},
                   outdir / f"{name}_inputs.pt")
    script = textwrap.dedent(f"""
        import importlib, importlib.abc, sys
        folder = {str(outdir)!r}
        own = (sys.prefix, sys.base_prefix)  # a venv's site-packages lies under sys.prefix
        sys.path[:] = [folder] + [p for p in sys.path if p.startswith(own)
                                  and "__editable__" not in p]

        class NoNetdef(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "netdef" or name.startswith("netdef."):
                    raise ImportError("netdef is blocked in this test")
                return None

        sys.meta_path.insert(0, NoNetdef())
        import torch
        torch.set_num_threads(1)
        for name in {names!r}:
            mod = importlib.import_module(name + "_export")
            assert mod.__file__.startswith(folder), mod.__file__
            net = getattr(mod, mod.__all__[0])().eval()
            net.load_state_dict(torch.load(f"{{folder}}/{{name}}_export.pt", weights_only=True))
            if name not in {run!r}:
                continue
            feeds = torch.load(f"{{folder}}/{{name}}_inputs.pt", weights_only=True)
            with torch.no_grad():
                out = net(*[feeds[b] for b in mod.INPUTS])
            assert list(out) == list(mod.OUTPUTS)
            torch.save(out, f"{{folder}}/{{name}}_fresh.pt")
        print("netdef imported:", any(m.split(".")[0] == "netdef" for m in sys.modules))
    """)
    res = subprocess.run([sys.executable, "-I", "-c", script], capture_output=True, text=True,
                         cwd=str(outdir), timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip().endswith("netdef imported: False")
    for name in run:
        out = torch.load(outdir / f"{name}_fresh.pt", weights_only=True)
        for blob, ref in net_case(name).ref.items():
            assert rel_err(out[blob].numpy(), ref) <= TOL["py"], (name, blob)


def test_onnx_uses_caffe_lrn_and_ceil_pooling(outdir: Path) -> None:
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(exported("googlenet", "onnx", outdir).files[0]))
    onnx.checker.check_model(model, full_check=True)
    nodes = {n.name: n for n in model.graph.node}
    lrn = [n for n in model.graph.node if n.op_type == "LRN"]
    assert len(lrn) == 2
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in lrn[0].attribute}
    assert attrs["size"] == 5 and attrs["beta"] == pytest.approx(0.75)
    assert attrs["alpha"] == pytest.approx(1e-4) and attrs["bias"] == pytest.approx(1.0)
    pools = [n for n in model.graph.node if n.op_type == "MaxPool"]
    ceil = {n.name: {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
            .get("ceil_mode", 0) for n in pools}
    assert ceil  # GoogLeNet's 112 -> 56 pooling needs Caffe's ceil rounding
    assert any(v == 1 for v in ceil.values()), ceil
    assert [i.name for i in model.graph.input] == ["data"]
    assert [o.name for o in model.graph.output] == ["prob"]
    assert not any(n.op_type in ("ScatterND", "AveragePool") and "norm" in n.name for n in nodes.values())


# --------------------------------------------------------------------------- CLI, real weights
def _run_written(fmt: str, path: Path, feeds: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Load a file written by the CLI without netdef's help and run it."""
    if fmt == "onnx":
        import onnxruntime as ort

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        res = sess.run(names, {i.name: feeds[i.name].numpy() for i in sess.get_inputs()})
        return dict(zip(names, res))
    with torch.no_grad():
        if fmt == "py":
            import importlib.util

            spec = importlib.util.spec_from_file_location(f"cli_{path.stem}", path)
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            net = getattr(mod, mod.__all__[0])().eval()
            net.load_state_dict(torch.load(path.with_suffix(".pt"), weights_only=True))
            out = net(*[feeds[b] for b in mod.INPUTS])
        elif fmt == "torchscript":
            out = torch.jit.load(str(path))(*feeds.values())
        else:
            with open(path, "rb") as fh:
                out = torch.export.load(fh).module()(*feeds.values())
    return {k: v.numpy() for k, v in out.items()}


@pytest.mark.parametrize("fmt", ["py", "onnx", "torchscript"])
def test_cli_lenet_caffemodel_gives_caffe_prob(fmt: str, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    from netdef.cli.main import main

    if not (LENET_WEIGHTS.is_file() and LENET_FORWARD.is_file() and LENET.is_file()):
        pytest.skip("LeNet fixtures not present")
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    out = tmp_path / f"lenet_caffe{SUFFIX[fmt]}"
    rc = main(["export", str(LENET), "--weights", str(LENET_WEIGHTS), "--format", fmt,
               "-o", str(out), "--batch", "2"])
    text = capsys.readouterr().out
    assert rc == 0
    assert f"wrote {out}" in text
    z = np.load(LENET_FORWARD)
    got = _run_written(fmt, out, {"data": torch.from_numpy(z["input/data"])})
    err = rel_err(got["prob"], z["data/prob"])
    print(f"lenet caffemodel {fmt}: {err:.2e}")
    assert err <= 3e-5


def test_cli_unsupported_type_exits_2_with_one_line(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    from netdef.cli.main import main

    net = tmp_path / "rnn.prototxt"
    net.write_text(textwrap.dedent("""
        name: "rnn"
        layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 3 dim: 2 dim: 4 } } }
        layer { name: "cont" type: "Input" top: "cont" input_param { shape { dim: 3 dim: 2 } } }
        layer { name: "lstm1" type: "LSTM" bottom: "x" bottom: "cont" top: "h"
                recurrent_param { num_output: 5 } }
    """))
    out = tmp_path / "rnn.py"
    rc = main(["export", str(net), "--format", "py", "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "LSTM" in lines[0] and "lstm1" in lines[0]
    assert sorted(tmp_path.iterdir()) == [net]  # nothing written, not even a temp file


def test_every_layer_type_has_an_emitter_or_is_refused() -> None:
    from netdef.export.pysource import EMITTERS, supported_types
    from netdef.layers import registry

    for t in sorted(registry.all_types()):
        if registry.get(t).is_data or t in ("Split", "Silence"):
            continue
        assert (t in EMITTERS) != (t in UNSUPPORTED), t
    assert {"Convolution", "Pooling", "LRN", "InnerProduct", "Concat", "BatchNorm", "Scale",
            "Deconvolution", "Crop", "Slice", "ArgMax", "Reduction"} <= set(supported_types())


# --------------------------------------------------------------------------- layer coverage
def _input(name: str, shape) -> str:  # noqa: ANN001
    dims = " ".join(f"dim: {d}" for d in shape)
    return (f'layer {{ name: "{name}" type: "Input" top: "{name}" '
            f'input_param {{ shape {{ {dims} }} }} }}\n')


G = 'weight_filler { type: "gaussian" std: 0.3 } bias_filler { type: "gaussian" std: 0.1 }'

# deploy-style layers: every format
VISION = f"""
layer {{ name: "conv1" type: "Convolution" bottom: "x" top: "c1" convolution_param {{ num_output: 6 kernel_size: 3 pad: 1 {G} }} }}
layer {{ name: "bn" type: "BatchNorm" bottom: "c1" top: "c1" }}
layer {{ name: "sc" type: "Scale" bottom: "c1" top: "c1" scale_param {{ bias_term: true }} }}
layer {{ name: "prelu" type: "PReLU" bottom: "c1" top: "c1" }}
layer {{ name: "pool_gap" type: "Pooling" bottom: "c1" top: "pm" pooling_param {{ pool: MAX kernel_size: 2 stride: 3 }} }}
layer {{ name: "pool_ave_pad" type: "Pooling" bottom: "c1" top: "pa" pooling_param {{ pool: AVE kernel_size: 3 stride: 2 pad: 1 }} }}
layer {{ name: "pool_ave_bigpad" type: "Pooling" bottom: "c1" top: "pb" pooling_param {{ pool: AVE kernel_size: 4 stride: 2 pad: 3 }} }}
layer {{ name: "pool_max_bigpad" type: "Pooling" bottom: "c1" top: "pc" pooling_param {{ pool: MAX kernel_size: 4 stride: 2 pad: 3 }} }}
layer {{ name: "pool_max_drop" type: "Pooling" bottom: "c1" top: "pd" pooling_param {{ pool: MAX kernel_size: 2 stride: 2 pad: 1 }} }}
layer {{ name: "pool_ave_drop" type: "Pooling" bottom: "c1" top: "pe" pooling_param {{ pool: AVE kernel_size: 2 stride: 2 pad: 1 }} }}
layer {{ name: "pool_floor" type: "Pooling" bottom: "c1" top: "pf" pooling_param {{ pool: MAX kernel_size: 2 stride: 2 round_mode: FLOOR }} }}
layer {{ name: "gp" type: "Pooling" bottom: "c1" top: "gp" pooling_param {{ pool: MAX global_pooling: true }} }}
layer {{ name: "lrn_w" type: "LRN" bottom: "c1" top: "lw" lrn_param {{ local_size: 3 alpha: 0.5 beta: 0.75 norm_region: WITHIN_CHANNEL }} }}
layer {{ name: "lrn_a" type: "LRN" bottom: "c1" top: "la" lrn_param {{ local_size: 3 alpha: 0.5 beta: 0.6 k: 2 }} }}
layer {{ name: "mvn" type: "MVN" bottom: "la" top: "mvn" }}
layer {{ name: "deconv" type: "Deconvolution" bottom: "lw" top: "dc" convolution_param {{ num_output: 4 kernel_size: 3 stride: 2 group: 2 {G} }} }}
layer {{ name: "crop" type: "Crop" bottom: "dc" bottom: "x" top: "crop" crop_param {{ axis: 2 offset: 1 }} }}
layer {{ name: "slice" type: "Slice" bottom: "crop" top: "s1" top: "s2" slice_param {{ axis: 1 slice_point: 1 }} }}
layer {{ name: "elt_sum" type: "Eltwise" bottom: "s1" bottom: "s1" top: "es" eltwise_param {{ coeff: 0.5 coeff: -2 }} }}
layer {{ name: "neg" type: "Power" bottom: "s2" top: "s2n" power_param {{ scale: -0.5 }} }}
layer {{ name: "elt_max" type: "Eltwise" bottom: "s2" bottom: "s2n" bottom: "s2" top: "em" eltwise_param {{ operation: MAX }} }}
layer {{ name: "elt_prod" type: "Eltwise" bottom: "es" bottom: "es" top: "ep" eltwise_param {{ operation: PROD }} }}
layer {{ name: "cat" type: "Concat" bottom: "es" bottom: "em" bottom: "ep" top: "cat" }}
layer {{ name: "sig" type: "Sigmoid" bottom: "cat" top: "sig" }}
layer {{ name: "tanh" type: "TanH" bottom: "cat" top: "tanh" }}
layer {{ name: "abs" type: "AbsVal" bottom: "tanh" top: "abs" }}
layer {{ name: "pow" type: "Power" bottom: "abs" top: "pow" power_param {{ power: 2 scale: 0.5 shift: 1 }} }}
layer {{ name: "elu" type: "ELU" bottom: "cat" top: "elu" elu_param {{ alpha: 0.5 }} }}
layer {{ name: "bnll" type: "BNLL" bottom: "cat" top: "bnll" }}
layer {{ name: "exp" type: "Exp" bottom: "tanh" top: "exp" exp_param {{ base: 2 scale: 0.5 shift: 0.1 }} }}
layer {{ name: "log" type: "Log" bottom: "pow" top: "log" log_param {{ base: 10 scale: 2 shift: 0.5 }} }}
layer {{ name: "relu_leaky" type: "ReLU" bottom: "elu" top: "lr" relu_param {{ negative_slope: 0.1 }} }}
layer {{ name: "drop" type: "Dropout" bottom: "lr" top: "lr" dropout_param {{ dropout_ratio: 0.3 }} }}
layer {{ name: "flat" type: "Flatten" bottom: "lr" top: "flat" }}
layer {{ name: "reshape" type: "Reshape" bottom: "bnll" top: "rs" reshape_param {{ shape {{ dim: 0 dim: -1 dim: 9 }} }} }}
layer {{ name: "ip_axis2" type: "InnerProduct" bottom: "rs" top: "ipa" inner_product_param {{ num_output: 5 axis: 2 {G} }} }}
layer {{ name: "ip_t" type: "InnerProduct" bottom: "flat" top: "ipt" inner_product_param {{ num_output: 7 transpose: true {G} }} }}
layer {{ name: "ip_shared" type: "InnerProduct" bottom: "flat" top: "ips" param {{ name: "W" }} inner_product_param {{ num_output: 7 bias_term: false {G} }} }}
layer {{ name: "ip_shared2" type: "InnerProduct" bottom: "flat" top: "ips2" param {{ name: "W" }} inner_product_param {{ num_output: 7 bias_term: false }} }}
layer {{ name: "softmax" type: "Softmax" bottom: "ipt" top: "sm" }}
layer {{ name: "sm_axis" type: "Softmax" bottom: "ipa" top: "sma" softmax_param {{ axis: -1 }} }}
layer {{ name: "red" type: "Reduction" bottom: "ipa" top: "red" reduction_param {{ operation: SUMSQ axis: 1 coeff: 0.5 }} }}
layer {{ name: "red_asum" type: "Reduction" bottom: "log" top: "red_asum" reduction_param {{ operation: ASUM axis: 2 }} }}
layer {{ name: "argmax" type: "ArgMax" bottom: "ips" top: "am" argmax_param {{ top_k: 2 out_max_val: true }} }}
layer {{ name: "argmax_ax" type: "ArgMax" bottom: "ipa" top: "amx" argmax_param {{ top_k: 2 axis: 2 }} }}
layer {{ name: "sum2" type: "Eltwise" bottom: "ips" bottom: "ips2" top: "sum2" }}
layer {{ name: "mean" type: "Reduction" bottom: "log" top: "mean" reduction_param {{ operation: MEAN axis: 0 }} }}
layer {{ name: "id_exp" type: "Power" bottom: "exp" top: "id_exp" }}
"""

# the rest: losses, data-dependent and multi-input layers (py and TorchScript)
OTHERS = f"""
layer {{ name: "conv_axis" type: "Convolution" bottom: "v" top: "cv" convolution_param {{ num_output: 4 kernel_size: 3 axis: 2 {G} }} }}
layer {{ name: "conv_two" type: "Convolution" bottom: "x" bottom: "x2" top: "ct1" top: "ct2" convolution_param {{ num_output: 3 kernel_size: 1 {G} }} }}
layer {{ name: "pool_mask" type: "Pooling" bottom: "x" top: "pmx" top: "pmask" pooling_param {{ pool: MAX kernel_size: 3 stride: 2 }} }}
layer {{ name: "relu" type: "ReLU" bottom: "x2" top: "xr" }}
layer {{ name: "pool_st" type: "Pooling" bottom: "xr" top: "pst" pooling_param {{ pool: STOCHASTIC kernel_size: 3 stride: 2 }} }}
layer {{ name: "spp" type: "SPP" bottom: "x" top: "spp" spp_param {{ pyramid_height: 3 pool: MAX }} }}
layer {{ name: "spp_ave" type: "SPP" bottom: "x" top: "spp_ave" spp_param {{ pyramid_height: 2 pool: AVE }} }}
layer {{ name: "bn_g" type: "BatchNorm" bottom: "x" top: "bng" batch_norm_param {{ use_global_stats: true }} }}
layer {{ name: "bn_b" type: "BatchNorm" bottom: "x" top: "bnb" batch_norm_param {{ use_global_stats: false }} }}
layer {{ name: "bn_2d" type: "BatchNorm" bottom: "t" top: "bn2d" }}
layer {{ name: "mvn_x" type: "MVN" bottom: "x" top: "mvnx" mvn_param {{ across_channels: true normalize_variance: false }} }}
layer {{ name: "scale2" type: "Scale" bottom: "x" bottom: "sc" top: "sc2" scale_param {{ bias_term: true }} }}
layer {{ name: "scale0" type: "Scale" bottom: "x" top: "sc0" scale_param {{ num_axes: 0 }} }}
layer {{ name: "bias" type: "Bias" bottom: "x" top: "bias" bias_param {{ axis: 1 num_axes: 2 }} }}
layer {{ name: "bias2" type: "Bias" bottom: "x" bottom: "sc" top: "bias2" }}
layer {{ name: "prelu_s" type: "PReLU" bottom: "x" top: "prs" prelu_param {{ channel_shared: true }} }}
layer {{ name: "thr" type: "Threshold" bottom: "x" top: "thr" threshold_param {{ threshold: 0.2 }} }}
layer {{ name: "swish" type: "Swish" bottom: "x" top: "swish" swish_param {{ beta: 2 }} }}
layer {{ name: "swish1" type: "Swish" bottom: "x" top: "swish1" }}
layer {{ name: "clip" type: "Clip" bottom: "x" top: "clip" clip_param {{ min: -0.5 max: 0.7 }} }}
layer {{ name: "pow0" type: "Power" bottom: "x" top: "pow0" power_param {{ power: 3 scale: 0 shift: 2 }} }}
layer {{ name: "tile" type: "Tile" bottom: "x" top: "tile" tile_param {{ axis: 1 tiles: 2 }} }}
layer {{ name: "embed" type: "Embed" bottom: "idx" top: "emb" embed_param {{ input_dim: 5 num_output: 3 {G} }} }}
layer {{ name: "im2col" type: "Im2col" bottom: "x" top: "cols" convolution_param {{ kernel_size: 3 stride: 2 pad: 1 }} }}
layer {{ name: "param" type: "Parameter" top: "pblob" parameter_param {{ shape {{ dim: 2 dim: 3 }} }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "x" top: "scores" inner_product_param {{ num_output: 10 {G} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "scores" bottom: "label" top: "loss" top: "prob" }}
layer {{ name: "loss_ign" type: "SoftmaxWithLoss" bottom: "scores" bottom: "label" top: "loss_ign" loss_param {{ ignore_label: 3 normalization: FULL }} }}
layer {{ name: "acc" type: "Accuracy" bottom: "scores" bottom: "label" top: "acc" top: "acc_class" accuracy_param {{ top_k: 2 }} }}
layer {{ name: "euc" type: "EuclideanLoss" bottom: "scores" bottom: "t" top: "euc" }}
layer {{ name: "sce" type: "SigmoidCrossEntropyLoss" bottom: "scores" bottom: "t01" top: "sce" }}
layer {{ name: "hinge" type: "HingeLoss" bottom: "scores" bottom: "label" top: "hinge" hinge_loss_param {{ norm: L2 }} }}
layer {{ name: "mlog" type: "MultinomialLogisticLoss" bottom: "prob" bottom: "label" top: "mlog" }}
layer {{ name: "contr" type: "ContrastiveLoss" bottom: "scores" bottom: "t" bottom: "sim" top: "contr" contrastive_loss_param {{ margin: 2 }} }}
layer {{ name: "reindex" type: "BatchReindex" bottom: "x" bottom: "perm" top: "reindexed" }}
layer {{ name: "filter" type: "Filter" bottom: "scores" bottom: "sim" top: "kept" }}
layer {{ name: "silence" type: "Silence" bottom: "ct2" }}
"""


def _synthetic(body: str, shapes: dict, feeds: dict, seed: int):  # noqa: ANN001, ANN201
    from netdef.lowering.module import build

    text = 'name: "t"\n' + "".join(_input(n, s) for n, s in shapes.items()) + body
    analysis = analyse(None, text=text)
    module = build(analysis, generator=torch.Generator().manual_seed(seed))
    he_fill(analysis, module, seed)
    module.eval()
    with torch.no_grad():
        ref = {k: v.detach().numpy().copy() for k, v in module(**feeds).items()}
    return analysis, module, ref


def _check(got: dict, ref: dict, tol: float, what: str) -> None:
    assert set(got) == set(ref), what
    for k in ref:
        err = rel_err(got[k], ref[k])
        assert err <= tol, f"{what} {k}: {err:.3g}"


@pytest.fixture(scope="module")
def vision_net():  # noqa: ANN201
    gen = torch.Generator().manual_seed(5)
    feeds = {"x": torch.randn(2, 3, 9, 9, generator=gen)}
    return (*_synthetic(VISION, {"x": (2, 3, 9, 9)}, feeds, 3), feeds)


@pytest.mark.parametrize("fmt", ["py", "torchscript", "onnx"])
def test_vision_layers(fmt: str, vision_net, tmp_path: Path) -> None:  # noqa: ANN001
    from netdef.export import export, run_artifact

    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    analysis, module, ref, feeds = vision_net
    result = export(analysis, module, fmt, tmp_path / f"vision{SUFFIX[fmt]}")
    _check(run_artifact(result, feeds), ref, TOL[fmt], fmt)
    if fmt == "py":
        src = result.files[0].read_text()
        # Caffe's grid where torch's ceil_mode cannot express it: explicit padding
        assert "self.pool_gap = CaffeMaxPool2d(" in src
        assert "self.pool_max_bigpad = CaffeMaxPool2d(" in src
        assert "self.pool_ave_bigpad = CaffeAvgPool2d(" in src
        assert "self.pool_floor = nn.MaxPool2d(kernel_size=2, stride=2)" in src
        assert "self.ip_shared2.weight = self.ip_shared.weight" in src
        state = torch.load(result.files[1], weights_only=True)
        assert state["ip_shared.weight"].data_ptr() == state["ip_shared2.weight"].data_ptr()
        bn = dict(module.named_children())["bn"]
        assert torch.allclose(state["bn.running_var"], bn._parameters["1"].detach() / 2.0)


def test_other_layers_py_and_torchscript(tmp_path: Path) -> None:
    from netdef.export import export, run_artifact

    gen = torch.Generator().manual_seed(7)
    shapes = {"x": (4, 3, 8, 8), "x2": (4, 3, 8, 8), "v": (2, 2, 3, 6, 6), "t": (4, 10),
              "t01": (4, 10), "sc": (3,), "label": (4,), "idx": (4, 2), "sim": (4,),
              "perm": (3,)}
    feeds = {k: torch.randn(s, generator=gen) for k, s in shapes.items()}
    feeds["t01"] = (feeds["t01"] > 0).float()
    feeds["label"] = torch.tensor([1.0, 3.0, 9.0, 0.0])
    feeds["idx"] = torch.tensor([[0.0, 4.0], [2.0, 1.0], [3.0, 3.0], [1.0, 0.0]])
    feeds["sim"] = torch.tensor([1.0, 0.0, 0.0, 1.0])
    feeds["perm"] = torch.tensor([3.0, 0.0, 3.0])
    analysis, module, ref = _synthetic(OTHERS, shapes, feeds, 11)
    for fmt in ("py", "torchscript"):
        result = export(analysis, module, fmt, tmp_path / f"others{SUFFIX[fmt]}")
        _check(run_artifact(result, feeds), ref, TOL[fmt], fmt)
