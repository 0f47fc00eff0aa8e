"""Before an attempt starts: Scheduled for its time (Late when well past it), Pending, the next
attempt after AwaitingRetry, and the Runbook's concurrency queue (Forbid, AwaitingConcurrencySlot,
Replace).

It owns these transitions only: it reads no pods, plans no stage and reaches no verdict, and it
must not import the other lifecycle modules or `engine`.
"""

from __future__ import annotations

from datetime import timedelta

from runstate.api.v1alpha1 import ConcurrencyPolicy, RunbookSpec, Stage, StateName, StateType
from runstate.domain.records import Decision
from runstate.domain.states import parse_time
from runstate.domain.walk import Walk, finish, seconds

# A run queued for a concurrency slot is woken when one is released; this is the safety net.
QUEUED_RECHECK_SECONDS = 5.0


def enter(walk: Walk, late_after: timedelta) -> None:
    """A new run: Scheduled for its time, or Pending at once."""
    spec, now = walk.obs.spec, walk.obs.now
    start_at = parse_time(spec.scheduled_time)
    # A run first seen well after its time (created late, or the operator was down) was
    # Scheduled all along and is Late now, as Prefect would record it.
    if start_at is not None and (start_at > now or now > start_at + late_after):
        walk.move(
            StateName.SCHEDULED,
            f"Scheduled for {spec.scheduled_time}",
            scheduled_time=spec.scheduled_time,
        )
    else:
        walk.move(StateName.PENDING, "Run accepted")


def wake(walk: Walk, late_after: timedelta) -> Decision | None:
    """A SCHEDULED run (not one queued for a slot) that is due becomes Pending, Late first if
    it is well past its time; an AwaitingRetry one starts its next attempt. Not due yet: the
    decision to wait (else None)."""
    state, now = walk.state, walk.obs.now
    assert state is not None
    if state.type is not StateType.SCHEDULED or state.name == StateName.AWAITING_CONCURRENCY_SLOT:
        return None
    due = parse_time(state.scheduled_time) or now
    if now < due:
        return walk.decision(requeue_after=seconds(due - now))
    if state.name == StateName.SCHEDULED and now > due + late_after:
        late = int((now - due).total_seconds())
        walk.move(
            StateName.LATE,
            f"Starting {late}s after its scheduled time",
            scheduled_time=state.scheduled_time,
        )
    if state.name == StateName.AWAITING_RETRY:
        # A new attempt: its stages start again at Setup, its units are new pods.
        walk.attempt += 1
        walk.committed = None
        walk.attempt_start = None
    walk.move(StateName.PENDING, f"Attempt {walk.attempt} accepted")
    return None


def queue(walk: Walk, rb: RunbookSpec) -> Decision | None:
    """The Runbook's concurrency limit, before anything starts: no slot fails the run (Forbid)
    or queues it (AwaitingConcurrencySlot); a queued run that got one is Pending again."""
    obs, state = walk.obs, walk.state
    assert state is not None
    waiting = state.name == StateName.AWAITING_CONCURRENCY_SLOT
    if obs.slot is False and (state.type is StateType.PENDING or waiting):
        limit = rb.trigger.concurrency
        assert limit is not None
        holders = ", ".join(obs.holders) or "other runs"
        if limit.policy is ConcurrencyPolicy.Forbid:
            finish(
                walk,
                StateName.FAILED,
                f"Concurrency limit {limit.limit} reached (policy Forbid): {holders} running",
                reason="concurrency",
                stage=Stage.Setup,
            )
            return walk.decision()
        if not waiting:
            verb = "replacing" if limit.policy is ConcurrencyPolicy.Replace else "waiting for"
            walk.move(
                StateName.AWAITING_CONCURRENCY_SLOT,
                f"Concurrency limit {limit.limit} reached: {verb} {holders}",
            )
        replace = obs.holders if limit.policy is ConcurrencyPolicy.Replace else ()
        return walk.decision(requeue_after=QUEUED_RECHECK_SECONDS, replace=replace)
    if waiting:
        walk.move(StateName.PENDING, "Concurrency slot acquired")
    return None
