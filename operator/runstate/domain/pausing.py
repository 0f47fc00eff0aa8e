"""Starting, pausing and resuming an attempt: Pending → Running (Retrying past the first
attempt), Paused once an operation ran or Suspended before, back to running when resumed, and
Failed when paused past `spec.pauseTimeoutSeconds`.

It owns these transitions only: it plans no stage (a paused run's stages are walked, on hold,
by `running`), and it must not import the other lifecycle modules or `engine`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from runstate.api.v1alpha1 import StateName, StateType
from runstate.domain.records import Decision
from runstate.domain.states import parse_time, rfc3339
from runstate.domain.walk import Walk, finish, seconds


def start_or_pause(walk: Walk, *, started: bool) -> None:
    """Pending starts the attempt (Running, or Retrying past the first) unless `spec.paused`;
    pausing is Paused once an operation ran (`started`), else Suspended; resuming runs again."""
    spec = walk.obs.spec
    pause_name = StateName.PAUSED if started else StateName.SUSPENDED
    run_name = StateName.RUNNING if walk.attempt == 1 else StateName.RETRYING
    state = walk.state
    assert state is not None
    if state.type is StateType.PENDING:
        if spec.paused:
            pause(walk, spec.pause_timeout_seconds, pause_name)
        else:
            entered = walk.move(run_name, f"Attempt {walk.attempt} started", attempt=walk.attempt)
            walk.start_time = walk.start_time or entered.timestamp
            walk.attempt_start = entered.timestamp
    elif state.type is StateType.RUNNING and spec.paused:
        pause(walk, spec.pause_timeout_seconds, pause_name)
    elif state.type is StateType.PAUSED and not spec.paused:
        entered = walk.move(run_name, "Resumed", attempt=walk.attempt)
        walk.start_time = walk.start_time or entered.timestamp
        walk.attempt_start = walk.attempt_start or entered.timestamp


def pause(walk: Walk, timeout: int | None, name: StateName) -> None:
    """Enter Paused (or Suspended), failing unless resumed within `timeout` seconds if set."""
    until = walk.obs.now + timedelta(seconds=timeout) if timeout else None
    message = "Paused: running pods finish, no new ones start"
    if until is not None:
        message += f"; fails unless resumed by {rfc3339(until)}"
    walk.move(name, message, pause_timeout=rfc3339(until) if until else None)


def paused_until(walk: Walk) -> datetime | None:
    """When a Paused run fails unless resumed (None: never)."""
    assert walk.state is not None
    return parse_time(walk.state.pause_timeout)


def expire(walk: Walk, until: datetime | None) -> Decision | None:
    """A run paused past its timeout fails and stops its pods (else None)."""
    obs = walk.obs
    if until is None or obs.now < until:
        return None
    in_flight = tuple(u.key for u in obs.units if not u.finished)
    timeout = obs.spec.pause_timeout_seconds
    finish(walk, StateName.FAILED, f"Paused longer than {timeout}s", reason="timeout")
    return walk.decision(delete=in_flight)


def hold_for(walk: Walk, until: datetime | None) -> float | None:
    """How long a paused run waits before it is looked at again (None: until resumed)."""
    return seconds(until - walk.obs.now) if until is not None else None
