"""Export a lowered net: standalone PyTorch source, TorchScript, ``torch.export``, ONNX.

One path for every format: the analysed net is printed as plain-torch source
(:mod:`netdef.export.pysource`), that source is instantiated with the net's weights,
and the archives are made from that module (:mod:`netdef.export.archives`,
:mod:`netdef.export.onnx`).  So every artifact needs only torch (or an ONNX runtime),
carries the generated module's parameter names (``conv1.weight``), and computes what
netdef's own lowered net computes, in inference (``eval()``) mode, for the analysed
input shapes.

========== ============================== =============================================
format     files                          load with
========== ============================== =============================================
py         ``OUT.py`` + ``OUT.pt``        ``from OUT import Net``; ``torch.load(OUT.pt,
                                          weights_only=True)`` → ``load_state_dict``
torchscript ``OUT``                       ``torch.jit.load(OUT)``
export     ``OUT`` (``.pt2``)             ``torch.export.load(OUT).module()``
onnx       ``OUT`` (``.onnx``)            onnxruntime, or any ONNX runtime
========== ============================== =============================================

``forward`` takes the Caffe input blobs positionally (the generated ``INPUTS`` order)
and returns a dict of the outputs by Caffe blob name (ONNX: outputs named so).  Every
file is written atomically.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from netdef.errors import NetdefError

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

    from netdef.analysis.net import NetAnalysis
    from netdef.export.pysource import GeneratedSource

__all__ = ["FORMATS", "Exported", "export", "py_paths", "run_artifact"]

FORMATS = ("py", "torchscript", "export", "onnx")


@dataclass
class Exported:
    """What :func:`export` wrote."""

    format: str
    files: list[Path]
    generated: "GeneratedSource"
    module: "nn.Module"  # the generated module, instantiated with the weights (eval mode)
    inputs: tuple  # the example inputs archives were traced with (empty for py)


def py_paths(out: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``(source, weights)`` for ``--format py -o OUT``: ``x.py`` → ``x.py`` + ``x.pt``;
    an OUT without ``.py`` gets it appended."""
    path = Path(out)
    if path.suffix != ".py":
        path = path.with_name(path.name + ".py")
    return path, path.with_suffix(".pt")


def export(analysis: "NetAnalysis", module: Any, fmt: str, out: str | os.PathLike[str], *,
           opset: int | None = None, source_label: str | None = None,
           class_name: str | None = None) -> Exported:
    """Export ``module`` (netdef's lowered net built from ``analysis``, weights loaded).

    Unsupported layer types raise :class:`NetdefError` (naming the type) before any
    file is written."""
    from netdef.export import pysource

    if fmt not in FORMATS:
        raise NetdefError(f"unknown export format '{fmt}'", hint=", ".join(FORMATS))
    if opset is not None and fmt != "onnx":
        raise NetdefError("--opset is only for --format onnx")
    pysource.check_supported(analysis)
    folder = Path(out).parent
    if not folder.is_dir():
        raise NetdefError(f"cannot write {out}: the folder {folder} does not exist")
    if fmt == "py":
        src, pt = py_paths(out)
        gen = pysource.generate(analysis, module, class_name=class_name, source_label=source_label,
                                weights_name=pt.name, module_name=src.stem)
        net = pysource.instantiate(gen, src.stem)
        _save_state(net, pt)
        from netdef.io.atomic import atomic_write

        atomic_write(src, gen.source.encode("utf-8"))
        return Exported(fmt, [src, pt], gen, net, ())

    from netdef.export import archives

    path = Path(out)
    gen = pysource.generate(analysis, module, class_name=class_name, source_label=source_label,
                            module_name=path.stem)
    net = pysource.instantiate(gen, _module_name(path.stem))
    inputs = archives.example_inputs(list(gen.input_shapes.values()))
    if fmt == "torchscript":
        archives.save_torchscript(net, inputs, path)
    elif fmt == "export":
        archives.save_program(net, inputs, path)
    else:
        from netdef.export import onnx as onnx_export

        onnx_export.export_onnx(net, gen, inputs, path,
                                opset=onnx_export.DEFAULT_OPSET if opset is None else opset)
    return Exported(fmt, [path], gen, net, inputs)


def _module_name(stem: str) -> str:
    ident = "".join(ch if ch.isalnum() and ch.isascii() or ch == "_" else "_" for ch in stem)
    return "netdef_export_" + (ident or "net")


def _save_state(net: "nn.Module", path: Path) -> None:
    """The generated module's state_dict as a plain dict of tensors (``weights_only``)."""
    import torch

    from netdef.io.atomic import atomic_open

    state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    with atomic_open(path) as fh:
        torch.save(state, fh)


def run_artifact(exported: Exported, inputs: dict[str, Any]) -> dict[str, Any]:
    """Run what :func:`export` wrote on ``inputs`` (Caffe blob → tensor): the py file in a
    fresh namespace with its .pt, the archives loaded back, ONNX with onnxruntime's CPU
    provider.  Returns ``{output blob: numpy array}`` (for ``--verify`` and tests)."""
    import numpy as np
    import torch

    gen = exported.generated
    args = [torch.as_tensor(inputs[b]) for b in gen.inputs]
    path = exported.files[0]
    if exported.format == "onnx":
        try:
            import onnxruntime as ort
        except ImportError:
            raise NetdefError("checking an ONNX export needs onnxruntime",
                              hint="pip install 'netdef[export]'") from None
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        res = sess.run(list(gen.outputs), {b: a.numpy() for b, a in zip(gen.inputs, args)})
        return dict(zip(gen.outputs, res))
    with torch.no_grad():
        if exported.format == "py":
            from netdef.export.pysource import GeneratedSource, instantiate

            source = path.read_text(encoding="utf-8")
            state = torch.load(exported.files[1], weights_only=True)
            fresh = GeneratedSource(source, gen.class_name, state, gen.inputs, gen.input_shapes,
                                    gen.outputs, gen.attributes, gen.layer_bottom_shapes)
            out = instantiate(fresh, _module_name(path.stem) + "_check")(*args)
        elif exported.format == "torchscript":
            out = torch.jit.load(str(path))(*args)
        else:
            with open(path, "rb") as fh:  # a file object: any name, not only *.pt2
                out = torch.export.load(fh).module()(*args)
    return {k: np.asarray(v.detach().numpy()) for k, v in out.items()}
