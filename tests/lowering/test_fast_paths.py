"""The performance paths of the lowering compute what the plain paths compute.

* InnerProduct's oneDNN GEMMs (forward and the written-out backward) vs a float64 numpy
  reference, and ``F.linear`` where the fast path does not apply;
* Caffe's in-place ReLU really writing into its bottom where that is safe, and not where
  another reader could see it (net inputs, Split aliases, tops a backward reads);
* Dropout through ``F.dropout`` keeps Caffe's scaling;
* ``CompiledRunner`` falls back to eager, with one line, when inductor has no compiler;
* ``prepare_host`` reports what it did.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from caffe_fixtures import net_of
from netdef.layers.families.common import ONEDNN_GEMM_MIN_WEIGHT, onednn_gemm
from netdef.lowering.ops.gemm import linear, onednn_linear_available

RNG = np.random.default_rng(7)


def randn(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("rows,k,n,bias", [(10, 300, 500, True), (1, 300, 500, False),
                                           (64, 50, 700, True), (3, 64, 7, False)])
def test_linear_matches_numpy_forward_and_backward(rows, k, n, bias):
    """Both paths: oneDNN (10 and 64 rows, weights of >= ONEDNN_GEMM_MIN_WEIGHT elements)
    and F.linear (one row of a 500×300 weight, a 7×64 weight)."""
    assert onednn_gemm(rows, n * k) == (rows in (10, 64))
    x, w, b, g = randn(rows, k), randn(n, k), randn(n), randn(rows, n)
    xt = torch.from_numpy(x).requires_grad_()
    wt = torch.from_numpy(w).requires_grad_()
    bt = torch.from_numpy(b).requires_grad_() if bias else None
    y = linear(xt, wt, bt)
    assert y.shape == (rows, n) and y.is_contiguous()
    ref = x.astype(np.float64) @ w.T.astype(np.float64) + (b if bias else 0)
    np.testing.assert_allclose(y.detach().numpy(), ref, rtol=0, atol=1e-5 * np.abs(ref).max())
    y.backward(torch.from_numpy(g))
    g64 = g.astype(np.float64)
    np.testing.assert_allclose(xt.grad.numpy(), g64 @ w, rtol=0, atol=1e-5 * np.abs(g64 @ w).max())
    np.testing.assert_allclose(wt.grad.numpy(), g64.T @ x, rtol=0,
                               atol=1e-5 * np.abs(g64.T @ x).max())
    if bias:
        np.testing.assert_allclose(bt.grad.numpy(), g64.sum(0), rtol=0, atol=1e-5 * rows)
    with torch.inference_mode():  # the no-grad call takes the same GEMM
        np.testing.assert_allclose(linear(xt, wt, bt).numpy(), ref, rtol=0,
                                   atol=1e-5 * np.abs(ref).max())


def test_linear_takes_onednn_for_big_float32_weights_only(monkeypatch):
    """The path choice, observed: oneDNN's op is called for a 500×300 float32 weight, not
    for a tiny one, not under autocast or for float64 (F.linear's casting rules apply)."""
    assert onednn_linear_available()  # the CPU wheel this project pins ships oneDNN
    calls = []
    import netdef.lowering.ops.gemm as gemm

    real = gemm.mm_t
    monkeypatch.setattr(gemm, "mm_t", lambda a, b, bias=None: calls.append(a.shape) or
                        real(a, b, bias))
    x, w = torch.from_numpy(randn(10, 300)), torch.from_numpy(randn(500, 300))
    assert w.numel() >= ONEDNN_GEMM_MIN_WEIGHT
    # one row: only weights as large as AlexNet's fc8 (4,096,000 elements) and up
    assert onednn_gemm(1, 1000 * 4096) and not onednn_gemm(1, 500 * 800)
    linear(x, w)
    assert calls == [(10, 300)]
    linear(x[:, :64], w[:7, :64])
    with torch.autocast("cpu", torch.bfloat16):
        assert linear(x, w).dtype == torch.bfloat16
    assert linear(x.double(), w.double()).dtype == torch.float64
    assert calls == [(10, 300)]


def test_inner_product_layer_uses_the_fast_path_and_keeps_caffe_shape():
    body = ('layer { name: "fc" type: "InnerProduct" bottom: "x" top: "y" '
            'inner_product_param { num_output: 40 weight_filler { type: "gaussian" std: 1 } '
            'bias_filler { type: "gaussian" std: 1 } } }\n')
    _, module = net_of(body, {"x": (6, 64, 4, 5)})  # a 40×1280 weight: oneDNN's GEMM
    x = randn(6, 64, 4, 5)
    y = module(x=torch.from_numpy(x))["y"]
    assert y.shape == (6, 40) and y.is_contiguous()
    w, b = (t.detach().numpy().astype(np.float64) for t in (module.fc.blob(0), module.fc.blob(1)))
    ref = x.reshape(6, -1) @ w.T + b
    np.testing.assert_allclose(y.detach().numpy(), ref, rtol=0, atol=1e-5 * np.abs(ref).max())


CONV_RELU = ('layer { name: "conv" type: "Convolution" bottom: "x" top: "c" '
             'convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "gaussian" '
             'std: 1 } } }\n'
             'layer { name: "relu" type: "ReLU" bottom: "c" top: "c" }\n')


def test_in_place_relu_writes_into_the_conv_output_and_keeps_gradients():
    from netdef.lowering.module import build

    analysis, module = net_of(CONV_RELU, {"x": (2, 3, 6, 6)}, phase="TRAIN")
    assert type(module.relu).__name__ == "LoweredInplaceReLU"
    ref = build(analysis, fill=False, overwrite=False)  # the same net, every blob kept
    ref.load_state_dict(module.state_dict())
    assert type(ref.relu).__name__ == "LoweredNeuron"
    x = torch.from_numpy(randn(2, 3, 6, 6))
    seen = {}
    module.conv.register_forward_hook(lambda m, i, o: seen.setdefault("conv", o))
    y = module(x=x)["c"]
    assert y.data_ptr() == seen["conv"].data_ptr()  # the same storage: no new blob
    y2 = ref(x=x)["c"]
    assert torch.equal(y, y2)
    g = torch.from_numpy(randn(*y.shape))
    y.backward(g)
    y2.backward(g)
    assert torch.equal(module.conv.blob(0).grad, ref.conv.blob(0).grad)


@pytest.mark.parametrize("body,why", [
    ('layer { name: "relu" type: "ReLU" bottom: "x" top: "x" }\n', "a net input"),
    ('layer { name: "s" type: "Sigmoid" bottom: "x" top: "s" }\n'
     'layer { name: "relu" type: "ReLU" bottom: "s" top: "s" }\n', "Sigmoid's backward reads it"),
    ('layer { name: "conv" type: "Convolution" bottom: "x" top: "c" convolution_param { '
     'num_output: 2 kernel_size: 1 } }\n'
     'layer { name: "relu" type: "ReLU" bottom: "c" top: "c" }\n'
     'layer { name: "other" type: "Sigmoid" bottom: "c" top: "o" }\n'
     'layer { name: "relu2" type: "ReLU" bottom: "c" top: "c" }\n', "a Split alias"),
])
def test_in_place_relu_keeps_its_bottom_where_others_could_read_it(body, why):
    analysis, module = net_of(body, {"x": (2, 2, 3, 3)}, phase="TRAIN")
    last = [i for i in analysis.layers if i.type == "ReLU"][-1]
    assert type(module.get_submodule(last.name)).__name__ == "LoweredNeuron", why
    x = torch.from_numpy(randn(2, 2, 3, 3))
    before = x.clone()
    module(x=x)
    assert torch.equal(x, before)  # the caller's input is never overwritten


def test_dropout_train_keeps_caffe_scaling():
    from netdef.lowering.ops.activation import caffe_dropout

    torch.manual_seed(3)
    x = torch.from_numpy(np.abs(randn(300, 400)) + 1).requires_grad_()
    y = caffe_dropout(x, 0.25, training=True)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.75) < 0.01
    scale = np.float32(1) / np.float32(0.75)
    np.testing.assert_array_equal(y[kept].detach().numpy(), (x[kept] * scale).detach().numpy())
    y.backward(torch.ones_like(y))
    np.testing.assert_array_equal(x.grad.numpy(), kept.numpy() * scale)


def _no_compiler(gm, example_inputs):  # noqa: ANN001, ANN202 - a dynamo backend
    """A compiler backend failing as inductor does without a C++ toolchain."""
    raise OSError("no working C++ compiler (test backend)")


def test_compiled_runner_falls_back_to_eager_without_a_compiler():
    from netdef.lowering.runtime import CompiledRunner

    torch._dynamo.reset()
    lines: list[str] = []
    net = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU())
    runner = CompiledRunner(net, log=lines.append, backend=_no_compiler)
    x = torch.randn(3, 8)
    y = runner(x)
    assert torch.equal(y, net(x))
    assert not runner.active and "C++ compiler" in runner.reason
    assert len(lines) == 1 and lines[0].startswith("netdef: --compile unavailable (")
    runner(x)
    assert len(lines) == 1  # said once
    torch._dynamo.reset()


def test_compiled_runner_does_not_hide_the_nets_own_errors():
    from netdef.lowering.runtime import CompiledRunner

    runner = CompiledRunner(torch.nn.Linear(8, 4), log=lambda line: None, backend="eager")
    with pytest.raises(Exception) as info:
        runner(torch.randn(3, 5))  # a shape error of the net, not the compiler's
    assert runner.active
    assert "mat1 and mat2" in str(info.value) or "shape" in str(info.value)


def test_prepare_host_reports_glibc_tuning(monkeypatch):
    from netdef.lowering import runtime as rt

    monkeypatch.setattr(rt, "_HOST_PREPARED", {})
    monkeypatch.setenv("NETDEF_HOST_ALLOCATOR", "system")
    assert rt.prepare_host() == {"allocator": "system", "reason": "NETDEF_HOST_ALLOCATOR=system"}


def _numpy_lrn(x: np.ndarray, size: int, alpha: float, beta: float, k: float) -> np.ndarray:
    """Caffe's ACROSS_CHANNELS formula, channel by channel in float64."""
    half, c = (size - 1) // 2, x.shape[1]
    out = np.empty_like(x, dtype=np.float64)
    for i in range(c):
        window = (x[:, max(0, i - half):min(c, i + half + 1)].astype(np.float64) ** 2).sum(1)
        out[:, i] = x[:, i] * (k + alpha / size * window) ** -beta
    return out


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("channels,size", [(7, 5), (3, 5), (4, 5), (5, 3), (16, 7)])
def test_lrn_under_torch_compile_matches_the_eager_op(layout, channels, size):
    """Under inductor LRN's forward is netdef's fusible formulation (window summed from
    unpadded slices, edge channels apart — also when every channel is an edge) and its
    backward netdef's op: same values as a float64 numpy reference and the same
    gradients as eager, in both layouts, for training and for inference."""
    from netdef.lowering.ops.lrn import lrn_across_channels

    torch._dynamo.reset()
    x = torch.from_numpy(randn(2, channels, 5, 5) * 3)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    compiled = torch.compile(lambda t: lrn_across_channels(t, size, 0.3, 0.75, 2.0))
    want = _numpy_lrn(x.numpy(), size, 0.3, 0.75, 2.0)
    with torch.no_grad():
        y0 = compiled(x)
    assert np.abs(y0.numpy() - want).max() <= 1e-6 * np.abs(want).max()
    a = x.clone().requires_grad_()
    b = x.clone().requires_grad_()
    ya = compiled(a)
    yb = lrn_across_channels(b, size, 0.3, 0.75, 2.0)
    assert ya.stride() == yb.stride()
    assert np.abs(ya.detach().numpy() - want).max() <= 1e-6 * np.abs(want).max()
    g = torch.from_numpy(randn(2, channels, 5, 5))
    ya.backward(g)
    yb.backward(g)
    assert a.grad.stride() == x.stride()
    assert float((a.grad - b.grad).abs().max()) <= 1e-5 * float(b.grad.abs().max())
    torch._dynamo.reset()


SMALL_CAFFENET = (
    'layer { name: "conv" type: "Convolution" bottom: "x" top: "c" convolution_param { '
    'num_output: 16 kernel_size: 3 stride: 2 weight_filler { type: "gaussian" std: 0.1 } } }\n'
    'layer { name: "relu" type: "ReLU" bottom: "c" top: "c" }\n'
    'layer { name: "norm" type: "LRN" bottom: "c" top: "n" lrn_param { local_size: 5 '
    'alpha: 0.001 beta: 0.75 } }\n'
    'layer { name: "pool" type: "Pooling" bottom: "n" top: "p" pooling_param { pool: MAX '
    'kernel_size: 3 stride: 2 } }\n'
    'layer { name: "fc" type: "InnerProduct" bottom: "p" top: "f" inner_product_param { '
    'num_output: 64 weight_filler { type: "gaussian" std: 0.05 } } }\n'
    'layer { name: "prob" type: "Softmax" bottom: "f" top: "prob" }\n')


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_compiled_net_keeps_netdefs_ops_and_matches_eager(layout):
    """Under torch.compile the GEMM and max pool reach inductor as netdef's opaque ops,
    LRN's forward and ReLU as plain tensor ops for it to fuse (what makes a compiled net
    faster than the eager one); the inductor-compiled net gives eager's values and
    gradients in both layouts (the fake strides are right)."""
    from netdef.lowering import runtime as rt

    torch._dynamo.reset()
    _, module = net_of(SMALL_CAFFENET, {"x": (4, 3, 33, 33)}, phase="TRAIN")
    cpu = torch.device("cpu")
    cl = rt.choose_layout(module, cpu, layout == "channels_last")
    x = rt.to_device(torch.from_numpy(randn(4, 3, 33, 33)), cpu, channels_last=cl)
    graphs = []

    def capture(gm, example_inputs):  # noqa: ANN001, ANN202 - a dynamo backend
        graphs.append(gm.code)
        return gm.forward

    torch.compile(module, backend=capture)(x=x)
    code = "".join(graphs)
    for op in ("netdef.mm_t", "netdef.max_pool2d"):
        assert op in code, op
    assert "netdef.lrn_across" not in code
    g = torch.from_numpy(randn(4, 64))
    grads = []
    for net in (module, torch.compile(module)):
        for p in module.parameters():
            p.grad = None
        out = net(x=x)["prob"]
        (out * g[:, :64]).sum().backward()
        grads.append((out.detach(), [p.grad.clone() for p in module.parameters()]))
    (ya, ga), (yb, gb) = grads
    assert float((ya - yb).abs().max()) <= 1e-6 * float(ya.abs().max())
    for a, b in zip(ga, gb):
        assert float((a - b).abs().max()) <= 1e-5 * float(a.abs().max())
    torch._dynamo.reset()


def test_frozen_compile_for_inference_matches_eager():
    """``freeze=True`` (run, time --forward-only) turns on inductor's weight freezing; the
    frozen net (prepacked oneDNN weights, Convolution+ReLU fused) gives eager's values."""
    from netdef.lowering import runtime as rt

    torch._dynamo.reset()
    _, module = net_of(SMALL_CAFFENET, {"x": (4, 3, 33, 33)})
    module.eval()
    cpu = torch.device("cpu")
    cl = rt.choose_layout(module, cpu)
    x = rt.to_device(torch.from_numpy(randn(4, 3, 33, 33)), cpu, channels_last=cl)
    runner = rt.CompiledRunner(module, freeze=True)
    with torch.inference_mode():
        want = module(x=x)["prob"]
        runner(x=x)  # compiles
        with torch.profiler.profile() as prof:
            got = runner(x=x)["prob"]
    assert runner.active
    ops = {e.key for e in prof.key_averages()}
    # frozen: Convolution + ReLU as one oneDNN primitive on prepacked weights, and the
    # InnerProduct on netdef's oneDNN-blocked copy of its weight
    assert "mkldnn::_convolution_pointwise" in ops and "aten::mkldnn_convolution" not in ops
    assert module.fc.packed is not None and module.fc.packed.is_mkldnn
    assert "mkldnn::_linear_pointwise" in ops and "netdef::mm_t" not in ops
    with torch.inference_mode():  # eager calls keep the parameters
        with torch.profiler.profile() as prof:
            eager = module(x=x)["prob"]
    assert "netdef::mm_t" in {e.key for e in prof.key_averages()}
    assert torch.equal(eager, want)
    assert float((got - want).abs().max()) <= 1e-5 * float(want.abs().max())
    torch._dynamo.reset()


CONCAT_OF_RELUS = (
    'layer { name: "a" type: "Convolution" bottom: "x" top: "a" convolution_param { '
    'num_output: 8 kernel_size: 1 weight_filler { type: "gaussian" std: 0.3 } } }\n'
    'layer { name: "ra" type: "ReLU" bottom: "a" top: "a" }\n'
    'layer { name: "b" type: "Convolution" bottom: "x" top: "b" convolution_param { '
    'num_output: 8 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.3 } } }\n'
    'layer { name: "rb" type: "ReLU" bottom: "b" top: "b" }\n'
    'layer { name: "cat" type: "Concat" bottom: "a" bottom: "b" top: "c" }\n'
    'layer { name: "m" type: "Convolution" bottom: "c" top: "m" convolution_param { '
    'num_output: 4 kernel_size: 1 weight_filler { type: "gaussian" std: 0.3 } } }\n')


def test_compiled_training_keeps_relu_tops_not_bool_masks():
    """GoogLeNet's pattern (ReLU'd branches into a Concat): the compiled training graph
    saves float tops for ReLU's backward (netdef's opaque op), never a bool mask (which
    inductor's CPU kernels store ~20x slower than the ReLU), and matches eager."""
    from functorch.compile import make_boxed_func, min_cut_rematerialization_partition
    from torch._dynamo.backends.common import aot_autograd

    torch._dynamo.reset()
    _, module = net_of(CONCAT_OF_RELUS, {"x": (2, 3, 6, 6)}, phase="TRAIN")
    x = torch.from_numpy(randn(2, 3, 6, 6))
    seen: dict[str, list] = {"fw": [], "bw": []}

    def keep(kind):  # noqa: ANN001, ANN202
        def compiler(gm, example_inputs):  # noqa: ANN001, ANN202
            seen[kind].append(gm)
            return make_boxed_func(gm.forward)
        return compiler

    # inductor's partitioner (the one that chose the masks)
    backend = aot_autograd(fw_compiler=keep("fw"), bw_compiler=keep("bw"),
                           partition_fn=min_cut_rematerialization_partition)
    out = torch.compile(module, backend=backend)(x=x)["m"]
    g = torch.from_numpy(randn(*out.shape))
    (out * g).sum().backward()
    got = [p.grad.clone() for p in module.parameters()]
    fw, = seen["fw"]
    bw, = seen["bw"]
    saved = [n for n in fw.graph.nodes if n.op == "output"][0].args[0][1:]
    dtypes = {n.meta["val"].dtype for n in saved if hasattr(n, "meta") and "val" in n.meta}
    assert torch.bool not in dtypes
    assert sum("netdef.relu_backward" in str(n.target) for n in bw.graph.nodes) == 2
    for p in module.parameters():
        p.grad = None
    (module(x=x)["m"] * g).sum().backward()
    for a, p in zip(got, module.parameters()):
        assert float((a - p.grad).abs().max()) <= 1e-5 * float(p.grad.abs().max())
    torch._dynamo.reset()
