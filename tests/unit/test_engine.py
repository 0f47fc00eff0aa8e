"""The engine's decisions, driven through whole runs by the simulator (no cluster)."""

from collections.abc import Callable
from datetime import timedelta

from runstate.api.v1alpha1 import Stage, StateType
from runstate.domain.engine import Observation, decide
from runstate.domain.work import Kind, Observed, Phase, WorkKey
from tests.unit.sim import T0, run_spec, runbook, simulate

TWO_OPS = [{"name": "update", "run": "apk update"}, {"name": "install", "run": "apk add nginx"}]


def test_three_hosts_two_operations_complete_with_counts() -> None:
    trace = simulate(runbook(operations=TWO_OPS))
    d = trace.last
    assert trace.states == ["Pending", "Running", "Completed"]
    assert d.progress.state.type is StateType.COMPLETED
    assert d.progress.state.message == "All 3 hosts completed (6 changed)."
    assert d.progress.stage is Stage.Disconnect
    assert d.summary is not None
    assert [(o.name, o.hosts, o.changed, o.success) for o in d.summary.operations] == [
        ("update", 3, 3, 3),
        ("install", 3, 3, 3),
    ]
    assert (d.summary.hosts.total, d.summary.hosts.failed, d.summary.hosts_ok) == (3, 0, 3)
    assert sorted(k for k in d.summary.results) == sorted(
        f"{op}|web{i}" for op in ("update", "install") for i in (1, 2, 3)
    )
    assert len(trace.created) == 6 and all(k.kind is Kind.RUN for k in trace.created)


def test_operations_follow_dag_order() -> None:
    trace = simulate(runbook(operations=TWO_OPS))
    first_install = next(i for i, k in enumerate(trace.created) if k.operation == "install")
    assert all(k.operation == "update" for k in trace.created[:first_install])
    assert first_install == 3  # every host finished `update` before any `install` started


def test_parallel_is_never_exceeded() -> None:
    hosts = [{"name": f"h{i}"} for i in range(10)]
    trace = simulate(
        runbook(inventory={"hosts": hosts}, operations=TWO_OPS, config={"parallel": 3})
    )
    assert trace.last.progress.state.type is StateType.COMPLETED
    assert trace.max_in_flight == 3
    assert len(trace.created) == 20


def fail_on(op: str, host: str, code: int = 1) -> Callable[[WorkKey], int]:
    return lambda key: code if (key.operation, key.host) == (op, host) else 0


def test_a_failed_operation_fails_its_host_and_skips_its_later_operations() -> None:
    trace = simulate(runbook(operations=TWO_OPS), outcome=fail_on("update", "web2"))
    d = trace.last
    assert d.progress.state.type is StateType.FAILED
    assert d.progress.state.message == "1/3 hosts failed."
    assert d.failure_reason == "hosts_failed"
    assert ("install", "web2") not in {(k.operation, k.host) for k in trace.created}
    assert d.summary is not None
    [failed] = d.summary.failed_hosts
    assert (failed.host, failed.stage, failed.operation) == ("web2", Stage.Execute, "update")
    assert failed.message == "exit 1"
    assert (d.summary.hosts.active, d.summary.hosts.failed) == (2, 1)
    update = d.summary.operations[0]
    assert (update.success, update.error) == (2, 1)


def test_fail_percent_tolerates_failures_within_it() -> None:
    trace = simulate(
        runbook(operations=TWO_OPS, config={"failPercent": 50}), outcome=fail_on("update", "web2")
    )
    assert trace.last.progress.state.type is StateType.COMPLETED
    assert trace.last.progress.state.message.startswith("1/3 hosts failed (within failPercent 50%)")


def test_fail_percent_exceeded_stops_before_the_next_operation() -> None:
    trace = simulate(
        runbook(operations=TWO_OPS, config={"failPercent": 20}), outcome=fail_on("update", "web2")
    )
    d = trace.last
    assert d.progress.state.type is StateType.FAILED
    assert d.progress.state.message == "Over 20% of hosts failed (33%)"
    assert d.failure_reason == "fail_percent"
    assert not [k for k in trace.created if k.operation == "install"]
    assert d.progress.stage is Stage.Disconnect


def test_no_hosts_remaining() -> None:
    trace = simulate(runbook(operations=TWO_OPS), outcome=lambda k: 2)
    assert trace.last.progress.state.message == "No hosts remaining! (3/3 hosts failed)"
    assert trace.last.failure_reason == "no_hosts"


def test_connect_probe_failure_fails_the_host_in_connect() -> None:
    trace = simulate(
        runbook(connect={"run": "nc -z $RUNSTATE_HOST 22"}, operations=TWO_OPS),
        outcome=lambda k: 1 if (k.kind, k.host) == (Kind.CONNECT, "web3") else 0,
    )
    d = trace.last
    assert d.summary is not None
    assert [(f.host, f.stage) for f in d.summary.failed_hosts] == [("web3", Stage.Connect)]
    assert "web3" not in {k.host for k in trace.created if k.kind is Kind.RUN}
    connects = [k for k in trace.created if k.kind is Kind.CONNECT]
    assert trace.created[:3] == connects  # Connect finished before anything else started


def test_checks_decide_which_hosts_change() -> None:
    ops = [{"name": "install", "check": "command -v nginx", "run": "apk add nginx"}]
    codes = {"web1": 0, "web2": 1, "web3": 127}
    trace = simulate(
        runbook(operations=ops),
        outcome=lambda k: codes[k.host] if k.kind is Kind.CHECK else 0,
    )
    d = trace.last
    runs = {k.host for k in trace.created if k.kind is Kind.RUN}
    assert runs == {"web2"}  # no change on web1, check error on web3
    assert d.summary is not None
    install = d.summary.operations[0]
    assert (install.changed, install.no_change, install.success) == (1, 1, 1)
    assert [(f.host, f.stage) for f in d.summary.failed_hosts] == [("web3", Stage.Prepare)]
    assert d.summary.results["install|web1"]["result"] == "no_change"


def test_dry_run_stops_after_prepare_with_a_plan() -> None:
    ops = [
        {"name": "install", "check": "command -v nginx", "run": "apk add nginx"},
        {"name": "reload", "run": "nginx -s reload"},
    ]
    trace = simulate(
        runbook(operations=ops),
        spec=run_spec(dryRun=True),
        outcome=lambda k: 1 if k.host == "web1" else 0,
    )
    d = trace.last
    assert d.progress.state.type is StateType.COMPLETED
    assert d.progress.stage is Stage.Disconnect
    assert not [k for k in trace.created if k.kind is Kind.RUN]
    assert d.summary is not None and d.summary.plan is not None
    assert [(p.name, p.change, p.no_change) for p in d.summary.plan] == [
        ("install", ["web1"], ["web2", "web3"]),
        ("reload", ["web1", "web2", "web3"], []),
    ]
    assert d.progress.state.message == "Dry run: 4 change(s) planned on 3 host(s)"


def test_op_retries_then_success_counts_a_warning() -> None:
    ops = [{"name": "flaky", "run": "x", "retries": 2}]
    trace = simulate(
        runbook(operations=ops), outcome=lambda k: 1 if (k.host, k.try_) == ("web1", 0) else 0
    )
    d = trace.last
    assert d.progress.state.type is StateType.COMPLETED
    assert [k.try_ for k in trace.created if k.host == "web1"] == [0, 1]
    assert d.summary is not None and d.summary.stage_warnings.Execute == 1


def test_ignore_errors_keeps_the_host_active() -> None:
    ops = [{"name": "optional", "run": "x", "ignoreErrors": True}, {"name": "next", "run": "y"}]
    trace = simulate(runbook(operations=ops), outcome=fail_on("optional", "web1"))
    d = trace.last
    assert d.progress.state.type is StateType.COMPLETED
    assert ("next", "web1") in {(k.operation, k.host) for k in trace.created}
    assert d.summary is not None and d.summary.operations[0].ignored == 1
    assert d.summary.stage_warnings.Execute == 1


def test_timed_out_pod_is_a_partial_op() -> None:
    ops = [{"name": "slow", "run": "sleep 999", "timeoutSeconds": 5}]
    trace = simulate(
        runbook(operations=ops, config={"failPercent": 50}),
        outcome=lambda k: "timeout" if k.host == "web1" else 0,
    )
    d = trace.last
    assert d.summary is not None
    assert d.summary.operations[0].partial == 1
    assert d.summary.results["slow|web1"]["result"] == "partial"
    assert d.summary.failed_hosts[0].reason == "DeadlineExceeded"


def test_limit_keeps_only_named_hosts_and_warns() -> None:
    trace = simulate(runbook(), spec=run_spec(limit=["web2"]))
    d = trace.last
    assert {k.host for k in trace.created} == {"web2"}
    assert d.summary is not None
    assert (d.summary.hosts.total, d.summary.hosts.limited) == (1, 2)
    assert d.summary.stage_warnings.Setup == 2


def test_operation_hosts_by_group() -> None:
    inv = {"hosts": [{"name": "a", "groups": ["web"]}, {"name": "b", "groups": ["db"]}]}
    ops = [{"name": "web-only", "run": "x", "hosts": {"groups": ["web"]}}]
    trace = simulate(runbook(inventory=inv, operations=ops))
    assert {k.host for k in trace.created} == {"a"}


def test_bad_input_fails_at_setup_naming_the_field() -> None:
    cases = {
        "spec.inventory.hosts: the inventory has no hosts": runbook(inventory={"hosts": []}),
        "spec.operations[1].dependsOn: operation 'b' depends on unknown operation 'nope'": runbook(
            operations=[{"name": "a", "run": "x"}, {"name": "b", "run": "x", "dependsOn": ["nope"]}]
        ),
        "spec.operations[0].hosts.groups: unknown group 'db'": runbook(
            operations=[{"name": "a", "run": "x", "hosts": {"groups": ["db"]}}]
        ),
        "spec.limit: unknown host(s): ghost": runbook(),
    }
    for message, rb in cases.items():
        spec = run_spec(limit=["ghost"]) if "limit" in message else run_spec()
        trace = simulate(rb, spec=spec)
        d = trace.last
        assert d.progress.state.type is StateType.FAILED, message
        assert d.progress.state.message == f"Setup failed: {message}"
        assert d.stalled is not None and d.stalled.reason == "InvalidSpec"
        assert d.progress.stage is Stage.Setup
        assert not trace.created


def test_missing_runbook_waits_pending_and_stalled() -> None:
    trace = simulate(None, problem="spec.runbookRef.name: no Runbook 'x' in namespace 'ns'")
    d = trace.last
    assert d.progress.state.name == "Pending"
    assert (
        d.progress.state.message
        == "Waiting: spec.runbookRef.name: no Runbook 'x' in namespace 'ns'"
    )
    assert d.stalled is not None and d.stalled.reason == "RunbookNotFound"
    # When the runbook shows up, the same run goes on from where it is.
    later = decide(Observation(run_spec(), runbook(), None, d.progress, (), T0))
    assert [to.name for _, to in later.transitions] == ["Running"]


def test_run_timeout_fails_and_deletes_running_pods() -> None:
    rb = runbook(operations=[{"name": "slow", "run": "sleep 999"}], config={"timeoutSeconds": 60})
    first = decide(Observation(run_spec(), rb, None, None, (), T0))
    assert first.requeue_after == 60
    units = tuple(Observed(i.key, Phase.RUNNING) for i in first.create)
    late = decide(
        Observation(run_spec(), rb, None, first.progress, units, T0 + timedelta(seconds=61))
    )
    assert late.progress.state.type is StateType.FAILED
    assert late.progress.state.message == "Run timed out after 60s"
    assert late.failure_reason == "timeout"
    assert set(late.delete) == {u.key for u in units}


def test_a_final_run_is_left_alone() -> None:
    trace = simulate(runbook())
    again = decide(
        Observation(
            run_spec(),
            runbook(),
            None,
            trace.last.progress,
            tuple(trace.units.values()),
            T0 + timedelta(hours=1),
        )
    )
    assert again.transitions == () and again.create == () and again.final


def test_decide_is_level_based_a_replay_creates_nothing_new() -> None:
    """Same observation twice (e.g. after an operator restart): same decision, no new work
    beyond what the first wanted — the deterministic keys are what prevents duplicates."""
    rb = runbook(operations=TWO_OPS)
    first = decide(Observation(run_spec(), rb, None, None, (), T0))
    replay = decide(Observation(run_spec(), rb, None, None, (), T0))
    assert [i.key for i in first.create] == [i.key for i in replay.create]
    units = tuple(Observed(i.key, Phase.PENDING) for i in first.create)
    after = decide(Observation(run_spec(), rb, None, first.progress, units, T0))
    assert after.create == () and after.transitions == ()
    assert all(k == WorkKey(Kind.RUN, "update", k.host) for k in (i.key for i in first.create))


def test_a_host_failed_before_an_operation_reached_it_is_not_counted_as_changed() -> None:
    rb = runbook(
        operations=[{"name": "update", "run": "x"}, {"name": "install", "run": "y"}],
        config={"failPercent": 50},
    )
    trace = simulate(
        rb, outcome=lambda key: 1 if (key.operation, key.host) == ("update", "web2") else 0
    )
    d = trace.last
    assert d.progress.state.name == "Completed"
    assert d.summary is not None
    install = next(o for o in d.summary.operations if o.name == "install")
    assert (install.hosts, install.changed, install.success) == (3, 2, 2)
    assert d.progress.state.message == "1/3 hosts failed (within failPercent 50%) (5 changed)."


def test_a_failed_host_without_exit_code_or_reason_says_error_not_exit_code_none() -> None:
    rb = runbook(inventory={"hosts": [{"name": "web1"}]})
    spec = run_spec()
    started = decide(Observation(spec, rb, None, None, (), T0))
    lost = Observed(WorkKey(Kind.RUN, "update", "web1"), Phase.FAILED, None, "")
    d = decide(Observation(spec, rb, None, started.progress, (lost,), T0 + timedelta(seconds=1)))
    assert d.progress.state.type is StateType.FAILED
    assert d.summary is not None
    (host,) = d.summary.failed_hosts
    assert (host.stage, host.operation, host.reason) == (Stage.Execute, "update", "Error")
