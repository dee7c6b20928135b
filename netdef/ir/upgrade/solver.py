"""Caffe's ``UpgradeSolverAsNeeded``: the ``solver_type`` enum → the ``type`` string.

Solvers written before 2016 chose the method with ``solver_type: NESTEROV``; Caffe now
reads ``type: "Nesterov"`` and converts the old field on load, refusing a file that sets
both (even when they agree).
"""
from __future__ import annotations

from netdef.errors import UpgradeError
from netdef.ir.messages import SolverParameter
from netdef.ir.schema import has, loc_of, update
from netdef.ir.upgrade.common import source_name

# SolverParameter.SolverType name → the solver type string Caffe registers.
SOLVER_TYPES = {"SGD": "SGD", "NESTEROV": "Nesterov", "ADAGRAD": "AdaGrad",
                "RMSPROP": "RMSProp", "ADADELTA": "AdaDelta", "ADAM": "Adam"}

ATTEMPT = ("Attempting to upgrade input file specified using deprecated 'solver_type' "
           "field (enum)': {}")
DONE = ("Successfully upgraded file specified using deprecated 'solver_type' field (enum) "
        "to 'type' field (string).")
NOTE = ("Note that future Caffe releases will only support 'type' field (string) for a "
        "solver's type.")


def solver_needs_upgrade(solver: SolverParameter) -> bool:
    """Caffe's SolverNeedsTypeUpgrade: ``solver_type`` is set."""
    return has(solver, "solver_type")


def upgrade_solver(solver: SolverParameter, *, log: list[str] | None = None,
                   file: str | None = None) -> SolverParameter:
    """``solver`` with ``solver_type`` turned into ``type`` (unchanged if not set).

    ``log`` receives Caffe's upgrade log lines; ``file`` is the file name they name
    (default: the file ``solver`` was parsed from).

    Nets embedded in the solver (``net_param`` …) are left alone, as Caffe does.
    """
    if not solver_needs_upgrade(solver):
        return solver
    out = log if log is not None else []
    out.append(ATTEMPT.format(file if file is not None else source_name(solver)))
    if has(solver, "type"):
        raise UpgradeError(
            "the solver sets both 'solver_type' (deprecated enum) and 'type'",
            loc=loc_of(solver, "solver_type"),
            hint=f"keep only type: \"{solver.type}\" (Caffe refuses both: 'old solver_type "
                 "field (enum) and new type field (string) cannot be both specified')")
    solver = update(solver, type=SOLVER_TYPES[solver.solver_type.name], solver_type=None)
    out.extend([DONE, NOTE])
    return solver
