"""Functional Caffe ops in one namespace: ``from netdef.lowering import functional as CF``.

A thin facade over :mod:`netdef.lowering.ops` (see there for the per-family modules)."""
from netdef.lowering.ops import *  # noqa: F401,F403
from netdef.lowering.ops import __all__  # noqa: F401
