"""The Runbook reconciler: validate a Runbook, start the Runs its triggers call for, delete
the finished Runs its history no longer keeps, and aggregate its Runs into its status.

`plan_runbook` is pure: from a typed view, its Runs and the time it returns the effects, Runs
created before the status remembers them (a crash in between re-plans the same deterministic
names, and a second create is a 409). The applier carries them out.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from runstate import metrics
from runstate.api.v1alpha1 import DNS_LABEL, RunbookSpec
from runstate.controller.apply import Applier
from runstate.controller.cache import Cache
from runstate.controller.effects import (
    CreateRun,
    DeleteRuns,
    Effect,
    Effects,
    Event,
    PostEvent,
    WriteRunbookStatus,
)
from runstate.controller.view import ObjectKey, RunbookView, RunView
from runstate.domain import engine, history, triggers, validation
from runstate.domain.states import parse_time
from runstate.kube import runs, status


@dataclass(frozen=True)
class RunbookInput:
    view: RunbookView
    runs: Sequence[RunView]
    asked: frozenset[str]  # finished Runs already asked to go, the cache still shows
    now: datetime
    resync_seconds: float
    privileged_allowed: bool = False  # the operator lets Runbooks use the node connector


def _validate(
    view: RunbookView, now: datetime, *, privileged_allowed: bool
) -> tuple[RunbookSpec | None, str | None, triggers.TriggerPlan | None]:
    try:
        spec = RunbookSpec.model_validate(view.spec)
        engine.validate_runbook(spec, privileged_allowed=privileged_allowed)
        plan = triggers.plan(
            spec.trigger,
            runbook=view.name,
            generation=view.generation,
            created=_created(view, now),
            last_generation=view.last_triggered_generation,
            last_schedule=view.last_schedule_time,
            now=now,
        )
    except ValidationError as exc:
        return None, validation.describe("spec", exc), None
    except engine.SpecError as exc:
        return None, str(exc), None
    return spec, None, plan


def _created(view: RunbookView, now: datetime) -> datetime:
    return parse_time(view.created) or now


def plan_runbook(i: RunbookInput) -> Effects:
    v = i.view
    spec, problem, plan = _validate(v, i.now, privileged_allowed=i.privileged_allowed)
    steps: list[Effect] = []
    if plan is not None:
        for start in plan.start:
            body = runs.build_run(
                runbook=v.name, runbook_uid=v.uid, namespace=v.namespace, run=start
            )
            what = (
                f"at {start.scheduled_time}"
                if start.scheduled_time
                else f"for generation {v.generation}"
            )
            message = f"Run {start.name} started by {start.trigger} {what}"
            steps.append(CreateRun(body, Event("RunStarted", message, kind="Runbook")))
        steps += [PostEvent(Event("MissedSchedule", n, kind="Runbook")) for n in plan.notes]
    kept = list(i.runs)
    history_in: float | None = None
    if spec is not None:
        expiry, due = _expiry(v, spec, i)
        if due:
            message = history.deleted_message(expiry, spec.history, due)
            steps.append(DeleteRuns(due, Event("RunsDeleted", message, kind="Runbook")))
        gone = set(expiry.delete) | i.asked
        kept = [r for r in kept if r.name not in gone]
        history_in = expiry.next_in
    wanted = status.runbook_status(
        spec,
        problem,
        previous=v.status,
        generation=v.generation,
        now=i.now,
        plan=plan,
        runs=[
            {"metadata": {"name": r.name, "creationTimestamp": r.created}, "status": r.status}
            for r in kept
        ],
        name=v.name,
    )
    if status.status_differs(v.status, wanted):
        steps.append(WriteRunbookStatus(wanted))
        if problem is not None and v.observed_generation != v.generation:
            steps.append(PostEvent(Event("InvalidSpec", problem, kind="Runbook")))
    delays = [d for d in (history_in,) if d is not None]
    if plan is not None and plan.wake_in is not None:
        delays.append(min(plan.wake_in + 0.05, i.resync_seconds))
    return Effects(tuple(steps), requeue_after=min(delays) if delays else None)


def _expiry(
    v: RunbookView, spec: RunbookSpec, i: RunbookInput
) -> tuple[history.Expiry, tuple[str, ...]]:
    """The finished Runs this Runbook started that `spec.history` no longer keeps, and those
    of them not yet asked to go."""
    finished = [
        history.FinishedRun(r.name, ended)
        for r in i.runs
        if r.started_by(v) and r.deleted_at is None and r.final and (ended := r.ended_at)
    ]
    expiry = history.expired(finished, spec.history, i.now)
    return expiry, tuple(n for n in expiry.delete if n not in i.asked)


class RunbookReconciler:
    def __init__(
        self,
        *,
        cache: Cache,
        applier: Applier,
        clock: Callable[[], datetime],
        resync_seconds: float,
        privileged_allowed: bool = False,
    ) -> None:
        self.privileged_allowed = privileged_allowed
        self.cache = cache
        self.applier = applier
        self.clock = clock
        self.resync_seconds = resync_seconds
        # Per Runbook: finished Runs it has asked to delete (history) and the cache still shows.
        self._asked: dict[ObjectKey, set[str]] = {}

    async def reconcile(self, key: ObjectKey) -> float | None:
        body = self.cache.runbook(key)
        if body is None:
            self._asked.pop(key, None)
            return None
        view = RunbookView.of(body)
        metrics.prime_runbook(view.namespace, view.name, operation_names(body))
        bodies = [b for k in self.cache.runs_of_runbook(key) if (b := self.cache.run(k))]
        views = [RunView.of(b) for b in bodies]
        asked = self._asked.setdefault(key, set())
        asked &= {r.name for r in views}  # forget names the cache no longer has
        effects = plan_runbook(
            RunbookInput(
                view,
                views,
                frozenset(asked),
                self.clock(),
                self.resync_seconds,
                privileged_allowed=self.privileged_allowed,
            )
        )
        outcome = await self.applier.apply_runbook(view, effects, asked)
        return outcome.requeue_after


def operation_names(body: Mapping[str, Any]) -> list[str]:
    """The Runbook's operation names that are valid ones (a DNS label), read without parsing
    the whole spec: their result series are primed as soon as the Runbook is seen."""
    operations = (body.get("spec") or {}).get("operations")
    names = [op.get("name") for op in operations or [] if isinstance(op, Mapping)]
    return [n for n in names if isinstance(n, str) and len(n) <= 63 and re.fullmatch(DNS_LABEL, n)]
