"""Child processes of a benchmark: started tied to this one's life, stopped in order, and
watched, so that a component that dies fails the measurement instead of stalling it.

Owns spawning, stopping and the liveness watch. Must not know which components exist or
what they are for (harness.components does).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import TypeVar

from harness.workdir import ROOT

SETPRIV = "/usr/bin/setpriv"  # util-linux: parent-death signal, so a killed bench leaves nothing
Proc = subprocess.Popen[bytes]
Procs = list[Proc]
T = TypeVar("T")


class ProcessDied(RuntimeError):
    """A component the benchmark needs exited while it was being measured."""


def spawn(argv: list[str], env: dict[str, str], log: Path) -> Proc:
    """A child that gets SIGTERM if this process dies (as the devcluster's die_with_parent)."""
    if os.path.exists(SETPRIV):
        argv = [SETPRIV, "--pdeathsig", "TERM", "--", *argv]
    with log.open("wb") as out:
        return subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT
        )


def stop(proc: Proc) -> None:
    """SIGTERM, then SIGKILL after 15 s; always reaped."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def stop_all(procs: Procs) -> None:
    """Every process, the last started first."""
    for proc in reversed(procs):
        stop(proc)


def check_alive(procs: Sequence[Proc], what: str = "") -> None:
    """Raise ProcessDied if any of `procs` has exited."""
    for proc in procs:
        if proc.poll() is not None:
            argv = " ".join(str(a) for a in proc.args) if isinstance(proc.args, list) else ""
            name = what or argv
            raise ProcessDied(f"{name} exited with {proc.returncode} during the benchmark")


async def guarded(work: Awaitable[T], procs: Sequence[Proc], *, poll: float = 0.5) -> T:
    """Await `work`, but fail at once (cancelling it) if one of `procs` exits meanwhile."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=poll)
            if done:
                return task.result()
            check_alive(procs)
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
