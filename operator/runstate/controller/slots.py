"""Concurrency slots of Runbooks: acquire, renew, release, and wake the runs queued for one.

A slot is a lease in the state store (`runstate:slots:{<namespace>/<runbook>}`), taken by a run
that needs one (`domain.concurrency.needs_slot`) and renewed while it lives; a dead operator's
leases expire. A free slot goes to the oldest waiting run first (`domain.concurrency`).
Taking a slot is an input of the decision, so it happens before `decide()`; giving it back is
an effect, applied by the applier through `release`.

It must not decide the run's state: it answers "held, or not, and by whom".
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from runstate.api.v1alpha1 import Concurrency
from runstate.controller.cache import Cache
from runstate.controller.memory import SlotHold
from runstate.controller.metered import Metered
from runstate.controller.view import ObjectKey, RunView
from runstate.domain.concurrency import queued_ahead


@dataclass(frozen=True)
class SlotAnswer:
    held: bool | None  # None: the Runbook sets no limit, or the run needs no slot now
    holders: tuple[str, ...] = ()  # the runs holding the slots, when not held


def scope_of(namespace: str, runbook: str) -> str:
    return f"{namespace}/{runbook}"


class Slots:
    def __init__(
        self,
        *,
        store: Metered,
        cache: Cache,
        ttl_seconds: float,
        wake: Callable[[ObjectKey], None],
    ) -> None:
        self.store = store
        self.cache = cache
        self.ttl = ttl_seconds
        self.wake = wake

    async def take(
        self,
        run: RunView,
        *,
        runbook: str,
        limit: Concurrency | None,
        needed: bool,
        hold: SlotHold,
        now: datetime,
    ) -> SlotAnswer:
        """Take (or renew) the run's slot under its Runbook's limit when it needs one now."""
        if limit is None or not runbook or not needed:
            return SlotAnswer(None)
        scope = scope_of(run.namespace, runbook)
        if hold.scope == scope and time.monotonic() - hold.renewed < self.ttl / 3:
            return SlotAnswer(True)  # renewed recently: no store round trip per pod event
        if hold.scope != scope:
            holders = await self.store("slot_holders", self.store.store.aslot_holders(scope))
            if run.uid not in holders and not self._first_in_line(
                run, runbook, holders, limit, now
            ):
                return SlotAnswer(False, self._names(run.namespace, runbook, holders))
        got = await self.store(
            "acquire_slot",
            self.store.store.aacquire_slot(scope, run.uid, limit=limit.limit, ttl_seconds=self.ttl),
        )
        if got:
            hold.scope, hold.renewed = scope, time.monotonic()
            return SlotAnswer(True)
        holders = await self.store("slot_holders", self.store.store.aslot_holders(scope))
        return SlotAnswer(False, self._names(run.namespace, runbook, holders))

    def _first_in_line(
        self,
        run: RunView,
        runbook: str,
        holders: Sequence[str],
        limit: Concurrency,
        now: datetime,
    ) -> bool:
        """First in, first served: a free slot goes to the oldest runs waiting for one."""
        free = limit.limit - len(holders)
        if free <= 0:
            return False
        others = [RunView.of(b).queued() for b in self._bodies(run.namespace, runbook)]
        return queued_ahead(run.queued(), others, holders, now) < free

    async def release(self, key: ObjectKey, uid: str, hold: SlotHold) -> None:
        """Give the slot back and wake the runs of the Runbook that may want it."""
        scope = hold.scope
        if not scope:
            return
        await self.store("release_slot", self.store.store.arelease_slot(scope, uid))
        hold.scope = None
        namespace, runbook = scope.split("/", 1)
        for other in self.cache.runs_of_runbook((namespace, runbook)):
            body = self.cache.run(other)
            if other != key and body is not None and not RunView.of(body).final:
                self.wake(other)  # ended runs want no slot: waking them is wasted work

    def _bodies(self, namespace: str, runbook: str) -> list[Mapping[str, Any]]:
        found = (self.cache.run(k) for k in self.cache.runs_of_runbook((namespace, runbook)))
        return [b for b in found if b is not None]

    def _names(self, namespace: str, runbook: str, uids: Sequence[str]) -> tuple[str, ...]:
        names = [
            view.name
            for view in (RunView.of(b) for b in self._bodies(namespace, runbook))
            if view.uid in uids
        ]
        return tuple(sorted(names))
