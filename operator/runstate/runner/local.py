"""The ``pod`` connector: run one command with ``sh -c`` where the runner itself runs.

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


async def run_locally(
    command: str,
    *,
    out: Callable[[bytes], None],
    timeout: float | None,  # noqa: ASYNC109  # ends in a Timeout outcome, not an exception
) -> UnitOutcome:
    """Run ``sh -c command``; stdout and stderr (combined) go to ``out`` as they come."""
    started = time.monotonic()
    tail = OutputTail()
    try:
        process = await asyncio.create_subprocess_exec(
            _SHELL,
            "-c",
            command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # its own process group: a timeout ends all of it
        )
    except OSError as exc:
        return UnitOutcome(
            exit_code=None,
            error=ErrorClass.RUNNER_ERROR,
            message=f"cannot start {_SHELL}: {exc.strerror}",
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
        message=f"{note} (local)",
        duration_seconds=time.monotonic() - started,
        output_tail=tail.text(),
    )
