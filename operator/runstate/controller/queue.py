"""A work queue of object keys, as controller-runtime has: deduplicated, one worker per key.

Watch events only *enqueue* keys; workers reconcile them. A key that is already queued is not
queued twice, and a key being reconciled is never reconciled concurrently: if it is added in
the meantime it is marked dirty and queued again when its worker is done. That coalesces bursts
of pod events into one reconcile and serialises everything that happens to one run.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
log = logging.getLogger(__name__)


def backoff_delay(failures: int) -> float:
    """The wait after `failures` failures in a row: 0.5 s doubling up to 60 s."""
    return float(min(60.0, 0.5 * 2 ** max(0, failures - 1)))


class WorkQueue(Generic[K]):
    def __init__(self) -> None:
        self._queue: asyncio.Queue[K] = asyncio.Queue()
        self._queued: set[K] = set()
        self._active: set[K] = set()
        self._dirty: set[K] = set()
        self._timers: dict[K, asyncio.TimerHandle] = {}
        self._failures: dict[K, int] = {}

    def __len__(self) -> int:
        return len(self._queued)

    def add(self, key: K) -> None:
        if key in self._active:
            self._dirty.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    def add_after(self, key: K, delay: float) -> None:
        """Queue `key` in `delay` seconds; an earlier pending timer for it wins."""
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        when = loop.time() + delay
        timer = self._timers.get(key)
        if timer is not None and not timer.cancelled() and timer.when() <= when:
            return
        if timer is not None:
            timer.cancel()
        self._timers[key] = loop.call_at(when, self._fire, key)

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self.add(key)

    async def get(self) -> K:
        key = await self._queue.get()
        self._queued.discard(key)
        self._active.add(key)
        return key

    def done(self, key: K) -> None:
        self._active.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            self.add(key)

    def backoff(self, key: K) -> float:
        """Exponential delay for a key whose reconcile failed: 0.5 s doubling up to 60 s."""
        n = self._failures.get(key, 0) + 1
        self._failures[key] = n
        return backoff_delay(n)

    def forget(self, key: K) -> None:
        self._failures.pop(key, None)

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()


async def work(
    queue: WorkQueue[K],
    reconcile: Callable[[K], Awaitable[float | None]],
    on_error: Callable[[K, Exception, float], None],
    on_success: Callable[[K], None] = lambda key: None,
) -> None:
    """One worker: reconcile keys forever; requeue after the delay a reconcile asks for, or
    with backoff when it raises (a failing object never blocks the others)."""
    while True:
        key = await queue.get()
        try:
            delay = await reconcile(key)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            delay = queue.backoff(key)
            on_error(key, exc, delay)
            queue.add_after(key, delay)
        else:
            queue.forget(key)
            on_success(key)
            if delay is not None:
                queue.add_after(key, delay)
        finally:
            queue.done(key)
