"""``python -m netdef`` (also what ``torchrun -m netdef`` runs)."""
from netdef.cli.main import entry

entry()
