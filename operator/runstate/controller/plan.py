"""The plan of a run's reconcile: from a decision to the effects, in crash-safe order. Pure.

`plan_run` turns what `domain.engine.decide` answered into `Effects`, ordered so that a crash
between any two of them leaves a state the next reconcile reads back and finishes:

1. new results and failed hosts into the store (idempotent), before the state that counts
   them: an ended run's record carries its final summary, so results must never trail it;
2. the state commit (compare-and-set on the record's version);
3. the concurrency slot released (an ended run), the runs it replaces cancelled;
4. pods created (deterministic names) and stopped;
5. the units launched recorded, after their pods exist (a crash misses a record, never
   invents one);
6. the status, fenced by its resourceVersion (coalesced while a run is under way);
7. Events and metrics for what was committed;
8. pod retention of an ended run, only after the status that shows its final counts;
9. an ended run's hot state set to expire, or a deleted run's finalizer removed.

It must not do I/O; it reads only its input.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from runstate.api.v1alpha1 import FINALIZER, HistoryItem
from runstate.controller import hotstate
from runstate.controller.announce import Labels, announce
from runstate.controller.effects import (
    CancelRuns,
    CleanUpPods,
    Commit,
    CreatePods,
    DeletePods,
    Effect,
    Effects,
    Event,
    Expire,
    Finalize,
    Measure,
    Metric,
    PodToCreate,
    ReleaseSlot,
    StoreLaunched,
    StoreResults,
    WriteStatus,
)
from runstate.controller.hotstate import HotState
from runstate.controller.memory import Announced
from runstate.controller.queue import backoff_delay
from runstate.controller.view import RunView
from runstate.domain import retention
from runstate.domain.engine import Decision, Progress, Stalled
from runstate.domain.work import Observed
from runstate.kube import pods, status

POD_CREATE_FAILED = "PodCreateFailed"


@dataclass(frozen=True)
class Timing:
    """Clocks and knobs: the wall clock for the status, a monotonic one for coalescing."""

    now: datetime
    mono_now: float
    resync_seconds: float
    coalesce_seconds: float
    finished_ttl_seconds: int


@dataclass(frozen=True)
class RunInput:
    """Everything the plan of one reconcile reads."""

    view: RunView
    decision: Decision
    before: Progress | None  # as committed before this decision (None: a new run)
    record_version: int  # the record's version in the store (0: none)
    hot: HotState
    units: Sequence[Observed]  # what the pods show, with the pods expected
    parameters: Mapping[str, str]
    labels: Labels
    history: Sequence[HistoryItem]  # the run's committed history before this decision
    written: Mapping[str, Any] | None  # the status this process last wrote
    last_write: float  # monotonic time of the last status write (or of first sight)
    announced: Announced
    holds_slot: bool
    replaced: frozenset[str]
    cleaned: frozenset[object]
    refusal: tuple[str, str] | None  # (pod, message) the API server last refused
    refusals: int
    timing: Timing
    runner_image: str  # the image of ssh and node work pods (operations.runnerImage)


def plan_run(i: RunInput) -> Effects:
    d = _with_refusal(i.decision, i.refusal)
    steps: list[Effect] = []
    steps += _results(d, i)
    if i.before is None or d.progress != i.before:
        entries = hotstate.history_entries(d.transitions, d.progress.attempt)
        steps.append(Commit(hotstate.encode_record(d.progress), i.record_version, tuple(entries)))
    if d.final and i.holds_slot:
        steps.append(ReleaseSlot())
    replace = tuple(h for h in d.replace if h not in i.replaced)
    if replace:
        steps.append(CancelRuns(replace))
    steps += _pods(d, i)
    wanted, wait = _status(d, i)
    baseline = i.written or i.view.status
    if wait is None or wait <= 0:
        # Written now, or (no wait at all) remembered as what the object shows already.
        steps.append(WriteStatus(wanted, baseline, write=wait is not None))
    steps.append(
        announce(
            d,
            labels=i.labels,
            before=i.announced,
            written_warnings=baseline.get("stageWarnings"),
            mono_now=i.timing.mono_now,
        )
    )
    if d.cleanup is not None:
        steps += _cleanup(d.cleanup, i)
    return _ending(d, i, steps, wait)


def _with_refusal(d: Decision, refusal: tuple[str, str] | None) -> Decision:
    """A pod the API server refused stalls the run (it retries with backoff) until one goes
    in: the status says which pod and why."""
    if refusal is None or d.final or d.stalled is not None:
        return d
    pod, message = refusal
    return dataclasses.replace(
        d, stalled=Stalled(POD_CREATE_FAILED, f"the API server refused pod {pod}: {message}")
    )


def _results(d: Decision, i: RunInput) -> list[Effect]:
    if d.summary is None:
        return []
    new = hotstate.new_results(d.summary, i.hot.result_keys)
    if not new.payload:
        return []
    ns, rb = i.labels.namespace, i.labels.runbook
    measures = [
        Measure(Metric.OPERATION_RESULTS, (ns, rb, op, r)) for op, r in new.operation_results
    ]
    measures += [Measure(Metric.HOST_FAILURES, (ns, rb, s.value)) for s in new.host_failures]
    return [StoreResults(new.payload, tuple(measures))]


def _pods(d: Decision, i: RunInput) -> list[Effect]:
    steps: list[Effect] = []
    v = i.view
    if d.create:
        made = tuple(
            PodToCreate(
                key=intent.key,
                name=pods.pod_name(v.name, v.uid, intent.key),
                body=pods.build_pod(
                    run_name=v.name,
                    run_uid=v.uid,
                    namespace=v.namespace,
                    intent=intent,
                    parameters=i.parameters,
                    runner_image=i.runner_image,
                ),
            )
            for intent in d.create
        )
        steps.append(CreatePods(made))
    if d.delete:
        steps.append(DeletePods(tuple(pods.pod_name(v.name, v.uid, k) for k in d.delete)))
    known = {u.key for u in i.units} | {intent.key for intent in d.create}
    fresh = frozenset(known - i.hot.launched)
    if fresh:
        steps.append(StoreLaunched(fresh))
    return steps


def _status(d: Decision, i: RunInput) -> tuple[dict[str, Any], float | None]:
    """The status to show, and how long its write waits: None when the object shows it
    already, 0 to write it now, more to coalesce it with what comes next.

    Progress inside a running run may wait a moment so that a fast run writes its status
    once; an end, a stall or a problem is written at once. The store holds the truth."""
    history = [*i.history, *hotstate.transition_items(d.transitions)]
    baseline = i.written or i.view.status
    wanted = status.run_status(
        d,
        previous=baseline,
        generation=i.view.generation,
        history=history[-status.HISTORY_IN_STATUS :],
        now=i.timing.now,
    )
    if not (
        status.status_differs(baseline, wanted) and status.status_differs(i.view.status, wanted)
    ):
        return wanted, None
    if d.final or d.stalled is not None:
        return wanted, 0.0
    wait = i.timing.coalesce_seconds - (i.timing.mono_now - i.last_write)
    return wanted, max(0.0, wait)


def _cleanup(cleanup: retention.Cleanup, i: RunInput) -> list[Effect]:
    """Retention deletes the pods of an ended run that are due; it comes after the status
    write, so the final counts are on the object before any pod that fed them goes."""
    due = tuple(k for k in cleanup.delete if k not in i.cleaned)
    if not due:
        return []
    v = i.view
    message = retention.deleted_message(cleanup, len(due), i.timing.now)
    return [
        CleanUpPods(
            keys=due,
            names=tuple(pods.pod_name(v.name, v.uid, k) for k in due),
            selector=pods.cleanup_selector(v.uid) if cleanup.everything else None,
            event=Event("PodsDeleted", message) if message is not None else None,
        )
    ]


def _ending(d: Decision, i: RunInput, steps: list[Effect], wait: float | None) -> Effects:
    if d.release:
        finalizers = tuple(f for f in i.view.finalizers if f != FINALIZER)
        steps.append(Finalize(finalizers, remove=FINALIZER in i.view.finalizers))
        return Effects(tuple(steps))
    if d.done:
        steps.append(Expire(i.timing.finished_ttl_seconds))
        next_in = d.cleanup.next_in if d.cleanup else None
        return Effects(tuple(steps), requeue_after=next_in, done=True, cleanup_due_in=next_in)
    delays = [i.timing.resync_seconds]
    if d.requeue_after is not None:
        delays.append(d.requeue_after)
    if wait is not None and wait > 0:
        delays.append(wait)
    if i.refusal is not None:
        delays.append(backoff_delay(i.refusals))
    return Effects(tuple(steps), requeue_after=min(delays))
