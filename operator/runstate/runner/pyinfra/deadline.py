"""``run_pyinfra_within``: a unit ended after its timeout, in a forked child.

Owns the fork (the child in its own process group, killed whole at the deadline), the pipe
that hands the child's ``UnitOutcome`` back, and the Timeout outcome. pyinfra's own
``_timeout`` needs gevent's monkey-patching, which the runner does not do. Must not run
pyinfra in the parent: ``run.run_pyinfra`` does, in the child (or here, without a timeout).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import time
from collections.abc import Callable

from runstate.runner.pyinfra.run import run_pyinfra
from runstate.runner.pyinfra.unit import PyinfraUnit, Where
from runstate.runner.result import ErrorClass, UnitOutcome


def run_pyinfra_within(
    unit: PyinfraUnit, where: Where, *, out: Callable[[bytes], None]
) -> UnitOutcome:
    """``run_pyinfra``, ended after ``unit.timeout`` seconds: pyinfra runs in a forked child
    (its own process group, killed whole at the deadline) that hands its outcome back through
    a pipe. pyinfra's own ``_timeout`` needs gevent's monkey-patching, which the runner does
    not do; a signal cannot reach a process blocked in gevent's loop."""
    if unit.timeout is None:
        return run_pyinfra(unit, where, out=out)
    started = time.monotonic()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: run, hand back the outcome, never return
        os.close(read_end)
        os.setpgid(0, 0)
        _child(unit, where, out, write_end)
    os.close(write_end)
    data = _read_until(read_end, started + unit.timeout)
    if data is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    if data is None:
        return UnitOutcome(
            exit_code=None,
            error=ErrorClass.TIMEOUT,
            message=f"the pyinfra unit ran longer than {unit.timeout:g}s on {where.label}",
            duration_seconds=time.monotonic() - started,
        )
    try:
        return UnitOutcome.decode(data)
    except ValueError as exc:
        return UnitOutcome(None, ErrorClass.RUNNER_ERROR, f"pyinfra child: {exc}", 0.0)


def _child(unit: PyinfraUnit, where: Where, out: Callable[[bytes], None], fd: int) -> None:
    code = 0
    try:
        outcome = run_pyinfra(unit, where, out=out)
    except BaseException as exc:  # the parent reports it; nothing may escape a forked child
        outcome = UnitOutcome(None, ErrorClass.RUNNER_ERROR, f"{type(exc).__name__}: {exc}", 0.0)
        code = 1
    with contextlib.suppress(OSError):
        os.write(fd, outcome.encode())
        sys.stdout.flush()
    os._exit(code)


def _read_until(fd: int, deadline: float) -> bytes | None:
    """Everything written to ``fd`` until its end, or None when ``deadline`` passes first."""
    chunks: list[bytes] = []
    with os.fdopen(fd, "rb", buffering=0) as pipe:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([pipe], [], [], remaining)[0]:
                return None
            chunk = pipe.read(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
