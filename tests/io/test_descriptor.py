"""Google protobuf classes built from netdef's schema parse real Caffe files."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format

import netdef.ir.messages as M
from netdef.io import decode, encode
from netdef.io.descriptor import file_descriptor, message_class, message_classes
from netdef.ir.schema import fields_of, is_message_class, make

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
ALEXNET = SHARED / "caffe/models/bvlc_alexnet/deploy.prototxt"


def test_every_message_and_nested_enum_is_described() -> None:
    fdp = file_descriptor()
    assert fdp.package == "caffe" and fdp.syntax == "proto2"
    ours = {v.__name__ for v in vars(M).values() if is_message_class(v)}
    assert ours <= set(message_classes())
    filler = next(m for m in fdp.message_type if m.name == "FillerParameter")
    assert [e.name for e in filler.enum_type] == ["VarianceNorm"]
    assert [e.name for e in fdp.enum_type] == ["Phase"]
    blob = next(m for m in fdp.message_type if m.name == "BlobProto")
    assert {f.name: f.options.packed for f in blob.field}["data"] is True


def test_defaults_follow_the_schema() -> None:
    for name, cls in message_classes().items():
        ours = getattr(M, name)
        g = cls()
        for spec in fields_of(ours).values():
            if spec.repeated or spec.is_message:
                continue
            got = getattr(g, spec.name)
            want = int(spec.default) if spec.is_enum else spec.default
            if spec.type == "float":
                want = float(np.float32(want))
            assert got == want, (name, spec.name, got, want)


@pytest.mark.skipif(not SHARED.is_dir(), reason="the Caffe fixtures (../shared) are not beside the repo")
def test_google_text_format_parses_alexnet_deploy() -> None:
    text = ALEXNET.read_text()
    net = text_format.Parse(text, message_class("NetParameter")())
    names = re.findall(r'^\s*name:\s*"([^"]+)"', text, re.M)[1:]  # [0] is the net's name
    assert len(net.layer) == 24 == len(names)
    assert [l.name for l in net.layer] == names
    assert net.layer[0].type == "Input" and net.layer[-1].name == "prob"
    assert net.layer[1].convolution_param.num_output == 96
    # the binary forms agree: Google serializes, netdef decodes and re-encodes identically
    raw = net.SerializeToString()
    ours = decode(M.NetParameter, raw)
    assert [l.name for l in ours.layer] == names
    assert encode(ours) == raw


def test_encoder_matches_google_on_handmade_messages() -> None:
    conv = make(M.ConvolutionParameter, num_output=96, kernel_size=(11,), stride=(4,),
                weight_filler=make(M.FillerParameter, type="gaussian", std=0.01),
                engine=M.ConvolutionParameter.Engine.CAFFE)
    layer = make(M.LayerParameter, name="conv1", type="Convolution", bottom=("data",),
                 top=("conv1",), phase=M.Phase.TEST, loss_weight=(0.5, 1.0),
                 param=(make(M.ParamSpec, lr_mult=1.0),
                        make(M.ParamSpec, lr_mult=2.0, decay_mult=0.0)),
                 propagate_down=(True, False), convolution_param=conv)
    state = make(M.SolverState, iter=-3, learned_net="x.caffemodel", current_step=2,
                 history=(make(M.BlobProto, shape=make(M.BlobShape, dim=(2, 3)),
                               data=tuple(range(6))),))
    solver = make(M.SolverParameter, base_lr=0.01, stepvalue=(10, 20), random_seed=-1,
                  snapshot_format=M.SolverParameter.SnapshotFormat.HDF5, type="Adam")
    for msg in (conv, layer, state, solver):
        g = message_class(type(msg))()
        text_format.Parse(_to_text(msg), g)
        assert encode(msg) == g.SerializeToString(), type(msg).__name__


def _to_text(msg: object) -> str:
    """A tiny text-format printer (only for building the Google twin of a message)."""
    from netdef.ir.schema import present
    out = []
    for spec, value in present(msg):
        for v in (value if spec.repeated else (value,)):
            if spec.is_message:
                out.append(f"{spec.name} {{ {_to_text(v)} }}")
            elif spec.is_enum:
                out.append(f"{spec.name}: {v.name}")
            elif isinstance(v, str):
                out.append(f'{spec.name}: "{v}"')
            elif isinstance(v, bool):
                out.append(f"{spec.name}: {'true' if v else 'false'}")
            else:
                out.append(f"{spec.name}: {v!r}")
    return " ".join(out)
