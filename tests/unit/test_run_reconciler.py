"""The Run reconciler without a cluster: FakeKube + InMemoryStateStore, crashes between effects.

What a user would see is asserted: the Run's status (state, counts, hosts), its pods, its
Events, and what the store holds. Each crash test kills the operator before one effect of the
pipeline and lets a fresh process (no memory) finish the run: the result must be the one a
run without a crash reaches, with no pod created twice and no result lost.
"""

from __future__ import annotations

from typing import Any

import pytest

from runstate.api.v1alpha1 import FINALIZER
from runstate.controller.effects import Commit
from runstate.kube.api import Refused
from runstate.metrics import REGISTRY
from runstate_stores import InMemoryStateStore
from tests.fakekube import FakeCache, FakeKube
from tests.unit.operator_harness import Crash, CrashAt, Kubelet, Operator, drive, run_status

HOSTS = ["web1", "web2", "web3"]


def runbook(**config: Any) -> dict[str, Any]:
    return {
        "inventory": {"hosts": [{"name": h} for h in HOSTS]},
        "operations": [
            {"name": "one", "run": "sleep 1"},
            {"name": "two", "run": "sleep 1", "check": "false"},
            {"name": "three", "run": "sleep 1"},
        ],
        "config": {"parallel": 10, **config},
    }


def make_run(kube: FakeKube, name: str = "r1", **spec: Any) -> str:
    body = {
        "apiVersion": "runstate.dev/v1alpha1",
        "kind": "Run",
        "metadata": {"name": name},
        "spec": {"runbook": runbook(), **spec},
    }
    kube.apply("runs", body)
    return name


def outcome(status: dict[str, Any]) -> dict[str, Any]:
    """What a user reads off a finished Run, without times."""
    state = status["state"]
    return {
        "state": (state["type"], state["name"], state["message"]),
        "stage": status.get("stage"),
        "hostsSummary": status.get("hostsSummary"),
        "hosts": status.get("hosts"),
        "operations": status.get("operations"),
        "failedHosts": status.get("failedHosts"),
    }


async def clean_run(exits: dict[str, int] | None = None) -> tuple[dict[str, Any], list[str]]:
    kube, store = FakeKube(), InMemoryStateStore()
    name = make_run(kube)
    counter = CrashAt(at=0)
    op = Operator(kube, store, checkpoint=counter)
    kubelet = Kubelet(kube) if exits is None else Kubelet(kube, by_operation=exits)
    await drive(op, kubelet, name)
    return outcome(run_status(kube, name)), counter.effects


async def test_a_run_reaches_completed_with_every_count() -> None:
    result, effects = await clean_run()
    assert result["state"] == ("COMPLETED", "Completed", "All 3 hosts completed (9 changed).")
    assert result["hostsSummary"] == "3/3"
    assert [(o["name"], o["changed"], o["success"]) for o in result["operations"]] == [
        ("one", 3, 3),
        ("two", 3, 3),
        ("three", 3, 3),
    ]
    # The order of a run's first effects, and retention only after the final status.
    assert effects.index("StoreResults") < effects.index("Commit", effects.index("StoreResults"))
    last_status = max(i for i, e in enumerate(effects) if e == "WriteStatus")
    assert effects.index("CleanUpPods") > last_status


@pytest.mark.parametrize("failing", [{}, {"two": 1}])
async def test_a_crash_before_any_effect_loses_nothing_and_runs_nothing_twice(
    failing: dict[str, int],
) -> None:
    """SIGKILL before each effect of a whole run in turn; a fresh operator finishes it."""
    expected, effects = await clean_run(failing or None)
    assert len(effects) > 20
    for at in range(1, len(effects) + 1):
        kube, store = FakeKube(), InMemoryStateStore()
        name = make_run(kube)
        kubelet = Kubelet(kube, by_operation=failing)
        crashing = Operator(kube, store, checkpoint=CrashAt(at))
        with pytest.raises(Crash) as crash:
            await drive(crashing, kubelet, name)
        await drive(Operator(kube, store), kubelet, name)
        got = outcome(run_status(kube, name))
        where = f"crash before effect {at} ({crash.value})"
        assert got == expected, where
        assert set(kube.created_pods.values()) == {1}, f"{where}: a pod was created twice"
        run = kube.get("runs", name)
        assert run is not None, where
        history = [e.to_state for e in await store.aread_history(run["metadata"]["uid"])]
        assert [h["to"] for h in run_status(kube, name)["history"]] == history, where


async def test_the_final_counts_survive_a_crash_after_the_final_commit() -> None:
    """The bug of issue 10: the final state committed, then the operator dies; the pods are
    deleted by retention; the run showed its end without its results."""
    kube, store = FakeKube(), InMemoryStateStore()
    counter = CrashAt(at=0)
    await drive(Operator(kube, store, checkpoint=counter), Kubelet(kube), make_run(kube))
    final_commit = next(
        i
        for i, e in enumerate(counter.applied)
        if isinstance(e, Commit) and e.record.type == "COMPLETED"
    )
    kube, store = FakeKube(), InMemoryStateStore()
    name = make_run(kube)
    kubelet = Kubelet(kube)
    with pytest.raises(Crash):
        await drive(Operator(kube, store, checkpoint=CrashAt(final_commit + 2)), kubelet, name)
    run = kube.get("runs", name)
    assert run is not None
    record = await store.aget_state(run["metadata"]["uid"])
    assert record is not None and record.type == "COMPLETED"  # committed, then the crash
    await drive(Operator(kube, store), kubelet, name)
    status = run_status(kube, name)
    assert status["hostsSummary"] == "3/3"
    assert [o["success"] for o in status["operations"]] == [3, 3, 3]
    assert kube.pods() == []  # retention did its job, after the counts were safe


async def test_a_409_on_the_status_write_goes_onto_the_current_version() -> None:
    kube, store = FakeKube(), InMemoryStateStore()
    name = make_run(kube)
    op = Operator(kube, store)
    await op.runs.reconcile(("default", name))
    conflicts = (
        REGISTRY.get_sample_value("runstate_api_conflicts_total", {"resource": "runs/status"})
        or 0.0
    )
    kube.conflicts_on_status = 1  # someone annotates the Run between our read and our write
    Kubelet(kube).step()
    writes = kube.writes["runs/status"]
    await op.runs.reconcile(("default", name))
    # The write met the 409, read the Run again and went onto its current version at once.
    assert kube.writes["runs/status"] == writes + 2
    assert (
        REGISTRY.get_sample_value("runstate_api_conflicts_total", {"resource": "runs/status"})
        == conflicts + 1
    )
    run = kube.get("runs", name)
    assert run is not None
    assert run["metadata"]["annotations"] == {"touched": "yes"}  # theirs stays
    assert run["status"]["stage"] in ("Prepare", "Execute")  # ours is there too
    await drive(op, Kubelet(kube), name)
    assert run_status(kube, name)["hostsSummary"] == "3/3"


async def test_a_cache_that_lags_behind_our_writes_costs_no_conflict() -> None:
    kube, store = FakeKube(), InMemoryStateStore()
    name = make_run(kube)
    cache = FakeCache(kube)
    op = Operator(kube, store, cache=cache)
    await op.runs.reconcile(("default", name))  # adds the finalizer, writes a status
    cache.lag()  # the watch has not shown our writes
    Kubelet(kube).step()
    before = kube.writes["runs/status"]
    await op.runs.reconcile(("default", name))
    # The write went onto our own latest version, not the stale one the cache shows.
    assert kube.writes["runs/status"] == before + 1
    run = kube.get("runs", name)
    assert run is not None and run["status"]["stage"] in ("Prepare", "Execute")


async def test_a_pod_the_api_server_refuses_stalls_the_run_with_a_message() -> None:
    kube, store = FakeKube(), InMemoryStateStore()
    kube.refuse = lambda pod: Refused(422, 'Pod "x" is invalid: spec.containers[0].image: Required')
    name = make_run(kube)
    op = Operator(kube, store)
    delays = [await op.runs.reconcile(("default", name)) for _ in range(3)]
    status = run_status(kube, name)
    stalled = {c["type"]: c for c in status["conditions"]}["Stalled"]
    assert stalled["status"] == "True"
    assert stalled["reason"] == "PodCreateFailed"
    assert "spec.containers[0].image: Required" in stalled["message"]
    assert "PodCreateFailed" in kube.event_reasons(name)
    assert kube.event_reasons(name).count("PodCreateFailed") == 1  # announced once
    assert delays[1] is not None and delays[2] is not None and delays[2] > delays[1]  # backoff
    assert kube.pods() == []
    # The admission problem is fixed: the run goes on, and the stall clears.
    kube.refuse = lambda pod: None
    await drive(op, Kubelet(kube), name)
    status = run_status(kube, name)
    assert status["state"]["type"] == "COMPLETED"
    assert {c["type"]: c for c in status["conditions"]}["Stalled"]["status"] == "False"


async def test_deleting_a_run_with_an_invalid_inline_runbook_releases_it() -> None:
    kube, store = FakeKube(), InMemoryStateStore()
    body = {
        "apiVersion": "runstate.dev/v1alpha1",
        "kind": "Run",
        "metadata": {"name": "bad", "finalizers": [FINALIZER]},
        "spec": {"runbook": {"operations": []}},
    }
    kube.apply("runs", body)
    op = Operator(kube, store)
    await op.runs.reconcile(("default", "bad"))
    assert run_status(kube, "bad")["state"]["type"] == "FAILED"
    kube.user_delete("runs", "bad")
    for _ in range(3):
        await op.runs.reconcile(("default", "bad"))
    assert kube.get("runs", "bad") is None


async def test_an_invalid_spec_never_makes_the_runs_name_a_metric_label() -> None:
    from prometheus_client import generate_latest

    from runstate import metrics

    kube, store = FakeKube(), InMemoryStateStore()
    kube.apply(
        "runs",
        {"metadata": {"name": "no-such-label-xyz"}, "spec": {"runbook": {"operations": []}}},
    )
    await Operator(kube, store).runs.reconcile(("default", "no-such-label-xyz"))
    exposed = generate_latest(metrics.REGISTRY).decode()
    assert 'runbook="no-such-label-xyz"' not in exposed
    assert run_status(kube, "no-such-label-xyz")["state"]["type"] == "FAILED"


async def test_a_finished_run_without_hooks_does_not_say_hooks_are_running() -> None:
    kube, store = FakeKube(), InMemoryStateStore()
    name = make_run(kube)
    await drive(Operator(kube, store), Kubelet(kube), name)
    reconciling = {c["type"]: c for c in run_status(kube, name)["conditions"]}["Reconciling"]
    assert reconciling["status"] == "False"
    assert "hooks" not in reconciling["message"]


async def test_a_coalesced_status_is_written_when_its_wait_is_over() -> None:
    """Progress of a run under way waits up to status_coalesce_seconds; it is never lost."""
    import asyncio

    from runstate.settings import ReconcileSettings

    kube, store = FakeKube(), InMemoryStateStore()
    name = make_run(kube, paused=True)
    op = Operator(kube, store, settings=ReconcileSettings(status_coalesce_seconds=0.3))
    wait = await op.runs.reconcile(("default", name))
    assert wait is not None and 0 < wait <= 0.3
    assert "state" not in run_status(kube, name)  # coalesced: not written yet
    await asyncio.sleep(wait)
    await op.runs.reconcile(("default", name))
    assert run_status(kube, name)["state"]["name"] == "Suspended"


async def test_a_run_with_neither_runbook_nor_ref_says_so_once() -> None:
    kube, store = FakeKube(), InMemoryStateStore()
    kube.apply("runs", {"metadata": {"name": "empty"}, "spec": {}})
    await Operator(kube, store).runs.reconcile(("default", "empty"))
    state = run_status(kube, "empty")["state"]
    assert state["message"] == (
        "Setup failed: spec: exactly one of runbookRef and runbook must be set"
    )


async def test_a_runbook_is_parsed_once_per_generation_for_all_its_runs() -> None:
    """Runs of one Runbook share its parsed spec (and so the domain's Setup, worked out once
    per spec object); a new generation is parsed anew and a bad one names the field."""
    from runstate.controller.view import RunbookView

    kube, store = FakeKube(), InMemoryStateStore()
    kube.apply("runbooks", {"metadata": {"name": "fleet"}, "spec": runbook()})
    for name in ("a", "b"):
        kube.apply("runs", {"metadata": {"name": name}, "spec": {"runbookRef": {"name": "fleet"}}})
    op = Operator(kube, store)
    for name in ("a", "b"):
        await drive(op, Kubelet(kube), name)
        assert run_status(kube, name)["hostsSummary"] == "3/3"
    specs = op.runs.runbooks

    def view() -> RunbookView:
        body = kube.get("runbooks", "fleet")
        assert body is not None
        return RunbookView.of(body)

    first = specs.parse(view())
    assert specs.parse(view()) is first
    kube.user_patch_spec("runbooks", "fleet", {"config": {"parallel": 2}})
    second = specs.parse(view())
    assert second is not first and not isinstance(second, str)
    assert second.config.parallel == 2
    kube.user_patch_spec("runbooks", "fleet", {"config": {"parallel": 0}})
    problem = specs.parse(view())
    assert isinstance(problem, str) and "config.parallel" in problem


async def test_a_run_being_cancelled_finishes_its_cancel_when_its_runbook_turns_invalid() -> None:
    """Cancelling, then the Runbook is edited into something invalid: the cancel goes on
    (no refused transition, no reconcile error loop) and the run ends Cancelled."""
    kube, store = FakeKube(), InMemoryStateStore()
    kube.apply("runbooks", {"metadata": {"name": "fleet"}, "spec": runbook()})
    kube.apply("runs", {"metadata": {"name": "r"}, "spec": {"runbookRef": {"name": "fleet"}}})
    op = Operator(kube, store)
    await op.runs.reconcile(("default", "r"))
    assert kube.runnable()  # pods under way
    kube.user_patch_spec("runs", "r", {"cancel": True})
    kube.user_patch_spec("runbooks", "fleet", {"operations": []})
    await op.runs.reconcile(("default", "r"))
    await op.runs.reconcile(("default", "r"))
    state = run_status(kube, "r")["state"]
    assert (state["type"], state["name"]) == ("CANCELLED", "Cancelled")
    assert kube.runnable() == []


def test_every_metric_a_plan_can_move_has_a_home() -> None:
    from runstate.controller.apply import COUNTERS, HISTOGRAMS
    from runstate.controller.effects import Metric

    assert set(COUNTERS) | set(HISTOGRAMS) == set(Metric)
    assert not set(COUNTERS) & set(HISTOGRAMS)


@pytest.mark.parametrize(
    ("state", "deleting", "has_finalizer", "needed"),
    [
        (None, False, False, True),  # a new Run: before anything is written for it
        ("RUNNING", False, False, True),
        ("RUNNING", False, True, False),  # already there
        ("RUNNING", True, False, False),  # being deleted: adding it now would be refused
        ("COMPLETED", False, False, False),  # over: nothing to clean up
        ("FAILED", False, False, False),
    ],
)
def test_the_finalizer_rule(
    state: str | None, deleting: bool, has_finalizer: bool, needed: bool
) -> None:
    from datetime import UTC, datetime

    from runstate.api.v1alpha1 import Stage, StateName
    from runstate.domain.records import Progress
    from runstate.domain.states import make_state
    from runstate.domain.stopping import needs_finalizer

    names = {
        "RUNNING": StateName.RUNNING,
        "COMPLETED": StateName.COMPLETED,
        "FAILED": StateName.FAILED,
    }
    progress = (
        None
        if state is None
        else Progress(make_state(names[state], datetime.now(UTC)), Stage.Execute)
    )
    assert needs_finalizer(progress, deleting=deleting, has_finalizer=has_finalizer) is needed
