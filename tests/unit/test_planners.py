"""Each stage planner on its own: the attempt view, Connect, Prepare, Execute, verdict, summary.

`decide()` as a whole is pinned by test_engine, the simulator and the property tests; these pin
what each planner returns from a hand-made view, table-driven where it fits.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import pytest

from runstate.api.v1alpha1 import FailedHost, RunbookSpec, Stage
from runstate.domain.attempt import AttemptView
from runstate.domain.intents import Starter
from runstate.domain.inventory import ResolvedInventory, resolve_inventory
from runstate.domain.planners.connect import plan_connect
from runstate.domain.planners.execute import (
    ExecutePlan,
    advance,
    outcome_of,
    plan_execute,
)
from runstate.domain.planners.prepare import PreparePlan, plan_prepare
from runstate.domain.planners.summary import summarize, tally
from runstate.domain.planners.verdict import Clock, Ruling, plan_verdict
from runstate.domain.work import Kind, Observed, Phase, RunResult, WorkKey
from tests.unit.sim import T0, runbook

HOSTS = ("web1", "web2", "web3")


def _rb(**spec: object) -> RunbookSpec:
    return runbook(**spec)


def _inv(rb: RunbookSpec) -> ResolvedInventory:
    return resolve_inventory(rb, None)


def _view(*units: Observed, attempt: int = 1, slow: float = 30.0) -> AttemptView:
    return AttemptView.build(units, attempt, slow)


def _starter(rb: RunbookSpec, view: AttemptView, budget: int = 100) -> Starter:
    return Starter(rb, _inv(rb), existing=view.units, budget=budget)


def _unit(
    kind: Kind,
    op: str,
    host: str,
    phase: Phase = Phase.SUCCEEDED,
    code: int | None = 0,
    *,
    try_: int = 0,
    attempt: int = 1,
    reason: str = "",
    **extra: object,
) -> Observed:
    key = WorkKey(kind, op, host, attempt, try_)
    return Observed(key, phase, code, reason, **extra)  # type: ignore[arg-type]


def _failed(host: str, stage: Stage = Stage.Connect) -> FailedHost:
    return FailedHost(host=host, stage=stage, reason="Error")


# ---- the attempt view ------------------------------------------------------------------------


def test_view_indexes_the_attempt_in_one_pass() -> None:
    units = [
        _unit(Kind.RUN, "op", "web1", Phase.FAILED, 1),
        _unit(Kind.RUN, "op", "web1", Phase.RUNNING, None, try_=1, start_delay=99.0),
        _unit(Kind.CONNECT, "", "web2", Phase.FAILED, 1),
        _unit(Kind.CONNECT, "", "web2", try_=1),
        _unit(Kind.CHECK, "op", "web3", Phase.FAILED, None, reason="Evicted"),
        _unit(Kind.RUN, "op", "web2", Phase.RUNNING, None, attempt=0),  # an earlier attempt
        _unit(Kind.RUN, "op", "web3", Phase.SUCCEEDED, deleting=True),
    ]
    view = _view(*units)
    assert view.latest[("op", "web1")].key.try_ == 1
    assert view.probes["web2"].key.try_ == 1
    assert view.in_flight == 2  # the earlier attempt's pod counts against `parallel`
    assert len(view.units) == 6 and view.started
    assert [u.key.host for u in view.evicted] == ["web3"]
    assert view.deleting == (WorkKey(Kind.RUN, "op", "web3"),)
    assert (view.retries[Kind.RUN], view.retries[Kind.CONNECT]) == (1, 1)
    assert view.slow_starts[Kind.RUN] == 1
    assert view.in_flight_keys() == (WorkKey(Kind.RUN, "op", "web1", 1, 1),)


def test_view_vanished_is_launched_and_gone_or_being_deleted() -> None:
    kept = _unit(Kind.RUN, "op", "web1")
    view = _view(kept, _unit(Kind.RUN, "op", "web3", deleting=True))
    launched = {
        kept.key,
        WorkKey(Kind.RUN, "op", "web2"),  # gone
        WorkKey(Kind.RUN, "op", "web2", attempt=2),  # another attempt
        WorkKey(Kind.HOOK, "notify", "", 1),  # hooks are not the run's progress
    }
    assert view.vanished(launched) == [
        WorkKey(Kind.RUN, "op", "web2"),
        WorkKey(Kind.RUN, "op", "web3"),
    ]


# ---- the starter -----------------------------------------------------------------------------


def test_starter_counts_the_budget_and_never_starts_a_key_twice() -> None:
    rb = _rb()
    existing = _unit(Kind.RUN, "update", "web1", Phase.RUNNING, None)
    view = _view(existing)
    starter = _starter(rb, view, budget=2)
    for host in HOSTS:
        starter.want(WorkKey(Kind.RUN, "update", host), "true", op=rb.operations[0])
    assert [i.key.host for i in starter.created] == ["web2", "web3"]
    starter.want(WorkKey(Kind.CONNECT, "", "web1", 1, 1), "probe")
    assert len(starter.created) == 2  # the budget is spent
    assert _starter(rb, view, budget=0).created == ()


# ---- Connect ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("probes", "retries", "waiting", "failed", "started"),
    [
        ([], 0, True, [], [("web1", 0), ("web2", 0), ("web3", 0)]),
        ([("web1", 0, Phase.SUCCEEDED)], 0, True, [], [("web2", 0), ("web3", 0)]),
        (
            [(h, 0, Phase.SUCCEEDED) for h in HOSTS[:2]] + [("web3", 0, Phase.FAILED)],
            0,
            False,
            ["web3"],
            [],
        ),
        (  # a failed probe with retries left is probed again
            [(h, 0, Phase.SUCCEEDED) for h in HOSTS[:2]] + [("web3", 0, Phase.FAILED)],
            1,
            True,
            [],
            [("web3", 1)],
        ),
        ([(h, 0, Phase.RUNNING) for h in HOSTS], 0, True, [], []),
    ],
)
def test_connect(
    probes: Sequence[tuple[str, int, Phase]],
    retries: int,
    waiting: bool,
    failed: list[str],
    started: list[tuple[str, int]],
) -> None:
    rb = _rb(connect={"run": "probe", "retries": retries})
    units = [
        _unit(Kind.CONNECT, "", h, p, 0 if p is Phase.SUCCEEDED else 1, try_=t)
        for h, t, p in probes
    ]
    view = _view(*units)
    starter = _starter(rb, view)
    plan = plan_connect(view, HOSTS, rb.connect, starter)
    assert plan.waiting is waiting
    assert list(plan.failed) == failed
    assert all(f.stage is Stage.Connect and f.reason == "ExitCode1" for f in plan.failed.values())
    assert [(i.key.host, i.key.try_) for i in starter.created] == started


def test_connect_without_a_probe_waits_for_nothing() -> None:
    rb = _rb()
    plan = plan_connect(_view(), HOSTS, None, _starter(rb, _view()))
    assert not plan.waiting and not plan.failed


# ---- Prepare ---------------------------------------------------------------------------------


def test_prepare_classifies_checks_and_skips_failed_hosts() -> None:
    rb = _rb(
        operations=[
            {"name": "a", "run": "x", "check": "c"},
            {"name": "b", "run": "x", "check": "c"},
            {"name": "c", "run": "x"},
        ]
    )
    view = _view(
        _unit(Kind.CHECK, "a", "web1"),  # in state
        _unit(Kind.CHECK, "a", "web2", Phase.FAILED, 1),  # change
        _unit(Kind.CHECK, "a", "web3", Phase.FAILED, 127),  # error: fails web3
        _unit(Kind.CHECK, "b", "web1", Phase.FAILED, 3),
    )
    starter = _starter(rb, view)
    inv = _inv(rb)
    plan = plan_prepare(view, rb.operations, inv.targets, failed={}, starter=starter)
    assert plan.waiting
    assert plan.change == {
        "a": {"web1": False, "web2": True},
        "b": {"web1": True},
        "c": {"web1": True, "web2": True},  # no check: a change; web3 failed in `a`
    }
    assert plan.failed["web3"].stage is Stage.Prepare
    assert plan.failed["web3"].operation == "a" and plan.failed["web3"].reason == "ExitCode127"
    assert [i.key for i in starter.created] == [WorkKey(Kind.CHECK, "b", "web2")]


def test_prepare_skipped_while_connect_waits() -> None:
    plan = PreparePlan.skipped(("a", "b"), {"web1": _failed("web1")})
    assert plan.change == {"a": {}, "b": {}} and not plan.waiting and "web1" in plan.failed


# ---- Execute ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phase", "code", "reason", "try_", "retries", "ignore", "active", "expected"),
    [
        (Phase.SUCCEEDED, 0, "", 0, 0, False, True, RunResult.SUCCESS),
        (Phase.FAILED, 1, "", 0, 1, False, True, None),  # retry
        (Phase.FAILED, 1, "", 0, 1, False, False, RunResult.ERROR),  # failed host: no retry
        (Phase.FAILED, 1, "", 1, 1, False, True, RunResult.ERROR),
        (Phase.FAILED, 1, "", 0, 0, True, True, RunResult.IGNORED),
        (Phase.FAILED, None, "DeadlineExceeded", 0, 0, False, True, RunResult.PARTIAL),
    ],
)
def test_outcome_of(
    phase: Phase,
    code: int | None,
    reason: str,
    try_: int,
    retries: int,
    ignore: bool,
    active: bool,
    expected: RunResult | None,
) -> None:
    rb = _rb(operations=[{"name": "op", "run": "x", "retries": retries, "ignoreErrors": ignore}])
    unit = _unit(Kind.RUN, "op", "web1", phase, code, try_=try_, reason=reason)
    assert outcome_of(unit, rb.operations[0], active=active) is expected


def test_advance_records_results_fails_hosts_and_starts_retries() -> None:
    rb = _rb(operations=[{"name": "op", "run": "x", "retries": 1}])
    op = rb.operations[0]
    view = _view(
        _unit(Kind.RUN, "op", "web1"),
        _unit(Kind.RUN, "op", "web2", Phase.FAILED, 2),  # retry left
        _unit(Kind.RUN, "op", "web3", Phase.FAILED, None, try_=1),  # out of retries
    )
    starter = _starter(rb, view)
    change = dict.fromkeys(HOSTS, True)
    done = advance(view, op, HOSTS, change=change, failed={}, stop=None, starter=starter)
    assert not done.finished
    assert done.counts == {RunResult.SUCCESS: 1, RunResult.ERROR: 1}
    assert done.failed["web3"].reason == "Error"  # no exit code: never "ExitCodeNone"
    assert done.results["op|web3"]["try"] == 1
    assert [(i.key.host, i.key.try_) for i in starter.created] == [("web2", 1)]


def test_advance_starts_nothing_new_once_stopped() -> None:
    rb = _rb()
    view = _view()
    starter = _starter(rb, view)
    change = dict.fromkeys(HOSTS, True)
    op = rb.operations[0]
    done = advance(view, op, HOSTS, change=change, failed={}, stop="Over 10%", starter=starter)
    assert done.finished and starter.created == ()


def test_execute_follows_the_dag_in_one_pass_and_checks_fail_percent() -> None:
    rb = _rb(
        operations=[{"name": "a", "run": "x"}, {"name": "b", "run": "x"}],
        config={"failPercent": 0},
    )
    inv = _inv(rb)
    view = _view(*(_unit(Kind.RUN, "a", h) for h in HOSTS))
    starter = _starter(rb, view)
    change = {"a": dict.fromkeys(HOSTS, True), "b": dict.fromkeys(HOSTS, True)}
    plan = plan_execute(
        view,
        rb.operations,
        deps={"a": frozenset(), "b": frozenset({"a"})},
        targets=inv.targets,
        change=change,
        failed={},
        hosts=3,
        fail_percent=0,
        starter=starter,
    )
    assert plan.finished == {"a"} and plan.stop is None
    assert [i.key.operation for i in starter.created] == ["b", "b", "b"]

    # A host failed at Connect trips failPercent 0 before any operation starts.
    starter = _starter(rb, _view())
    plan = plan_execute(
        _view(),
        rb.operations,
        deps={"a": frozenset(), "b": frozenset({"a"})},
        targets=inv.targets,
        change=change,
        failed={"web1": _failed("web1")},
        hosts=3,
        fail_percent=0,
        starter=starter,
    )
    assert plan.stop is not None and plan.stop.startswith("Over 0%")
    assert starter.created == ()


# ---- verdict ---------------------------------------------------------------------------------


def _execute(failed: Sequence[str] = (), finished: int = 1, stop: str | None = None) -> ExecutePlan:
    done = frozenset(f"op{i}" for i in range(finished))
    return ExecutePlan(finished=done, stop=stop, failed={h: _failed(h) for h in failed})


CLOCK = Clock(now=T0)


@pytest.mark.parametrize(
    ("case", "kwargs", "ruling", "reason"),
    [
        ("all done", {}, Ruling.COMPLETE, None),
        ("still busy", {"busy": True}, None, None),
        ("not all done", {"execute": _execute(finished=0)}, None, None),
        ("a host failed", {"execute": _execute(["web1"])}, Ruling.FAIL, "hosts_failed"),
        (
            "within failPercent",
            {"execute": _execute(["web1"]), "fail_percent": 50},
            Ruling.COMPLETE,
            None,
        ),
        ("stopped", {"execute": _execute(stop="Over 0% of hosts")}, Ruling.FAIL, "fail_percent"),
        ("no hosts", {"execute": _execute(stop="No hosts remaining!")}, Ruling.FAIL, "no_hosts"),
        ("paused", {"hold": True}, None, None),
        ("dry run", {"executing": False, "dry_run_ready": True}, Ruling.COMPLETE, None),
        (
            "timed out",
            {"busy": True, "clock": Clock(now=T0, deadline=T0, timeout=60)},
            Ruling.FAIL,
            "timeout",
        ),
    ],
)
def test_verdict(case: str, kwargs: dict[str, object], ruling: Ruling | None, reason: str) -> None:
    args: dict[str, object] = {
        "execute": _execute(),
        "operations": 1,
        "changed": 3,
        "executing": True,
        "dry_run_ready": False,
        "busy": False,
        "hold": False,
        "clock": CLOCK,
        "fail_percent": None,
    }
    args.update(kwargs)
    execute = args.pop("execute")
    assert isinstance(execute, ExecutePlan)
    verdict = plan_verdict(HOSTS, execute, **args)  # type: ignore[arg-type]
    assert verdict.ruling is ruling, case
    assert verdict.reason == reason, case
    assert verdict.stop_pods is (reason == "timeout")


def test_verdict_without_one_looks_again_at_the_deadline_or_pause_end() -> None:
    clock = Clock(now=T0, deadline=T0 + timedelta(seconds=30), timeout=30, hold_for=7.0)
    cases = ((_execute(finished=0), True, False, 30.0), (_execute(), False, True, 7.0))
    for execute, busy, hold, after in cases:
        verdict = plan_verdict(
            HOSTS,
            execute,
            operations=1,
            changed=0,
            executing=True,
            dry_run_ready=False,
            busy=busy,
            hold=hold,
            clock=clock,
            fail_percent=None,
        )
        assert verdict.ruling is None and verdict.requeue_after == after


def test_verdict_completion_message_counts_changes() -> None:
    verdict = plan_verdict(
        HOSTS,
        _execute(),
        operations=1,
        changed=2,
        executing=True,
        dry_run_ready=False,
        busy=False,
        hold=False,
        clock=CLOCK,
        fail_percent=None,
    )
    assert verdict.message == "All 3 hosts completed (2 changed)."  # Prefect's aggregate rule


# ---- tally and summary -----------------------------------------------------------------------


def test_tally_counts_changes_and_drops_failed_hosts_an_operation_never_reached() -> None:
    view = _view(_unit(Kind.RUN, "a", "web1"), _unit(Kind.RUN, "a", "web2", Phase.FAILED, 1))
    change = {"a": dict.fromkeys(HOSTS, True), "b": {"web1": False, "web2": True}}
    execute = ExecutePlan(failed={"web2": _failed("web2", Stage.Execute)})
    counted = tally(view, ("a", "b"), change=change, execute=execute, executing=True)
    # web2 ran `a` (and failed): it counts; `b` never reached it: it does not.
    assert counted.change == {"a": dict.fromkeys(HOSTS, True), "b": {"web1": False}}
    assert counted.changed == 3
    assert counted.results == {"b|web1": {"result": "no_change"}}
    # Not executing (a dry run): nothing is dropped.
    dry = tally(view, ("a", "b"), change=change, execute=execute, executing=False)
    assert dry.changed == 4
    plan = dry.planned(("a", "b"), view)
    assert [(p.name, p.change, p.no_change) for p in plan] == [
        ("a", ["web1", "web2", "web3"], []),
        ("b", ["web2"], ["web1"]),
    ]


def test_summary_counts_hosts_operations_and_warnings() -> None:
    rb = _rb(operations=[{"name": "a", "run": "x", "ignoreErrors": True}])
    inv = _inv(rb)
    view = _view(
        _unit(Kind.CONNECT, "", "web1", try_=1),
        _unit(Kind.RUN, "a", "web1", start_delay=99.0),
        _unit(Kind.RUN, "a", "web2", Phase.FAILED, 1),
    )
    execute = ExecutePlan(
        finished=frozenset({"a"}),
        failed={"web3": _failed("web3")},
        results={
            "a|web1": {"result": RunResult.SUCCESS.value},
            "a|web2": {"result": RunResult.IGNORED.value},
        },
        counts={"a": {RunResult.SUCCESS: 1, RunResult.IGNORED: 1}},
        ignored=1,
    )
    change = {"a": dict.fromkeys(HOSTS, True)}
    counted = tally(view, ("a",), change=change, execute=execute, executing=True)
    summary = summarize(
        view, inv, ("a",), tally=counted, execute=execute, executing=True, plan=None
    )
    assert (summary.hosts.total, summary.hosts.active, summary.hosts.failed) == (3, 2, 1)
    assert summary.hosts_ok == 2
    (ops,) = summary.operations
    assert (ops.hosts, ops.changed, ops.success, ops.ignored, ops.error) == (3, 2, 1, 1, 0)
    w = summary.stage_warnings
    assert (w.Setup, w.Connect, w.Prepare, w.Execute) == (0, 1, 0, 2)  # ignored + slow start
    assert [f.host for f in summary.failed_hosts] == ["web3"]
