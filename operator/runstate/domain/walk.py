"""The scratch state of one decision (`Walk`) and the two ways an attempt ends: `finish` (the
run is over) and `fail` (retry while retries remain, else Failed).

`Walk` records every state transition, proposing each to `policy`, and the stage reached, which
never falls behind the committed one without being noticed (`regressed`). This module owns that
bookkeeping only: it reads no pods and plans no stage, and it must not import the lifecycle
modules or `engine`, which drive it.
"""

from __future__ import annotations

from datetime import timedelta

from runstate.api.v1alpha1 import RunbookSpec, RunState, Stage, StateName
from runstate.domain import policy, stages, validation
from runstate.domain.planners.summary import Summary
from runstate.domain.records import Decision, Observation, Progress, Stalled
from runstate.domain.states import is_final_state, make_state, rfc3339
from runstate.domain.work import Intent, WorkKey


def seconds(delta: timedelta) -> float:
    """A delay in seconds, never negative."""
    return max(0.0, delta.total_seconds())


class Walk:
    """Mutable scratch state of one decision; only the engine and its lifecycle modules use it."""

    def __init__(self, obs: Observation) -> None:
        self.obs = obs
        prev = obs.progress
        self.state: RunState | None = prev.state if prev else None
        # Each decision re-derives the stage from the pods, starting at Setup; `committed` is
        # what an earlier decision reached, which the derived stage must never fall behind.
        self.committed: Stage | None = prev.stage if prev else None
        self.stage: Stage = Stage.Setup
        self.attempt = prev.attempt if prev else 1
        self.start_time = prev.start_time if prev else None
        self.end_time = prev.end_time if prev else None
        self.attempt_start = prev.attempt_start if prev else None
        self.transitions: list[tuple[RunState | None, RunState]] = []
        self.failure_reason: str | None = None

    def move(self, name: StateName, message: str = "", **details: object) -> RunState:
        new = make_state(name, self.obs.now, message, **details)
        policy.check(self.state, new)
        self.transitions.append((self.state, new))
        self.state = new
        return new

    def final(self) -> bool:
        return is_final_state(self.state)

    def reword(self, message: str) -> None:
        """Same state, new message: not a transition, so it is not recorded in history."""
        assert self.state is not None
        if self.state.message != message:
            self.state = self.state.model_copy(update={"message": message})

    def reach(self, stage: Stage) -> None:
        self.stage = stages.advance(self.stage, stage)

    def regressed(self) -> bool:
        return self.committed is not None and stages.index(self.stage) < stages.index(
            self.committed
        )

    def progress(self) -> Progress:
        assert self.state is not None
        stage = self.committed if self.regressed() and self.committed else self.stage
        prev = self.obs.progress
        summary = prev.summary if prev is not None and prev.state == self.state else None
        return Progress(
            self.state,
            stage,
            self.attempt,
            self.start_time,
            self.end_time,
            self.attempt_start,
            summary,
        )

    def decision(
        self,
        *,
        create: tuple[Intent, ...] = (),
        delete: tuple[WorkKey, ...] = (),
        summary: Summary | None = None,
        stalled: Stalled | None = None,
        requeue_after: float | None = None,
        replace: tuple[str, ...] = (),
    ) -> Decision:
        return Decision(
            progress=self.progress(),
            transitions=tuple(self.transitions),
            create=create,
            delete=delete,
            summary=summary,
            stalled=stalled,
            requeue_after=requeue_after,
            failure_reason=self.failure_reason,
            replace=replace,
        )


def finish(
    walk: Walk,
    name: StateName,
    message: str,
    *,
    reason: str | None = None,
    stage: Stage = Stage.Disconnect,
) -> None:
    """End the run. Disconnect always runs, also after a failure (pyinfra); only a run that
    never got past Setup stays there."""
    if stages.index(stage) > stages.index(walk.stage):
        walk.reach(stage)
    walk.move(name, message)
    walk.end_time = walk.state.timestamp if walk.state else None
    if name != StateName.COMPLETED:
        walk.failure_reason = reason


def fail(walk: Walk, rb: RunbookSpec, message: str, *, reason: str) -> float | None:
    """The attempt failed: wait and retry while retries remain (AwaitingRetry), else Failed.
    Returns the delay before the next attempt, if any."""
    retries = rb.retries
    if walk.attempt > retries.limit:
        finish(walk, StateName.FAILED, message, reason=reason)
        return None
    delay = validation.retry_delay(retries, walk.attempt)
    at = walk.obs.now + timedelta(seconds=delay)
    walk.reach(Stage.Disconnect)  # the failed attempt's Disconnect; the next starts at Setup
    walk.move(
        StateName.AWAITING_RETRY,
        f"Attempt {walk.attempt} failed: {message} Retrying at {rfc3339(at)} "
        f"({walk.attempt}/{retries.limit} retries)",
        scheduled_time=rfc3339(at),
        attempt=walk.attempt,
        retriable=True,
    )
    return delay


def setup_failed(walk: Walk, problem: str) -> Decision:
    """Setup failed: the spec cannot be acted on; `problem` names the field."""
    finish(
        walk, StateName.FAILED, f"Setup failed: {problem}", reason="invalid_spec", stage=Stage.Setup
    )
    return walk.decision(stalled=Stalled("InvalidSpec", problem))
