"""The ``pod`` and ``node`` connectors: run one command with ``sh -c`` where the runner runs,
or chrooted into a directory (a Node's root at ``/host``).

Owns ``run_locally``, the local twin of ``ssh.run_over_ssh``: same streaming of the combined
output, same ``UnitOutcome``. Must not know Kubernetes or the operator.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable

from runstate.runner.output import OutputTail
from runstate.runner.result import ErrorClass, UnitOutcome

__all__ = ["run_locally"]

_SHELL = "/bin/sh"
_CHROOT = "chroot"


async def run_locally(
    command: str,
    *,
    out: Callable[[bytes], None],
    timeout: float | None,  # noqa: ASYNC109  # ends in a Timeout outcome, not an exception
    root: str | None = None,
) -> UnitOutcome:
    """Run ``sh -c command`` (chrooted into ``root``, when given: the root's own ``/bin/sh``);
    stdout and stderr (combined) go to ``out`` as they come."""
    started = time.monotonic()
    tail = OutputTail()
    argv = [_SHELL, "-c", command]
    if root is not None:
        argv = [_CHROOT, root, *argv]
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # its own process group: a timeout ends all of it
        )
    except OSError as exc:
        return UnitOutcome(
            exit_code=None,
            error=ErrorClass.RUNNER_ERROR,
            message=f"cannot start {argv[0]}: {exc.strerror}",
            duration_seconds=time.monotonic() - started,
        )
    assert process.stdout is not None
    try:
        async with asyncio.timeout(timeout):
            while chunk := await process.stdout.read(65536):
                tail.add(chunk)
                out(chunk)
            returncode = await process.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # the shell and everything it started
        await process.wait()
        return UnitOutcome(
            exit_code=None,
            error=ErrorClass.TIMEOUT,
            message=f"the command ran longer than {timeout:g}s",
            duration_seconds=time.monotonic() - started,
            output_tail=tail.text(),
        )
    code = 128 - returncode if returncode < 0 else returncode
    note = f"killed by signal {-returncode}" if returncode < 0 else f"exited with code {code}"
    return UnitOutcome(
        exit_code=code,
        error=None,
        message=f"{note} ({'local' if root is None else 'chroot ' + root})",
        duration_seconds=time.monotonic() - started,
        output_tail=tail.text(),
    )
