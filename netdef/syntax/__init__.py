"""Stage 1: protobuf text → untyped fields (:class:`RawField`), with positions."""
from netdef.syntax.parser import RawField, parse_text, read_source

__all__ = ["RawField", "parse_text", "read_source"]
