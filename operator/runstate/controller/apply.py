"""The applier: the only code that writes to the API server and the state store for a run.

It carries out a plan's effects in the order given (see `plan` for why that order is
crash-safe), keeps the run's memory current with what was written, and stops early when an
answer means the plan no longer holds: a lost compare-and-set (another writer moved the run),
a status that someone else changed, or an object that is gone. A pod the API server refuses
is remembered (the run shows `Stalled`/`PodCreateFailed` and retries with backoff), never
raised. `checkpoint` is called before each effect: the unit tests crash the operator there.

It must not decide anything: every choice was made by the planners.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prometheus_client import Counter, Histogram

from runstate import metrics
from runstate.controller.effects import (
    AddFinalizer,
    Announce,
    CancelRuns,
    CleanUpPods,
    Commit,
    CreatePods,
    CreateRun,
    DeletePods,
    DeleteRuns,
    Effect,
    Effects,
    Event,
    Expire,
    Finalize,
    Measure,
    Metric,
    PostEvent,
    ReleaseSlot,
    StoreLaunched,
    StoreResults,
    WriteRunbookStatus,
    WriteStatus,
)
from runstate.controller.hotstate import encode_launched
from runstate.controller.memory import RunMemory
from runstate.controller.metered import Metered
from runstate.controller.slots import Slots
from runstate.controller.view import ObjectKey, ObjectView, RunbookView, RunView
from runstate.domain.work import Observed, Phase
from runstate.kube import events
from runstate.kube.api import Conflict, Gone, KubeApi, Plural, Refused
from runstate.kube.status import status_differs
from runstate_stores.base import VersionConflict

log = logging.getLogger(__name__)

STATUS_CONFLICT_RETRIES = 5  # 409s in a row on one status write before deciding again
CONFLICT_RECHECK_SECONDS = 0.5
CLEANUP_BATCH = 20  # pod deletions in flight at once when an ended run's pods go

Checkpoint = Callable[[Effect], None]


class Stop(Exception):
    """The plan no longer holds: look again after `after` seconds (None: the object is gone)."""

    def __init__(self, after: float | None) -> None:
        super().__init__(after)
        self.after = after


@dataclass(frozen=True)
class Outcome:
    requeue_after: float | None
    completed: bool  # every effect applied (False: stopped early, the plan no longer holds)


# Each metric a plan can move, and whether it counts (a counter) or observes (a histogram).
COUNTERS: Mapping[Metric, Counter] = {
    Metric.STAGE_WARNINGS: metrics.STAGE_WARNINGS,
    Metric.RUN_FAILURES: metrics.RUN_FAILURES,
    Metric.HOST_FAILURES: metrics.HOST_FAILURES,
    Metric.OPERATION_RESULTS: metrics.OPERATION_RESULTS,
    Metric.STATE_TRANSITIONS: metrics.STATE_TRANSITIONS,
}
HISTOGRAMS: Mapping[Metric, Histogram] = {
    Metric.RUN_DURATION: metrics.RUN_DURATION,
    Metric.STAGE_DURATION: metrics.STAGE_DURATION,
}


def _measure(m: Measure) -> None:
    if m.metric in COUNTERS:
        counter = COUNTERS[m.metric]
        (counter.labels(*m.labels) if m.labels else counter).inc(m.value)
        return
    histogram = HISTOGRAMS[m.metric]
    (histogram.labels(*m.labels) if m.labels else histogram).observe(m.value)


class Applier:
    def __init__(
        self,
        *,
        kube: KubeApi,
        store: Metered,
        slots: Slots,
        clock: Callable[[], datetime],
        create_concurrency: int,
        checkpoint: Checkpoint | None = None,
    ) -> None:
        self.kube = kube
        self.store = store
        self.slots = slots
        self.clock = clock
        self.checkpoint = checkpoint or (lambda effect: None)
        self._create_slots = asyncio.Semaphore(create_concurrency)

    async def apply(self, run: RunView, mem: RunMemory, effects: Effects) -> Outcome:
        try:
            for step in effects.steps:
                self.checkpoint(step)
                await self._one(run, mem, step)
        except Stop as stop:
            return Outcome(stop.after, completed=False)
        return Outcome(effects.requeue_after, completed=True)

    async def apply_runbook(
        self, runbook: RunbookView, effects: Effects, asked: set[str]
    ) -> Outcome:
        """A Runbook's effects: Runs created, expired Runs deleted (remembered in `asked`),
        its status, its Events."""
        for step in effects.steps:
            self.checkpoint(step)
            if isinstance(step, CreateRun):
                if await self.kube.create_run(runbook.namespace, step.body):
                    await self._event(runbook, step.event)
            elif isinstance(step, DeleteRuns):
                for name in step.names:
                    await self.kube.delete_run(runbook.namespace, name)
                    asked.add(name)
                await self._event(runbook, step.event)
            elif isinstance(step, WriteRunbookStatus):
                try:
                    await self.kube.patch_status(
                        Plural.RUNBOOKS, runbook.namespace, runbook.name, step.status
                    )
                except Gone:
                    return Outcome(None, completed=False)
            elif isinstance(step, PostEvent):
                await self._event(runbook, step.event)
        return Outcome(effects.requeue_after, completed=True)

    async def forget(self, key: ObjectKey, mem: RunMemory) -> None:
        """A Run gone without our finalizer's clean-up: nothing of it stays in the store."""
        await self.store("delete", self.store.store.adelete(mem.uid))
        await self.slots.release(key, mem.uid, mem.slot)

    async def _one(self, run: RunView, mem: RunMemory, step: Effect) -> None:
        if isinstance(step, AddFinalizer):
            await self._add_finalizer(run, mem, step)
        elif isinstance(step, StoreResults):
            await self._store_results(mem, step)
        elif isinstance(step, Commit):
            await self._commit(run, mem, step)
        elif isinstance(step, ReleaseSlot):
            await self.slots.release(run.key, mem.uid, mem.slot)
        elif isinstance(step, CancelRuns):
            for name in step.names:
                await self.kube.patch_spec(Plural.RUNS, run.namespace, name, {"cancel": True})
                mem.slot.replaced.add(name)
        elif isinstance(step, CreatePods):
            await self._create_pods(run, mem, step)
        elif isinstance(step, DeletePods):
            for name in step.names:
                await self.kube.delete_pod(run.namespace, name)
        elif isinstance(step, StoreLaunched):
            await self._store_launched(mem, step)
        elif isinstance(step, WriteStatus):
            await self._write_status(run, mem, step)
        elif isinstance(step, Announce):
            await self._announce(run, mem, step)
        elif isinstance(step, CleanUpPods):
            await self._clean_up(run, mem, step)
        elif isinstance(step, Expire):
            await self.store("expire", self.store.store.aexpire(mem.uid, step.ttl_seconds))
        elif isinstance(step, Finalize):
            await self._finalize(run, mem, step)

    # ---- the store ------------------------------------------------------------------------

    async def _store_results(self, mem: RunMemory, step: StoreResults) -> None:
        await self.store("set_results", self.store.store.aset_results(mem.uid, step.payload))
        if mem.hot is not None:
            mem.hot.result_keys.update(step.payload)
        for m in step.measures:
            _measure(m)

    async def _commit(self, run: RunView, mem: RunMemory, step: Commit) -> None:
        try:
            mem.record = await self.store(
                "commit",
                self.store.store.acommit(
                    mem.uid,
                    step.record,
                    expected_version=step.expected_version,
                    history=list(step.history),
                ),
            )
        except VersionConflict as exc:
            # Someone else moved this run (another replica, a wiped store): read again.
            log.info("run %s/%s: %s; reconciling again", run.namespace, run.name, exc)
            mem.reread()
            raise Stop(0.0) from None

    async def _store_launched(self, mem: RunMemory, step: StoreLaunched) -> None:
        refused = mem.refused_keys
        keys = [k for k in step.keys if k not in refused]
        if not keys:
            return
        payload = encode_launched(keys)
        await self.store("set_results", self.store.store.aset_results(mem.uid, payload))
        mem.launched(keys)

    # ---- pods -----------------------------------------------------------------------------

    async def _create_pods(self, run: RunView, mem: RunMemory, step: CreatePods) -> None:
        refused: list[tuple[str, str]] = []

        async def one(name: str, body: Mapping[str, Any], unit: Observed) -> None:
            try:
                async with self._create_slots:
                    await self.kube.create_pod(run.namespace, body)
            except Refused as exc:
                refused.append((name, exc.message))
                mem.refused_keys.add(unit.key)
                return
            # Until the watch shows it, count the pod as pending so `parallel` holds.
            mem.expected.expect(name, unit)
            mem.refused_keys.discard(unit.key)

        await asyncio.gather(
            *(one(p.name, p.body, Observed(key=p.key, phase=Phase.PENDING)) for p in step.pods)
        )
        if refused:
            name, message = sorted(refused)[0]
            mem.refusal = (name, message)
            mem.refusals += 1
            log.warning(
                "run %s/%s: the API server refused %d pod(s), first %s: %s",
                run.namespace,
                run.name,
                len(refused),
                name,
                message,
            )
        else:
            mem.refusal, mem.refusals = None, 0

    async def _clean_up(self, run: RunView, mem: RunMemory, step: CleanUpPods) -> None:
        if step.selector is not None:
            # All of them at once (a 10,000-host run has 20,000 pods): one API call.
            await self.kube.delete_pods(run.namespace, step.selector)
            mem.cleanup.cleaned.update(step.keys)
        pairs = [(k, n) for k, n in zip(step.keys, step.names, strict=True)]
        for start in range(0, len(pairs), CLEANUP_BATCH):
            batch = [
                (k, n)
                for k, n in pairs[start : start + CLEANUP_BATCH]
                if k not in mem.cleanup.cleaned
            ]
            await asyncio.gather(*(self.kube.delete_pod(run.namespace, n) for _, n in batch))
            mem.cleanup.cleaned.update(k for k, _ in batch)
        if step.event is not None:
            await self._event(run, step.event)

    # ---- the Run object -------------------------------------------------------------------

    async def _add_finalizer(self, run: RunView, mem: RunMemory, step: AddFinalizer) -> None:
        before = mem.fence.version(step.resource_version)
        try:
            added = await self.kube.set_finalizers(
                Plural.RUNS, run.namespace, run.name, list(step.finalizers), before
            )
        except Gone:
            raise Stop(None) from None
        if not added:
            metrics.API_CONFLICTS.labels("runs").inc()
            raise Stop(CONFLICT_RECHECK_SECONDS)  # changed meanwhile: look at the newer object
        mem.fence.wrote(before, added)
        mem.finalizer_added = True

    async def _write_status(self, run: RunView, mem: RunMemory, step: WriteStatus) -> None:
        """Patch the status onto the object version it was decided from.

        A 409 means the object changed since: usually its spec or metadata (a user, Argo CD),
        and then the same status goes onto the current version; nothing of theirs or ours is
        lost, as the patch carries only the status. When the status itself is no longer what
        this decision started from, someone else wrote it and ours must not win: read again.
        """
        if not step.write:
            mem.status.written = dict(step.status)
            return
        version = mem.fence.version(run.resource_version)
        for _ in range(STATUS_CONFLICT_RETRIES):
            try:
                written = await self.kube.patch_status(
                    Plural.RUNS,
                    run.namespace,
                    run.name,
                    step.status,
                    resource_version=version or None,
                )
            except Gone:
                raise Stop(None) from None
            except Conflict:
                metrics.API_CONFLICTS.labels("runs/status").inc()
                current = await self.kube.get_object(Plural.RUNS, run.namespace, run.name)
                if status_moved(current, step.baseline):
                    break
                version = str(current["metadata"]["resourceVersion"])
                continue
            mem.fence.wrote(version, ObjectView.fields(written)["resource_version"] or None)
            mem.status.written = dict(step.status)
            mem.status.last_write = time.monotonic()
            return
        # Another writer changed the status (a second replica during a hand-over): decide
        # again from the store and the object as they are now. The transitions of this
        # decision are committed all the same, so the Events and metrics that follow in the
        # plan still go out (the next decision will not make them again); nothing after them.
        mem.reread()
        mem.lost_status_write = True

    async def _announce(self, run: RunView, mem: RunMemory, step: Announce) -> None:
        for m in step.measures:
            _measure(m)
        a = mem.announced
        if step.warnings is not None:
            a.warnings = dict(step.warnings)
        a.stalled_reason = step.stalled_reason
        a.hook_failures = (a.hook_failures or set()) | set(step.hook_failures)
        a.stage_since = step.stage
        for event in step.events:
            await self._event(run, event)
        if mem.lost_status_write:
            mem.lost_status_write = False
            raise Stop(CONFLICT_RECHECK_SECONDS)

    async def _event(self, obj: ObjectView, event: Event) -> None:
        body = events.build_event(
            kind=event.kind,
            name=obj.name,
            namespace=obj.namespace,
            uid=obj.uid,
            reason=event.reason,
            message=event.message,
            now=self.clock(),
        )
        try:
            await self.kube.post_event(obj.namespace, body)
        except Exception as exc:  # an Event is a courtesy; the history is the record
            log.warning(
                "%s %s/%s: could not post event %s: %s",
                event.kind,
                obj.namespace,
                obj.name,
                event.reason,
                exc,
            )

    async def _finalize(self, run: RunView, mem: RunMemory, step: Finalize) -> None:
        """A deleted Run that is over: drop its hot state, then let it go. Its pods (all
        finished) go with it through their ownerReferences."""
        await self.store("delete", self.store.store.adelete(mem.uid))
        await self.slots.release(run.key, mem.uid, mem.slot)
        if step.remove:
            try:
                done = await self.kube.set_finalizers(
                    Plural.RUNS,
                    run.namespace,
                    run.name,
                    list(step.finalizers),
                    mem.fence.version(run.resource_version),
                )
            except Gone:
                done = "gone"
            if not done:
                metrics.API_CONFLICTS.labels("runs").inc()
                raise Stop(CONFLICT_RECHECK_SECONDS)  # changed meanwhile: the newer object
        mem.finalized = True
        raise Stop(None)


def status_moved(current: Mapping[str, Any], baseline: Mapping[str, Any]) -> bool:
    """Whether the object's status is no longer the one a decision started from."""
    return status_differs(ObjectView.fields(current)["status"], baseline)


__all__ = ["Applier", "Checkpoint", "Outcome", "Stop"]
