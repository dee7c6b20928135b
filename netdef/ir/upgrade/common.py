"""Small helpers shared by the upgrade steps: locations and the log's file name.

Upgraded messages are new messages, but errors found later (unknown bottom, bad shape)
must still point at the line the user wrote, so every step carries ``_loc`` and the
per-field ``_locs`` of the legacy message over to the message it builds.
"""
from __future__ import annotations

import dataclasses
from types import MappingProxyType
from typing import Any, Iterable, Mapping, TypeVar

from netdef.errors import Loc

T = TypeVar("T")


def field_locs(msg: Any) -> Mapping[str, tuple[Loc, ...]]:
    """The per-field locations recorded when ``msg`` was parsed (may be empty)."""
    return msg._locs


def located(msg: T, loc: Loc | None, locs: Mapping[str, tuple[Loc, ...]]) -> T:
    """``msg`` with its own location and per-field locations set (values unchanged)."""
    locs = MappingProxyType(dict(locs))
    return dataclasses.replace(msg, _loc=loc, _locs=locs)  # type: ignore[type-var]


def renamed_locs(msg: Any, names: Mapping[str, Iterable[str]]) -> dict[str, tuple[Loc, ...]]:
    """Locations for a new message: ``{new field: first old field that has a location}``."""
    old = field_locs(msg)
    out: dict[str, tuple[Loc, ...]] = {}
    for new, candidates in names.items():
        for name in candidates:
            if name in old:
                out[new] = old[name]
                break
    return out


def source_name(msg: Any) -> str:
    """The file a message was read from, as Caffe names it in its upgrade log lines."""
    if msg._loc is not None and msg._loc.file:
        return msg._loc.file
    for locs in msg._locs.values():
        for loc in locs:
            if loc.file:
                return loc.file
    return "<input>"
