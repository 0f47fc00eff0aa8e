"""Reconcile one Run or Runbook: read what is, ask the domain what should be, apply it.

The reconciler owns the *order* of effects, which is what makes a crash harmless:
1. commit the state transition to the store (atomic compare-and-set on the version);
2. create / delete pods (deterministic names: a repeat is a 409, never a second pod);
3. record new op × host results in the store;
4. write the status, but only when it differs from what the object shows;
5. post Events and count metrics for what was committed.
A crash between any two steps leaves a state that the next reconcile reads back and finishes.
It decides nothing itself: every decision comes from `runstate.domain.engine.decide`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from pydantic import ValidationError

from runstate import metrics
from runstate.api.v1alpha1 import (
    FINALIZER,
    HistoryItem,
    Host,
    RunbookSpec,
    RunSpec,
    RunState,
    Stage,
    StateType,
)
from runstate.domain import engine, history, retention, triggers
from runstate.domain.concurrency import QueuedRun, queued_ahead
from runstate.domain.engine import Decision, Observation, Progress
from runstate.domain.inventory import describe_selector
from runstate.domain.states import is_final, label, parse_time, seconds_between
from runstate.domain.work import Kind, Observed, Phase, WorkKey
from runstate.kube import events, pods, runs, status
from runstate.kube.client import Conflict, Gone, KubeClient
from runstate.kube.nodes import hosts_from_nodes
from runstate_stores.base import AsyncStateStore, HistoryEntry, StateRecord, VersionConflict

log = logging.getLogger(__name__)

ObjectKey = tuple[str, str]  # (namespace, name)
FINISHED_TTL_SECONDS = 7 * 24 * 3600
EXPECTATION_TIMEOUT = 60.0  # a created pod not seen in the cache by then is looked at again
LAUNCHED = "@launched|"  # results-hash key prefix of the record of started units
INVENTORY = "@inventory"  # results-hash key of a Node inventory's snapshot
# A decision is linear in the run's units: about 0.7 s for a 10,000-host run at 100,000 units.
# Above this many it runs in a thread, so the event loop (other runs, probes, kopf) keeps going
# while it works; below, the thread hop would cost more than it saves.
OFFLOAD_UNITS = 2000
CLEANUP_BATCH = 20
STATUS_CONFLICT_RETRIES = 5  # 409s in a row on one status write before deciding again
CONFLICT_RECHECK_SECONDS = 0.5  # pod deletions in flight at once when an ended run's pods go


def _launched_record(key: WorkKey) -> dict[str, Any]:
    return {
        "kind": key.kind.value,
        "operation": key.operation,
        "host": key.host,
        "attempt": key.attempt,
        "try": key.try_,
    }


def _launched_key(value: Mapping[str, Any]) -> WorkKey | None:
    try:
        return WorkKey(
            Kind(value["kind"]),
            str(value["operation"]),
            str(value["host"]),
            int(value["attempt"]),
            int(value["try"]),
        )
    except (KeyError, ValueError, TypeError):
        return None


class Cache(Protocol):
    """The operator's view of the cluster, fed by watches (kopf indexes)."""

    def run(self, key: ObjectKey) -> Mapping[str, Any] | None: ...
    def runbook(self, key: ObjectKey) -> Mapping[str, Any] | None: ...
    def units(self, run_uid: str) -> Sequence[tuple[str, Observed]]: ...
    def run_keys(self) -> Sequence[ObjectKey]: ...
    def runs_of_runbook(self, key: ObjectKey) -> Sequence[ObjectKey]: ...


@dataclass
class _Memory:
    """What this process remembers of a run between reconciles (lost on restart, by design:
    everything here can be re-derived, it only saves API writes and double counting)."""

    uid: str
    expected: dict[str, tuple[float, Observed]] = field(default_factory=dict)
    written_status: dict[str, Any] | None = None
    result_keys: set[str] | None = None  # op|host results already in the store
    launched: set[WorkKey] | None = None  # units recorded as started (see engine.Observation)
    warnings: dict[str, int] | None = None
    stage_since: tuple[str, float] | None = None
    stalled_reason: str | None = None
    first_seen: float = field(default_factory=time.monotonic)
    # The record this process last committed: the version fence makes reading it from here
    # safe (any other writer makes the next commit fail, and then the store is read again).
    record: StateRecord | None = None
    # The run's history as committed: seeded once from the store, then extended by every
    # committed decision, whether or not its status write was coalesced away.
    history: list[HistoryItem] | None = None
    # The concurrency scope this run holds a slot in, and the runs it asked to be replaced.
    slot_scope: str | None = None
    slot_renewed: float = 0.0
    replaced: set[str] = field(default_factory=set)
    # The parsed spec for a generation: parsing is most of a reconcile's CPU otherwise.
    spec: tuple[int, RunSpec] | None = None
    last_status_write: float | None = None
    done: bool = False  # ended and its hooks over: later events change nothing
    finalizer_added: bool = False  # until the cache shows it, do not add it twice
    hook_failures: set[tuple[str, str]] | None = None  # (hook, host) already announced
    nodes: tuple[Host, ...] | None = None  # a Node inventory, as the run started with it
    # Pod retention of an ended run: pods this process deleted, and when more fall due.
    cleaned: set[WorkKey] = field(default_factory=set)
    cleanup_at: float | None = None
    # resourceVersions this process's own writes went onto or produced, and the latest: a cache
    # that shows one of them is behind our writes, not showing someone else's.
    own_versions: set[str] = field(default_factory=set)
    own_latest: str | None = None

    def wrote(self, before: str, after: str | None) -> None:
        if not after:
            return
        if len(self.own_versions) > 64:
            self.own_versions.clear()
        self.own_versions.update((before, after))
        self.own_latest = after

    def version(self, cached: str) -> str:
        """The resourceVersion to write onto: ours when the cache has not caught up."""
        if cached in self.own_versions and self.own_latest:
            return self.own_latest
        return cached


async def _decide(obs: Observation) -> Decision:
    if len(obs.units) < OFFLOAD_UNITS:
        return engine.decide(obs)
    # Safe in a thread: the observation is immutable and the engine does no I/O.
    return await asyncio.to_thread(engine.decide, obs)


def _is_final(state: Mapping[str, Any]) -> bool:
    try:
        return is_final(StateType(str(state.get("type"))))
    except ValueError:
        return False


def _validation_problem(prefix: str, exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return f"{prefix}.{where}: {first['msg']}" if where else f"{prefix}: {first['msg']}"


def _progress_from_record(record: StateRecord) -> Progress:
    ctx = record.context
    state = RunState.model_validate(
        {
            **(ctx.get("stateDetails") or {}),
            "type": record.type,
            "name": record.name,
            "message": record.message,
            "timestamp": record.timestamp,
        }
    )
    return Progress(
        state=state,
        stage=Stage(record.stage),
        attempt=record.attempt,
        start_time=ctx.get("startTime"),
        end_time=ctx.get("endTime"),
        attempt_start=ctx.get("attemptStart"),
    )


def _progress_from_status(st: Mapping[str, Any]) -> Progress | None:
    """Rebuild progress from the CR status when the store has lost it (e.g. Redis wiped)."""
    try:
        state = RunState.model_validate(st["state"])
        return Progress(
            state=state,
            stage=Stage(st.get("stage") or "Setup"),
            attempt=int(st.get("attempt") or 1),
            start_time=st.get("startTime"),
            end_time=st.get("endTime"),
        )
    except (KeyError, ValueError, ValidationError):
        return None


def _record(progress: Progress) -> StateRecord:
    s = progress.state
    details = s.model_dump(
        by_alias=True, exclude_none=True, exclude={"type", "name", "message", "timestamp"}
    )
    context = {
        k: v
        for k, v in {
            "startTime": progress.start_time,
            "endTime": progress.end_time,
            "attemptStart": progress.attempt_start,
            "stateDetails": details or None,
        }.items()
        if v is not None
    }
    return StateRecord(
        type=s.type.value,
        name=s.name,
        stage=progress.stage.value,
        attempt=progress.attempt,
        message=s.message,
        timestamp=s.timestamp,
        context=context,
    )


def queued_run(body: Mapping[str, Any]) -> QueuedRun:
    """A Run as the concurrency queue sees it."""
    meta = body.get("metadata") or {}
    state = (body.get("status") or {}).get("state") or {}
    state_type = StateType(state["type"]) if state.get("type") else None
    if state_type is None:
        start_at = parse_time((body.get("spec") or {}).get("scheduledTime"))
    elif state_type is StateType.SCHEDULED and state.get("name") in ("Scheduled", "AwaitingRetry"):
        start_at = parse_time(state.get("scheduledTime"))
    else:
        start_at = None
    return QueuedRun(
        created=str(meta.get("creationTimestamp") or ""),
        name=str(meta.get("name") or ""),
        uid=str(meta.get("uid") or ""),
        state_type=state_type,
        start_at=start_at,
    )


class Reconciler:
    def __init__(
        self,
        *,
        kube: KubeClient,
        store: AsyncStateStore,
        cache: Cache,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        resync_seconds: float = 60.0,
        create_concurrency: int = 16,
        status_coalesce_seconds: float = 1.0,
        wake: Callable[[ObjectKey], None] | None = None,
        finished_ttl_seconds: int = FINISHED_TTL_SECONDS,
    ) -> None:
        # A lease outlives a few resyncs (each reconcile of a live run renews it), and dies with
        # an operator that stops renewing.
        self.kube = kube
        self.store = store
        self.cache = cache
        self.finished_ttl_seconds = finished_ttl_seconds
        self.clock = clock
        self.resync_seconds = resync_seconds
        self.status_coalesce_seconds = status_coalesce_seconds
        self.slot_ttl = max(120.0, 3 * resync_seconds)
        # Puts a run on the work queue: a released slot wakes the runs queued for it.
        self.wake = wake or (lambda key: None)
        self._memory: dict[ObjectKey, _Memory] = {}
        self._create_slots = asyncio.Semaphore(create_concurrency)
        # Per Runbook: finished Runs it has asked to delete (history) and the cache still shows.
        self._expired: dict[ObjectKey, set[str]] = {}

    def forget(self) -> None:
        """Drop what this process remembers of every run: after standing by while another
        replica acted, only the store and the cluster tell how the runs stand."""
        self._memory.clear()

    # ---- store calls, timed and counted ---------------------------------------------------

    async def _store_call(self, operation: str, call: Any) -> Any:
        started = time.perf_counter()
        try:
            return await call
        except VersionConflict:
            raise
        except Exception:
            metrics.STORE_ERRORS.labels(self.store.name).inc()
            raise
        finally:
            metrics.STORE_OPERATION.labels(self.store.name, operation).observe(
                time.perf_counter() - started
            )

    # ---- Runs --------------------------------------------------------------------------------

    def _runbook_for(self, ns: str, spec: RunSpec) -> tuple[RunbookSpec | None, str | None, str]:
        """(runbook spec, problem, runbook name for labels)."""
        if spec.runbook is not None:
            return spec.runbook, None, ""
        assert spec.runbook_ref is not None
        name = spec.runbook_ref.name
        body = self.cache.runbook((ns, name))
        if body is None:
            return None, f"spec.runbookRef.name: no Runbook {name!r} in namespace {ns!r}", name
        try:
            return RunbookSpec.model_validate(body.get("spec") or {}), None, name
        except ValidationError as exc:
            raise _InvalidRunbook(_validation_problem(f"Runbook {name!r} spec", exc)) from None

    def _units(self, mem: _Memory) -> list[Observed]:
        seen = dict(self.cache.units(mem.uid))
        now = time.monotonic()
        for name, (since, _) in list(mem.expected.items()):
            if name in seen or now - since > EXPECTATION_TIMEOUT:
                del mem.expected[name]
        return [*seen.values(), *(obs for _, obs in mem.expected.values())]

    async def reconcile_run(self, key: ObjectKey) -> float | None:
        body = self.cache.run(key)
        if body is None:
            mem = self._memory.pop(key, None)
            if mem is not None:
                # Normally the finalizer saw to this; a Run deleted without it (removed by
                # hand, or never added) still leaves nothing behind in the store.
                await self._store_call("delete", self.store.adelete(mem.uid))
                await self._release_slot(key, mem)
            return None
        meta = body.get("metadata") or {}
        ns, name, uid = key[0], key[1], meta.get("uid", "")
        generation = int(meta.get("generation") or 0)
        mem = self._memory.get(key)
        if mem is None or mem.uid != uid:
            mem = self._memory[key] = _Memory(uid=uid)
        current_status: Mapping[str, Any] = body.get("status") or {}
        deleted_at = parse_time(meta.get("deletionTimestamp"))
        deleting = deleted_at is not None
        finalizers: list[str] = list(meta.get("finalizers") or [])
        if (
            mem.done
            and not deleting
            and mem.record is not None
            and (current_status.get("state") or {}).get("type") == mem.record.type
        ):
            # Finished, and the object says so: late events change nothing until the next
            # of its kept pods falls due.
            if mem.cleanup_at is None:
                return None
            if (due_in := mem.cleanup_at - time.monotonic()) > 0:
                return due_in

        record = mem.record or await self._store_call("get_state", self.store.aget_state(uid))
        progress = (
            _progress_from_record(record) if record else _progress_from_status(current_status)
        )
        if progress is not None and mem.stage_since is None:
            mem.stage_since = (progress.stage.value, time.monotonic())
        if mem.result_keys is None or mem.launched is None:
            stored = await self._store_call("get_results", self.store.aget_results(uid))
            mem.result_keys = set(stored)
            mem.launched = {
                k
                for k in (_launched_key(v) for n, v in stored.items() if n.startswith(LAUNCHED))
                if k is not None
            }
            snapshot = stored.get(INVENTORY)
            if snapshot is not None:
                mem.nodes = tuple(Host.model_validate(h) for h in snapshot.get("hosts") or [])
        if mem.hook_failures is None:
            mem.hook_failures = {
                (str(h.get("name")), str(h.get("host") or ""))
                for h in current_status.get("hooks") or []
                if h.get("result") in ("Failed", "Lost")
            }
        now = self.clock()
        # The finalizer goes on before anything is written for a live run, so there is never
        # hot state or a pod that a deletion could leave behind. Runs a Runbook starts carry it
        # from birth; a run already over needs none.
        final_now = progress is not None and is_final(progress.state.type)
        if (
            not deleting
            and FINALIZER not in finalizers
            and not final_now
            and not mem.finalizer_added
        ):
            before = mem.version(meta["resourceVersion"])
            try:
                added = await self.kube.set_finalizers(
                    "runs", ns, name, [*finalizers, FINALIZER], before
                )
            except Gone:
                return None
            if not added:
                metrics.API_CONFLICTS.labels("runs").inc()
                return 0.5  # changed meanwhile: look at the newer object
            mem.wrote(before, added)
            mem.finalizer_added = True
        runbook_name = ""
        spec: RunSpec | None = None
        try:
            if mem.spec is None or mem.spec[0] != generation:
                mem.spec = (generation, RunSpec.model_validate(body.get("spec") or {}))
            spec = mem.spec[1]
            rb, problem, runbook_name = self._runbook_for(ns, spec)
            nodes = await self._nodes(uid, mem, rb, progress)
            slot, holders = await self._slot(ns, runbook_name, meta, mem, spec, rb, progress, now)
            obs = Observation(
                spec=spec,
                runbook=rb,
                runbook_problem=problem,
                progress=progress,
                units=self._units(mem),
                now=now,
                launched=frozenset(mem.launched),
                slot=slot,
                holders=holders,
                deleted_at=deleted_at,
                nodes=nodes,
            )
            decision = await _decide(obs)
        except ValidationError as exc:
            decision = engine.reject(_reject_obs(progress, now), _validation_problem("spec", exc))
        except _InvalidRunbook as exc:
            decision = engine.reject(_reject_obs(progress, now), str(exc))
        labels = (ns, runbook_name or (name if spec is None else ""))

        # 1. Commit the transition (or stage / message change) atomically.
        changed = progress is None or decision.progress != progress
        if changed:
            history = [
                HistoryEntry(
                    from_state=label(frm),
                    to_state=label(to),
                    at=to.timestamp,
                    message=to.message,
                    attempt=decision.progress.attempt,
                )
                for frm, to in decision.transitions
            ]
            try:
                mem.record = await self._store_call(
                    "commit",
                    self.store.acommit(
                        uid,
                        _record(decision.progress),
                        expected_version=record.version if record else 0,
                        history=history,
                    ),
                )
            except VersionConflict as exc:
                # Someone else moved this run (another replica, a wiped store): read again.
                log.info("run %s/%s: %s; reconciling again", ns, name, exc)
                mem.record = None
                return 0.0

        # Concurrency: a final run gives its slot back; Replace cancels the holders (once).
        if decision.final:
            await self._release_slot(key, mem)
        for holder in decision.replace:
            if holder not in mem.replaced:
                await self.kube.patch_spec("runs", ns, holder, {"cancel": True})
                mem.replaced.add(holder)

        # 2. Pods.
        if decision.create and spec is not None:
            await self._create_pods(ns, name, uid, spec, decision, mem)
        for wkey in decision.delete:
            await self.kube.delete_pod(ns, pods.pod_name(name, uid, wkey))
        if decision.cleanup is not None:
            await self._clean_up(ns, name, uid, decision.cleanup, mem, now)

        # 3. The record of started units, then results (and the counters that follow).
        await self._record_launched(uid, decision, mem)
        if decision.summary is not None:
            await self._record_results(uid, labels, decision, mem)

        # 4. Status, written only when it changes what the object shows. Progress inside a
        # running run may wait a moment so that a fast run writes its status once; an end, a
        # stall or a problem is written at once. The store already holds the truth.
        if mem.history is None:
            # The store's history is the truth (the status may lag it after a crash); it
            # already holds this decision's transitions.
            mem.history = await self._history(uid, current_status)
        else:
            mem.history += [
                HistoryItem(from_=label(frm), to=label(to), at=to.timestamp, message=to.message)
                for frm, to in decision.transitions
            ]
        mem.history = mem.history[-status.HISTORY_IN_STATUS :]
        items = mem.history
        # What this process last wrote is newer than a cache that has not caught up with it.
        wanted = status.run_status(
            decision,
            previous=mem.written_status or current_status,
            generation=generation,
            history=items,
            now=now,
        )
        baseline = mem.written_status or current_status
        coalesce_wait = 0.0
        if status.status_differs(baseline, wanted) and status.status_differs(
            current_status, wanted
        ):
            urgent = decision.final or decision.stalled is not None
            since = mem.last_status_write or mem.first_seen
            coalesce_wait = (
                0.0 if urgent else self.status_coalesce_seconds - (time.monotonic() - since)
            )
            if coalesce_wait <= 0:
                try:
                    written = await self._write_status(ns, name, meta, mem, wanted, baseline)
                except Gone:
                    return None
                if not written:
                    # Another writer changed the status (a second replica during a hand-over):
                    # decide again from the store and the object as they are now. This
                    # decision's transitions are committed all the same, so their Events and
                    # metrics go out now; the next decision will not make them again.
                    mem.record = mem.written_status = mem.history = None
                    await self._announce(ns, name, uid, labels, decision, mem, now)
                    return CONFLICT_RECHECK_SECONDS
                mem.written_status = wanted
                mem.last_status_write = time.monotonic()
        else:
            mem.written_status = wanted

        # 5. Events and metrics for what was committed.
        await self._announce(ns, name, uid, labels, decision, mem, now)
        if decision.final:
            mem.expected.clear()
        if decision.release:
            return await self._finalize(key, uid, meta, finalizers, mem)
        if decision.done:
            await self._store_call("expire", self.store.aexpire(uid, self.finished_ttl_seconds))
            mem.done = True
            next_in = decision.cleanup.next_in if decision.cleanup else None
            mem.cleanup_at = None if next_in is None else time.monotonic() + next_in
            return next_in
        delays = [self.resync_seconds]
        if decision.requeue_after is not None:
            delays.append(decision.requeue_after)
        if coalesce_wait > 0:
            delays.append(coalesce_wait)
        return min(delays)

    async def _nodes(
        self, uid: str, mem: _Memory, rb: RunbookSpec | None, progress: Progress | None
    ) -> tuple[Host, ...] | None:
        """A Node inventory's hosts: listed once, when the run is first reconciled, and kept
        in the store, so that Nodes that come or go later do not change a run under way."""
        if rb is None or rb.inventory.node_selector is None:
            return None
        if mem.nodes is not None:
            return mem.nodes
        if progress is not None and is_final(progress.state.type):
            return ()
        selector = describe_selector(rb.inventory.node_selector)
        hosts = hosts_from_nodes(await self.kube.list_nodes(selector))
        if hosts:
            payload = {"hosts": [h.model_dump(by_alias=True, mode="json") for h in hosts]}
            await self._store_call(
                "set_results", self.store.aset_results(uid, {INVENTORY: payload})
            )
            mem.nodes = hosts
        return hosts

    async def _finalize(
        self,
        key: ObjectKey,
        uid: str,
        meta: Mapping[str, Any],
        finalizers: Sequence[str],
        mem: _Memory,
    ) -> float | None:
        """A deleted Run that is over: drop its hot state, then let it go. Its pods (all
        finished) go with it through their ownerReferences."""
        await self._store_call("delete", self.store.adelete(uid))
        await self._release_slot(key, mem)
        if FINALIZER in finalizers:
            kept = [f for f in finalizers if f != FINALIZER]
            try:
                if not await self.kube.set_finalizers(
                    "runs", key[0], key[1], kept, mem.version(meta["resourceVersion"])
                ):
                    metrics.API_CONFLICTS.labels("runs").inc()
                    return 0.5  # changed meanwhile: try again with the newer object
            except Gone:
                pass
        self._memory.pop(key, None)
        return None

    async def _release_slot(self, key: ObjectKey, mem: _Memory) -> None:
        """Give the run's concurrency slot back and wake the runs queued for it."""
        scope = mem.slot_scope
        if not scope:
            return
        await self._store_call("release_slot", self.store.arelease_slot(scope, mem.uid))
        mem.slot_scope = None
        ns, runbook = scope.split("/", 1)
        for other in self.cache.runs_of_runbook((ns, runbook)):
            body = self.cache.run(other)
            state = ((body or {}).get("status") or {}).get("state") or {}
            if other != key and not (state.get("type") and is_final(StateType(state["type"]))):
                self.wake(other)  # finished runs want no slot: waking them is wasted work

    async def _slot(
        self,
        ns: str,
        runbook: str,
        meta: Mapping[str, Any],
        mem: _Memory,
        spec: RunSpec,
        rb: RunbookSpec | None,
        progress: Progress | None,
        now: datetime,
    ) -> tuple[bool | None, tuple[str, ...]]:
        """Take (or renew) this run's slot under its Runbook's concurrency limit, when the run
        needs one now: about to start, or live. A run scheduled for later takes none yet."""
        limit = rb.trigger.concurrency if rb is not None else None
        if limit is None or not runbook:
            return None, ()
        if progress is None:
            start_at = parse_time(spec.scheduled_time)
            needed = start_at is None or start_at <= now
        else:
            state = progress.state
            due = (parse_time(state.scheduled_time) or now) <= now
            needed = not is_final(state.type) and (
                state.type is not StateType.SCHEDULED
                or state.name in ("AwaitingConcurrencySlot", "AwaitingRetry")
                or due
            )
        if not needed:
            return None, ()
        scope = f"{ns}/{runbook}"
        if mem.slot_scope == scope and time.monotonic() - mem.slot_renewed < self.slot_ttl / 3:
            return True, ()  # held and renewed recently: no Redis round trip per pod event
        holder_uids: list[str] | None = None
        if mem.slot_scope != scope:
            # Not holding one: first in, first served. A free slot goes to the oldest runs
            # waiting for one, not to whichever looks first.
            holder_uids = await self._store_call("slot_holders", self.store.aslot_holders(scope))
            if mem.uid not in holder_uids:
                free = limit.limit - len(holder_uids)
                others = [
                    queued_run(b)
                    for k in self.cache.runs_of_runbook((ns, runbook))
                    if (b := self.cache.run(k))
                ]
                me = queued_run({"metadata": meta})
                if free <= 0 or queued_ahead(me, others, holder_uids, now) >= free:
                    return False, self._names(ns, runbook, holder_uids)
        got = await self._store_call(
            "acquire_slot",
            self.store.aacquire_slot(scope, mem.uid, limit=limit.limit, ttl_seconds=self.slot_ttl),
        )
        if got:
            mem.slot_scope = scope
            mem.slot_renewed = time.monotonic()
            return True, ()
        holder_uids = await self._store_call("slot_holders", self.store.aslot_holders(scope))
        return False, self._names(ns, runbook, holder_uids)

    def _names(self, ns: str, runbook: str, uids: Sequence[str]) -> tuple[str, ...]:
        names = []
        for key in self.cache.runs_of_runbook((ns, runbook)):
            body = self.cache.run(key)
            if body and (body.get("metadata") or {}).get("uid") in uids:
                names.append(key[1])
        return tuple(sorted(names))

    async def _create_pods(
        self, ns: str, name: str, uid: str, spec: RunSpec, decision: Decision, mem: _Memory
    ) -> None:
        async def one(intent: Any) -> None:
            pod = pods.build_pod(
                run_name=name,
                run_uid=uid,
                namespace=ns,
                intent=intent,
                parameters=spec.parameters,
            )
            async with self._create_slots:
                await self.kube.create_pod(ns, pod)
            # Until the watch shows it, count the pod as pending so `parallel` holds.
            mem.expected[pod["metadata"]["name"]] = (
                time.monotonic(),
                Observed(key=intent.key, phase=Phase.PENDING),
            )

        await asyncio.gather(*(one(i) for i in decision.create))

    async def _record_launched(self, uid: str, decision: Decision, mem: _Memory) -> None:
        """Record every unit created or seen and not yet recorded: written after the pod
        exists, so a crash in between at worst misses a record, never invents one."""
        assert mem.launched is not None
        known = {u.key for u in self._units(mem)} | {i.key for i in decision.create}
        fresh = known - mem.launched
        if not fresh:
            return
        payload = {
            f"{LAUNCHED}{k.kind.value}|{k.attempt}|{k.try_}|{k.operation}|{k.host}": _launched_record(
                k
            )
            for k in fresh
        }
        await self._store_call("set_results", self.store.aset_results(uid, payload))
        mem.launched |= fresh

    async def _history(self, uid: str, current: Mapping[str, Any]) -> list[HistoryItem]:
        entries = await self._store_call(
            "read_history", self.store.aread_history(uid, status.HISTORY_IN_STATUS)
        )
        if not entries:
            return [HistoryItem.model_validate(h) for h in current.get("history") or []]
        return [
            HistoryItem(from_=e.from_state, to=e.to_state, at=e.at, message=e.message)
            for e in entries
        ]

    async def _record_results(
        self, uid: str, labels: tuple[str, str], decision: Decision, mem: _Memory
    ) -> None:
        summary = decision.summary
        assert summary is not None
        assert mem.result_keys is not None
        fresh = {k: v for k, v in summary.results.items() if k not in mem.result_keys}
        failed_keys = {f"@failed|{f.host}": f for f in summary.failed_hosts}
        fresh_failed = {k: f for k, f in failed_keys.items() if k not in mem.result_keys}
        if not fresh and not fresh_failed:
            return
        payload: dict[str, Mapping[str, Any]] = dict(fresh)
        for k, f in fresh_failed.items():
            payload[k] = f.model_dump(by_alias=True, mode="json", exclude_none=True)
        await self._store_call("set_results", self.store.aset_results(uid, payload))
        mem.result_keys.update(payload)
        ns, runbook = labels
        for k, v in fresh.items():
            metrics.OPERATION_RESULTS.labels(ns, runbook, k.split("|", 1)[0], v["result"]).inc()
        for f in fresh_failed.values():
            metrics.HOST_FAILURES.labels(ns, runbook, f.stage.value).inc()

    async def _write_status(
        self,
        ns: str,
        name: str,
        meta: Mapping[str, Any],
        mem: _Memory,
        wanted: Mapping[str, Any],
        baseline: Mapping[str, Any],
    ) -> bool:
        """Patch the Run's status onto the object version it was decided from.

        A 409 means the object changed since: usually its spec or metadata (a user, Argo CD),
        and then the same status goes onto the current version; nothing of theirs or ours is
        lost, as the patch carries only the status. False when the status itself is no longer
        what this decision started from: someone else wrote it, and ours must not win.
        """
        version = mem.version(str(meta.get("resourceVersion") or ""))
        for _ in range(STATUS_CONFLICT_RETRIES):
            try:
                written = await self.kube.patch_status(
                    "runs", ns, name, wanted, resource_version=version or None
                )
            except Conflict:
                metrics.API_CONFLICTS.labels("runs/status").inc()
                current = await self.kube.get_object("runs", ns, name)
                if status.status_differs(current.get("status") or {}, baseline):
                    return False
                version = str(current["metadata"]["resourceVersion"])
                continue
            mem.wrote(version, (written.get("metadata") or {}).get("resourceVersion"))
            return True
        return False

    async def _clean_up(
        self,
        ns: str,
        name: str,
        uid: str,
        cleanup: retention.Cleanup,
        mem: _Memory,
        now: datetime,
    ) -> None:
        """Delete the pods of an ended run that `config.podRetention` no longer keeps, and
        say so in an Event when some stay or had stayed (pods of a run that simply succeeded
        going at once is the policy, not news)."""
        due = [k for k in cleanup.delete if k not in mem.cleaned]
        if not due:
            return
        if cleanup.everything:
            # All of them at once (a 10,000-host run has 20,000 pods): one API call.
            await self.kube.delete_pods(ns, pods.cleanup_selector(uid))
            mem.cleaned.update(due)
        for start in range(0, len(due), CLEANUP_BATCH):
            batch = [k for k in due[start : start + CLEANUP_BATCH] if k not in mem.cleaned]
            await asyncio.gather(
                *(self.kube.delete_pod(ns, pods.pod_name(name, uid, k)) for k in batch)
            )
            mem.cleaned.update(batch)
        message = retention.deleted_message(cleanup, len(due), now)
        if message is not None:
            await self._event(ns, name, uid, "PodsDeleted", message, now)

    async def _announce(
        self,
        ns: str,
        name: str,
        uid: str,
        labels: tuple[str, str],
        decision: Decision,
        mem: _Memory,
        now: datetime,
    ) -> None:
        namespace, runbook = labels
        for frm, to in decision.transitions:
            metrics.STATE_TRANSITIONS.labels(frm.type.value if frm else "", to.type.value).inc()
            if to.type in (StateType.FAILED, StateType.CRASHED):
                reason = decision.failure_reason or "infrastructure"
                metrics.RUN_FAILURES.labels(namespace, runbook, to.type.value, reason).inc()
        last = len(decision.transitions) - 1
        for i, (_, to) in enumerate(decision.transitions):
            # A Pending the run left within the same decision (accepted and started at once)
            # is in the history; an Event of its own would cost an API write and say nothing.
            if to.type is StateType.PENDING and i < last:
                continue
            await self._event(ns, name, uid, to.name, to.message, now)
        p = decision.progress
        if decision.final and decision.transitions:
            seconds = seconds_between(p.start_time, p.end_time)
            if seconds is not None:
                metrics.RUN_DURATION.observe(seconds)
        if mem.stage_since is not None and mem.stage_since[0] != p.stage.value:
            metrics.STAGE_DURATION.labels(mem.stage_since[0]).observe(
                time.monotonic() - mem.stage_since[1]
            )
        if mem.stage_since is None or mem.stage_since[0] != p.stage.value:
            mem.stage_since = (p.stage.value, time.monotonic())
        stalled = decision.stalled
        if (
            stalled is not None
            and stalled.reason != mem.stalled_reason
            and not any(to.type is StateType.FAILED for _, to in decision.transitions)
        ):
            await self._event(ns, name, uid, stalled.reason, stalled.message, now)
        mem.stalled_reason = stalled.reason if stalled else None
        # A failed hook is a Disconnect warning, never a state change: an Event says which.
        assert mem.hook_failures is not None
        for hook in decision.hook_failures:
            hook_key = (hook.name, hook.host or "")
            if hook_key in mem.hook_failures:
                continue
            mem.hook_failures.add(hook_key)
            metrics.STAGE_WARNINGS.labels(namespace, runbook, Stage.Disconnect.value).inc()
            where = f" on {hook.host}" if hook.host else ""
            await self._event(
                ns,
                name,
                uid,
                "HookFailed",
                f"{hook.on} hook {hook.name}{where} {hook.result.lower()}: {hook.message}",
                now,
            )
        if decision.summary is not None:
            warnings = decision.summary.stage_warnings.model_dump()
            # Count only what this process has not counted or the status not shown yet.
            before = mem.warnings
            if before is None:
                before = dict((mem.written_status or {}).get("stageWarnings") or {})
            for stage_name, n in warnings.items():
                delta = n - int(before.get(stage_name, 0))
                if delta > 0:
                    metrics.STAGE_WARNINGS.labels(namespace, runbook, stage_name).inc(delta)
            mem.warnings = warnings

    async def _event(
        self, ns: str, name: str, uid: str, reason: str, message: str, now: datetime
    ) -> None:
        event = events.build_event(
            kind="Run", name=name, namespace=ns, uid=uid, reason=reason, message=message, now=now
        )
        try:
            await self.kube.post_event(ns, event)
        except Exception as exc:  # an Event is a courtesy; the history is the record
            log.warning("run %s/%s: could not post event %s: %s", ns, name, reason, exc)

    # ---- Runbooks ----------------------------------------------------------------------------

    async def reconcile_runbook(self, key: ObjectKey) -> float | None:
        """Validate a Runbook, start the Runs its triggers call for, aggregate its Runs."""
        body = self.cache.runbook(key)
        if body is None:
            return None
        ns, name = key
        meta = body.get("metadata") or {}
        uid = str(meta.get("uid") or "")
        generation = int(meta.get("generation") or 0)
        current: Mapping[str, Any] = body.get("status") or {}
        now = self.clock()
        spec: RunbookSpec | None = None
        problem: str | None = None
        plan: triggers.TriggerPlan | None = None
        try:
            spec = RunbookSpec.model_validate(body.get("spec") or {})
            engine.validate_runbook(spec)
            plan = triggers.plan(
                spec.trigger,
                runbook=name,
                generation=generation,
                created=parse_time(meta.get("creationTimestamp")) or now,
                last_generation=current.get("lastTriggeredGeneration"),
                last_schedule=parse_time(current.get("lastScheduleTime")),
                now=now,
            )
        except ValidationError as exc:
            problem = _validation_problem("spec", exc)
        except engine.SpecError as exc:
            problem = str(exc)

        # Create first, then remember in the status: a crash in between re-plans the same
        # deterministic names, and a second create is a 409.
        if plan is not None:
            for start in plan.start:
                run = runs.build_run(runbook=name, runbook_uid=uid, namespace=ns, run=start)
                if await self.kube.create_run(ns, run):
                    what = (
                        f"at {start.scheduled_time}"
                        if start.scheduled_time
                        else (f"for generation {generation}")
                    )
                    await self._runbook_event(
                        ns,
                        name,
                        uid,
                        f"Run {start.name} started by {start.trigger} {what}",
                        reason="RunStarted",
                    )
            for note in plan.notes:
                await self._runbook_event(ns, name, uid, note, reason="MissedSchedule")

        bodies = [b for k in self.cache.runs_of_runbook(key) if (b := self.cache.run(k))]
        history_in: float | None = None
        if spec is not None:
            gone, history_in = await self._expire_runs(key, uid, spec, bodies)
            bodies = [b for b in bodies if (b.get("metadata") or {}).get("name") not in gone]
        wanted = status.runbook_status(
            spec,
            problem,
            previous=current,
            generation=generation,
            now=now,
            plan=plan,
            runs=bodies,
        )
        if status.status_differs(current, wanted):
            try:
                await self.kube.patch_status("runbooks", ns, name, wanted)
            except Gone:
                return None
            if problem is not None and current.get("observedGeneration") != generation:
                await self._runbook_event(ns, name, uid, problem, reason="InvalidSpec")
        delays = [d for d in (history_in,) if d is not None]
        if plan is not None and plan.wake_in is not None:
            delays.append(min(plan.wake_in + 0.05, self.resync_seconds))
        return min(delays) if delays else None

    async def _expire_runs(
        self, key: ObjectKey, uid: str, spec: RunbookSpec, bodies: Sequence[Mapping[str, Any]]
    ) -> tuple[set[str], float | None]:
        """Delete the finished Runs this Runbook started that `spec.history` no longer keeps.
        Returns the names deleted (now or before, still in the cache) and when to look again."""
        ns, name = key
        asked = self._expired.setdefault(key, set())
        finished: list[history.FinishedRun] = []
        for body in bodies:
            meta = body.get("metadata") or {}
            started_here = (meta.get("labels") or {}).get(runs.LABEL_RUNBOOK) == name and any(
                o.get("uid") == uid for o in meta.get("ownerReferences") or []
            )
            st = body.get("status") or {}
            state = st.get("state") or {}
            if not started_here or meta.get("deletionTimestamp") or not _is_final(state):
                continue
            ended = parse_time(st.get("endTime")) or parse_time(state.get("timestamp"))
            if ended is not None:
                finished.append(history.FinishedRun(str(meta.get("name")), ended))
        expiry = history.expired(finished, spec.history, self.clock())
        due = [n for n in expiry.delete if n not in asked]
        for run_name in due:
            await self.kube.delete_run(ns, run_name)
            asked.add(run_name)
        if due:
            message = history.deleted_message(expiry, spec.history, due)
            await self._runbook_event(ns, name, uid, message, reason="RunsDeleted")
        # Forget names the cache no longer has: the memory stays as small as the history.
        present = {str((b.get("metadata") or {}).get("name")) for b in bodies}
        asked &= present
        return set(expiry.delete) | asked, expiry.next_in

    async def _runbook_event(
        self, ns: str, name: str, uid: str, message: str, *, reason: str
    ) -> None:
        event = events.build_event(
            kind="Runbook",
            name=name,
            namespace=ns,
            uid=uid,
            reason=reason,
            message=message,
            now=self.clock(),
        )
        try:
            await self.kube.post_event(ns, event)
        except Exception as exc:
            log.warning("runbook %s/%s: could not post event: %s", ns, name, exc)


class _InvalidRunbook(Exception):
    pass


def _reject_obs(progress: Progress | None, now: datetime) -> Observation:
    # reject() looks only at progress and time; the spec is a placeholder it never reads.
    placeholder = RunSpec.model_construct(runbook_ref=None, runbook=None)
    return Observation(
        spec=placeholder,
        runbook=None,
        runbook_problem=None,
        progress=progress,
        units=(),
        now=now,
    )
