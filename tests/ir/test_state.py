"""NetState filtering exactly like Caffe's FilterNet / StateMeetsRule."""
from __future__ import annotations

import pytest

from netdef.api import parse_net_text
from netdef.errors import GraphError
from netdef.ir.state import filter_net, make_state

NET = """
layer { name: "always" type: "Input" top: "x" input_param { shape { dim: 1 } } }
layer { name: "train" type: "ReLU" bottom: "x" top: "x" include { phase: TRAIN } }
layer { name: "test" type: "ReLU" bottom: "x" top: "x" include { phase: TEST } }
layer { name: "not_test" type: "ReLU" bottom: "x" top: "x" exclude { phase: TEST } }
layer { name: "lvl2" type: "ReLU" bottom: "x" top: "x" include { min_level: 2 } }
layer { name: "lvl_le1" type: "ReLU" bottom: "x" top: "x" include { max_level: 1 } }
layer { name: "stage_ab" type: "ReLU" bottom: "x" top: "x" include { stage: "a" stage: "b" } }
layer { name: "stage_a_or_b" type: "ReLU" bottom: "x" top: "x" include { stage: "a" } include { stage: "b" } }
layer { name: "not_a" type: "ReLU" bottom: "x" top: "x" include { not_stage: "a" } }
layer { name: "train_and_a" type: "ReLU" bottom: "x" top: "x" include { phase: TRAIN stage: "a" } }
"""


def names(phase: str, level: int = 0, stages: tuple[str, ...] = ()) -> list[str]:
    net = filter_net(parse_net_text(NET), make_state(phase, level, stages))
    return [l.name for l in net.layer]


@pytest.mark.parametrize("phase,level,stages,expected", [
    ("TRAIN", 0, (), ["always", "train", "not_test", "lvl_le1", "not_a"]),
    ("TEST", 0, (), ["always", "test", "lvl_le1", "not_a"]),
    ("TEST", 2, (), ["always", "test", "lvl2", "not_a"]),
    ("TRAIN", 0, ("a",), ["always", "train", "not_test", "lvl_le1", "stage_a_or_b", "train_and_a"]),
    ("TRAIN", 1, ("a", "b"), ["always", "train", "not_test", "lvl_le1", "stage_ab",
                               "stage_a_or_b", "train_and_a"]),
    ("TEST", 5, ("b",), ["always", "test", "lvl2", "stage_a_or_b", "not_a"]),
])
def test_filter_matches_caffe_rules(phase: str, level: int, stages: tuple[str, ...],
                                    expected: list[str]) -> None:
    assert names(phase, level, stages) == expected


def test_filter_logs_caffe_lines() -> None:
    log: list[str] = []
    filter_net(parse_net_text(NET), make_state("TEST", 0, ("a",)), log)
    assert log[0] == ("The NetState phase (1) differed from the phase (0) specified by a "
                      "rule in layer train")
    assert "The NetState level (0) is above the min_level (2) specified by a rule in layer lvl2" in log
    assert "The NetState did not contain stage 'b' specified by a rule in layer stage_ab" in log
    assert "The NetState contained a not_stage 'a' specified by a rule in layer not_a" in log


def test_state_is_set_on_the_filtered_net() -> None:
    net = filter_net(parse_net_text(NET), make_state("TEST", 3, ("x", "")))
    assert net.state.phase.name == "TEST" and net.state.level == 3
    assert net.state.stage == ("x", "")


def test_include_and_exclude_together_is_an_error() -> None:
    bad = 'layer { name: "r" type: "ReLU" include { phase: TEST } exclude { phase: TRAIN } }'
    with pytest.raises(GraphError, match="both include and exclude"):
        filter_net(parse_net_text(bad), make_state("TEST"))
