"""The shipped examples' footprint on this machine, for the tests that run them.

`examples/runbook.yaml`'s pod operations use `alpine:3.20`, which no image store here holds, so
the process kubelet runs them on the machine's root (its documented fallback), and their marks
land in the machine's `/tmp/runstate-demo/<host>/`. Work pods run as uid 65532: a scratch
directory left by an older run as root would make every later example Run fail.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

DEMO_SCRATCH = Path("/tmp/runstate-demo")
WORK_POD_USER = 65532


def clear_foreign_demo_scratch() -> None:
    """Remove the example's scratch directory when it is not the work pods' (another user's
    left-over, where uid 65532 cannot write)."""
    with contextlib.suppress(FileNotFoundError):
        if DEMO_SCRATCH.stat().st_uid != WORK_POD_USER:
            shutil.rmtree(DEMO_SCRATCH)
