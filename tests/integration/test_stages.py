"""The stages of a run end to end: Connect, Prepare (checks, dry runs), Execute (parallel,
ignoreErrors, per-operation retries and timeouts, host selection) and the run-level timeout.

Each test works in its own namespace on the real control plane, with Redis and the operator
process, and asserts what a user can see: status fields, pods with their labels, phases and
container timestamps, Events and /metrics. Pod commands run as local processes (the process
kubelet), so they also record what really ran in files under the test's `tmp_path`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cluster, Operator, wait_for
from tests.integration.test_runs import (
    events_of,
    final_status,
    history_of,
    pods_running,
    run,
    runbook,
)

pytestmark = pytest.mark.integration

NO_WARNINGS = {"Setup": 0, "Connect": 0, "Prepare": 0, "Execute": 0, "Disconnect": 0}
TERMINAL = ("Succeeded", "Failed")


# ---- Helpers.


def label(pod: dict[str, Any], name: str) -> str:
    return str(pod["metadata"]["labels"][f"runstate.dev/{name}"])


def pods_of(cluster: Cluster, ns: str, *selector: str) -> list[dict[str, Any]]:
    return cluster.items("pods", ns, *(["-l", ",".join(selector)] if selector else []))


def units(pods: Iterable[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """(kind, operation, host) of each pod, from its labels."""
    return {(label(p, "kind"), label(p, "operation"), label(p, "host")) for p in pods}


def env_of(pod: dict[str, Any]) -> dict[str, str | None]:
    return {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}


def terminated(pod: dict[str, Any]) -> dict[str, Any]:
    state: dict[str, Any] = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    return state


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def counts(
    hosts: int,
    changed: int,
    no_change: int = 0,
    success: int = 0,
    error: int = 0,
    ignored: int = 0,
    partial: int = 0,
) -> dict[str, int]:
    return {
        "hosts": hosts,
        "changed": changed,
        "noChange": no_change,
        "success": success,
        "error": error,
        "ignored": ignored,
        "partial": partial,
    }


def op_counts(st: dict[str, Any]) -> dict[str, dict[str, int]]:
    return {o["name"]: {k: v for k, v in o.items() if k != "name"} for o in st["operations"]}


def assert_metric(operator: Operator, expected: float, name: str, **labels: str) -> None:
    """The counter reaches `expected` (some are counted just after the status is written)."""
    seen: list[float] = []

    def probe() -> bool:
        seen.append(operator.metric(name, **labels))
        return seen[-1] == expected

    try:
        wait_for(f"{name}{labels} == {expected}", probe, timeout=10)
    except AssertionError:
        raise AssertionError(f"{name}{labels}: expected {expected}, saw {seen[-1]}") from None


def events_named(cluster: Cluster, ns: str, name: str, reason: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = wait_for(
        f"{reason} event of {name}",
        lambda: [e for e in events_of(cluster, ns, name) if e["reason"] == reason],
        timeout=15,
    )
    return found


def ran(tmp_path: Path) -> set[str]:
    """The marker files pod commands left in `tmp_path`: what really ran."""
    return {p.name for p in tmp_path.iterdir() if p.is_file()}


def touch(tmp_path: Path) -> str:
    """A command that records `<operation>@<host>` under `tmp_path`."""
    return f'touch "{tmp_path}/$RUNSTATE_OPERATION@$RUNSTATE_HOST"'


def web(*numbers: int) -> list[str]:
    return [f"web{i}.example.com" for i in numbers]


# ---- Connect.

PROBE = (
    'if [ "$RUNSTATE_HOST" = web2.example.com ]; then '
    'echo "ssh: connect to host $RUNSTATE_HOST port 22: Connection refused"; exit 255; fi; '
    "echo connected"
)


def connect_runbook(name: str, tmp_path: Path, **config: Any) -> str:
    ops: list[dict[str, Any]] = [
        {"name": "install", "check": "exit 1", "run": touch(tmp_path)},
        {"name": "restart", "run": touch(tmp_path)},
    ]
    return runbook(name, ops=ops, connect={"run": PROBE}, config=config)


@pytest.mark.parametrize(
    ("config", "state_type", "message"),
    [
        ({}, "FAILED", "1/3 hosts failed."),
        (
            {"failPercent": 50},
            "COMPLETED",
            "1/3 hosts failed (within failPercent 50%) (4 changed).",
        ),
    ],
    ids=["no-failPercent", "within-failPercent"],
)
def test_a_failed_connect_probe_fails_its_host_and_the_others_go_on(
    kube_cluster: Cluster,
    operator: Operator,
    tmp_path: Path,
    config: dict[str, Any],
    state_type: str,
    message: str,
) -> None:
    ns = kube_cluster.namespace()
    kube_cluster.apply(connect_runbook("probed", tmp_path, **config), ns)
    kube_cluster.apply(run("r1", "probed"), ns)
    st = final_status(kube_cluster, ns, "r1")

    assert st["state"]["type"] == state_type, st["state"]
    assert st["state"]["message"] == message
    assert st["stage"] == "Disconnect"
    assert st["hosts"] == {"total": 3, "active": 2, "failed": 1, "unreachable": 0, "limited": 0}
    assert st["hostsSummary"] == "2/3"
    [failed] = st["failedHosts"]
    assert failed["host"] == "web2.example.com"
    assert failed["stage"] == "Connect"
    assert failed.get("operation") is None  # the probe belongs to no operation
    assert failed["reason"] == "Error"
    # The probe's output, through the pod's termination message, is the host's message.
    assert failed["message"] == "ssh: connect to host web2.example.com port 22: Connection refused"
    assert op_counts(st) == {
        "install": counts(3, changed=2, success=2),
        "restart": counts(3, changed=2, success=2),
    }
    assert st["stageWarnings"] == NO_WARNINGS

    # One probe per host; nothing else on the host whose probe failed.
    pods = pods_of(kube_cluster, ns)
    assert units(pods) == {("connect", "", h) for h in web(1, 2, 3)} | {
        ("check", "install", h) for h in web(1, 3)
    } | {(kind, op, h) for kind, op in (("run", "install"), ("run", "restart")) for h in web(1, 3)}
    assert len(pods) == 9
    probes = {label(p, "host"): p for p in pods if label(p, "kind") == "connect"}
    assert probes["web2.example.com"]["status"]["phase"] == "Failed"
    assert terminated(probes["web2.example.com"])["exitCode"] == 255
    assert {probes[h]["status"]["phase"] for h in web(1, 3)} == {"Succeeded"}
    assert env_of(probes["web1.example.com"])["RUNSTATE_KIND"] == "connect"
    assert ran(tmp_path) == {f"{op}@{h}" for op in ("install", "restart") for h in web(1, 3)}

    assert_metric(
        operator, 1, "runstate_host_failures_total", namespace=ns, runbook="probed", stage="Connect"
    )
    conditions = {c["type"]: c["status"] for c in st["conditions"]}
    if state_type == "FAILED":
        assert conditions["Ready"] == "False" and conditions["Stalled"] == "True"
        [event] = events_named(kube_cluster, ns, "r1", "Failed")
        assert (event["type"], event["message"]) == ("Warning", message)
        assert_metric(
            operator,
            1,
            "runstate_run_failures_total",
            namespace=ns,
            runbook="probed",
            state_type="FAILED",
            reason="hosts_failed",
        )
    else:
        assert conditions == {"Ready": "True", "Reconciling": "False", "Stalled": "False"}
        [event] = events_named(kube_cluster, ns, "r1", "Completed")
        assert (event["type"], event["message"]) == ("Normal", message)


def test_connect_failures_over_fail_percent_stop_before_any_operation(
    kube_cluster: Cluster, operator: Operator, tmp_path: Path
) -> None:
    ns = kube_cluster.namespace()
    kube_cluster.apply(connect_runbook("fragile", tmp_path, failPercent=20), ns)
    kube_cluster.apply(run("r1", "fragile"), ns)
    st = final_status(kube_cluster, ns, "r1")

    assert st["state"]["type"] == "FAILED", st["state"]
    assert st["state"]["message"] == "Over 20% of hosts failed (33%)"
    assert [f["host"] for f in st["failedHosts"]] == ["web2.example.com"]
    # Prepare ran its checks on the connected hosts before the rule stopped the run, but no
    # operation started anywhere.
    checks = pods_of(kube_cluster, ns, "runstate.dev/kind=check")
    assert sorted(label(p, "host") for p in checks) == web(1, 3)
    assert pods_of(kube_cluster, ns, "runstate.dev/kind=run") == []
    assert ran(tmp_path) == set()
    assert_metric(
        operator,
        1,
        "runstate_run_failures_total",
        namespace=ns,
        runbook="fragile",
        state_type="FAILED",
        reason="fail_percent",
    )


def test_a_probe_that_passes_on_a_retry_is_a_connect_warning(
    kube_cluster: Cluster, operator: Operator, tmp_path: Path
) -> None:
    ns = kube_cluster.namespace()
    # web1's first probe fails (its host is "still booting"); the retry finds it up.
    probe = (
        f'if [ "$RUNSTATE_HOST" = web1.example.com ] && [ ! -e "{tmp_path}/booted" ]; then '
        f'touch "{tmp_path}/booted"; echo "connection refused"; exit 255; fi; echo connected'
    )
    ops = [{"name": "install", "run": touch(tmp_path)}]
    kube_cluster.apply(runbook("booting", ops=ops, connect={"run": probe, "retries": 2}), ns)
    kube_cluster.apply(run("r1", "booting"), ns)
    st = final_status(kube_cluster, ns, "r1")

    assert st["state"]["type"] == "COMPLETED", st["state"]
    assert st["hosts"] == {"total": 3, "active": 3, "failed": 0, "unreachable": 0, "limited": 0}
    assert st["stageWarnings"] == {**NO_WARNINGS, "Connect": 1}
    probes = sorted(
        (label(p, "host"), label(p, "try"), p["status"]["phase"])
        for p in pods_of(kube_cluster, ns, "runstate.dev/kind=connect")
    )
    assert probes == [
        ("web1.example.com", "0", "Failed"),
        ("web1.example.com", "1", "Succeeded"),
        ("web2.example.com", "0", "Succeeded"),
        ("web3.example.com", "0", "Succeeded"),
    ]
    assert ran(tmp_path) == {"booted"} | {f"install@{h}" for h in web(1, 2, 3)}
    assert_metric(
        operator,
        1,
        "runstate_stage_warnings_total",
        namespace=ns,
        runbook="booting",
        stage="Connect",
    )


# ---- Prepare: checks and dry runs.


def test_dry_run_plans_per_operation_from_the_checks_and_runs_nothing(
    kube_cluster: Cluster, operator: Operator, tmp_path: Path
) -> None:
    ns = kube_cluster.namespace()
    ops: list[dict[str, Any]] = [
        # exit 0 = already in state, 1 = change needed.
        {
            "name": "install",
            "check": '[ "$RUNSTATE_HOST" = web1.example.com ]',
            "run": touch(tmp_path),
        },
        {
            "name": "configure",
            "check": '[ "$RUNSTATE_HOST" = web3.example.com ]',
            "run": touch(tmp_path),
        },
        {"name": "restart", "run": touch(tmp_path)},  # no check: always a change
    ]
    kube_cluster.apply(runbook("planned", ops=ops), ns)
    kube_cluster.apply(run("dry", "planned", dryRun=True), ns)
    st = final_status(kube_cluster, ns, "dry")

    assert st["state"]["type"] == "COMPLETED", st["state"]
    assert st["state"]["message"] == "Dry run: 7 change(s) planned on 3 host(s)"
    assert st["plan"] == [
        {
            "name": "install",
            "change": web(2, 3),
            "noChange": web(1),
            "truncated": False,
        },
        {
            "name": "configure",
            "change": web(1, 2),
            "noChange": web(3),
            "truncated": False,
        },
        {"name": "restart", "change": web(1, 2, 3), "noChange": [], "truncated": False},
    ]
    assert op_counts(st) == {
        "install": counts(3, changed=2, no_change=1),
        "configure": counts(3, changed=2, no_change=1),
        "restart": counts(3, changed=3),
    }
    assert st["failedHosts"] == []
    assert history_of(st) == ["Pending", "Running", "Completed"]

    # Only checks ran: one per operation that has one × host, and no operation at all.
    pods = pods_of(kube_cluster, ns)
    assert units(pods) == {
        ("check", op, h) for op in ("install", "configure") for h in web(1, 2, 3)
    }
    assert len(pods) == 6
    assert pods_of(kube_cluster, ns, "runstate.dev/kind=run") == []
    assert ran(tmp_path) == set()
    by_unit = {(label(p, "operation"), label(p, "host")): p for p in pods}
    assert by_unit["install", "web1.example.com"]["status"]["phase"] == "Succeeded"
    assert terminated(by_unit["install", "web2.example.com"])["exitCode"] == 1
    assert env_of(by_unit["install", "web2.example.com"])["RUNSTATE_KIND"] == "check"
    [event] = events_named(kube_cluster, ns, "dry", "Completed")
    assert event["message"] == st["state"]["message"]


def test_hosts_already_in_state_get_no_run_pod(
    kube_cluster: Cluster, operator: Operator, tmp_path: Path
) -> None:
    ns = kube_cluster.namespace()
    ops: list[dict[str, Any]] = [
        {
            "name": "install",
            "check": '[ "$RUNSTATE_HOST" = web2.example.com ]',  # web2 has it already
            "run": touch(tmp_path),
        },
        {
            "name": "configure",
            "check": '[ "$RUNSTATE_HOST" != web2.example.com ]',  # only web2 needs it
            "run": touch(tmp_path),
        },
        {"name": "restart", "run": touch(tmp_path)},
    ]
    kube_cluster.apply(runbook("idempotent", ops=ops), ns)
    kube_cluster.apply(run("r1", "idempotent"), ns)
    st = final_status(kube_cluster, ns, "r1")

    assert st["state"]["type"] == "COMPLETED", st["state"]
    assert st["state"]["message"] == "All 3 hosts completed (6 changed)."
    assert st["hosts"] == {"total": 3, "active": 3, "failed": 0, "unreachable": 0, "limited": 0}
    assert st["hostsSummary"] == "3/3"
    assert op_counts(st) == {
        "install": counts(3, changed=2, no_change=1, success=2),
        "configure": counts(3, changed=1, no_change=2, success=1),
        "restart": counts(3, changed=3, success=3),
    }
    assert "plan" not in st  # only dry runs have a plan
    expected_runs = (
        {("install", h) for h in web(1, 3)}
        | {("configure", h) for h in web(2)}
        | {("restart", h) for h in web(1, 2, 3)}
    )
    run_pods = pods_of(kube_cluster, ns, "runstate.dev/kind=run")
    assert {(label(p, "operation"), label(p, "host")) for p in run_pods} == expected_runs
    assert len(run_pods) == 6 and {p["status"]["phase"] for p in run_pods} == {"Succeeded"}
    assert len(pods_of(kube_cluster, ns, "runstate.dev/kind=check")) == 6
    assert ran(tmp_path) == {f"{op}@{h}" for op, h in expected_runs}
    for op, n in (("install", 1), ("configure", 2)):
        assert_metric(
            operator,
            n,
            "runstate_operation_results_total",
            namespace=ns,
            runbook="idempotent",
            operation=op,
            result="no_change",
        )


def test_a_check_that_cannot_run_fails_its_host_in_prepare(
    kube_cluster: Cluster, operator: Operator, tmp_path: Path
) -> None:
    ns = kube_cluster.namespace()
    ops: list[dict[str, Any]] = [
        {
            "name": "install",
            # 127: the shell could not run the check, which says nothing about the host.
            "check": 'if [ "$RUNSTATE_HOST" = web2.example.com ]; then no-such-tool; else exit 1; fi',
            "run": touch(tmp_path),
        }
    ]
    kube_cluster.apply(runbook("unchecked", ops=ops, config={"failPercent": 50}), ns)
    kube_cluster.apply(run("r1", "unchecked"), ns)
    st = final_status(kube_cluster, ns, "r1")

    assert st["state"]["type"] == "COMPLETED", st["state"]
    assert st["state"]["message"] == "1/3 hosts failed (within failPercent 50%) (2 changed)."
    [failed] = st["failedHosts"]
    assert (failed["host"], failed["stage"], failed["operation"]) == (
        "web2.example.com",
        "Prepare",
        "install",
    )
    assert "no-such-tool" in failed["message"]
    assert ran(tmp_path) == {f"install@{h}" for h in web(1, 3)}
    assert_metric(
        operator,
        1,
        "runstate_host_failures_total",
        namespace=ns,
        runbook="unchecked",
        stage="Prepare",
    )


# ---- Execute.


def overlap(intervals: Iterable[tuple[float, float]]) -> int:
    """The most intervals [start, end) that contain one instant."""
    edges = sorted(
        [(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals],
        key=lambda e: (e[0], e[1]),  # an end before a start at the same instant
    )
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def sampled_overlap(intervals: Iterable[tuple[int, int]]) -> int:
    """For whole-second [startedAt, finishedAt] stamps: the most intervals whose *open* span
    holds a half-second instant. A 2 s process has S + 2 <= F, so its open span holds at least
    two such instants; a pod started after another finished has S' >= F, so their open spans
    never share one."""
    spans = list(intervals)
    lo, hi = min(s for s, _ in spans), max(f for _, f in spans)
    return max(sum(1 for s, f in spans if s < t + 0.5 < f) for t in range(lo, hi + 1))


def test_parallel_is_never_exceeded_nor_left_unused(
    kube_cluster: Cluster, operator: Operator, tmp_path: Path
) -> None:
    ns = kube_cluster.namespace()
    stamp = f'date +%s.%N > "{tmp_path}/$RUNSTATE_HOST'
    work = f'{stamp}.start"; sleep 2; {stamp}.end"'
    kube_cluster.apply(
        runbook(
            "throttled",
            ops=[{"name": "work", "check": "exit 1", "run": work}],
            hosts=6,
            config={"parallel": 2},
            connect={"run": "sleep 1"},
        ),
        ns,
    )
    kube_cluster.apply(run("r1", "throttled"), ns)

    # Watch the pods while the run goes (probes, checks and runs alike): at no instant more
    # than 2 unfinished pods (pending ones count: the operator must not even create a third).
    most_unfinished = most_running = 0
    st: dict[str, Any] = {}
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        phases = [p["status"].get("phase") for p in pods_of(kube_cluster, ns)]
        most_unfinished = max(most_unfinished, sum(1 for ph in phases if ph not in TERMINAL))
        most_running = max(most_running, phases.count("Running"))
        st = kube_cluster.get("run", "r1", ns).get("status") or {}
        if (st.get("state") or {}).get("type") in ("COMPLETED", "FAILED", "CRASHED"):
            break
        time.sleep(0.2)
    assert st["state"]["type"] == "COMPLETED", st.get("state")
    assert st["state"]["message"] == "All 6 hosts completed (6 changed)."
    assert most_unfinished <= 2, f"{most_unfinished} pods were unfinished at once"
    assert most_running == 2, f"at most {most_running} pod(s) seen running at once"

    # The processes' own clocks (sub-second): exactly 2 at once at the busiest instant.
    hosts = [f"web{i}.example.com" for i in range(1, 7)]
    clock = [
        (
            float((tmp_path / f"{h}.start").read_text()),
            float((tmp_path / f"{h}.end").read_text()),
        )
        for h in hosts
    ]
    assert overlap(clock) == 2, sorted(clock)

    # The pods' container timestamps (whole seconds), as `kubectl get pod -o yaml` shows them.
    for kind in ("connect", "check"):
        assert len(pods_of(kube_cluster, ns, f"runstate.dev/kind={kind}")) == 6
    pods = pods_of(kube_cluster, ns, "runstate.dev/kind=run")
    assert len(pods) == 6 and {p["status"]["phase"] for p in pods} == {"Succeeded"}
    stamps = [
        (
            int(parse_time(terminated(p)["startedAt"]).timestamp()),
            int(parse_time(terminated(p)["finishedAt"]).timestamp()),
        )
        for p in pods
    ]
    assert all(f - s >= 2 for s, f in stamps), stamps
    assert sampled_overlap(stamps) == 2, sorted(stamps)


def test_ignore_errors_keeps_the_host_active(
    kube_cluster: Cluster, operator: Operator, tmp_path: Path
) -> None:
    ns = kube_cluster.namespace()
    ops: list[dict[str, Any]] = [
        {
            "name": "update",
            "ignoreErrors": True,
            "run": 'if [ "$RUNSTATE_HOST" = web2.example.com ]; then '
            'echo "apt lock held"; exit 3; fi; ' + touch(tmp_path),
        },
        {"name": "install", "run": touch(tmp_path)},
    ]
    kube_cluster.apply(runbook("lenient", ops=ops), ns)
    kube_cluster.apply(run("r1", "lenient"), ns)
    st = final_status(kube_cluster, ns, "r1")

    assert st["state"]["type"] == "COMPLETED", st["state"]
    assert st["state"]["message"] == "All 3 hosts completed (6 changed)."
    assert st["hosts"] == {"total": 3, "active": 3, "failed": 0, "unreachable": 0, "limited": 0}
    assert st["hostsSummary"] == "3/3"
    assert st["failedHosts"] == []
    assert op_counts(st) == {
        "update": counts(3, changed=3, success=2, ignored=1),
        "install": counts(3, changed=3, success=3),
    }
    assert st["stageWarnings"] == {**NO_WARNINGS, "Execute": 1}

    pods = {
        (label(p, "operation"), label(p, "host")): p
        for p in pods_of(kube_cluster, ns, "runstate.dev/kind=run")
    }
    failing = pods["update", "web2.example.com"]
    assert failing["status"]["phase"] == "Failed"
    assert terminated(failing)["exitCode"] == 3
    assert terminated(failing)["message"].strip() == "apt lock held"
    # The later operation still ran on the host whose error was ignored.
    assert pods["install", "web2.example.com"]["status"]["phase"] == "Succeeded"
    assert ran(tmp_path) == {"update@" + h for h in web(1, 3)} | {
        "install@" + h for h in web(1, 2, 3)
    }
    assert_metric(
        operator,
        1,
        "runstate_operation_results_total",
        namespace=ns,
        runbook="lenient",
        operation="update",
        result="ignored",
    )
    assert_metric(
        operator,
        1,
        "runstate_stage_warnings_total",
        namespace=ns,
        runbook="lenient",
        stage="Execute",
    )


def test_a_failed_try_is_retried_as_a_new_pod(
    kube_cluster: Cluster, operator: Operator, tmp_path: Path
) -> None:
    ns = kube_cluster.namespace()
    marker = f'"{tmp_path}/$RUNSTATE_HOST.tried"'
    ops: list[dict[str, Any]] = [
        {
            "name": "flaky",
            "retries": 2,
            # web1 fails its first try only (a transient error); web2 never fails.
            "run": f'if [ "$RUNSTATE_HOST" = web1.example.com ] && [ ! -e {marker} ]; then '
            f'touch {marker}; echo "mirror timed out"; exit 1; fi; ' + touch(tmp_path),
        },
        {"name": "after", "run": touch(tmp_path)},
    ]
    kube_cluster.apply(runbook("transient", ops=ops, hosts=2), ns)
    kube_cluster.apply(run("r1", "transient"), ns)
    st = final_status(kube_cluster, ns, "r1")

    assert st["state"]["type"] == "COMPLETED", st["state"]
    assert st["state"]["message"] == "All 2 hosts completed (4 changed)."
    assert st["failedHosts"] == []
    assert op_counts(st) == {
        "flaky": counts(2, changed=2, success=2),  # the success counted once
        "after": counts(2, changed=2, success=2),
    }
    assert st["stageWarnings"] == {**NO_WARNINGS, "Execute": 1}  # the retry is a warning

    flaky = pods_of(kube_cluster, ns, "runstate.dev/operation=flaky")
    tries = {(label(p, "host"), label(p, "try")): p for p in flaky}
    assert sorted(tries) == [
        ("web1.example.com", "0"),
        ("web1.example.com", "1"),
        ("web2.example.com", "0"),
    ]
    first, second = tries["web1.example.com", "0"], tries["web1.example.com", "1"]
    assert first["status"]["phase"] == "Failed"
    assert terminated(first)["message"].strip() == "mirror timed out"
    assert second["status"]["phase"] == "Succeeded"
    assert first["metadata"]["name"] != second["metadata"]["name"]
    assert (env_of(first)["RUNSTATE_TRY"], env_of(second)["RUNSTATE_TRY"]) == ("0", "1")
    assert {label(p, "attempt") for p in flaky} == {"1"}  # a try, not a run attempt
    assert parse_time(terminated(second)["startedAt"]) >= parse_time(
        terminated(first)["finishedAt"]
    )
    assert st["attempt"] == 1 and history_of(st) == ["Pending", "Running", "Completed"]
    assert ran(tmp_path) == {"web1.example.com.tried"} | {
        f"{op}@{h}" for op in ("flaky", "after") for h in web(1, 2)
    }
    assert_metric(
        operator,
        2,
        "runstate_operation_results_total",
        namespace=ns,
        runbook="transient",
        operation="flaky",
        result="success",
    )
    assert_metric(
        operator,
        0,
        "runstate_operation_results_total",
        namespace=ns,
        runbook="transient",
        operation="flaky",
        result="error",
    )
    assert_metric(
        operator,
        1,
        "runstate_stage_warnings_total",
        namespace=ns,
        runbook="transient",
        stage="Execute",
    )


def test_retries_exhausted_fail_the_host_with_the_last_tries_output(
    kube_cluster: Cluster, operator: Operator, tmp_path: Path
) -> None:
    ns = kube_cluster.namespace()
    ops: list[dict[str, Any]] = [
        {
            "name": "doomed",
            "retries": 1,
            "run": 'if [ "$RUNSTATE_HOST" = web2.example.com ]; then '
            'echo "try $RUNSTATE_TRY failed"; exit 5; fi; ' + touch(tmp_path),
        },
        {"name": "after", "run": touch(tmp_path)},
    ]
    kube_cluster.apply(runbook("hopeless", ops=ops, hosts=2), ns)
    kube_cluster.apply(run("r1", "hopeless"), ns)
    st = final_status(kube_cluster, ns, "r1")

    assert st["state"]["type"] == "FAILED", st["state"]
    assert st["state"]["message"] == "1/2 hosts failed."
    [failed] = st["failedHosts"]
    assert (failed["host"], failed["stage"], failed["operation"], failed["message"]) == (
        "web2.example.com",
        "Execute",
        "doomed",
        "try 1 failed",
    )
    assert op_counts(st)["doomed"] == counts(2, changed=2, success=1, error=1)
    assert st["stageWarnings"] == {**NO_WARNINGS, "Execute": 1}
    tries = sorted(
        label(p, "try")
        for p in pods_of(kube_cluster, ns, "runstate.dev/operation=doomed")
        if label(p, "host") == "web2.example.com"
    )
    assert tries == ["0", "1"]  # the first try and one retry, no more
    assert ran(tmp_path) == {"doomed@web1.example.com", "after@web1.example.com"}


def test_a_host_that_left_the_active_set_is_not_counted_as_changed_later(
    kube_cluster: Cluster, operator: Operator, tmp_path: Path
) -> None:
    """web2 fails `update`, so `install` skips it: `install` changed nothing on web2."""
    ns = kube_cluster.namespace()
    ops: list[dict[str, Any]] = [
        {
            "name": "update",
            "run": 'if [ "$RUNSTATE_HOST" = web2.example.com ]; then echo "disk full"; exit 4; fi; '
            + touch(tmp_path),
        },
        {"name": "install", "run": touch(tmp_path)},
    ]
    kube_cluster.apply(runbook("skipping", ops=ops, config={"failPercent": 50}), ns)
    kube_cluster.apply(run("r1", "skipping"), ns)
    st = final_status(kube_cluster, ns, "r1")

    assert st["state"]["type"] == "COMPLETED", st["state"]
    assert [f["host"] for f in st["failedHosts"]] == ["web2.example.com"]
    installs = pods_of(kube_cluster, ns, "runstate.dev/operation=install")
    assert sorted(label(p, "host") for p in installs) == web(1, 3)
    assert ran(tmp_path) == {f"{op}@{h}" for op in ("update", "install") for h in web(1, 3)}
    # The run's "(N changed)" is the sum of what status.operations reports as changed ...
    total = sum(o["changed"] for o in st["operations"])
    assert st["state"]["message"] == (
        f"1/3 hosts failed (within failPercent 50%) ({total} changed)."
    )
    # ... and an operation that never reached a host did not change it.
    assert op_counts(st)["install"] == counts(3, changed=2, success=2)


def test_an_operation_past_its_timeout_is_partial_and_fails_its_host(
    kube_cluster: Cluster, operator: Operator, tmp_path: Path
) -> None:
    ns = kube_cluster.namespace()
    ops: list[dict[str, Any]] = [
        {
            "name": "slow",
            "timeoutSeconds": 1,
            "run": 'if [ "$RUNSTATE_HOST" = web1.example.com ]; then sleep 30; fi; '
            + touch(tmp_path),
        },
        {"name": "after", "run": touch(tmp_path)},
    ]
    kube_cluster.apply(runbook("sluggish", ops=ops, hosts=2), ns)
    kube_cluster.apply(run("r1", "sluggish"), ns)
    st = final_status(kube_cluster, ns, "r1", timeout=60)

    assert st["state"]["type"] == "FAILED", st["state"]
    assert st["state"]["message"] == "1/2 hosts failed."
    assert op_counts(st)["slow"] == counts(2, changed=2, success=1, partial=1)
    after_counts = op_counts(st)["after"]
    assert (after_counts["success"], after_counts["error"], after_counts["partial"]) == (1, 0, 0)
    [failed] = st["failedHosts"]
    assert (failed["host"], failed["stage"], failed["operation"], failed["reason"]) == (
        "web1.example.com",
        "Execute",
        "slow",
        "DeadlineExceeded",
    )
    assert "longer than the specified deadline" in failed["message"]

    [pod] = [
        p
        for p in pods_of(kube_cluster, ns, "runstate.dev/operation=slow")
        if label(p, "host") == "web1.example.com"
    ]
    assert pod["spec"]["activeDeadlineSeconds"] == 1
    assert pod["status"]["phase"] == "Failed"
    assert pod["status"]["reason"] == "DeadlineExceeded"
    term = terminated(pod)
    assert (parse_time(term["finishedAt"]) - parse_time(term["startedAt"])).total_seconds() < 10
    after = pods_of(kube_cluster, ns, "runstate.dev/operation=after")
    assert [label(p, "host") for p in after] == ["web2.example.com"]
    assert ran(tmp_path) == {"slow@web2.example.com", "after@web2.example.com"}
    assert_metric(
        operator,
        1,
        "runstate_operation_results_total",
        namespace=ns,
        runbook="sluggish",
        operation="slow",
        result="partial",
    )


def test_the_run_timeout_fails_the_run_and_stops_its_pods(
    kube_cluster: Cluster, operator: Operator, tmp_path: Path
) -> None:
    ns = kube_cluster.namespace()
    ops: list[dict[str, Any]] = [
        {"name": "forever", "run": "sleep 30; " + touch(tmp_path)},
        {"name": "after", "run": touch(tmp_path)},
    ]
    kube_cluster.apply(runbook("bounded", ops=ops, hosts=2, config={"timeoutSeconds": 2}), ns)
    kube_cluster.apply(run("r1", "bounded"), ns)
    pods_running(kube_cluster, ns, 2)
    st = final_status(kube_cluster, ns, "r1", timeout=60)

    assert st["state"]["type"] == "FAILED", st["state"]  # a timeout is not a crash
    assert st["state"]["message"] == "Run timed out after 2s"
    assert history_of(st) == ["Pending", "Running", "Failed"]
    assert 2 <= st["durationSeconds"] < 20, st["durationSeconds"]
    conditions = {c["type"]: c["status"] for c in st["conditions"]}
    assert conditions["Ready"] == "False" and conditions["Stalled"] == "True"
    [event] = events_named(kube_cluster, ns, "r1", "Failed")
    assert (event["type"], event["message"]) == ("Warning", "Run timed out after 2s")

    # Its running pods are stopped and deleted; none of `after` ever started.
    wait_for("the run's pods to be gone", lambda: pods_of(kube_cluster, ns) == [], timeout=60)
    assert ran(tmp_path) == set()
    again = kube_cluster.get("run", "r1", ns)["status"]
    assert again["state"]["type"] == "FAILED"  # deleting its own pods does not crash it
    assert not [e for e in events_of(kube_cluster, ns, "r1") if e["reason"] == "Crashed"]
    assert_metric(
        operator,
        1,
        "runstate_run_failures_total",
        namespace=ns,
        runbook="bounded",
        state_type="FAILED",
        reason="timeout",
    )


# ---- Host selection.


def test_operations_run_only_on_the_hosts_they_select(
    kube_cluster: Cluster, operator: Operator, tmp_path: Path
) -> None:
    ns = kube_cluster.namespace()
    inventory = {
        "hosts": [
            {"name": "web1.example.com", "groups": ["web"]},
            {"name": "web2.example.com", "groups": ["web"]},
            {"name": "db1.example.com", "groups": ["db", "primary"]},
            {"name": "lb1.example.com", "groups": ["lb"]},
        ]
    }
    record = f'echo "$RUNSTATE_GROUPS" > "{tmp_path}/$RUNSTATE_OPERATION@$RUNSTATE_HOST"'
    ops: list[dict[str, Any]] = [
        {"name": "migrate", "hosts": {"groups": ["db"]}, "run": record},
        {"name": "deploy", "hosts": {"groups": ["web"]}, "run": record},
        {
            "name": "reload",
            "hosts": {"groups": ["lb"], "names": ["web1.example.com"]},
            "run": record,
        },
        {"name": "report", "run": record},
    ]
    kube_cluster.apply(runbook("targeted", ops=ops, inventory=inventory), ns)
    kube_cluster.apply(run("r1", "targeted"), ns)
    st = final_status(kube_cluster, ns, "r1")

    assert st["state"]["type"] == "COMPLETED", st["state"]
    assert st["state"]["message"] == "All 4 hosts completed (9 changed)."
    assert st["hostsSummary"] == "4/4"
    assert op_counts(st) == {
        "migrate": counts(1, changed=1, success=1),
        "deploy": counts(2, changed=2, success=2),
        "reload": counts(2, changed=2, success=2),
        "report": counts(4, changed=4, success=4),
    }
    everyone = ["web1.example.com", "web2.example.com", "db1.example.com", "lb1.example.com"]
    expected = {
        "migrate": ["db1.example.com"],
        "deploy": ["web1.example.com", "web2.example.com"],
        "reload": ["lb1.example.com", "web1.example.com"],
        "report": sorted(everyone),
    }
    pods = pods_of(kube_cluster, ns)
    assert {
        op: sorted(label(p, "host") for p in pods if label(p, "operation") == op) for op in expected
    } == expected
    assert len(pods) == 9
    groups = {f.name: f.read_text().strip() for f in tmp_path.iterdir()}
    assert groups == {
        f"{op}@{h}": {
            "web1.example.com": "web",
            "web2.example.com": "web",
            "db1.example.com": "db,primary",
            "lb1.example.com": "lb",
        }[h]
        for op, hs in expected.items()
        for h in hs
    }


def test_an_unknown_group_fails_the_run_at_setup(kube_cluster: Cluster, operator: Operator) -> None:
    ns = kube_cluster.namespace()
    ops: list[dict[str, Any]] = [
        {"name": "deploy", "run": "true"},
        {"name": "migrate", "hosts": {"groups": ["dbs"]}, "run": "true"},
    ]
    kube_cluster.apply(runbook("typo", ops=ops), ns)
    kube_cluster.apply(run("r1", "typo"), ns)
    st = final_status(kube_cluster, ns, "r1", timeout=30)
    assert st["state"]["type"] == "FAILED"
    assert st["state"]["message"] == (
        "Setup failed: spec.operations[1].hosts.groups: unknown group 'dbs'"
    )
    assert st["stage"] == "Setup"
    assert pods_of(kube_cluster, ns) == []


# ---- Disconnect: what becomes of the pods.


def test_an_ended_run_deletes_its_successful_pods_and_keeps_failed_ones_a_while(
    kube_cluster: Cluster, operator: Operator
) -> None:
    ns = kube_cluster.namespace()
    ops: list[dict[str, Any]] = [
        {"name": "install", "check": "exit 1", "run": 'test "$RUNSTATE_HOST" != web2.example.com'}
    ]
    kube_cluster.apply(
        runbook(
            "tidy",
            ops=ops,
            hosts=2,
            config={"failPercent": 50, "podRetention": {"failedSeconds": 6}},
            hooks={"onCompletion": ["notify"]},
            hookOperations=[{"name": "notify", "run": "echo done"}],
        ),
        ns,
    )
    kube_cluster.apply(run("r1", "tidy"), ns)
    st = final_status(kube_cluster, ns, "r1")
    assert st["state"]["type"] == "COMPLETED", st["state"]

    # The successful pods go at once (the checks answered "change needed" with exit 1: that
    # is success for a check); the failed one stays for `kubectl logs`, and so does the hook.
    def left() -> set[tuple[str, str, str]]:
        return units(pods_of(kube_cluster, ns))

    failed_run = ("run", "install", "web2.example.com")
    hook = ("hook", "notify", "")
    wait_for("the successful pods to be deleted", lambda: left() == {failed_run, hook}, 30)
    [event] = events_named(kube_cluster, ns, "r1", "PodsDeleted")
    assert event["type"] == "Normal"
    assert event["message"].startswith(
        "Deleted 3 pod(s) of the ended run (config.podRetention); 1 kept, the next to go at "
    )
    # failedSeconds later, the failed pod goes too; the hook's pod is the record of the hook.
    wait_for("the failed pod to be deleted", lambda: left() == {hook}, 30)
    st = kube_cluster.get("run", "r1", ns)["status"]
    assert st["state"]["type"] == "COMPLETED"  # deleting pods changes nothing of the run
    assert [h["result"] for h in st["hooks"]] == ["Succeeded"]
    assert len(events_named(kube_cluster, ns, "r1", "PodsDeleted")) == 2


def test_a_run_that_succeeded_deletes_all_its_pods_at_once_and_quietly(
    kube_cluster: Cluster, operator: Operator
) -> None:
    ns = kube_cluster.namespace()
    ops: list[dict[str, Any]] = [{"name": "a", "run": "true"}, {"name": "b", "run": "true"}]
    # The default policy (the test helper keeps pods unless told otherwise).
    kube_cluster.apply(runbook("clean", ops=ops, config={"podRetention": {}}), ns)
    kube_cluster.apply(run("r1", "clean"), ns)
    st = final_status(kube_cluster, ns, "r1")
    assert st["state"]["type"] == "COMPLETED", st["state"]
    assert op_counts(st)["b"] == counts(3, changed=3, success=3)  # the results outlive the pods
    wait_for("every pod of the run to be deleted", lambda: not pods_of(kube_cluster, ns), 30)
    assert not [e for e in events_of(kube_cluster, ns, "r1") if e["reason"] == "PodsDeleted"]
