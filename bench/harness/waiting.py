"""Waiting for conditions, and running a loop body at bounded concurrency.

Owns the polling loops: every wait has a deadline and stops early (failing) when a process
it depends on exits. Must not sleep a fixed time in place of a condition it could check.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from harness.procs import Proc, check_alive


async def bounded(n: int, limit: int, fn: Callable[[int], Awaitable[object]]) -> None:
    """fn(0) … fn(n - 1), at most `limit` at once."""
    sem = asyncio.Semaphore(limit)

    async def one(i: int) -> None:
        async with sem:
            await fn(i)

    await asyncio.gather(*(one(i) for i in range(n)))


async def wait_until(
    condition: Callable[[], Awaitable[bool]],
    what: str,
    *,
    limit: float,
    alive: Sequence[Proc] = (),
    every: float = 0.1,
) -> None:
    """Poll `condition` until it holds; TimeoutError after `limit` s, ProcessDied as soon as
    one of `alive` exits."""
    deadline = time.monotonic() + limit
    while not await condition():
        check_alive(alive)
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not in {limit:.0f} s")
        await asyncio.sleep(every)


async def wait_file(path: Path, proc: Proc, what: str, *, limit: float) -> None:
    """Until `path` exists (a component's ready file), failing when `proc` exits first."""

    async def exists() -> bool:
        return await asyncio.to_thread(path.exists)

    await wait_until(exists, f"{what} ready", limit=limit, alive=[proc])
