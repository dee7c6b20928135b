"""Every BVLC layer type, grouped by family; importing this package registers them all."""
from netdef.layers.families import (activation, common, data, loss, misc,  # noqa: F401
                                    normalization, recurrent, structure, vision)
