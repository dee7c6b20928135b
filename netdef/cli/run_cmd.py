"""``netdef run``: one forward pass of a net on real inputs (pycaffe's ``classify.py``).

Inputs are given per blob, ``--input data=cat.png`` (repeat for more images or blobs; with
one input blob ``--input cat.png`` is enough):

* ``.npy`` arrays are fed as they are (float32).  The shape must fit the blob's: equal,
  or another batch size (the net is re-analysed with that batch), or the blob's shape
  without the batch axis (one item);
* any other file is an image, preprocessed like pycaffe's ``caffe.io.Transformer``
  (see :mod:`netdef.lowering.runtime`): resized to the blob's ``H×W``, float ``[0, 1]``
  × ``--raw-scale`` (default **255**), RGB→BGR (default **on**; ``--no-swap``), minus the
  mean (``--mean-file`` binaryproto/npy or ``--mean-value B,G,R``, in the net's channel
  order), × ``--scale``.  The batch is the number of images given for the blob.

Several ``--input`` for one blob are stacked along the batch axis.  Prints the top-5
classes of the net's first output for each item (index, probability — "score" when the
output is not a probability distribution — and the line of ``--labels`` when given).
``--save out.npz`` writes the output blobs, ``--save-all`` every blob: the final value of
each blob by name (in-place blobs once, after the last layer that wrote them) plus
``<layer>/<i>`` for the i-th top of every layer right after it ran; float32, written
atomically.  Runs under ``torch.inference_mode()``.  Without ``--weights`` the
parameters are Caffe's random fillers (a warning says so).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path


from netdef.cli.common import add_shape_args, add_state_args, parse_input_shapes
from netdef.errors import DataError, Loc, NetdefError

TOP_K = 5


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="a .net/.prototxt net (a deploy net: Input layers)")
    p.add_argument("--weights", metavar="W", help=".caffemodel (V2/V1) or .caffemodel.h5; "
                   "without it the parameters are random (Caffe's fillers)")
    p.add_argument("--input", action="append", default=[], metavar="BLOB=FILE",
                   help="an image or .npy for an input blob, e.g. data=cat.jpg "
                        "(repeatable: more images make a batch)")
    g = p.add_argument_group("image preprocessing (pycaffe's Transformer)")
    mean = g.add_mutually_exclusive_group()
    mean.add_argument("--mean-file", metavar="F",
                      help="mean to subtract: binaryproto (compute_image_mean) or .npy "
                           "(C,H,W); another H×W is averaged per channel")
    mean.add_argument("--mean-value", metavar="B,G,R",
                      help="per-channel mean in the net's channel order (one value: all)")
    g.add_argument("--raw-scale", type=float, default=255.0, metavar="R",
                   help="multiply the [0,1] image by R (default 255)")
    g.add_argument("--scale", type=float, default=None, metavar="S",
                   help="multiply by S after the mean (Caffe's input scale; default none)")
    g.add_argument("--no-swap", action="store_true",
                   help="keep RGB (default: swap to BGR, as Caffe's models expect)")
    p.add_argument("--labels", metavar="FILE", help="class names, one per line "
                   "(e.g. synset_words.txt)")
    p.add_argument("--top", type=int, default=TOP_K, metavar="K",
                   help=f"classes to print per item (default {TOP_K}; 0: none)")
    p.add_argument("--save", metavar="OUT.npz", help="write the output blobs (float32)")
    p.add_argument("--save-all", action="store_true",
                   help="with --save: every blob and every layer's tops (<layer>/<i>)")
    add_device_args(p)
    add_state_args(p, default_phase="TEST")
    add_shape_args(p)


def add_device_args(p: argparse.ArgumentParser) -> None:
    """--device/--dtype/--channels-last/--tf32 (shared with ``netdef time``)."""
    p.add_argument("--device", metavar="D", help="cpu, cuda or cuda:N (default: cuda when "
                   "available, else cpu)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                   help="float32 (default) or autocast to bfloat16/float16")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels-last memory format for the module and 4-D inputs "
                        "(default: on for convolutional nets on the CPU, where PyTorch's "
                        "NHWC kernels are faster; --no-channels-last keeps NCHW)")
    p.add_argument("--tf32", action="store_true",
                   help="allow TF32 matmuls/convolutions on CUDA (default off)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile (inductor) the net; falls back to eager with a "
                        "one-line message when the compiler is unavailable")
    p.add_argument("--no-fold", action="store_true",
                   help="keep BatchNorm/Scale layers after convolutions as they are "
                        "(default at TEST: folded into the convolution's weights)")


def fast_runner(module, args: argparse.Namespace):  # noqa: ANN001, ANN201
    """The eval-mode ``module`` as ``run``/``time`` execute it: BatchNorm/Scale folded into
    convolutions (unless ``--no-fold``) and ``torch.compile``d with ``--compile`` (weights
    frozen in: these commands only run inference)."""
    from netdef.lowering import runtime as rt
    from netdef.lowering.fold import fold_inference

    if not getattr(args, "no_fold", False):
        module, _ = fold_inference(module)
    return rt.CompiledRunner(module, freeze=True) if getattr(args, "compile", False) else module


@dataclass
class Feed:
    """What the command line gives one input blob: files, in order."""

    blob: str
    files: list[str] = field(default_factory=list)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from netdef.analysis import analyze
    from netdef.api import load_net
    from netdef.layers.registry import ShapeContext
    from netdef.lowering import runtime as rt

    if args.save_all and not args.save:
        raise NetdefError("--save-all needs --save OUT.npz")
    if args.top < 0:
        raise NetdefError("--top must be >= 0")
    device = rt.pick_device(args.device)
    dtype = rt.parse_dtype(args.dtype)
    rt.set_tf32(args.tf32)
    rt.prepare_device(device)

    loaded = load_net(args.file, phase=args.phase or "TEST", level=args.level,
                      stages=tuple(args.stage))
    for w in loaded.warnings:
        print(w, file=sys.stderr)
    user_shapes = parse_input_shapes(args.input_shape)

    def analysis_for(shapes: dict[str, tuple[int, ...]]):  # noqa: ANN202
        ctx = ShapeContext(phase=loaded.state.phase.name, input_shapes=shapes,
                           batch=args.batch, base_dir=loaded.base_dir)
        return analyze(loaded, ctx)

    base = analysis_for(user_shapes)
    data_tops = [t for info in base.layers if info.defn.is_data for t in info.tops]
    feeds = _parse_feeds(args.input, data_tops)
    missing = [t for t in data_tops if t not in feeds]
    if missing:
        raise NetdefError(f"no --input for blob '{missing[0]}' (the net's inputs: "
                          f"{', '.join(data_tops)})")

    pre = _preprocess_settings(args)
    arrays: dict[str, np.ndarray] = {}
    sources: dict[str, list[str]] = {}
    for blob, feed in feeds.items():
        arrays[blob], sources[blob] = _load_feed(feed, tuple(base.blobs[blob]), pre, args)
    shapes = {b: tuple(int(d) for d in a.shape) for b, a in arrays.items()}
    changed = {b: s for b, s in shapes.items() if s != tuple(base.blobs[b])}
    analysis = analysis_for({**user_shapes, **changed}) if changed else base

    from netdef.lowering.module import build, run_layers

    module = build(analysis)
    _load_weights(module, analysis, args.weights)
    module.to(device)
    channels_last = rt.choose_layout(module, device, args.channels_last)
    inputs = {b: rt.to_device(torch.from_numpy(a), device, channels_last=channels_last)
              for b, a in arrays.items()}

    per_layer = None
    with torch.inference_mode(), rt.autocast(device, dtype):
        if args.save_all:  # every layer's own tops: the net as written, layer by layer
            per_layer = run_layers(module, analysis, inputs)
            outputs = _final_blobs(analysis, per_layer)
        else:
            outputs = fast_runner(module, args)(**inputs)
    outputs = {k: _f32(v) for k, v in outputs.items()}
    if not analysis.outputs:
        raise NetdefError("the net has no output blob")
    first = analysis.outputs[0]
    if args.top:
        labels = _read_labels(args.labels) if args.labels else None
        src_blob = data_tops[0]
        _print_top(first, outputs[first], sources.get(src_blob, []), src_blob, labels, args.top)
    if args.save:
        if per_layer is not None:
            blobs = {k: v for k, v in outputs.items()}
            for info in analysis.layers:
                for i, v in enumerate(per_layer[info.name]):
                    blobs.setdefault(f"{info.name}/{i}", _f32(v))
            to_save = blobs
        else:
            to_save = {k: outputs[k] for k in (*analysis.outputs,
                                               *(k for k in outputs if k not in analysis.outputs))}
        _save_npz(args.save, to_save)
        print(f"saved {len(to_save)} array(s) to {args.save}", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------- inputs

def _parse_feeds(items: list[str], data_tops: list[str]) -> dict[str, Feed]:
    feeds: dict[str, Feed] = {}
    for item in items:
        blob, sep, path = item.partition("=")
        if not sep or (blob not in data_tops and Path(item).exists()):
            if len(data_tops) != 1:
                raise NetdefError(f"--input {item!r}: write BLOB=FILE (the net's inputs: "
                                  f"{', '.join(data_tops) or 'none'})")
            blob, path = data_tops[0], item
        if blob not in data_tops:
            raise NetdefError(f"--input {item!r}: unknown input blob '{blob}' (the net's "
                              f"inputs: {', '.join(data_tops) or 'none'})")
        if not path:
            raise NetdefError(f"--input {item!r}: no file after '='")
        feeds.setdefault(blob, Feed(blob)).files.append(path)
    return feeds


def _preprocess_settings(args: argparse.Namespace) -> dict:
    import numpy as np
    from netdef.lowering import runtime as rt

    mean = None
    if args.mean_file:
        mean = rt.load_mean(args.mean_file)
    elif args.mean_value:
        try:
            mean = np.asarray([float(v) for v in args.mean_value.split(",") if v.strip()],
                              np.float32)
            if not mean.size:
                raise ValueError
        except ValueError:
            raise NetdefError(f"bad --mean-value {args.mean_value!r} (write B,G,R, e.g. "
                              "104,117,123)") from None
    return {"mean": mean, "raw_scale": args.raw_scale, "swap": not args.no_swap,
            "input_scale": args.scale}


def _load_feed(feed: Feed, shape: tuple[int, ...], pre: dict, args: argparse.Namespace
               ) -> tuple[np.ndarray, list[str]]:
    """The blob's batch (float32) and a description of each item."""
    import numpy as np
    from netdef.lowering import runtime as rt

    parts: list[np.ndarray] = []
    names: list[str] = []
    settings = None
    for path in feed.files:
        if path.lower().endswith(".npy"):
            arr = _fit_array(rt.read_array(path), shape, feed.blob, path)
            parts.append(arr)
            names.extend([path] if len(arr) == 1 else [f"{path}[{i}]" for i in range(len(arr))])
            continue
        if len(shape) != 4 or shape[1] not in (1, 3):
            raise DataError(f"input '{feed.blob}' has shape {shape}: images need an N×C×H×W "
                            "blob with 1 or 3 channels (give a .npy)", loc=Loc(path))
        if settings is None:
            mean, note = (rt.fit_mean(pre["mean"], shape[1:], where=args.mean_file)
                          if pre["mean"] is not None else (None, None))
            if note:
                print(f"note: {note}", file=sys.stderr)
            settings = rt.Preprocess(raw_scale=pre["raw_scale"], swap=pre["swap"], mean=mean,
                                     input_scale=pre["input_scale"])
        image = rt.load_image(path, color=shape[1] == 3)
        parts.append(rt.preprocess(image, shape[1:], settings)[None])
        names.append(path)
    data = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
    return np.ascontiguousarray(data, dtype=np.float32), names


def _fit_array(arr: np.ndarray, shape: tuple[int, ...], blob: str, path: str) -> np.ndarray:
    import numpy as np
    if arr.dtype.kind not in "biuf":
        raise DataError(f"array of dtype {arr.dtype}: need numbers", loc=Loc(path))
    arr = arr.astype(np.float32, copy=False)
    if tuple(arr.shape) == shape:
        return arr
    if shape and arr.ndim == len(shape) and tuple(arr.shape[1:]) == shape[1:] and len(arr):
        return arr
    if shape and arr.ndim == len(shape) - 1 and tuple(arr.shape) == shape[1:]:
        return arr[None]
    want = "×".join(str(d) for d in shape[1:])
    raise DataError(f"input '{blob}': array shape {tuple(arr.shape)} does not fit the blob "
                    f"{tuple(shape)} (need N×{want})", loc=Loc(path))


# --------------------------------------------------------------------------- running

def _load_weights(module, analysis, path: str | None) -> None:  # noqa: ANN001
    if not path:
        print("warning: no --weights: the parameters are random (Caffe's fillers)",
              file=sys.stderr)
        return
    from netdef.lowering.weights import load_file

    report = load_file(module, path, net_layers=[info.name for info in analysis.layers])
    if report.missing:
        print(f"warning: {path}: no weights for layer(s) {', '.join(report.missing)} "
              "(random fillers)", file=sys.stderr)
    if not report.loaded and any(True for _ in module.parameters()):
        print(f"warning: {path}: no layer of the file matches the net by name",
              file=sys.stderr)


def _final_blobs(analysis, per_layer):  # noqa: ANN001, ANN202
    """Blob name → value after the last layer that wrote it (Caffe's ``net.blobs``)."""
    blobs = {}
    for info in analysis.layers:
        for t, v in zip(info.tops, per_layer[info.name]):
            blobs[t] = v
    return blobs


def _f32(t) -> np.ndarray:  # noqa: ANN001
    import torch

    return t.detach().to("cpu", torch.float32).contiguous().numpy()


# --------------------------------------------------------------------------- outputs

def _read_labels(path: str) -> list[str]:
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise DataError(f"cannot read labels: {e.strerror}", loc=Loc(path)) from None
    return [line.rstrip("\r\n") for line in text.splitlines()]


def _print_top(blob: str, value: np.ndarray, items: list[str], src_blob: str,
               labels: list[str] | None, k: int) -> None:
    """Top-k classes of each batch item (axis 0; the rest flattened)."""
    import numpy as np
    out = sys.stdout
    if value.ndim < 2:
        out.write(f"{blob}: {np.array2string(value, precision=6)}\n")
        return
    flat = value.reshape(value.shape[0], -1)
    is_prob = bool(np.all(flat >= 0) and np.all(flat <= 1)
                   and np.allclose(flat.sum(axis=1), 1.0, atol=1e-3))
    head = "probability" if is_prob else "score"
    k = min(k, flat.shape[1])
    for n, row in enumerate(flat):
        src = f" ({src_blob}: {items[n]})" if n < len(items) else ""
        out.write(f"{blob}[{n}]{src}: top-{k}\n")
        out.write(f"  {'rank':>4}  {'class':>5}  {head:>11}  label\n")
        order = np.argsort(-row, kind="stable")[:k]
        for rank, c in enumerate(order, 1):
            label = labels[c] if labels is not None and c < len(labels) else ""
            out.write(f"  {rank:>4}  {int(c):>5}  {float(row[c]):>11.6f}  {label}".rstrip()
                      + "\n")


def _save_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez`` layout (``<key>.npy`` members, stored), written atomically; keys may
    hold ``/`` (read back by ``np.load`` under the same name)."""
    import zipfile

    import numpy as np

    from netdef.io.atomic import atomic_open

    try:
        with atomic_open(path) as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED,
                                                      allowZip64=True) as zf:
            for key, value in arrays.items():
                with zf.open(key + ".npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(
                        member, np.ascontiguousarray(value, dtype=np.float32),
                        allow_pickle=False)
    except OSError as e:
        raise DataError(f"cannot write: {e.strerror or e}", loc=Loc(path)) from None
