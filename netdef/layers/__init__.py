"""Layer types: the registry (:mod:`netdef.layers.registry`), the shared window
geometry (:mod:`netdef.layers.spatial`) and one module per family of types
(:mod:`netdef.layers.families`)."""
