"""The real-Caffe forward/backward fixtures (../shared/fixtures, README sections 2-3) as
built nets, weights and inputs for the parity tests.

Big nets store no weights: :func:`regenerate` redraws them exactly as the oracle did
(README "Regenerating weights and inputs": one ``numpy.random.RandomState(seed)``
stream over ``net.json["layers"]`` in Caffe order, Split layers included; He std
``sqrt(2*shape[0]/prod(shape))`` for blob 0 with 2+ axes, else the weight/bias std)
and :func:`check_sha256` proves them bit-identical before use.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
FIXTURES = SHARED / "fixtures"
SMALL = ("lenet", "cifar10_quick")  # nets whose npz keeps param/ arrays


def fixture_dir(kind: str, net: str) -> Path:
    d = FIXTURES / kind / net
    if not (d / "net.json").is_file() or not (d / "blobs.npz").is_file():
        pytest.skip(f"fixture {d} not present")
    return d


def meta(kind: str, net: str) -> dict:
    return json.loads((fixture_dir(kind, net) / "net.json").read_text())


@lru_cache(maxsize=4)
def blobs(kind: str, net: str) -> dict[str, np.ndarray]:
    with np.load(fixture_dir(kind, net) / "blobs.npz") as z:
        return {k: z[k] for k in z.files}


def regenerate(m: dict, *, inputs: bool = True) -> tuple[dict[str, list[np.ndarray]],
                                                         dict[str, np.ndarray]]:
    """``({layer: [param arrays]}, {input blob: array})`` drawn as the oracle drew them."""
    opt = m["options"]
    rng = np.random.RandomState(opt["seed"])
    params: dict[str, list[np.ndarray]] = {}
    for layer in m["layers"]:
        arrays = []
        for i, shape in enumerate(layer["params"]):
            shape = tuple(shape)
            if layer["type"] == "BatchNorm" and i == 1:
                v = rng.uniform(0.5, 1.5, shape)
            elif layer["type"] == "BatchNorm" and i == 2:
                v = np.ones(shape)
            else:
                std = opt["weight_std"] if i == 0 else opt["bias_std"]
                if opt["he"] and i == 0 and len(shape) >= 2:
                    std = np.sqrt(2.0 * shape[0] / int(np.prod(shape)))
                v = rng.normal(0, std, shape)
            arrays.append(v.astype(np.float32))
        if arrays:
            params[layer["name"]] = arrays
    feeds: dict[str, np.ndarray] = {}
    if inputs:
        for name in m["inputs"]:
            shape = tuple(m["blobs"][name])
            if "label" in name.lower():
                v = rng.randint(0, opt["num_classes"], shape)
            else:
                v = rng.standard_normal(shape)
            feeds[name] = v.astype(np.float32)
    return params, feeds


def check_sha256(m: dict, params: dict[str, list[np.ndarray]]) -> None:
    """Every param blob's sha256 (float32 LE C-order bytes) equals net.json's."""
    want = m["param_sha256"]
    got = {f"{layer}/{i}": hashlib.sha256(np.ascontiguousarray(a, "<f4").tobytes()).hexdigest()
           for layer, arrays in params.items() for i, a in enumerate(arrays)}
    assert got.keys() == want.keys(), sorted(set(got) ^ set(want))
    bad = [k for k in want if got[k] != want[k]]
    assert not bad, f"regenerated params differ from the oracle's: {bad[:5]}"


def stored_params(z: dict[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
    """``param/<layer>/<i>`` arrays of a small net's npz, by layer."""
    out: dict[str, dict[int, np.ndarray]] = {}
    for k, v in z.items():
        if k.startswith("param/"):
            layer, i = k[len("param/"):].rsplit("/", 1)
            out.setdefault(layer, {})[int(i)] = v
    return {layer: [d[i] for i in sorted(d)] for layer, d in out.items()}


def tops_of(z: dict[str, np.ndarray]) -> dict[tuple[str, int], np.ndarray]:
    """``top/<layer>/<i>`` by (layer, i); layer names may contain '/'."""
    out = {}
    for k, v in z.items():
        if k.startswith("top/"):
            layer, i = k[len("top/"):].rsplit("/", 1)
            out[(layer, int(i))] = v
    return out


@dataclass
class FixtureNet:
    meta: dict
    analysis: object
    module: object
    z: dict[str, np.ndarray]
    inputs: dict[str, torch.Tensor]


def build_fixture(kind: str, net: str, *, overwrite: bool = True,
                  channels_last: bool = False) -> FixtureNet:
    """The fixture's net built in phase TEST at the fixture's batch, with its weights
    (``overwrite=False``: in-place layers keep their bottom, see ``build``;
    ``channels_last``: module and 4-D inputs in NHWC layout, netdef's CPU default)."""
    from netdef.analysis.net import analyze
    from netdef.api import load_net
    from netdef.layers.registry import ShapeContext
    from netdef.lowering.module import build
    from netdef.lowering.runtime import choose_layout, to_device
    from netdef.lowering.weights import load

    m = meta(kind, net)
    z = blobs(kind, net)
    proto = SHARED / m["prototxt_shared"]
    if not proto.is_file():
        pytest.skip(f"{proto} not present")
    batch = m["blobs"][m["inputs"][0]][0]
    analysis = analyze(load_net(proto, phase="TEST"), ShapeContext(phase="TEST", batch=batch))
    module = build(analysis, fill=False, overwrite=overwrite)
    if net in SMALL:
        params = stored_params(z)
    else:
        params, _ = regenerate(m, inputs=False)
        check_sha256(m, params)
    load(module, params)
    cpu = torch.device("cpu")
    used = choose_layout(module, cpu, channels_last)
    inputs = {name: to_device(torch.from_numpy(z[f"input/{name}"]), cpu, channels_last=used)
              for name in m["inputs"]}
    return FixtureNet(m, analysis, module, z, inputs)


def rel_err(x: np.ndarray, ref: np.ndarray) -> float:
    """max|x - ref| / max|ref| (the README's metric)."""
    scale = float(np.abs(ref).max()) or 1.0
    return float(np.abs(x.astype(np.float64) - ref).max()) / scale


def assert_close(x, ref: np.ndarray, tol: float, what: str = "") -> float:  # noqa: ANN001
    x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    assert x.shape == ref.shape, f"{what}: shape {x.shape} != {ref.shape}"
    np.testing.assert_allclose(x, ref, rtol=0, atol=tol * np.abs(ref).max(), err_msg=what)
    return rel_err(x, ref)


# --------------------------------------------------------------------------- small test nets
def input_layer(name: str, shape) -> str:  # noqa: ANN001
    dims = " ".join(f"dim: {d}" for d in shape)
    return (f'layer {{ name: "{name}" type: "Input" top: "{name}" '
            f'input_param {{ shape {{ {dims} }} }} }}\n')


def net_of(body: str, shapes: dict, *, phase: str = "TEST", fill: bool = True,
           seed: int = 0):  # noqa: ANN201
    """``(analysis, module)`` of a net: Input layers for ``shapes`` (blob → shape) + ``body``."""
    from netdef.analysis.net import analyze
    from netdef.api import load_net
    from netdef.layers.registry import ShapeContext
    from netdef.lowering.module import build

    text = 'name: "t"\n' + "".join(input_layer(n, s) for n, s in shapes.items()) + body
    analysis = analyze(load_net(text=text, phase=phase), ShapeContext(phase=phase))
    gen = torch.Generator().manual_seed(seed)
    return analysis, build(analysis, fill=fill, generator=gen)


def run_net(body: str, feeds: dict, *, phase: str = "TEST", grad: bool = False):  # noqa: ANN201
    """Build a net for ``feeds`` (blob → numpy array) and run it:
    ``(module, outputs, input tensors)`` (inputs require grad when ``grad``)."""
    _, module = net_of(body, {k: v.shape for k, v in feeds.items()}, phase=phase)
    inputs = {k: torch.from_numpy(np.ascontiguousarray(v)).requires_grad_(grad)
              for k, v in feeds.items()}
    return module, module(**inputs), inputs
