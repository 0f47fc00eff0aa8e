"""The Run reconciler: load → decide → plan → apply, for one Run at a time.

It reads a typed view of the cached Run, loads what the store holds of it (once per process,
then kept current by the applier), gathers the decision's inputs (the parsed spec, its Runbook,
a Node inventory's snapshot, the concurrency slot), asks the pure engine, has the pure planner
order the effects, and hands them to the applier. It decides nothing itself.

Two inputs are made durable before the decision, because the decision depends on them: the
concurrency slot (a lease in the store) and a Node inventory's snapshot (taken once, so Nodes
that come and go do not change a run under way).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from pydantic import ValidationError

from runstate import metrics
from runstate.api.v1alpha1 import FINALIZER, HistoryItem, Host, RunbookSpec, RunSpec
from runstate.controller import hotstate
from runstate.controller.announce import Labels
from runstate.controller.apply import Applier, Outcome
from runstate.controller.cache import Cache
from runstate.controller.effects import AddFinalizer, Effects
from runstate.controller.hotstate import HotState
from runstate.controller.memory import Memories, RunMemory
from runstate.controller.metered import Metered
from runstate.controller.plan import RunInput, Timing, plan_run
from runstate.controller.slots import Slots
from runstate.controller.view import ObjectKey, RunbookView, RunView
from runstate.domain import engine, stopping, validation
from runstate.domain.concurrency import needs_slot
from runstate.domain.engine import Decision, Observation, Progress
from runstate.domain.inventory import describe_selector
from runstate.domain.states import is_final
from runstate.domain.work import Observed
from runstate.kube.api import KubeApi
from runstate.kube.nodes import hosts_from_nodes
from runstate.kube.status import HISTORY_IN_STATUS
from runstate.settings import OperationsSettings, ReconcileSettings
from runstate_stores.base import StateRecord

# A decision is linear in the run's units: about 0.7 s for a 10,000-host run at 100,000 units.
# Above this many it runs in a thread, so the event loop (other runs, probes, kopf) keeps going
# while it works; below, the thread hop would cost more than it saves.
OFFLOAD_UNITS = 2000


async def decide(obs: Observation) -> Decision:
    if len(obs.units) < OFFLOAD_UNITS:
        return engine.decide(obs)
    # Safe in a thread: the observation is immutable and the engine does no I/O.
    return await asyncio.to_thread(engine.decide, obs)


def validation_problem(prefix: str, exc: ValidationError) -> str:
    """The first problem of a spec, naming its field: `spec.operations[0].run: ...`."""
    return validation.describe(prefix, exc)


class InvalidRunbook(Exception):
    pass


@dataclass(frozen=True)
class Decided:
    decision: Decision
    spec: RunSpec | None
    units: Sequence[Observed]  # what the decision saw: the pods, and the pods expected


class RunbookSpecs:
    """Parsed Runbook specs, one per Runbook generation.

    Every reconcile of a Run reads its Runbook; parsing it each time would be most of the
    reconcile's CPU for a big inventory, and a new object each time would defeat the domain's
    Setup cache (worked out once per spec object). A new generation (or a new Runbook of the
    same name) is parsed anew; an invalid spec keeps its problem, naming the field."""

    def __init__(self) -> None:
        self._by_key: dict[ObjectKey, tuple[str, int, RunbookSpec | str]] = {}

    def parse(self, runbook: RunbookView) -> RunbookSpec | str:
        hit = self._by_key.get(runbook.key)
        if hit is not None and hit[:2] == (runbook.uid, runbook.generation):
            return hit[2]
        parsed: RunbookSpec | str
        try:
            parsed = RunbookSpec.model_validate(runbook.spec)
        except ValidationError as exc:
            parsed = validation_problem(f"Runbook {runbook.name!r} spec", exc)
        self._by_key[runbook.key] = (runbook.uid, runbook.generation, parsed)
        return parsed

    def forget(self, key: ObjectKey) -> None:
        self._by_key.pop(key, None)


class RunReconciler:
    def __init__(
        self,
        *,
        kube: KubeApi,
        store: Metered,
        cache: Cache,
        slots: Slots,
        applier: Applier,
        settings: ReconcileSettings,
        operations: OperationsSettings,
        clock: Callable[[], datetime],
    ) -> None:
        self.kube = kube
        self.store = store
        self.cache = cache
        self.slots = slots
        self.applier = applier
        self.settings = settings
        self.operations = operations
        self.clock = clock
        self.memories = Memories()
        self.runbooks = RunbookSpecs()

    def forget(self) -> None:
        """Drop what this process remembers of every run: after standing by while another
        replica acted, only the store and the cluster tell how the runs stand."""
        self.memories.clear()

    async def reconcile(self, key: ObjectKey) -> float | None:
        body = self.cache.run(key)
        if body is None:
            mem = self.memories.pop(key)
            if mem is not None:
                # Normally the finalizer saw to this; a Run deleted without it (removed by
                # hand, or never added) still leaves nothing behind in the store.
                await self.applier.forget(key, mem)
            return None
        run = RunView.of(body)
        mem = self.memories.get(key, run.uid)
        if mem.done and run.deleted_at is None and self._shows_end(run, mem):
            # Ended, and the object says so: late events change nothing until the next of
            # its kept pods falls due.
            if mem.cleanup.due_at is None:
                return None
            if (due_in := mem.cleanup.due_at - time.monotonic()) > 0:
                return due_in
        record = mem.record or await self.store("get_state", self.store.store.aget_state(run.uid))
        before = (
            hotstate.decode_record(record) if record else hotstate.progress_from_status(run.status)
        )
        hot = mem.hot or await self._load(run, mem, before)
        if mem.status.history is None:
            mem.status.history = await self._history(run)
        if self._needs_finalizer(run, mem, before):
            effects = Effects((AddFinalizer((*run.finalizers, FINALIZER), run.resource_version),))
            added = await self.applier.apply(run, mem, effects)
            if not added.completed:
                return added.requeue_after
        decided = await self._decide(run, mem, before, hot)
        effects = plan_run(self._input(run, mem, decided, before=before, record=record, hot=hot))
        outcome = await self.applier.apply(run, mem, effects)
        return self._after(key, mem, decided.decision, effects, outcome)

    @staticmethod
    def _shows_end(run: RunView, mem: RunMemory) -> bool:
        return (
            mem.record is not None
            and run.state_type is not None
            and (run.state_type.value == mem.record.type)
        )

    @staticmethod
    def _needs_finalizer(run: RunView, mem: RunMemory, before: Progress | None) -> bool:
        # The rule is the domain's; the memory only stops a second add while the cache lags.
        return not mem.finalizer_added and stopping.needs_finalizer(
            before, deleting=run.deleted_at is not None, has_finalizer=FINALIZER in run.finalizers
        )

    async def _load(self, run: RunView, mem: RunMemory, before: Progress | None) -> HotState:
        """What the store holds of the run besides its record, read once per process."""
        stored = await self.store("get_results", self.store.store.aget_results(run.uid))
        mem.hot = hotstate.decode_results(stored)
        mem.announced.hook_failures = run.failed_hooks
        if before is not None:
            mem.announced.stage_since = (before.stage.value, time.monotonic())
        return mem.hot

    async def _history(self, run: RunView) -> list[HistoryItem]:
        """The run's history as committed: the store's is the truth (the status may lag it
        after a crash), the status's when the store has lost it."""
        entries = await self.store(
            "read_history", self.store.store.aread_history(run.uid, HISTORY_IN_STATUS)
        )
        return hotstate.history_items(entries) if entries else hotstate.status_history(run.status)

    # ---- the decision's inputs ------------------------------------------------------------

    async def _decide(
        self, run: RunView, mem: RunMemory, before: Progress | None, hot: HotState
    ) -> Decided:
        now = self.clock()
        units = mem.expected.merge(self.cache.units(run.uid))
        spec: RunSpec | None = None
        try:
            if mem.spec is None or mem.spec[0] != run.generation:
                mem.spec = (run.generation, RunSpec.model_validate(run.spec))
            spec = mem.spec[1]
            runbook, problem = self._runbook(run, spec)
            nodes = await self._nodes(run, mem, runbook, before)
            slot = await self.slots.take(
                run,
                runbook=run.runbook_name or "",
                limit=runbook.trigger.concurrency if runbook is not None else None,
                needed=needs_slot(
                    before.state if before else None, scheduled_time=spec.scheduled_time, now=now
                ),
                hold=mem.slot,
                now=now,
            )
            obs = Observation(
                spec=spec,
                runbook=runbook,
                runbook_problem=problem,
                progress=before,
                units=units,
                now=now,
                launched=frozenset(hot.launched),
                slot=slot.held,
                holders=slot.holders,
                deleted_at=run.deleted_at,
                nodes=nodes,
                privileged_allowed=self.operations.allow_privileged,
            )
            return Decided(await decide(obs), spec, units)
        except ValidationError as exc:
            problem = validation_problem("spec", exc)
        except InvalidRunbook as exc:
            problem = str(exc)
        return Decided(
            engine.reject(self._reject_obs(run, before, now, units, spec), problem), spec, units
        )

    def _runbook(self, run: RunView, spec: RunSpec) -> tuple[RunbookSpec | None, str | None]:
        """The Runbook to run (inline, or by reference), or why there is none."""
        if spec.runbook is not None:
            _prime(run, spec.runbook)
            return spec.runbook, None
        name = run.runbook_name or ""
        body = self.cache.runbook((run.namespace, name))
        if body is None:
            self.runbooks.forget((run.namespace, name))
            where = f"no Runbook {name!r} in namespace {run.namespace!r}"
            return None, f"spec.runbookRef.name: {where}"
        parsed = self.runbooks.parse(RunbookView.of(body))
        if isinstance(parsed, str):
            raise InvalidRunbook(parsed)
        _prime(run, parsed)
        return parsed, None

    async def _nodes(
        self, run: RunView, mem: RunMemory, rb: RunbookSpec | None, before: Progress | None
    ) -> tuple[Host, ...] | None:
        """A Node inventory's hosts: listed once, when the run is first reconciled, and kept
        in the store, so that Nodes that come or go later do not change a run under way."""
        if rb is None or rb.inventory.node_selector is None:
            return None
        hot = mem.hot
        if hot is not None and hot.nodes is not None:
            return hot.nodes
        if before is not None and is_final(before.state.type):
            return ()
        selector = describe_selector(rb.inventory.node_selector)
        hosts = hosts_from_nodes(await self.kube.list_nodes(selector))
        if hosts:
            payload = hotstate.encode_inventory(hosts)
            await self.store("set_results", self.store.store.aset_results(run.uid, payload))
            if hot is not None:
                hot.nodes = hosts
        return hosts

    @staticmethod
    def _reject_obs(
        run: RunView,
        before: Progress | None,
        now: datetime,
        units: Sequence[Observed],
        spec: RunSpec | None,
    ) -> Observation:
        # reject() reads progress, time, deletion, the pods (a cancel still stops them) and,
        # when the Run's own spec parsed, whether it asks for a cancel.
        placeholder = spec or RunSpec.model_construct(runbook_ref=None, runbook=None)
        return Observation(
            spec=placeholder,
            runbook=None,
            runbook_problem=None,
            progress=before,
            units=tuple(units),
            now=now,
            deleted_at=run.deleted_at,
        )

    # ---- plan and after -------------------------------------------------------------------

    def _input(
        self,
        run: RunView,
        mem: RunMemory,
        decided: Decided,
        *,
        before: Progress | None,
        record: StateRecord | None,
        hot: HotState,
    ) -> RunInput:
        s = self.settings
        return RunInput(
            view=run,
            decision=decided.decision,
            before=before,
            record_version=record.version if record else 0,
            hot=hot,
            units=decided.units,
            parameters=decided.spec.parameters if decided.spec else {},
            labels=_labels(run),
            history=mem.status.history or [],
            written=mem.status.written,
            last_write=mem.status.last_write or mem.status.first_seen,
            announced=dataclasses.replace(mem.announced),
            holds_slot=mem.slot.scope is not None,
            replaced=frozenset(mem.slot.replaced),
            cleaned=frozenset(mem.cleanup.cleaned),
            refusal=mem.refusal,
            refusals=mem.refusals,
            timing=Timing(
                now=self.clock(),
                mono_now=time.monotonic(),
                resync_seconds=s.resync_seconds,
                coalesce_seconds=s.status_coalesce_seconds,
                finished_ttl_seconds=s.finished_ttl_seconds,
            ),
            runner_image=self.operations.runner_image,
        )

    def _after(
        self,
        key: ObjectKey,
        mem: RunMemory,
        decision: Decision,
        effects: Effects,
        outcome: Outcome,
    ) -> float | None:
        if mem.finalized:
            self.memories.pop(key)
            return None
        if mem.status.history is not None:
            items = hotstate.transition_items(decision.transitions)
            mem.status.history = [*mem.status.history, *items][-HISTORY_IN_STATUS:]
        if decision.final:
            mem.expected.clear()
        if effects.done and outcome.completed:
            mem.done = True
            due = effects.cleanup_due_in
            mem.cleanup.due_at = None if due is None else time.monotonic() + due
        return outcome.requeue_after


def _labels(run: RunView) -> Labels:
    """The run's metric labels, its Runbook's alerting series primed at 0 on first sight."""
    labels = Labels(run.namespace, run.runbook_name or "")
    metrics.prime_runbook(labels.namespace, labels.runbook)
    return labels


def _prime(run: RunView, runbook: RunbookSpec) -> None:
    """Its valid Runbook's operations get their result series, at 0, before the first result."""
    operations = (op.name for op in runbook.operations)
    metrics.prime_runbook(run.namespace, run.runbook_name or "", operations)
