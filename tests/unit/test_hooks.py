"""State hooks, deletion, eviction and the concurrency queue: the engine and status rules."""

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest

from runstate.api.v1alpha1 import Stage, StateType
from runstate.controller.view import RunView
from runstate.domain.concurrency import QueuedRun, queued_ahead
from runstate.domain.engine import (
    DELETE_HOOK_GRACE_SECONDS,
    Decision,
    Observation,
    decide,
    validate_runbook,
)
from runstate.domain.errors import SpecError
from runstate.domain.work import Intent, Kind, Observed, Phase, WorkKey
from runstate.kube import pods, status
from tests.unit.sim import T0, run_spec, runbook, simulate

RUNNER = "ghcr.io/runstate/runstate:0.1.0"

HOOKED = dict(
    inventory={"hosts": [{"name": "web1", "groups": ["web"]}, {"name": "db1", "groups": ["db"]}]},
    operations=[{"name": "op", "run": "x"}],
    hooks={"onCompletion": ["notify"], "onFailure": ["page"], "onCancellation": ["tidy"]},
    hookOperations=[
        {"name": "notify", "run": "echo done"},
        {"name": "page", "run": "echo paged"},
        {"name": "tidy", "run": "echo tidy", "hosts": {"groups": ["web"]}},
    ],
)


def hooked(**over: Any) -> Any:
    return runbook(**{**HOOKED, **over})


def hook_keys(keys: Sequence[WorkKey]) -> list[tuple[str, str, int]]:
    return [(k.operation, k.host, k.try_) for k in keys if k.kind is Kind.HOOK]


# ---- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("over", "field", "message"),
    [
        (
            {"hooks": {"onFailure": ["nope"]}},
            "spec.hooks.onFailure[0]",
            "no hook operation 'nope' in hookOperations",
        ),
        (
            {"hookOperations": [{"name": "a", "run": "x"}, {"name": "a", "run": "y"}]},
            "spec.hookOperations[1].name",
            "duplicate hook operation 'a'",
        ),
        (
            {"hookOperations": [{"name": "a", "run": "x", "dependsOn": ["b"]}]},
            "spec.hookOperations[0].dependsOn",
            "hooks run side by side once a run ended; no dependsOn",
        ),
        (
            {"hookOperations": [{"name": "a", "run": "x", "check": "true"}]},
            "spec.hookOperations[0].check",
            "a hook always runs; it takes no check",
        ),
        (
            {"hookOperations": [{"name": "a", "run": "x", "hosts": {"groups": ["cache"]}}]},
            "spec.hookOperations[0].hosts.groups",
            "unknown group 'cache'",
        ),
        (
            {"hookOperations": [{"name": "a", "run": "x", "hosts": {"names": ["web9"]}}]},
            "spec.hookOperations[0].hosts.names",
            "unknown host 'web9'",
        ),
    ],
)
def test_bad_hooks_are_rejected_naming_the_field(over: Any, field: str, message: str) -> None:
    spec = hooked(**{"hooks": {}, **over})
    with pytest.raises(SpecError) as err:
        validate_runbook(spec)
    assert (err.value.field, err.value.message) == (field, message)


# ---- which hook runs, once -------------------------------------------------------------------


def test_completed_run_runs_its_completion_hook_once_and_stays_completed() -> None:
    trace = simulate(hooked())
    assert trace.states == ["Pending", "Running", "Completed"]
    assert hook_keys(trace.created) == [("notify", "", 0)]
    last = trace.last
    assert last.progress.state.name == "Completed" and last.done
    assert [(h.name, h.on, h.result) for h in last.hooks or ()] == [
        ("notify", "onCompletion", "Succeeded")
    ]
    # The hook pod knows what the run ended as.
    first_final = next(d for d in trace.decisions if d.final)
    intent = next(i for i in first_final.create if i.key.kind is Kind.HOOK)
    env = {e.name: e.value for e in intent.env}
    assert env["RUNSTATE_STATE"] == "COMPLETED" and env["RUNSTATE_STATE_NAME"] == "Completed"
    assert intent.command == "echo done"


def test_failed_run_runs_the_failure_hook_not_the_completion_hook() -> None:
    trace = simulate(hooked(), outcome=lambda key: 0 if key.kind is Kind.HOOK else 1)
    assert trace.last.progress.state.name == "Failed"
    assert hook_keys(trace.created) == [("page", "", 0)]


def test_cancelled_run_runs_its_cancellation_hook_on_the_selected_hosts() -> None:
    trace = simulate(hooked(), spec=run_spec(cancel=True))
    assert trace.last.progress.state.name == "Cancelled"
    assert hook_keys(trace.created) == [("tidy", "web1", 0)]  # hosts: {groups: [web]}


def test_a_failing_hook_is_a_warning_never_a_state_change() -> None:
    trace = simulate(hooked(), outcome=lambda key: 3 if key.kind is Kind.HOOK else 0)
    last = trace.last
    assert last.progress.state.name == "Completed" and last.done
    assert trace.states == ["Pending", "Running", "Completed"]
    assert [(h.name, h.result, h.message) for h in last.hook_failures] == [
        ("notify", "Failed", "exit 3")
    ]


def test_a_hook_with_retries_tries_again() -> None:
    rb = hooked(
        hooks={"onCompletion": ["notify"]},
        hookOperations=[{"name": "notify", "run": "x", "retries": 1}],
    )
    tries = iter([5, 0])
    trace = simulate(rb, outcome=lambda key: next(tries) if key.kind is Kind.HOOK else 0)
    assert hook_keys(trace.created) == [("notify", "", 0), ("notify", "", 1)]
    assert [h.result for h in trace.last.hooks or ()] == ["Succeeded"]


def final_observation(rb: Any, units: Sequence[Observed], launched: frozenset[WorkKey]) -> Decision:
    completed = simulate(runbook(operations=[{"name": "op", "run": "x"}]))
    progress = completed.last.progress
    return decide(Observation(run_spec(), rb, None, progress, tuple(units), T0, launched=launched))


def test_a_started_hook_whose_pod_vanished_is_lost_never_run_again() -> None:
    key = WorkKey(Kind.HOOK, "notify", "", 1, 0)
    d = final_observation(hooked(), (), frozenset({key}))
    assert d.create == () and d.done
    assert [(h.name, h.result) for h in d.hook_failures] == [("notify", "Lost")]
    assert d.transitions == ()


def test_hooks_respect_parallel() -> None:
    rb = hooked(
        config={"parallel": 1},
        hooks={"onCompletion": ["a", "b"]},
        hookOperations=[{"name": "a", "run": "x"}, {"name": "b", "run": "y"}],
    )
    d = final_observation(rb, (), frozenset())
    assert hook_keys([i.key for i in d.create]) == [("a", "", 0)] and not d.settled
    running = Observed(WorkKey(Kind.HOOK, "a", "", 1, 0), Phase.RUNNING)
    d = final_observation(rb, (running,), frozenset({running.key}))
    assert d.create == () and not d.done


def test_no_hooks_no_hook_status() -> None:
    trace = simulate(runbook())
    assert trace.last.hooks is None and trace.last.done


# ---- status: hooks and their warnings ---------------------------------------------------------


def test_status_counts_failed_hooks_as_disconnect_warnings_once() -> None:
    trace = simulate(hooked(), outcome=lambda key: 3 if key.kind is Kind.HOOK else 0)
    first_final = next(d for d in trace.decisions if d.final)
    st = status.run_status(first_final, previous={}, generation=1, history=[], now=T0)
    assert st["hooks"] == [
        {"name": "notify", "on": "onCompletion", "result": "Pending", "message": ""}
    ]
    assert st["stageWarnings"]["Disconnect"] == 0
    reconciling = {c["type"]: c for c in st["conditions"]}["Reconciling"]
    assert reconciling["status"] == "True" and reconciling["reason"] == "Hooks"
    # Later decisions carry no summary: the warning is added once, however often it is written.
    for _ in range(3):
        st = status.run_status(trace.last, previous=st, generation=1, history=[], now=T0)
        assert st["stageWarnings"]["Disconnect"] == 1
    assert st["hooks"][0]["result"] == "Failed"
    conditions = {c["type"]: c["status"] for c in st["conditions"]}
    assert conditions == {"Ready": "True", "Reconciling": "False", "Stalled": "False"}


# ---- deletion, eviction -----------------------------------------------------------------------


def test_deleting_a_run_cancels_it_after_its_pods_are_gone() -> None:
    rb = runbook(operations=[{"name": "op", "run": "sleep 60"}])
    d = decide(Observation(run_spec(), rb, None, None, (), T0))
    live = tuple(Observed(i.key, Phase.RUNNING) for i in d.create)
    d = decide(
        Observation(
            run_spec(), rb, None, d.progress, live, T0 + timedelta(seconds=1), deleted_at=T0
        )
    )
    assert [to.name for _, to in d.transitions] == ["Cancelling"]
    assert d.progress.state.message == "Run deleted: stopping 3 pod(s)"
    assert set(d.delete) == {u.key for u in live}
    gone = tuple(Observed(u.key, Phase.FAILED, 137, "Error") for u in live)
    d = decide(
        Observation(
            run_spec(), rb, None, d.progress, gone, T0 + timedelta(seconds=2), deleted_at=T0
        )
    )
    assert d.progress.state.name == "Cancelled" and d.done
    assert d.progress.state.message == "Cancelled: the Run was deleted"
    assert d.release  # over, no hooks: the Run may go


def test_a_deleted_run_goes_after_its_hooks_or_after_the_grace_period() -> None:
    rb = hooked()
    spec = run_spec()

    def at(seconds: float, units: Sequence[Observed] = (), prev: Any = None) -> Decision:
        when = T0 + timedelta(seconds=seconds)
        return decide(Observation(spec, rb, None, prev, tuple(units), when, deleted_at=T0))

    d = at(1)
    assert d.progress.state.name == "Cancelled" and hook_keys([i.key for i in d.create]) == [
        ("tidy", "web1", 0)
    ]
    assert not d.release and d.requeue_after == DELETE_HOOK_GRACE_SECONDS - 1
    hook = Observed(WorkKey(Kind.HOOK, "tidy", "web1", 1, 0), Phase.RUNNING)
    assert not at(60, [hook], d.progress).release
    assert at(DELETE_HOOK_GRACE_SECONDS, [hook], d.progress).release  # a stuck hook: go anyway
    done = Observed(hook.key, Phase.SUCCEEDED, 0, "Completed")
    assert at(61, [done], d.progress).release


def evicted_pod(message: str) -> dict[str, Any]:
    key = WorkKey(Kind.RUN, "op", "web1", 1, 0)
    pod = pods.build_pod(
        run_name="r",
        run_uid="u",
        namespace="ns",
        intent=_intent(key),
        parameters={},
        runner_image=RUNNER,
    )
    pod["status"] = {
        "phase": "Failed",
        "reason": "Evicted",
        "message": message,
        "containerStatuses": [
            {
                "name": pods.CONTAINER,
                "state": {"terminated": {"exitCode": 137, "reason": "Error", "message": "tail"}},
            }
        ],
    }
    return pod


def _intent(key: WorkKey) -> Intent:
    return Intent(key=key, command="x", image="alpine")


def test_an_evicted_pod_crashes_the_run_with_the_nodes_message() -> None:
    message = "Pod ephemeral local storage usage exceeds the total limit of containers 1Mi. "
    unit = pods.observe(evicted_pod(message))
    assert unit is not None and unit.infrastructure and unit.message == message
    rb = runbook(operations=[{"name": "op", "run": "x"}], inventory={"hosts": [{"name": "web1"}]})
    d = decide(Observation(run_spec(), rb, None, None, (), T0))
    d = decide(Observation(run_spec(), rb, None, d.progress, (unit,), T0 + timedelta(seconds=1)))
    assert d.progress.state.type is StateType.CRASHED
    assert d.failure_reason == "infrastructure"
    assert d.progress.state.message == (
        f"1 pod(s) of this run ended by their node (first: run op on web1: Evicted: {message.strip()})"
    )
    assert d.progress.stage is Stage.Disconnect


def test_a_failed_command_is_not_an_infrastructure_fault() -> None:
    assert not Observed(WorkKey(Kind.RUN, "op", "h"), Phase.FAILED, 137, "OOMKilled").infrastructure
    assert not Observed(WorkKey(Kind.RUN, "op", "h"), Phase.RUNNING, None, "Evicted").infrastructure


# ---- the concurrency queue: first in, first served ------------------------------------------


def body(name: str, created: str, state: dict[str, Any] | None = None, **spec: Any) -> Any:
    return {
        "metadata": {"name": name, "uid": f"uid-{name}", "creationTimestamp": created},
        "spec": spec,
        "status": {"state": state} if state else {},
    }


def test_queued_ahead_counts_older_waiting_runs_only() -> None:
    me = _queued(body("me", "2026-11-24T12:00:05Z"))
    runs = [
        body("holder", "2026-11-24T12:00:00Z", {"type": "RUNNING", "name": "Running"}),
        body(
            "waits",
            "2026-11-24T12:00:01Z",
            {"type": "SCHEDULED", "name": "AwaitingConcurrencySlot"},
        ),
        body("new", "2026-11-24T12:00:02Z"),  # not reconciled yet: it came first
        body("done", "2026-11-24T12:00:03Z", {"type": "COMPLETED", "name": "Completed"}),
        body(
            "later",
            "2026-11-24T12:00:04Z",
            {"type": "SCHEDULED", "name": "Scheduled", "scheduledTime": "2026-11-24T13:00:00Z"},
        ),
        body("future", "2026-11-24T12:00:04Z", None, scheduledTime="2026-11-24T13:00:00Z"),
        body(
            "younger",
            "2026-11-24T12:00:06Z",
            {"type": "SCHEDULED", "name": "AwaitingConcurrencySlot"},
        ),
        body("me", "2026-11-24T12:00:05Z"),
    ]
    entries = [_queued(b) for b in runs]
    assert queued_ahead(me, entries, ["uid-holder"], T0) == 2  # waits, new
    # Same second: the name breaks the tie, so every replica sees the same order.
    twin = _queued(body("ma", "2026-11-24T12:00:05Z"))
    assert queued_ahead(me, [twin], [], T0) == 1
    assert queued_ahead(me, [_queued(body("mz", "2026-11-24T12:00:05Z"))], [], T0) == 0


def _queued(body: dict[str, Any]) -> QueuedRun:
    return RunView.of(body).queued()
