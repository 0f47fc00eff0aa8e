"""Run states beyond the happy path: scheduled and late, cancel, pause, run-level retries."""

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from runstate.api.v1alpha1 import RunSpec, Stage, StateType
from runstate.domain.engine import QUEUED_RECHECK_SECONDS, Decision, Observation, decide
from runstate.domain.work import Kind, Observed, Phase, WorkKey
from tests.unit.sim import T0, run_spec, runbook

RB = runbook(operations=[{"name": "op", "run": "x"}], inventory={"hosts": [{"name": "h"}]})


def step(
    spec: RunSpec,
    prev: Decision | None,
    units: Sequence[Observed] = (),
    *,
    at: timedelta = timedelta(),
    rb: Any = RB,
) -> Decision:
    return decide(
        Observation(spec, rb, None, prev.progress if prev else None, tuple(units), T0 + at)
    )


def names(d: Decision) -> list[str]:
    return [to.name for _, to in d.transitions]


def running(d: Decision) -> list[Observed]:
    return [Observed(i.key, Phase.RUNNING) for i in d.create]


def done(units: Sequence[Observed], code: int = 0) -> list[Observed]:
    phase = Phase.SUCCEEDED if code == 0 else Phase.FAILED
    return [Observed(u.key, phase, code, "Completed" if code == 0 else "Error") for u in units]


def test_scheduled_waits_for_its_time_then_starts() -> None:
    spec = run_spec(scheduledTime="2026-11-24T12:10:00Z")
    d = step(spec, None)
    assert names(d) == ["Scheduled"] and d.create == ()
    assert d.progress.state.scheduled_time == "2026-11-24T12:10:00Z"
    assert d.requeue_after == 600
    d = step(spec, d, at=timedelta(minutes=10, seconds=5))
    assert names(d) == ["Pending", "Running"] and len(d.create) == 1


def test_a_run_started_after_late_after_seconds_was_late() -> None:
    spec = run_spec(scheduledTime="2026-11-24T12:10:00Z")
    d = step(spec, None)
    d = step(spec, d, at=timedelta(minutes=10, seconds=20))  # lateAfterSeconds: 15
    assert names(d) == ["Late", "Pending", "Running"]
    assert d.transitions[0][1].type is StateType.SCHEDULED
    assert d.transitions[0][1].message == "Starting 20s after its scheduled time"


def test_a_run_first_seen_long_after_its_time_was_scheduled_and_is_late() -> None:
    spec = run_spec(scheduledTime="2026-11-24T11:59:00Z")  # 60 s before T0
    d = step(spec, None)
    assert names(d) == ["Scheduled", "Late", "Pending", "Running"] and len(d.create) == 1
    assert d.transitions[1][1].message == "Starting 60s after its scheduled time"


def test_a_run_first_seen_within_late_after_seconds_just_starts() -> None:
    spec = run_spec(scheduledTime="2026-11-24T11:59:50Z")  # 10 s before T0; lateAfter 15
    assert names(step(spec, None)) == ["Pending", "Running"]


def test_cancel_stops_pods_and_ends_cancelled_once_they_are_gone() -> None:
    d = step(run_spec(), None)
    pods = running(d)
    cancel = run_spec(cancel=True)
    d = step(cancel, d, pods)
    assert names(d) == ["Cancelling"]
    assert set(d.delete) == {p.key for p in pods} and d.create == ()
    d = step(cancel, d, pods)  # still there: keep waiting, no duplicate transition
    assert names(d) == [] and d.progress.state.name == "Cancelling"
    d = step(cancel, d, [])  # the pods are gone
    assert names(d) == ["Cancelled"] and d.final and d.progress.stage is Stage.Disconnect


def test_cancel_of_a_scheduled_run_needs_no_pods() -> None:
    d = step(run_spec(scheduledTime="2026-11-24T13:00:00Z"), None)
    d = step(run_spec(scheduledTime="2026-11-24T13:00:00Z", cancel=True), d)
    assert names(d) == ["Cancelling", "Cancelled"]


def test_paused_before_any_operation_is_suspended_and_resumes() -> None:
    d = step(run_spec(paused=True), None)
    assert names(d) == ["Pending", "Suspended"] and d.create == ()
    assert d.progress.state.type is StateType.PAUSED
    d = step(run_spec(), d)
    assert names(d) == ["Running"] and len(d.create) == 1


def test_paused_run_lets_running_pods_finish_but_starts_nothing() -> None:
    rb = runbook(
        operations=[{"name": "a", "run": "x"}, {"name": "b", "run": "y"}],
        inventory={"hosts": [{"name": "h"}]},
    )
    d = step(run_spec(), None, rb=rb)
    pods = running(d)
    paused = run_spec(paused=True, pauseTimeoutSeconds=60)
    d = step(paused, d, pods, rb=rb)
    assert names(d) == ["Paused"] and d.create == () and d.delete == ()
    assert d.progress.state.pause_timeout is not None
    d = step(paused, d, done(pods), at=timedelta(seconds=5), rb=rb)  # `a` finished
    assert d.create == () and names(d) == [] and d.requeue_after == 55
    d = step(run_spec(), d, done(pods), at=timedelta(seconds=10), rb=rb)
    assert names(d) == ["Running"] and [i.key.operation for i in d.create] == ["b"]


def test_pause_timeout_fails_the_run() -> None:
    d = step(run_spec(), None)
    paused = run_spec(paused=True, pauseTimeoutSeconds=60)
    d = step(paused, d, running(d))
    d = step(paused, d, [], at=timedelta(seconds=61))
    assert names(d) == ["Failed"] and d.progress.state.message == "Paused longer than 60s"
    assert d.failure_reason == "timeout"


def test_retry_waits_with_backoff_then_runs_a_new_attempt() -> None:
    rb = runbook(
        operations=[{"name": "op", "run": "x"}],
        inventory={"hosts": [{"name": "h"}]},
        retries={"limit": 2, "delaySeconds": 10, "backoffFactor": 3},
    )
    d = step(run_spec(), None, rb=rb)
    first = running(d)
    d = step(run_spec(), d, done(first, 1), rb=rb)
    assert names(d) == ["AwaitingRetry"] and d.requeue_after == 10
    awaiting = d.progress.state
    assert awaiting.type is StateType.SCHEDULED and awaiting.retriable
    assert awaiting.scheduled_time == "2026-11-24T12:00:10.000000Z"
    assert not d.final and d.failure_reason is None
    d = step(run_spec(), d, done(first, 1), at=timedelta(seconds=5), rb=rb)
    assert names(d) == [] and d.create == ()  # not yet
    d = step(run_spec(), d, done(first, 1), at=timedelta(seconds=10), rb=rb)
    assert names(d) == ["Pending", "Retrying"] and d.progress.attempt == 2
    assert [i.key for i in d.create] == [WorkKey(Kind.RUN, "op", "h", attempt=2)]
    second = running(d)
    d = step(run_spec(), d, [*done(first, 1), *done(second, 1)], at=timedelta(seconds=11), rb=rb)
    assert names(d) == ["AwaitingRetry"] and d.requeue_after == 30  # 10 · 3^(2-1)
    units = [*done(first, 1), *done(second, 1)]
    d = step(run_spec(), d, units, at=timedelta(seconds=41), rb=rb)
    third = running(d)
    d = step(run_spec(), d, [*units, *done(third)], at=timedelta(seconds=42), rb=rb)
    assert names(d) == ["Completed"] and d.progress.attempt == 3


def test_retries_exhausted_fail_the_run() -> None:
    rb = runbook(
        operations=[{"name": "op", "run": "x"}],
        inventory={"hosts": [{"name": "h"}]},
        retries={"limit": 1, "delaySeconds": 0},
    )
    d = step(run_spec(), None, rb=rb)
    first = running(d)
    d = step(run_spec(), d, done(first, 1), rb=rb)
    assert names(d) == ["AwaitingRetry"]
    d = step(run_spec(), d, done(first, 1), rb=rb)
    second = running(d)
    d = step(run_spec(), d, [*done(first, 1), *done(second, 1)], rb=rb)
    assert names(d) == ["Failed"]
    assert d.progress.state.message == "No hosts remaining! (1/1 hosts failed)"
    assert d.failure_reason == "no_hosts" and d.progress.attempt == 2


def test_invalid_spec_is_not_retried() -> None:
    rb = runbook(inventory={"hosts": []}, retries={"limit": 3})
    d = step(run_spec(), None, rb=rb)
    assert names(d) == ["Pending", "Failed"] and d.failure_reason == "invalid_spec"


def test_a_pod_deleted_behind_our_back_crashes_the_run_and_is_not_restarted() -> None:
    d = step(run_spec(), None)
    [pod] = running(d)
    launched = frozenset({pod.key})
    terminating = Observed(pod.key, Phase.FAILED, 143, "Error", deleting=True)
    d2 = decide(Observation(run_spec(), RB, None, d.progress, (terminating,), T0, launched))
    assert names(d2) == ["Crashed"] and d2.failure_reason == "infrastructure"
    assert "deleted outside runstate" in d2.progress.state.message and d2.create == ()
    gone = decide(Observation(run_spec(), RB, None, d.progress, (), T0, launched))
    assert names(gone) == ["Crashed"] and gone.create == ()


def limited(policy: str) -> Any:
    return runbook(
        operations=[{"name": "op", "run": "x"}],
        inventory={"hosts": [{"name": "h"}]},
        trigger={"concurrency": {"limit": 1, "policy": policy}},
    )


def with_slot(
    prev: Decision | None, rb: Any, slot: bool, holders: tuple[str, ...] = ()
) -> Decision:
    return decide(
        Observation(
            run_spec(),
            rb,
            None,
            prev.progress if prev else None,
            (),
            T0,
            slot=slot,
            holders=holders,
        )
    )


def test_queue_waits_for_a_slot_then_starts() -> None:
    rb = limited("Queue")
    d = with_slot(None, rb, False, ("first",))
    assert names(d) == ["Pending", "AwaitingConcurrencySlot"] and d.create == ()
    assert d.progress.state.message == "Concurrency limit 1 reached: waiting for first"
    assert d.requeue_after == QUEUED_RECHECK_SECONDS and d.replace == ()
    d = with_slot(d, rb, False, ("first",))
    assert names(d) == []  # still waiting, no duplicate transition
    d = with_slot(d, rb, True)
    assert names(d) == ["Pending", "Running"] and len(d.create) == 1


def test_forbid_fails_the_new_run_at_once() -> None:
    d = with_slot(None, limited("Forbid"), False, ("first",))
    assert names(d) == ["Pending", "Failed"] and d.failure_reason == "concurrency"
    assert d.progress.state.message == "Concurrency limit 1 reached (policy Forbid): first running"


def test_replace_cancels_the_holders_and_waits() -> None:
    d = with_slot(None, limited("Replace"), False, ("first",))
    assert names(d) == ["Pending", "AwaitingConcurrencySlot"] and d.replace == ("first",)
