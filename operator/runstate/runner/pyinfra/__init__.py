"""pyinfra units: one pyinfra operation (or a whole deploy file) on one host, run by pyinfra.

A ``PyinfraUnit`` (the operation, its arguments, the files its ``src`` arguments name, the
host data, dry or apply) runs on a ``Where`` through ``run_pyinfra``, which drives pyinfra's
Python API (Inventory, Config, State, ``connect_all``, ``add_op``, ``run_ops``) the way the
``pyinfra`` command line does, and always returns a ``UnitOutcome``: in dry mode exit code 1
means "would change" (as a ``check`` command), 0 "no change"; applied, 0 is success
(``changed`` says whether pyinfra changed anything) and 1 an operation pyinfra reports as
failed, with pyinfra's own error lines (never a Python traceback) as the message; a connection
that fails is classified into the runner's ``ErrorClass`` (Unreachable, HostKeyUnknown, …).
``run_pyinfra_within`` does the same within the unit's timeout.

Its modules, each one room (an import-linter contract in pyproject.toml keeps their layers):
``unit`` (``PyinfraUnit``, ``Where``, ``Failed``), ``connect`` (the mapping of the runner's
connectors onto pyinfra's, the connected State), ``jump`` (a jump host's socket), ``operation``
(the operations added, planned, executed, and what they did), ``log`` (pyinfra's log to the
pod log), ``run`` (``run_pyinfra``) and ``deadline`` (``run_pyinfra_within``).

pyinfra (and gevent, paramiko) is imported only when a pyinfra unit runs: plain commands never
load it. Must not know Kubernetes or the operator; the key is only ever a file path.
"""

from __future__ import annotations

from runstate.runner.pyinfra.connect import connector_host
from runstate.runner.pyinfra.deadline import run_pyinfra_within
from runstate.runner.pyinfra.run import run_pyinfra
from runstate.runner.pyinfra.unit import PyinfraUnit, Where

__all__ = [
    "PyinfraUnit",
    "Where",
    "connector_host",
    "run_pyinfra",
    "run_pyinfra_within",
]
