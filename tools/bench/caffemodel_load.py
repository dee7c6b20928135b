"""Benchmark: how fast does ``read_weights`` load a VGG-16-sized (~553 MB) caffemodel?

Writes a V2 caffemodel with VGG-16's parameter shapes (138,357,544 random float32 values)
with netdef's own writer into a temp dir, then times ``read_weights`` (one warm-up, median
of 5; the file is in the page cache, so this measures decoding, not the disk).  For
contrast it times Google's protobuf (installed backend, usually ``upb``) once on the same
file: parse + converting the repeated float fields to numpy.

    python tools/bench/caffemodel_load.py [--repeat 5] [--no-google]

Result JSON: tools/bench/results/caffemodel_load.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from netdef.io import read_weights, write_caffemodel  # noqa: E402
from netdef.ir.messages import (ConvolutionParameter, InnerProductParameter,  # noqa: E402
                                LayerParameter, NetParameter, Phase)
from netdef.ir.schema import make  # noqa: E402

RESULT = Path(__file__).resolve().parent / "results" / "caffemodel_load.json"
# (name, C_out, C_in) per conv; VGG-16 "D"
CONVS = [("conv1_1", 64, 3), ("conv1_2", 64, 64), ("conv2_1", 128, 64), ("conv2_2", 128, 128),
         ("conv3_1", 256, 128), ("conv3_2", 256, 256), ("conv3_3", 256, 256),
         ("conv4_1", 512, 256), ("conv4_2", 512, 512), ("conv4_3", 512, 512),
         ("conv5_1", 512, 512), ("conv5_2", 512, 512), ("conv5_3", 512, 512)]
FCS = [("fc6", 4096, 25088), ("fc7", 4096, 4096), ("fc8", 1000, 4096)]


def vgg16() -> tuple[NetParameter, dict[str, list[np.ndarray]]]:
    """VGG-16's layers (conv/fc + ReLU) and random weights with its shapes."""
    rng = np.random.default_rng(0)
    layers, weights, bottom = [], {}, "data"
    for name, cout, cin in CONVS:
        conv = make(ConvolutionParameter, num_output=cout, pad=(1,), kernel_size=(3,))
        layers.append(make(LayerParameter, name=name, type="Convolution", bottom=(bottom,),
                           top=(name,), phase=Phase.TEST, convolution_param=conv))
        weights[name] = [rng.standard_normal((cout, cin, 3, 3), np.float32),
                         rng.standard_normal((cout,), np.float32)]
        bottom = name
    for name, nout, nin in FCS:
        ip = make(InnerProductParameter, num_output=nout)
        layers.append(make(LayerParameter, name=name, type="InnerProduct", bottom=(bottom,),
                           top=(name,), phase=Phase.TEST, inner_product_param=ip))
        weights[name] = [rng.standard_normal((nout, nin), np.float32),
                         rng.standard_normal((nout,), np.float32)]
        bottom = name
    return make(NetParameter, name="VGG_ILSVRC_16_layers", layer=layers), weights


def timed(fn, repeat: int) -> tuple[list[float], object]:
    result = fn()  # warm-up
    times = []
    for _ in range(repeat):
        del result
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return times, result


def google_time(path: str) -> dict:
    """Google protobuf (whatever backend is installed) on the same file: parse + to numpy."""
    from google.protobuf.internal import api_implementation
    from netdef.io.descriptor import message_class
    cls = message_class("NetParameter")
    raw = Path(path).read_bytes()
    t = time.perf_counter()
    msg = cls.FromString(raw)
    t_parse = time.perf_counter() - t
    t = time.perf_counter()
    arrays = [np.array(b.data, dtype=np.float32) for l in msg.layer for b in l.blobs]
    t_conv = time.perf_counter() - t
    del arrays, msg
    return {"backend": api_implementation.Type(), "parse_s": t_parse, "to_numpy_s": t_conv,
            "GB_per_s": len(raw) / (t_parse + t_conv) / 1e9}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-google", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULT)
    args = ap.parse_args()

    net, weights = vgg16()
    n_params = sum(a.size for v in weights.values() for a in v)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "vgg16.caffemodel")
        t = time.perf_counter()
        write_caffemodel(path, net, weights)
        t_write = time.perf_counter() - t
        size = os.path.getsize(path)
        times, got = timed(lambda: read_weights(path), args.repeat)
        assert all(np.array_equal(got[k][i], a)
                   for k, v in weights.items() for i, a in enumerate(v))
        del got
        google = None if args.no_google else google_time(path)
    med = statistics.median(times)
    result = {
        "benchmark": "read_weights on a VGG-16-shaped V2 caffemodel (page cache warm)",
        "file_bytes": size, "params": int(n_params), "repeat": args.repeat,
        "times_s": times, "median_s": med, "GB_per_s": size / med / 1e9,
        "write_s": t_write, "write_GB_per_s": size / t_write / 1e9,
        "cpu_count": os.cpu_count(), "python": platform.python_version(),
        "numpy": np.__version__, "machine": platform.machine(),
    }
    if google is not None:
        result["google_protobuf_same_file"] = google
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"read_weights: {size / 1e6:.0f} MB in {med:.3f} s (median of {args.repeat}) "
          f"= {size / med / 1e9:.2f} GB/s; write {size / t_write / 1e9:.2f} GB/s")
    if google is not None:
        print(f"google.protobuf ({google['backend']}), one run: parse {google['parse_s']:.3f} s"
              f" + to numpy {google['to_numpy_s']:.3f} s = {google['GB_per_s']:.2f} GB/s")


if __name__ == "__main__":
    main()
