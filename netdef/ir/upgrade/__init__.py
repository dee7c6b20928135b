"""Legacy Caffe definitions → the current format, exactly as Caffe upgrades them.

Every later stage sees one IR only ("upgrade first, then one modern IR"):

* :func:`upgrade_net` — V0 (``layers { layer { type: "conv" } }``) and V1
  (``layers { type: CONVOLUTION }``) nets, old data-transformation fields, top-level
  ``input``/``input_dim``/``input_shape`` and old BatchNorm param specs;
* :func:`upgrade_solver` — ``solver_type: NESTEROV`` → ``type: "Nesterov"``;
* :func:`net_needs_upgrade` — Caffe's check for the above.

Both upgrade functions can append the lines Caffe logs while upgrading to ``log``.
"""
from netdef.ir.upgrade.net import net_needs_upgrade, upgrade_net
from netdef.ir.upgrade.solver import solver_needs_upgrade, upgrade_solver

__all__ = ["net_needs_upgrade", "solver_needs_upgrade", "upgrade_net", "upgrade_solver"]
