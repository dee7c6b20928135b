"""One error hierarchy for every stage.

Every user-facing failure is a :class:`NetdefError` that knows *where* (file, line,
column, offending text) and *what to do* (hint), so the CLI can print one or two
lines and exit 2 instead of a traceback.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Loc:
    """A position in a source file (1-based line and column)."""

    file: str | None
    line: int | None = None
    col: int | None = None

    def __str__(self) -> str:
        parts = [self.file or "<input>"]
        if self.line is not None:
            parts.append(str(self.line))
            if self.col is not None:
                parts.append(str(self.col))
        return ":".join(parts)


class NetdefError(Exception):
    """Base of every error netdef reports to a user."""

    kind = "error"

    def __init__(
        self,
        message: str,
        *,
        loc: Loc | None = None,
        text: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.loc = loc
        self.text = text
        self.hint = hint

    @property
    def file(self) -> str | None:
        return self.loc.file if self.loc else None

    @property
    def line(self) -> int | None:
        return self.loc.line if self.loc else None

    @property
    def col(self) -> int | None:
        return self.loc.col if self.loc else None

    def with_loc(self, loc: Loc | None) -> "NetdefError":
        """Fill in a location when the raiser did not know it."""
        if self.loc is None or self.loc.line is None and loc is not None:
            self.loc = loc
        return self

    def format(self) -> str:
        """The CLI's one- or two-line rendering."""
        head = f"{self.loc}: " if self.loc else ""
        out = f"{head}{self.kind}: {self.message}"
        if self.hint:
            out += f"\n  hint: {self.hint}"
        return out

    def __str__(self) -> str:
        return self.format()


class ParseError(NetdefError):
    """The text is not valid protobuf text format."""


class SchemaError(NetdefError):
    """Valid text, but a field or value does not fit Caffe's schema."""


class UpgradeError(NetdefError):
    """A legacy (V0/V1) definition cannot be upgraded."""


class GraphError(NetdefError):
    """The layers do not form a valid Caffe net (blobs, names, types)."""


class ShapeError(NetdefError):
    """Shape inference failed (incompatible shapes or parameters)."""


class WeightsError(NetdefError):
    """A .caffemodel / HDF5 weights file is unreadable or does not fit the net."""


class SolverError(NetdefError):
    """A solver definition cannot be run."""


class DataError(NetdefError):
    """A data source (LMDB, HDF5, image list) is missing or malformed."""


class ToolError(NetdefError):
    """An external tool (e.g. Graphviz ``dot``) is missing or failed."""
