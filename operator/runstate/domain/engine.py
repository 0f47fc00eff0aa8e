"""The run engine: from what is observed to what must happen next. Pure and level-based.

`decide()` takes a run's spec, its runbook, the state last committed and the units of work its
pods show, and returns a `Decision`: the state transitions to commit, the stage reached, the
pods to create or delete, and the summary the status shows. It is a function of its inputs
only, so the same call serves a new run, a resumed one after an operator crash and a periodic
drift check, whatever events were missed. It never performs I/O.

Stages follow pyinfra's State: Setup (inventory, limit, DAG) → Connect (probe per host) →
Prepare (check per operation × host) → Execute (operations in DAG order, at most `parallel` pods
of the run at once) → Disconnect (final verdict). A host that fails leaves the active set;
after each operation the fail-percent rule may stop the run.

This module is the entry point and the order of the Prefect-state orchestration only; each
step lives in its own room and is driven over one `Walk` (`walk`):

- `scheduling`: Scheduled, Late, Pending, the next attempt, the concurrency queue;
- `pausing`: Running/Retrying, Paused/Suspended, resumed, paused too long;
- `stopping`: cancel (or deletion of the Run) and crashes (lost pods);
- `running`: the stage planners of the current attempt and the verdict (finish or retry);
- `ending`: the summary settled, state hooks, pod retention, release of a deleted Run.

The records it reads and returns live in `records`. It must decide nothing itself beyond that
order, and never imports kopf, Kubernetes clients, Redis or HTTP.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from runstate.api.v1alpha1 import RunbookSpec, Stage, StateName, StateType
from runstate.domain import pausing, running, scheduling, stopping, validation
from runstate.domain.attempt import AttemptView
from runstate.domain.ending import DELETE_HOOK_GRACE_SECONDS, conclude, settle_summary
from runstate.domain.errors import SpecError
from runstate.domain.records import Decision, Observation, Progress, Stalled, Summary
from runstate.domain.scheduling import QUEUED_RECHECK_SECONDS
from runstate.domain.walk import Walk, setup_failed


def validate_runbook(spec: RunbookSpec, *, privileged_allowed: bool = False) -> None:
    """Raise `SpecError` for what only the operator can judge (see `validation`)."""
    validation.validate_runbook(spec, privileged_allowed=privileged_allowed)


def reject(obs: Observation, problem: str) -> Decision:
    """A run whose spec cannot be acted on (Setup failed); `problem` names the field.

    A cancel (asked for, under way, or the Run's deletion) still wins over a failure, as in
    `decide()`: its pods stop and the run ends Cancelled. A deleted Run may go once it ended."""
    walk = Walk(obs)
    deleted = obs.deleted_at is not None
    if walk.final():
        walk.stage = walk.committed or Stage.Setup
        decision = settle_summary(Decision(progress=walk.progress()))
    elif obs.spec.cancel or deleted or (walk.state and walk.state.type is StateType.CANCELLING):
        if walk.state is None:
            walk.move(StateName.PENDING, "Run accepted")
        decision = stopping.cancel(walk, deleted=deleted and not obs.spec.cancel)
    else:
        if walk.state is None:
            walk.move(StateName.PENDING, "Run accepted")
        decision = setup_failed(walk, problem)
    if deleted and decision.final:
        decision = dataclasses.replace(decision, release=True)
    return decision


def decide(obs: Observation) -> Decision:
    """Everything that should happen next for one run. See the module docstring."""
    return conclude(obs, _decide(obs))


def _decide(obs: Observation) -> Decision:
    walk = Walk(obs)
    if walk.final():
        walk.stage = walk.committed or Stage.Setup
        return Decision(progress=walk.progress())
    rb = obs.runbook
    late_after = timedelta(seconds=rb.late_after_seconds if rb is not None else 15)
    if walk.state is None:
        scheduling.enter(walk, late_after)
    # Cancel (or deletion of the Run) wins over everything that is not final.
    deleted = obs.deleted_at is not None
    if obs.spec.cancel or deleted:
        return stopping.cancel(walk, deleted=deleted and not obs.spec.cancel)
    not_due = scheduling.wake(walk, late_after)
    if not_due is not None:
        return not_due
    if rb is None:
        problem = obs.runbook_problem or "spec: no runbook"
        walk.reword(f"Waiting: {problem}")
        return walk.decision(stalled=Stalled("RunbookNotFound", problem))

    # ---- Setup: validate, resolve the inventory and the DAG.
    walk.reach(Stage.Setup)
    try:
        inv, dag = validation.setup(
            obs.spec, rb, obs.nodes, privileged_allowed=obs.privileged_allowed
        )
    except SpecError as exc:
        return setup_failed(walk, str(exc))
    queued = scheduling.queue(walk, rb)
    if queued is not None:
        return queued
    view = AttemptView.build(obs.units, walk.attempt, rb.config.slow_start_seconds)
    pausing.start_or_pause(walk, started=view.started)
    lost = stopping.lost(walk, view)
    if lost is not None:
        return lost
    if walk.state is not None and walk.state.type is StateType.PAUSED:
        until = pausing.paused_until(walk)
        expired = pausing.expire(walk, until)
        if expired is not None:
            return expired
        # Paused: running pods finish, no new one starts, no verdict until resumed.
        hold_for = pausing.hold_for(walk, until)
        return running.run(walk, rb, inv, dag=dag, view=view, hold=True, hold_for=hold_for)
    return running.run(walk, rb, inv, dag=dag, view=view)


__all__ = [
    "DELETE_HOOK_GRACE_SECONDS",
    "QUEUED_RECHECK_SECONDS",
    "Decision",
    "Observation",
    "Progress",
    "SpecError",
    "Stalled",
    "Summary",
    "decide",
    "reject",
    "validate_runbook",
]
