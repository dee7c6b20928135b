"""netdef's legacy upgrade must make exactly the messages Caffe's upgrade makes.

Oracles: the fixtures made with BVLC Caffe's ``upgrade_net_proto_text`` /
``upgrade_solver_proto_text`` (shared/fixtures/upgrade) and their glog logs, legacy
files written by hand for netdef (tests/data/legacy, expected forms derived from
Caffe's rules), and the real BVLC prototxt files (shared/caffe).  Messages are compared
field by field, presence included; a failure names the path of the first difference.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from netdef.errors import UpgradeError
from netdef.ir.build import BuildContext, build_message
from netdef.ir.messages import NetParameter, SolverParameter
from netdef.ir.schema import fields_of, has, is_message_class, loc_of, update
from netdef.ir.upgrade import (net_needs_upgrade, solver_needs_upgrade, upgrade_net,
                               upgrade_solver)
from netdef.ir.upgrade.solver import SOLVER_TYPES
from netdef.layers import registry
from netdef.syntax import parse_text, read_source

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
FIXTURES = SHARED / "fixtures" / "upgrade"
LEGACY = ROOT / "tests" / "data" / "legacy"
GLOG_PREFIX = re.compile(r"^[IWEF]\d{8} \d\d:\d\d:\d\d\.\d{6} +\d+ (\S+):\d+\] ")


# --------------------------------------------------------------------------- helpers

def needs_shared() -> None:
    if not SHARED.is_dir():
        pytest.skip("shared/ (Caffe fixtures and BVLC files) is not available")


def needs_registry() -> None:
    """V1 type names come from the layer registry; skip only while it is still empty.

    A registry with some types but a missing ``v1_type`` fails the tests instead.
    """
    try:
        types = registry.all_types()
    except ModuleNotFoundError:
        types = {}
    if not types:
        pytest.skip("the layer registry has no layer types yet (netdef.layers.families)")


def parse(cls: type, text: str, file: str) -> Any:
    return build_message(cls, parse_text(text, file), BuildContext(file))


def load(cls: type, path: Path) -> Any:
    return parse(cls, read_source(path), path.name)


def first_difference(a: Any, b: Any, path: str = "") -> str | None:
    """The path and values of the first difference between two IR values, or None."""
    where = path or "<root>"
    if type(a) is not type(b):
        return f"{where}: {type(a).__name__} {a!r} != {type(b).__name__} {b!r}"
    if is_message_class(type(a)):
        for name, spec in fields_of(a).items():
            sub = f"{path}.{name}" if path else name
            if not spec.repeated and has(a, name) != has(b, name):
                state = lambda m: (f"set to {getattr(m, name)!r}" if has(m, name)  # noqa: E731
                                   else "unset")
                return f"{sub}: {state(a)} vs {state(b)}"
            diff = first_difference(getattr(a, name), getattr(b, name), sub)
            if diff:
                return diff
        return None
    if isinstance(a, tuple):
        for i, (x, y) in enumerate(zip(a, b)):
            diff = first_difference(x, y, f"{path}[{i}]")
            if diff:
                return diff
        if len(a) != len(b):
            return f"{where}: {len(a)} elements vs {len(b)}"
        return None
    return None if a == b else f"{where}: {a!r} != {b!r}"


def assert_same(actual: Any, expected: Any) -> None:
    """Equality of whole messages; on failure, the first differing field by path."""
    diff = first_difference(actual, expected)
    assert diff is None, f"upgraded (left) differs from expected (right) at {diff}"
    assert actual == expected  # the dataclasses agree with the differ


def assert_upgrade_is_settled(upgraded: NetParameter) -> None:
    """A second upgrade changes nothing.

    Caffe's BatchNorm check looks only at the number of param specs, so a net with a
    three-spec BatchNorm "needs upgrade" (and logs it) on every load, even upgraded.
    """
    again: list[str] = []
    assert_same(upgrade_net(upgraded, log=again), upgraded)
    old_bn = any(layer.type == "BatchNorm" and len(layer.param) == 3 for layer in upgraded.layer)
    assert net_needs_upgrade(upgraded) == old_bn
    assert len(again) == (2 if old_bn else 0)


def caffe_log_lines(path: Path, source: str = "upgrade_proto.cpp") -> list[str]:
    """Lines Caffe's ``source`` logged, glog prefix removed."""
    out = []
    for line in path.read_text().splitlines():
        m = GLOG_PREFIX.match(line)
        if m and m.group(1) == source:
            out.append(line[m.end():])
    return out


# --------------------------------------------------------------------------- the differ

def test_differ_names_the_path_of_the_first_difference() -> None:
    net = parse(NetParameter, 'layer { name: "a" param { lr_mult: 1 } }', "x")
    other = update(net, layer=[update(net.layer[0],
                                      param=[update(net.layer[0].param[0], lr_mult=2.0)])])
    assert first_difference(net, other) == "layer[0].param[0].lr_mult: 1.0 != 2.0"
    unset = update(net, layer=[update(net.layer[0], name=None)])
    assert first_difference(net, unset) == "layer[0].name: set to 'a' vs unset"
    assert first_difference(net, update(net, layer=[])) == "layer: 1 elements vs 0"
    assert first_difference(net, net) is None


def test_presence_matters_even_with_the_default_value() -> None:
    a = parse(NetParameter, 'layer { name: "a" }', "x")
    b = parse(NetParameter, 'layer { name: "a" transform_param { } }', "x")
    assert a != b and first_difference(a, b) is not None


# --------------------------------------------------------------------------- Caffe's fixtures

NET_FIXTURES = ["v0_net", "v1_deploy", "v1_data_transform"]


@pytest.mark.parametrize("name", NET_FIXTURES)
def test_net_fixture_upgrades_like_caffe(name: str) -> None:
    needs_shared()
    needs_registry()
    log: list[str] = []
    net = load(NetParameter, FIXTURES / f"{name}.prototxt")
    assert net_needs_upgrade(net)
    upgraded = upgrade_net(net, log=log)
    assert_same(upgraded, load(NetParameter, FIXTURES / f"{name}.upgraded.prototxt"))
    assert log == caffe_log_lines(FIXTURES / f"{name}.upgrade.log")
    assert_upgrade_is_settled(upgraded)


def test_solver_fixture_upgrades_like_caffe() -> None:
    needs_shared()
    log: list[str] = []
    solver = load(SolverParameter, FIXTURES / "nesterov_solver.prototxt")
    assert solver_needs_upgrade(solver)
    upgraded = upgrade_solver(solver, log=log)
    assert_same(upgraded, load(SolverParameter, FIXTURES / "nesterov_solver.upgraded.prototxt"))
    assert log == caffe_log_lines(FIXTURES / "nesterov_solver.upgrade.log")


def test_training_fixture_solver_logs_like_caffe() -> None:
    """The legacy-enum training case: Caffe's log names the file as it was passed."""
    needs_shared()
    case = SHARED / "fixtures" / "train" / "cases" / "sgd_legacy_enum"
    log: list[str] = []
    solver = load(SolverParameter, case / "solver.prototxt")
    upgraded = upgrade_solver(solver, log=log, file="cases/sgd_legacy_enum/solver.prototxt")
    assert log == caffe_log_lines(case / "caffe.log")
    assert_same(upgraded, update(solver, solver_type=None, type="Nesterov"))


def test_v1_deploy_caffe_time_log_shows_the_same_upgrade() -> None:
    """``caffe time`` loading the V1 net logs the same upgrade lines as the tool."""
    needs_shared()
    needs_registry()
    log: list[str] = []
    upgrade_net(load(NetParameter, FIXTURES / "v1_deploy.prototxt"), log=log)
    assert log == caffe_log_lines(FIXTURES / "v1_deploy.caffe_time.log")


# --------------------------------------------------------------------------- hand-written files

LEGACY_FILES = sorted(p.name[:-len(".prototxt")] for p in LEGACY.glob("*.prototxt")
                      if not p.name.endswith(".upgraded.prototxt"))


def test_enough_hand_written_legacy_files() -> None:
    nets = [n for n in LEGACY_FILES if "solver" not in n]
    assert len(nets) >= 4 and len(LEGACY_FILES) - len(nets) >= 1, LEGACY_FILES
    assert any(n.startswith("v0_") for n in nets) and any(n.startswith("v1_") for n in nets)


@pytest.mark.parametrize("name", LEGACY_FILES)
def test_hand_written_legacy_file(name: str) -> None:
    log: list[str] = []
    expected_log = (LEGACY / f"{name}.upgrade.log").read_text().splitlines()
    if "solver" in name:
        upgraded = upgrade_solver(load(SolverParameter, LEGACY / f"{name}.prototxt"), log=log)
        assert_same(upgraded, load(SolverParameter, LEGACY / f"{name}.upgraded.prototxt"))
    else:
        needs_registry()
        net = load(NetParameter, LEGACY / f"{name}.prototxt")
        assert net_needs_upgrade(net)
        upgraded = upgrade_net(net, log=log)
        assert_same(upgraded, load(NetParameter, LEGACY / f"{name}.upgraded.prototxt"))
        assert_upgrade_is_settled(upgraded)
    assert log == expected_log


@pytest.mark.parametrize("enum_name", sorted(SOLVER_TYPES))
def test_every_solver_type_enum(enum_name: str) -> None:
    solver = parse(SolverParameter, f"base_lr: 0.1\nsolver_type: {enum_name}\n", "s.prototxt")
    upgraded = upgrade_solver(solver)
    assert upgraded.type == SOLVER_TYPES[enum_name]
    assert has(upgraded, "type") and not has(upgraded, "solver_type")
    assert upgraded == parse(SolverParameter,
                             f'base_lr: 0.1\ntype: "{SOLVER_TYPES[enum_name]}"\n', "s")


def test_solver_types_match_caffe_names() -> None:
    assert SOLVER_TYPES == {"SGD": "SGD", "NESTEROV": "Nesterov", "ADAGRAD": "AdaGrad",
                            "RMSPROP": "RMSProp", "ADADELTA": "AdaDelta", "ADAM": "Adam"}
    assert set(SOLVER_TYPES) == {m.name for m in SolverParameter.SolverType}


# --------------------------------------------------------------------------- real BVLC files

def _bvlc_prototxts() -> list[Path]:
    return sorted((SHARED / "caffe").rglob("*.prototxt"))


def _nets_in(path: Path) -> list[NetParameter]:
    """The net of a net file, or the nets embedded in a solver file."""
    if "solver" in path.name:
        s = load(SolverParameter, path)
        return [n for n in (s.net_param, s.train_net_param, *s.test_net_param)
                if n.layer or n.layers]
    return [load(NetParameter, path)]


def test_every_bvlc_file_upgrades_to_registered_types() -> None:
    needs_shared()
    needs_registry()
    files = _bvlc_prototxts()
    assert len(files) > 40
    v1_seen = []
    for path in files:
        for net in _nets_in(path):
            if net.layers:
                v1_seen.append(path.name)
            upgraded = upgrade_net(net, file=path.name)
            assert not upgraded.layers and not upgraded.input
            assert_upgrade_is_settled(upgraded)
            unknown = [layer.type for layer in upgraded.layer
                       if not registry.is_known(layer.type)]
            assert not unknown, f"{path}: unregistered types {unknown}"
            if not net.layers:  # current-format nets change only by input/BatchNorm rules
                assert len(upgraded.layer) in (len(net.layer), len(net.layer) + 1)
    # at this BVLC commit the only V1 net left is the one embedded in this solver
    assert "lenet_consolidated_solver.prototxt" in v1_seen


def test_bvlc_v1_solver_net_upgrades_layer_by_layer() -> None:
    needs_shared()
    needs_registry()
    path = SHARED / "caffe" / "examples" / "mnist" / "lenet_consolidated_solver.prototxt"
    (net,) = _nets_in(path)
    upgraded = upgrade_net(net)
    assert [layer.name for layer in upgraded.layer] == [v1.name for v1 in net.layers]
    assert [layer.type for layer in upgraded.layer][:4] == ["Data", "Data", "Data",
                                                            "Convolution"]
    conv = upgraded.layer[3]
    assert [(p.lr_mult, p.decay_mult) for p in conv.param] == [
        (v1_lr, 1.0) for v1_lr in net.layers[3].blobs_lr]
    assert not any(has(p, "decay_mult") for p in conv.param)


def test_bvlc_batchnorm_example_gets_zeroed_params() -> None:
    needs_shared()
    path = SHARED / "caffe" / "examples" / "cifar10" / "cifar10_full_sigmoid_train_test_bn.prototxt"
    log: list[str] = []
    upgraded = upgrade_net(load(NetParameter, path), log=log)
    bns = [layer for layer in upgraded.layer if layer.type == "BatchNorm"]
    assert bns and all(len(b.param) == 3 for b in bns)
    assert all(has(p, "decay_mult") and p.lr_mult == 0 and p.decay_mult == 0
               for b in bns for p in b.param)
    assert log == [f"Attempting to upgrade batch norm layers using deprecated params: "
                   f"{path.name}",
                   "Successfully upgraded batch norm layers using deprecated params."]


# --------------------------------------------------------------------------- refusals

MIXED = """name: "mixed"
layer {
  name: "a"
  type: "ReLU"
}
layers {
  name: "b"
  type: RELU
}
"""


def test_mixing_layer_and_layers_is_refused_with_a_line() -> None:
    net = parse(NetParameter, MIXED, "mixed.prototxt")
    with pytest.raises(UpgradeError) as err:
        upgrade_net(net)
    assert err.value.loc is not None and err.value.loc.file == "mixed.prototxt"
    assert err.value.line == 6  # points at the first legacy 'layers'
    assert "line 6" in err.value.message and "Refusing" in (err.value.hint or "")


def test_mixing_v0_and_v1_layers_is_refused() -> None:
    text = ('layers { layer { name: "d" type: "data" source: "x" batchsize: 1 } top: "d" }\n'
            'layers { name: "r" type: RELU bottom: "d" top: "d" }\n')
    with pytest.raises(UpgradeError) as err:
        upgrade_net(parse(NetParameter, text, "m.prototxt"))
    assert err.value.line == 2 and "'r'" in err.value.message


def _v0(body: str) -> NetParameter:
    return parse(NetParameter, 'input: "in"\ninput_dim: 1\ninput_dim: 1\ninput_dim: 4\n'
                 'input_dim: 4\n' + body, "v0.prototxt")


def test_v0_padding_into_a_non_conv_layer_is_refused() -> None:
    net = _v0('layers { layer { name: "p" type: "padding" pad: 1 } bottom: "in" top: "p" }\n'
              'layers { layer { name: "r" type: "relu" } bottom: "p" top: "r" }\n')
    with pytest.raises(UpgradeError) as err:
        upgrade_net(net)
    assert err.value.line == 7 and "conv or pool" in err.value.message


def test_v0_padding_with_two_tops_is_refused() -> None:
    net = _v0('layers { layer { name: "p" type: "padding" } bottom: "in" top: "p" top: "q" }\n'
              'layers { layer { name: "c" type: "conv" } bottom: "p" top: "c" }\n')
    with pytest.raises(UpgradeError, match="exactly one top"):
        upgrade_net(net)


def test_v0_unknown_bottom_is_refused() -> None:
    net = _v0('layers { layer { name: "r" type: "relu" } bottom: "nowhere" top: "r" }\n')
    with pytest.raises(UpgradeError, match="'nowhere'") as err:
        upgrade_net(net)
    assert err.value.line == 6


def test_v0_unknown_type_is_refused() -> None:
    net = _v0('layers { layer { name: "r" type: "rectifier" } bottom: "in" top: "r" }\n')
    with pytest.raises(UpgradeError, match='"rectifier"') as err:
        upgrade_net(net)
    assert err.value.line == 6


def test_v0_field_of_another_type_strict_and_as_caffe() -> None:
    needs_registry()
    net = _v0('layers { layer { name: "r" type: "relu" num_output: 3 } bottom: "in" top: "r" }\n')
    with pytest.raises(UpgradeError, match="num_output") as err:
        upgrade_net(net)
    assert err.value.line == 6 and "Unknown parameter num_output" in (err.value.hint or "")
    log: list[str] = []
    upgraded = upgrade_net(net, log=log, strict=False)
    assert upgraded.layer[1].type == "ReLU" and not has(upgraded.layer[1], "relu_param")
    assert log[1:3] == [
        "Unknown parameter num_output for layer type relu",
        "Warning: had one or more problems upgrading V0NetParameter to NetParameter "
        "(see above); continuing anyway."]


def test_v0_net_keeps_only_what_caffe_keeps() -> None:
    """UpgradeV0Net clears the net: only name, inputs and force_backward survive."""
    needs_registry()
    net = parse(NetParameter, 'name: "n"\ndebug_info: true\nstate { phase: TEST }\n'
                'force_backward: false\n'
                'layers { layer { name: "d" type: "data" source: "s" batchsize: 2 } '
                'top: "d" }\n', "v0.prototxt")
    upgraded = upgrade_net(net)
    assert has(upgraded, "force_backward") and not has(upgraded, "debug_info")
    assert not has(upgraded, "state") and upgraded.name == "n"


def test_solver_with_both_type_fields_is_refused() -> None:
    solver = parse(SolverParameter, 'type: "SGD"\nsolver_type: SGD\n', "s.prototxt")
    with pytest.raises(UpgradeError) as err:
        upgrade_solver(solver)
    assert err.value.line == 2


@pytest.mark.parametrize("fields", [
    'input: "a"\ninput_dim: 1\ninput_dim: 2\ninput_dim: 3\n',
    'input: "a"\ninput: "b"\ninput_shape { dim: 1 }\n',
])
def test_input_fields_that_do_not_add_up_are_refused(fields: str) -> None:
    net = parse(NetParameter, fields + 'layer { name: "r" type: "ReLU" }\n', "i.prototxt")
    with pytest.raises(UpgradeError):
        upgrade_net(net)


def test_unregistered_v1_type_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "by_v1_name", lambda name: None)
    net = parse(NetParameter, 'layers {\n  name: "c"\n  type: CONVOLUTION\n}\n', "r.prototxt")
    with pytest.raises(UpgradeError, match="CONVOLUTION") as err:
        upgrade_net(net)
    assert err.value.line == 3 and "v1_type" in (err.value.hint or "")


# --------------------------------------------------------------------------- smaller rules

def test_v1_none_type_becomes_the_empty_string() -> None:
    needs_registry()
    net = upgrade_net(parse(NetParameter, 'layers { name: "x" type: NONE }', "n.prototxt"))
    assert has(net.layer[0], "type") and net.layer[0].type == ""


def test_input_without_shapes_is_only_removed() -> None:
    """A bare ``input`` (legacy caffemodel) is stripped, with no Input layer."""
    net = parse(NetParameter, 'input: "data"\nlayer { name: "r" type: "ReLU" }\n', "b")
    upgraded = upgrade_net(net)
    assert [layer.name for layer in upgraded.layer] == ["r"] and not upgraded.input


def test_input_shape_wins_over_input_dim() -> None:
    net = parse(NetParameter, 'input: "a"\ninput_shape { dim: 7 }\ninput_dim: 1\n'
                'input_dim: 2\ninput_dim: 3\ninput_dim: 4\n', "s")
    layer = upgrade_net(net).layer[0]
    assert [tuple(s.dim) for s in layer.input_param.shape] == [(7,)]


def test_current_net_is_returned_unchanged_without_log() -> None:
    net = parse(NetParameter, 'name: "n"\nlayer { name: "r" type: "ReLU" '
                'param { lr_mult: 1 } param { lr_mult: 1 } param { lr_mult: 1 } }\n', "c")
    log: list[str] = []
    assert not net_needs_upgrade(net)
    assert upgrade_net(net, log=log) is net and log == []


def test_upgraded_layers_keep_their_source_lines() -> None:
    needs_registry()
    text = 'name: "n"\n\nlayers {\n  name: "r"\n  type: RELU\n  bottom: "x"\n}\n'
    layer = upgrade_net(parse(NetParameter, text, "l.prototxt")).layer[0]
    assert layer._loc is not None and layer._loc.line == 3 and layer._loc.file == "l.prototxt"
    assert loc_of(layer, "type").line == 5 and loc_of(layer, "bottom").line == 6


def test_v0_rule_table_targets_exist() -> None:
    """Every V0 rule names a real V0 field and a real field of a V1 parameter message."""
    from netdef.ir.messages import V0LayerParameter, V1LayerParameter
    from netdef.ir.upgrade.v0 import RULES, V0_TYPES
    v1_fields = fields_of(V1LayerParameter)
    for v0_field, targets, _ in RULES:
        assert v0_field in fields_of(V0LayerParameter)
        for vtype, (pname, tfield) in targets.items():
            assert vtype == "*" or vtype in V0_TYPES
            if tfield is not None:
                assert tfield in fields_of(v1_fields[pname].type), (pname, tfield)
    assert set(V0_TYPES.values()) <= {m.name for m in V1LayerParameter.LayerType}
