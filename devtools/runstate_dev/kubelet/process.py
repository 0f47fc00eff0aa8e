"""The process side of a pod: a container's command run as a local process group.

Owns the pod's scratch directory (its working directory lives in it), the output file, exec of
command + args in a new session (so the whole group can be signalled) with the built env, and
signals to the group. Must not write pod status, talk to the API server, or decide when or why
a process is stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import tempfile
from pathlib import Path


def signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def make_scratch(pod_name: str) -> Path:
    """A fresh temporary directory for one run of a pod (removed with `remove_scratch`)."""
    return Path(await asyncio.to_thread(tempfile.mkdtemp, prefix=f"runstate-pod-{pod_name[:40]}-"))


async def remove_scratch(base: Path) -> None:
    await asyncio.to_thread(shutil.rmtree, base, True)


def open_output(workdir: Path, output: Path) -> int:
    """Create the working directory; open the output file for appending. Blocking."""
    workdir.mkdir()
    return os.open(output, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)


async def start(
    argv: list[str], env: dict[str, str], workdir: Path, output_fd: int
) -> asyncio.subprocess.Process:
    """Exec ``argv`` in its own session, stdout and stderr to ``output_fd``; OSError when the
    command cannot be executed."""
    return await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=output_fd,
        stderr=asyncio.subprocess.STDOUT,
        cwd=workdir,
        env=env,
        start_new_session=True,
    )
