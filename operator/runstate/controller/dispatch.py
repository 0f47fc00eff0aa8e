"""The workers: take keys off the work queue, route them to the Run or Runbook reconciler,
report failures, and resync every Run now and then.

A key is reconciled only while this replica may act (the peering gate) and once the pod cache
is complete (a run's pods would look missing before). A failing reconcile is retried with
backoff; its log says the reason on one line per retry and shows the traceback once, the
first time that error is seen for that key.

It must not decide anything about a run.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from runstate import metrics
from runstate.controller.queue import WorkQueue
from runstate.controller.view import ObjectKey
from runstate_stores.base import StoreUnavailable

log = logging.getLogger("runstate")


class Kind(enum.StrEnum):
    RUN = "run"
    RUNBOOK = "runbook"


QueueKey = tuple[Kind, str, str]  # (kind, namespace, name)
Reconcile = Callable[[ObjectKey], Awaitable[float | None]]


def run_key(namespace: str, name: str) -> QueueKey:
    return (Kind.RUN, namespace, name)


def runbook_key(namespace: str, name: str) -> QueueKey:
    return (Kind.RUNBOOK, namespace, name)


@dataclass
class FailureLog:
    """One line per failed try, with the reason; the traceback once per key and error."""

    seen: dict[QueueKey, str] = field(default_factory=dict)

    def failed(self, key: QueueKey, exc: Exception, retry_in: float) -> None:
        metrics.RECONCILE_ERRORS.labels(key[0].value).inc()
        kind, namespace, name = key
        what = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, StoreUnavailable):
            # An outage, not a bug: /readyz says so, and the key is retried with backoff.
            log.warning(
                "reconcile of %s %s/%s waits for the state store (retry in %.1fs): %s",
                kind.value,
                namespace,
                name,
                retry_in,
                exc,
            )
            return
        if self.seen.get(key) == what:
            log.warning(
                "reconcile of %s %s/%s failed again (retry in %.1fs): %s",
                kind.value,
                namespace,
                name,
                retry_in,
                what,
            )
            return
        self.seen[key] = what
        log.error(
            "reconcile of %s %s/%s failed (retry in %.1fs): %s",
            kind.value,
            namespace,
            name,
            retry_in,
            what,
            exc_info=exc,
        )

    def succeeded(self, key: QueueKey) -> None:
        self.seen.pop(key, None)


class Dispatcher:
    def __init__(
        self,
        *,
        queue: WorkQueue[QueueKey],
        runs: Reconcile,
        runbooks: Reconcile,
        ready: Callable[[], Awaitable[None]],
    ) -> None:
        self.queue = queue
        self._routes = {Kind.RUN: runs, Kind.RUNBOOK: runbooks}
        self._ready = ready
        self.failures = FailureLog()

    async def dispatch(self, key: QueueKey) -> float | None:
        await self._ready()
        kind, namespace, name = key
        return await self._routes[kind]((namespace, name))

    def tasks(self, workers: int) -> list[asyncio.Task[None]]:
        from runstate.controller.queue import work

        return [
            asyncio.create_task(
                work(self.queue, self.dispatch, self.failures.failed, self.failures.succeeded)
            )
            for _ in range(workers)
        ]


async def resync(
    queue: WorkQueue[QueueKey],
    run_keys: Callable[[], Sequence[ObjectKey]],
    every: float,
    started: asyncio.Event,
) -> None:
    """Level-based drift check: every so often, every Run is reconciled whatever happened."""
    await started.wait()
    while True:
        await asyncio.sleep(every)
        for namespace, name in run_keys():
            queue.add(run_key(namespace, name))
