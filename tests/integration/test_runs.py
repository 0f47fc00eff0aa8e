"""Runs end to end on the real control plane, with Redis and the operator process.

Each test works in its own namespace and asserts what a user can see: status fields, pods,
Redis keys, /metrics, Events, `kubectl get` columns and `kubectl wait`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.client.exceptions import ApiException

from tests.conftest import Cluster, Operator, wait_for

pytestmark = pytest.mark.integration


# Tests look at a run's pods after it ended; the default policy deletes the successful ones.
KEEP_PODS = {"podRetention": {"succeededSeconds": 3600}}


def runbook(name: str, *, ops: list[dict[str, Any]], hosts: int = 3, **spec: Any) -> str:
    """A Runbook of `hosts` static hosts; its pods stay after the run unless `config` says."""
    spec["config"] = {**KEEP_PODS, **spec.get("config", {})}
    body = {
        "apiVersion": "runstate.dev/v1alpha1",
        "kind": "Runbook",
        "metadata": {"name": name},
        "spec": {
            "inventory": {
                "hosts": [
                    {"name": f"web{i}.example.com", "groups": ["web"], "data": {"index": i}}
                    for i in range(1, hosts + 1)
                ]
            },
            "operations": ops,
            **spec,
        },
    }
    return json.dumps(body)


def run(name: str, runbook_name: str, **spec: Any) -> str:
    return json.dumps(
        {
            "apiVersion": "runstate.dev/v1alpha1",
            "kind": "Run",
            "metadata": {"name": name},
            "spec": {"runbookRef": {"name": runbook_name}, **spec},
        }
    )


def final_status(cluster: Cluster, ns: str, name: str, timeout: float = 90) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        st: dict[str, Any] = cluster.get("run", name, ns).get("status") or {}
        state = st.get("state") or {}
        return st if state.get("type") in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None

    result: dict[str, Any] = wait_for(f"run {ns}/{name} to finish", done, timeout=timeout)
    return result


def redis_hash(redis_url: str, key: str) -> dict[str, str]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    return {str(k): str(v) for k, v in client.hgetall(key).items()}


def history_stream(redis_url: str, uid: str) -> list[str]:
    """The `to` of each entry of a run's history stream in Redis, oldest first."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    entries = client.xrange(f"runstate:{{{uid}}}:history") or []
    return [str((fields or {})["to"]) for _, fields in entries]


def events_of(cluster: Cluster, ns: str, name: str) -> list[dict[str, Any]]:
    return [e for e in cluster.items("events", ns) if e["involvedObject"].get("name") == name]


TWO_OPS = [
    {"name": "update", "run": 'echo "updating $RUNSTATE_HOST"'},
    {"name": "install", "run": 'test "$RUNSTATE_PARAM_VERSION" = "1.27" && echo installed'},
]


def test_three_hosts_two_operations_complete(
    kube_cluster: Cluster, operator: Operator, redis_url: str
) -> None:
    ns = kube_cluster.namespace()
    kube_cluster.apply(runbook("fleet", ops=TWO_OPS), ns)
    kube_cluster.apply(run("deploy-1", "fleet", parameters={"version": "1.27"}), ns)
    st = final_status(kube_cluster, ns, "deploy-1")

    assert st["state"]["type"] == "COMPLETED", st
    assert st["state"]["name"] == "Completed"
    assert st["state"]["message"] == "All 3 hosts completed (6 changed)."
    assert st["stage"] == "Disconnect"
    assert st["hosts"] == {"total": 3, "active": 3, "failed": 0, "unreachable": 0, "limited": 0}
    assert st["hostsSummary"] == "3/3"
    assert [(o["name"], o["hosts"], o["success"], o["error"]) for o in st["operations"]] == [
        ("update", 3, 3, 0),
        ("install", 3, 3, 0),
    ]
    assert [h["to"] for h in st["history"]] == [
        "PENDING/Pending",
        "RUNNING/Running",
        "COMPLETED/Completed",
    ]
    conditions = {c["type"]: c["status"] for c in st["conditions"]}
    assert conditions == {"Ready": "True", "Reconciling": "False", "Stalled": "False"}
    assert st["observedGeneration"] == 1

    # One pod per operation × host, owned by the run, labelled, finished.
    run_obj = kube_cluster.get("run", "deploy-1", ns)
    pods = kube_cluster.items("pods", ns, "-l", "runstate.dev/run=deploy-1")
    assert len(pods) == 6
    assert {
        (
            p["metadata"]["labels"]["runstate.dev/operation"],
            p["metadata"]["labels"]["runstate.dev/host"],
        )
        for p in pods
    } == {(op, f"web{i}.example.com") for op in ("update", "install") for i in (1, 2, 3)}
    for p in pods:
        assert p["status"]["phase"] == "Succeeded"
        assert p["metadata"]["ownerReferences"][0]["uid"] == run_obj["metadata"]["uid"]
        env = {e["name"]: e.get("value") for e in p["spec"]["containers"][0]["env"]}
        assert env["RUNSTATE_PARAM_VERSION"] == "1.27"
        assert json.loads(env["RUNSTATE_HOST_DATA"])["index"] in (1, 2, 3)

    # Hot state in Redis under the run's hash tag.
    uid = run_obj["metadata"]["uid"]
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    state = redis_hash(redis_url, f"runstate:{{{uid}}}:state")
    assert (state["type"], state["name"], state["stage"]) == (
        "COMPLETED",
        "Completed",
        "Disconnect",
    )
    assert history_stream(redis_url, uid) == [
        "PENDING/Pending",
        "RUNNING/Running",
        "COMPLETED/Completed",
    ]
    results = redis_hash(redis_url, f"runstate:{{{uid}}}:results")
    assert json.loads(results["install|web2.example.com"])["result"] == "success"
    assert len([k for k in results if not k.startswith("@")]) == 6
    assert r.ttl(f"runstate:{{{uid}}}:state") > 0  # finished runs expire

    # Metrics from the operator's /metrics endpoint.
    assert (
        operator.metric(
            "runstate_operation_results_total",
            namespace=ns,
            runbook="fleet",
            operation="install",
            result="success",
        )
        == 3
    )
    assert (
        operator.metric(
            "runstate_state_transitions_total", from_type="RUNNING", to_type="COMPLETED"
        )
        >= 1
    )
    assert operator.metric("runstate_runs", namespace=ns, state_type="COMPLETED") == 1

    # Transitions posted as Events, reason = state name.
    reasons = [e["reason"] for e in events_of(kube_cluster, ns, "deploy-1")]
    assert {"Running", "Completed"} <= set(reasons)
    names = {h["to"].split("/")[1] for h in st["history"]}
    assert set(reasons) <= names  # every Event names a state the run went through


def test_the_operators_writes_say_who_made_them(kube_cluster: Cluster, operator: Operator) -> None:
    """managedFields (and so audit logs) name runstate, not the client library."""
    ns = kube_cluster.namespace()
    kube_cluster.apply(runbook("who", ops=TWO_OPS[:1], hosts=1), ns)
    kube_cluster.apply(run("who-1", "who"), ns)
    final_status(kube_cluster, ns, "who-1")

    def managers(kind: str, name: str) -> set[str]:
        out = kube_cluster.kubectl(
            "get", kind, name, "-n", ns, "-o", "json", "--show-managed-fields"
        ).stdout
        return {m["manager"] for m in json.loads(out)["metadata"]["managedFields"]}

    run_managers = managers("run", "who-1")
    assert "runstate" in run_managers, run_managers
    assert not any(m.startswith("OpenAPI-Generator") for m in run_managers), run_managers
    (pod,) = kube_cluster.items("pods", ns)
    assert "runstate" in managers("pod", pod["metadata"]["name"])


def test_failing_operation_fails_its_host_within_fail_percent(
    kube_cluster: Cluster, operator: Operator
) -> None:
    ns = kube_cluster.namespace()
    ops = [
        {
            "name": "update",
            "run": 'if [ "$RUNSTATE_HOST" = web2.example.com ]; then echo "disk full on $RUNSTATE_HOST" >&2; exit 4; fi',
        },
        {"name": "install", "run": "true"},
    ]
    kube_cluster.apply(runbook("tolerant", ops=ops, config={"failPercent": 50}), ns)
    kube_cluster.apply(run("r1", "tolerant"), ns)
    st = final_status(kube_cluster, ns, "r1")

    assert st["state"]["type"] == "COMPLETED"
    assert st["state"]["message"].startswith("1/3 hosts failed (within failPercent 50%)")
    assert st["hosts"]["failed"] == 1 and st["hostsSummary"] == "2/3"
    [failed] = st["failedHosts"]
    assert failed["host"] == "web2.example.com"
    assert failed["stage"] == "Execute" and failed["operation"] == "update"
    assert "disk full on web2.example.com" in failed["message"]  # the pod's output, via status
    installs = kube_cluster.items("pods", ns, "-l", "runstate.dev/operation=install")
    assert sorted(p["metadata"]["labels"]["runstate.dev/host"] for p in installs) == [
        "web1.example.com",
        "web3.example.com",
    ]
    assert (
        operator.metric(
            "runstate_host_failures_total", namespace=ns, runbook="tolerant", stage="Execute"
        )
        == 1
    )


def test_fail_percent_exceeded_stops_the_run(kube_cluster: Cluster, operator: Operator) -> None:
    ns = kube_cluster.namespace()
    ops = [
        {"name": "update", "run": '[ "$RUNSTATE_HOST" != web1.example.com ]'},
        {"name": "install", "run": "true"},
    ]
    kube_cluster.apply(runbook("strict", ops=ops, config={"failPercent": 20}), ns)
    kube_cluster.apply(run("r1", "strict"), ns)
    st = final_status(kube_cluster, ns, "r1")

    assert st["state"]["type"] == "FAILED"
    assert st["state"]["message"] == "Over 20% of hosts failed (33%)"
    assert kube_cluster.items("pods", ns, "-l", "runstate.dev/operation=install") == []
    conditions = {c["type"]: c for c in st["conditions"]}
    assert conditions["Ready"]["status"] == "False" and conditions["Stalled"]["status"] == "True"
    assert (
        operator.metric(
            "runstate_run_failures_total",
            namespace=ns,
            runbook="strict",
            state_type="FAILED",
            reason="fail_percent",
        )
        == 1
    )
    warning = [e for e in events_of(kube_cluster, ns, "r1") if e["reason"] == "Failed"]
    assert warning and warning[0]["type"] == "Warning"


def test_kubectl_get_and_wait(kube_cluster: Cluster, operator: Operator) -> None:
    ns = kube_cluster.namespace()
    kube_cluster.apply(runbook("one", ops=[{"name": "hello", "run": "echo hello"}], hosts=2), ns)
    # An empty string must be accepted (the dev API server needed a patch for that).
    kube_cluster.apply(run("r1", "one", parameters={"note": ""}), ns)
    kube_cluster.kubectl(
        "wait", "-n", ns, "run/r1", "--timeout=90s", "--for=jsonpath={.status.state.type}=COMPLETED"
    )
    kube_cluster.kubectl("wait", "-n", ns, "run/r1", "--for=condition=Ready", "--timeout=30s")
    table = kube_cluster.kubectl("get", "rsr", "-n", ns).stdout.splitlines()  # short name
    assert table[0].split() == ["NAME", "TYPE", "STATE", "STAGE", "HOSTS", "AGE"]
    assert table[1].split()[:5] == ["r1", "COMPLETED", "Completed", "Disconnect", "2/2"]
    # The Runbook's status follows its Runs (at the latest on the next resync).
    wait_for(
        "the Runbook's lastRun",
        lambda: (kube_cluster.get("runbook", "one", ns).get("status") or {}).get("lastRun"),
        timeout=30,
    )
    wide = kube_cluster.kubectl("get", "runbooks", "-n", ns).stdout.splitlines()
    assert wide[0].split()[:7] == ["NAME", "HOSTS", "OPERATIONS", "READY", "LAST", "RUN", "ACTIVE"]
    assert wide[1].split()[:6] == ["one", "2", "1", "True", "r1", "0"]
    # The `runstate` category lists both kinds.
    everything = kube_cluster.kubectl("get", "runstate", "-n", ns, "-o", "name").stdout
    assert "run.runstate.dev/r1" in everything and "runbook.runstate.dev/one" in everything


def test_unknown_runbook_waits_stalled_then_runs_when_it_appears(
    kube_cluster: Cluster, operator: Operator
) -> None:
    ns = kube_cluster.namespace()
    kube_cluster.apply(run("early", "later"), ns)

    def stalled() -> dict[str, Any] | None:
        st = kube_cluster.get("run", "early", ns).get("status") or {}
        conds = {c["type"]: c for c in st.get("conditions") or []}
        return conds["Stalled"] if conds.get("Stalled", {}).get("status") == "True" else None

    cond = wait_for("Stalled condition", stalled, timeout=30)
    assert cond["reason"] == "RunbookNotFound"
    assert cond["message"] == f"spec.runbookRef.name: no Runbook 'later' in namespace '{ns}'"
    st = kube_cluster.get("run", "early", ns)["status"]
    assert st["state"]["name"] == "Pending"
    assert (
        wait_for(
            "RunbookNotFound event",
            lambda: [
                e for e in events_of(kube_cluster, ns, "early") if e["reason"] == "RunbookNotFound"
            ],
            timeout=15,
        )[0]["type"]
        == "Warning"
    )

    # A GitOps sync may apply the Run before its Runbook: it goes on once the Runbook exists.
    kube_cluster.apply(runbook("later", ops=[{"name": "a", "run": "true"}], hosts=1), ns)
    assert final_status(kube_cluster, ns, "early")["state"]["type"] == "COMPLETED"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {
                "operations": [
                    {"name": "a", "run": "true"},
                    {"name": "b", "run": "true", "dependsOn": ["compile"]},
                ]
            },
            "Setup failed: spec.operations[1].dependsOn: operation 'b' depends on unknown operation 'compile'",
        ),
        (
            {"inventory": {"hosts": []}, "operations": [{"name": "a", "run": "true"}]},
            "Setup failed: spec.inventory.hosts: the inventory has no hosts",
        ),
        (
            {
                "operations": [
                    {"name": "a", "run": "true", "dependsOn": ["b"]},
                    {"name": "b", "run": "true"},
                ],
                "inventory": {"hosts": [{"name": "h"}]},
            },
            "Setup failed: spec.operations: dependency cycle: ",
        ),
    ],
    ids=["unknown-dependency", "empty-inventory", "cycle"],
)
def test_invalid_runbook_fails_the_run_naming_the_field(
    kube_cluster: Cluster, operator: Operator, spec: dict[str, Any], message: str
) -> None:
    ns = kube_cluster.namespace()
    body = {
        "apiVersion": "runstate.dev/v1alpha1",
        "kind": "Runbook",
        "metadata": {"name": "bad"},
        "spec": {"inventory": {"hosts": [{"name": "h1"}]}, **spec},
    }
    kube_cluster.apply(json.dumps(body), ns)
    kube_cluster.apply(run("r1", "bad"), ns)
    st = final_status(kube_cluster, ns, "r1", timeout=30)
    assert st["state"]["type"] == "FAILED"
    assert st["state"]["message"].startswith(message)
    assert st["stage"] == "Setup"
    assert kube_cluster.items("pods", ns) == []
    assert wait_for(
        "Failed event",
        lambda: [e for e in events_of(kube_cluster, ns, "r1") if e["reason"] == "Failed"],
        timeout=15,
    )[0]["message"].startswith(message)
    # The Runbook itself says what is wrong.
    rb = wait_for("runbook status", lambda: kube_cluster.get("runbook", "bad", ns).get("status"))
    conds = {c["type"]: c for c in rb["conditions"]}
    assert conds["Ready"]["status"] == "False"
    assert message.removeprefix("Setup failed: ") in conds["Stalled"]["message"]


def test_schema_rejects_what_it_can_at_apply_time(kube_cluster: Cluster) -> None:
    ns = kube_cluster.namespace()
    both = json.dumps(
        {
            "apiVersion": "runstate.dev/v1alpha1",
            "kind": "Run",
            "metadata": {"name": "both"},
            "spec": {
                "runbookRef": {"name": "x"},
                "runbook": {"operations": [{"name": "a", "run": "true"}]},
            },
        }
    )
    result = kube_cluster.kubectl("apply", "-n", ns, "-f", "-", input=both, check=False)
    assert result.returncode != 0 and "spec" in result.stderr
    bad_name = runbook("bad-name", ops=[{"name": "Not_A_Label", "run": "true"}])
    result = kube_cluster.kubectl("apply", "-n", ns, "-f", "-", input=bad_name, check=False)
    assert result.returncode != 0 and "spec.operations" in result.stderr
    no_ops = runbook("no-ops", ops=[])
    result = kube_cluster.kubectl("apply", "-n", ns, "-f", "-", input=no_ops, check=False)
    assert result.returncode != 0


def test_inline_runbook_and_a_good_run_after_bad_input(
    kube_cluster: Cluster, operator: Operator
) -> None:
    """The operator is still healthy after everything above, and inline runbooks work."""
    ns = kube_cluster.namespace()
    body = {
        "apiVersion": "runstate.dev/v1alpha1",
        "kind": "Run",
        "metadata": {"name": "inline"},
        "spec": {
            "runbook": {
                "inventory": {"hosts": [{"name": "solo"}]},
                "operations": [{"name": "hi", "run": "echo hi"}],
            }
        },
    }
    kube_cluster.apply(json.dumps(body), ns)
    assert final_status(kube_cluster, ns, "inline")["state"]["type"] == "COMPLETED"
    assert operator.process.poll() is None


# ---- Run lifecycle beyond the happy path (issue 3's first part).


def history_of(st: dict[str, Any]) -> list[str]:
    return [h["to"].split("/")[1] for h in st["history"]]


def pods_running(cluster: Cluster, ns: str, n: int) -> Any:
    return wait_for(
        f"{n} running pod(s)",
        lambda: (
            len([p for p in cluster.items("pods", ns) if p["status"].get("phase") == "Running"])
            >= n
        ),
        timeout=30,
    )


def test_cancel_while_pods_run(kube_cluster: Cluster, operator: Operator) -> None:
    ns = kube_cluster.namespace()
    kube_cluster.apply(runbook("long", ops=[{"name": "wait", "run": "sleep 60"}], hosts=2), ns)
    kube_cluster.apply(run("r1", "long"), ns)
    pods_running(kube_cluster, ns, 2)
    kube_cluster.kubectl(
        "patch", "run", "r1", "-n", ns, "--type", "merge", "-p", '{"spec": {"cancel": true}}'
    )
    st = final_status(kube_cluster, ns, "r1", timeout=60)
    assert st["state"]["type"] == "CANCELLED"
    assert history_of(st)[-2:] == ["Cancelling", "Cancelled"]
    assert kube_cluster.items("pods", ns) == []  # the running pods were stopped and removed
    assert {"Cancelling", "Cancelled"} <= {e["reason"] for e in events_of(kube_cluster, ns, "r1")}


def test_retry_succeeds_on_the_second_attempt(kube_cluster: Cluster, operator: Operator) -> None:
    ns = kube_cluster.namespace()
    ops = [{"name": "flaky", "run": '[ "$RUNSTATE_ATTEMPT" -ge 2 ] || { echo "not yet"; exit 1; }'}]
    kube_cluster.apply(
        runbook("flaky", ops=ops, hosts=2, retries={"limit": 2, "delaySeconds": 1}), ns
    )
    kube_cluster.apply(run("r1", "flaky"), ns)
    st = final_status(kube_cluster, ns, "r1")
    assert st["state"]["type"] == "COMPLETED" and st["attempt"] == 2
    assert history_of(st) == [
        "Pending",
        "Running",
        "AwaitingRetry",
        "Pending",
        "Retrying",
        "Completed",
    ]
    awaiting = next(h for h in st["history"] if h["to"].endswith("AwaitingRetry"))
    assert awaiting["message"].startswith("Attempt 1 failed: No hosts remaining!")
    attempts = sorted(
        p["metadata"]["labels"]["runstate.dev/attempt"] for p in kube_cluster.items("pods", ns)
    )
    assert attempts == ["1", "1", "2", "2"]  # each attempt's pods are its own


def test_retries_exhausted_fail_the_run(kube_cluster: Cluster, operator: Operator) -> None:
    ns = kube_cluster.namespace()
    kube_cluster.apply(
        runbook(
            "broken",
            ops=[{"name": "x", "run": "exit 3"}],
            hosts=1,
            retries={"limit": 1, "delaySeconds": 0},
        ),
        ns,
    )
    kube_cluster.apply(run("r1", "broken"), ns)
    st = final_status(kube_cluster, ns, "r1")
    assert st["state"]["type"] == "FAILED" and st["attempt"] == 2
    assert history_of(st).count("AwaitingRetry") == 1


def test_paused_before_start_is_suspended_then_resumes(
    kube_cluster: Cluster, operator: Operator
) -> None:
    ns = kube_cluster.namespace()
    kube_cluster.apply(runbook("p", ops=[{"name": "a", "run": "true"}], hosts=1), ns)
    kube_cluster.apply(run("r1", "p", paused=True), ns)
    wait_for(
        "Suspended",
        lambda: (
            (kube_cluster.get("run", "r1", ns).get("status") or {}).get("state", {}).get("name")
            == "Suspended"
        ),
        timeout=30,
    )
    assert kube_cluster.items("pods", ns) == []
    kube_cluster.kubectl(
        "patch", "run", "r1", "-n", ns, "--type", "merge", "-p", '{"spec": {"paused": false}}'
    )
    st = final_status(kube_cluster, ns, "r1")
    assert st["state"]["type"] == "COMPLETED"
    assert history_of(st) == ["Pending", "Suspended", "Running", "Completed"]


def test_scheduled_run_starts_at_its_time(kube_cluster: Cluster, operator: Operator) -> None:
    from datetime import timedelta

    ns = kube_cluster.namespace()
    kube_cluster.apply(runbook("s", ops=[{"name": "a", "run": "true"}], hosts=1), ns)
    at = (datetime.now(UTC) + timedelta(seconds=4)).strftime("%Y-%m-%dT%H:%M:%SZ")
    kube_cluster.apply(run("r1", "s", scheduledTime=at), ns)
    st = wait_for(
        "Scheduled",
        lambda: (kube_cluster.get("run", "r1", ns).get("status") or {}).get("state"),
        timeout=30,
    )
    assert st["type"] == "SCHEDULED" and st["scheduledTime"] == at
    final = final_status(kube_cluster, ns, "r1")
    assert history_of(final) == ["Scheduled", "Pending", "Running", "Completed"]

    def parse(t: str) -> datetime:
        return datetime.fromisoformat(t.replace("Z", "+00:00"))

    assert parse(final["startTime"]) >= parse(at)


def test_a_run_that_starts_after_its_time_is_late(
    kube_cluster: Cluster, operator: Operator
) -> None:
    from datetime import timedelta

    ns = kube_cluster.namespace()
    kube_cluster.apply(
        runbook("tardy", ops=[{"name": "a", "run": "true"}], hosts=1, lateAfterSeconds=5), ns
    )
    at = (datetime.now(UTC) - timedelta(seconds=60)).strftime("%Y-%m-%dT%H:%M:%SZ")
    kube_cluster.apply(run("r1", "tardy", scheduledTime=at), ns)
    st = final_status(kube_cluster, ns, "r1")
    assert history_of(st) == ["Scheduled", "Late", "Pending", "Running", "Completed"]
    late = next(h for h in st["history"] if h["to"] == "SCHEDULED/Late")
    assert late["message"].startswith("Starting 6") and late["message"].endswith(
        "s after its scheduled time"
    )
    assert "Late" in {e["reason"] for e in events_of(kube_cluster, ns, "r1")}


def state_name(cluster: Cluster, ns: str, name: str) -> str | None:
    state = (cluster.get("run", name, ns).get("status") or {}).get("state") or {}
    return state.get("name")


def test_pausing_a_running_run_lets_its_pods_finish_and_starts_none(
    kube_cluster: Cluster, operator: Operator
) -> None:
    ns = kube_cluster.namespace()
    ops = [{"name": "first", "run": "sleep 3"}, {"name": "second", "run": "true"}]
    kube_cluster.apply(runbook("pausable", ops=ops, hosts=1), ns)
    kube_cluster.apply(run("r1", "pausable"), ns)
    pods_running(kube_cluster, ns, 1)
    patch = ["patch", "run", "r1", "-n", ns, "--type", "merge", "-p"]
    kube_cluster.kubectl(*patch, '{"spec": {"paused": true}}')
    wait_for("Paused", lambda: state_name(kube_cluster, ns, "r1") == "Paused", timeout=30)
    wait_for(
        "the running pod to finish",
        lambda: [p["status"].get("phase") for p in kube_cluster.items("pods", ns)] == ["Succeeded"],
        timeout=30,
    )
    time.sleep(2)  # the operator has seen `first` finish: `second` must still not start
    assert len(kube_cluster.items("pods", ns)) == 1
    assert state_name(kube_cluster, ns, "r1") == "Paused"
    kube_cluster.kubectl(*patch, '{"spec": {"paused": false}}')
    st = final_status(kube_cluster, ns, "r1")
    assert st["state"]["type"] == "COMPLETED"
    assert history_of(st) == ["Pending", "Running", "Paused", "Running", "Completed"]
    assert len(kube_cluster.items("pods", ns)) == 2


def test_a_pause_longer_than_its_timeout_fails_the_run(
    kube_cluster: Cluster, operator: Operator
) -> None:
    ns = kube_cluster.namespace()
    kube_cluster.apply(runbook("stuck", ops=[{"name": "a", "run": "true"}], hosts=1), ns)
    kube_cluster.apply(run("r1", "stuck", paused=True, pauseTimeoutSeconds=3), ns)
    st = final_status(kube_cluster, ns, "r1", timeout=30)
    assert st["state"]["type"] == "FAILED"
    assert st["state"]["message"] == "Paused longer than 3s"
    assert history_of(st) == ["Pending", "Suspended", "Failed"]
    assert kube_cluster.items("pods", ns) == []
    assert (
        operator.metric(
            "runstate_run_failures_total",
            namespace=ns,
            runbook="stuck",
            state_type="FAILED",
            reason="timeout",
        )
        == 1
    )


def test_pod_deleted_by_someone_else_crashes_the_run(
    kube_cluster: Cluster, operator: Operator
) -> None:
    ns = kube_cluster.namespace()
    kube_cluster.apply(runbook("victim", ops=[{"name": "wait", "run": "sleep 60"}], hosts=1), ns)
    kube_cluster.apply(run("r1", "victim"), ns)
    pods_running(kube_cluster, ns, 1)
    [pod] = kube_cluster.items("pods", ns)
    kube_cluster.kubectl("delete", "pod", pod["metadata"]["name"], "-n", ns, "--wait=false")
    st = final_status(kube_cluster, ns, "r1", timeout=60)
    assert st["state"]["type"] == "CRASHED"
    assert "deleted outside runstate" in st["state"]["message"]
    # The operation was not started a second time.
    assert all(
        p["metadata"]["name"] == pod["metadata"]["name"] for p in kube_cluster.items("pods", ns)
    )
    assert (
        operator.metric(
            "runstate_run_failures_total",
            namespace=ns,
            runbook="victim",
            state_type="CRASHED",
            reason="infrastructure",
        )
        == 1
    )


# ---- Runbooks start Runs by themselves, and say how their Runs went.


def runbook_status(cluster: Cluster, ns: str, name: str) -> dict[str, Any]:
    result: dict[str, Any] = cluster.get("runbook", name, ns).get("status") or {}
    return result


def test_on_change_starts_a_run_per_generation(kube_cluster: Cluster, operator: Operator) -> None:
    ns = kube_cluster.namespace()
    ops = [{"name": "deploy", "run": "echo v1"}]
    kube_cluster.apply(runbook("gitops", ops=ops, hosts=1, trigger={"onChange": True}), ns)
    first = final_status(kube_cluster, ns, "gitops-g1")
    assert first["state"]["type"] == "COMPLETED"
    run1 = kube_cluster.get("run", "gitops-g1", ns)
    assert run1["metadata"]["labels"]["runstate.dev/trigger"] == "onChange"
    assert run1["metadata"]["ownerReferences"][0]["kind"] == "Runbook"

    ops[0]["run"] = "echo v2"  # a GitOps sync of a changed Runbook
    kube_cluster.apply(runbook("gitops", ops=ops, hosts=1, trigger={"onChange": True}), ns)
    assert final_status(kube_cluster, ns, "gitops-g2")["state"]["type"] == "COMPLETED"
    st = wait_for(
        "runbook aggregate",
        lambda: (
            s
            if (s := runbook_status(kube_cluster, ns, "gitops")).get("runs", {}).get("COMPLETED")
            == 2
            else None
        ),
        timeout=30,
    )
    assert st["lastTriggeredGeneration"] == 2 and st["activeRuns"] == 0
    assert st["lastRun"]["name"] == "gitops-g2" and st["lastRun"]["type"] == "COMPLETED"
    runs = [r["metadata"]["name"] for r in kube_cluster.items("runs", ns)]
    assert sorted(runs) == ["gitops-g1", "gitops-g2"]  # one per generation, no more


def test_history_deletes_old_runs_the_runbook_started_but_never_a_users(
    kube_cluster: Cluster, operator: Operator
) -> None:
    ns = kube_cluster.namespace()
    ops = [{"name": "deploy", "run": "echo v1"}]

    def apply(version: int, history: dict[str, Any]) -> None:
        ops[0]["run"] = f"echo v{version}"
        kube_cluster.apply(
            runbook("kept", ops=ops, hosts=1, trigger={"onChange": True}, history=history), ns
        )

    apply(1, {"keepRuns": 1})
    kube_cluster.apply(run("mine", "kept"), ns)  # a user's Run of the same Runbook
    assert final_status(kube_cluster, ns, "kept-g1")["state"]["type"] == "COMPLETED"
    assert final_status(kube_cluster, ns, "mine")["state"]["type"] == "COMPLETED"
    apply(2, {"keepRuns": 1})
    assert final_status(kube_cluster, ns, "kept-g2")["state"]["type"] == "COMPLETED"

    def names() -> list[str]:
        return sorted(r["metadata"]["name"] for r in kube_cluster.items("runs", ns))

    wait_for("kept-g1 to be deleted", lambda: names() == ["kept-g2", "mine"], timeout=30)
    [event] = wait_for(
        "the RunsDeleted event",
        lambda: [e for e in events_of(kube_cluster, ns, "kept") if e["reason"] == "RunsDeleted"],
        timeout=15,
    )
    assert event["message"] == "Deleted 1 finished Run(s) (1 over history.keepRuns 1): kept-g1"
    assert wait_for(
        "the runbook aggregate without the deleted run",
        lambda: runbook_status(kube_cluster, ns, "kept").get("runs", {}).get("COMPLETED") == 2,
        timeout=30,
    )

    # By age: a run the Runbook started goes ttlSecondsAfterFinished after it ended.
    apply(3, {"keepRuns": None, "ttlSecondsAfterFinished": 2})
    assert final_status(kube_cluster, ns, "kept-g3")["state"]["type"] == "COMPLETED"
    wait_for("every run it started to go by age", lambda: names() == ["mine"], timeout=30)
    time.sleep(3)  # and the user's run is still there well after its TTL would have passed
    assert names() == ["mine"]


def test_schedule_starts_runs_at_their_times(kube_cluster: Cluster, operator: Operator) -> None:
    ns = kube_cluster.namespace()
    kube_cluster.apply(
        runbook(
            "cron",
            ops=[{"name": "tick", "run": "true"}],
            hosts=1,
            trigger={"schedule": "* * * * * */3"},
        ),
        ns,
    )
    scheduled = wait_for(
        "two scheduled runs completed",
        lambda: (
            [
                r
                for r in kube_cluster.items("runs", ns, "-l", "runstate.dev/trigger=schedule")
                if (r.get("status") or {}).get("state", {}).get("type") == "COMPLETED"
            ][1:]
            and kube_cluster.items("runs", ns)
        ),
        timeout=40,
    )
    for r in scheduled:
        stamp = int(r["metadata"]["name"].rsplit("-s", 1)[1])
        assert r["spec"]["scheduledTime"].startswith(
            datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        )
    st = runbook_status(kube_cluster, ns, "cron")
    assert st["nextScheduledTime"] > st["lastScheduleTime"]
    # Stop the schedule; no burst of runs follows.
    kube_cluster.apply(runbook("cron", ops=[{"name": "tick", "run": "true"}], hosts=1), ns)


def test_bad_schedule_stalls_the_runbook(kube_cluster: Cluster, operator: Operator) -> None:
    ns = kube_cluster.namespace()
    kube_cluster.apply(
        runbook(
            "oops",
            ops=[{"name": "a", "run": "true"}],
            hosts=1,
            trigger={"schedule": "every tuesday"},
        ),
        ns,
    )
    st = wait_for("Stalled", lambda: runbook_status(kube_cluster, ns, "oops").get("conditions"))
    stalled = {c["type"]: c for c in st}["Stalled"]
    assert stalled["status"] == "True"
    assert stalled["message"] == (
        "spec.trigger.schedule: 'every tuesday': a cron expression has 5 fields, or 6 with seconds last"
    )
    assert kube_cluster.items("runs", ns) == []


def limited_runbook(name: str, policy: str) -> str:
    return runbook(
        name,
        ops=[{"name": "work", "run": "sleep 2"}],
        hosts=1,
        trigger={"concurrency": {"limit": 1, "policy": policy}},
    )


def test_concurrency_queue_runs_one_at_a_time(kube_cluster: Cluster, operator: Operator) -> None:
    ns = kube_cluster.namespace()
    kube_cluster.apply(limited_runbook("q", "Queue"), ns)
    for i in range(3):
        kube_cluster.apply(run(f"r{i}", "q"), ns)
    # While its runs are active the Runbook is Reconciling: a GitOps tool shows "progressing".
    busy = wait_for(
        "the runbook to reconcile its runs",
        lambda: next(
            (
                c
                for c in runbook_status(kube_cluster, ns, "q").get("conditions") or []
                if c["type"] == "Reconciling" and c["status"] == "True"
            ),
            None,
        ),
        timeout=30,
    )
    assert busy["reason"] == "RunsActive"
    spans = []
    for i in range(3):
        st = final_status(kube_cluster, ns, f"r{i}", timeout=90)
        assert st["state"]["type"] == "COMPLETED"
        spans.append((st["startTime"], st["endTime"], history_of(st)))
    # First in, first served: created r0, r1, r2 (same second: the name decides), run so.
    for (_, end, _), (start, _, _) in itertools.pairwise(spans):
        assert end <= start, f"runs overlapped or ran out of order: {spans}"
    assert sum("AwaitingConcurrencySlot" in h for _, _, h in spans) == 2
    st = wait_for(
        "the runbook to settle",
        lambda: (s := runbook_status(kube_cluster, ns, "q")).get("activeRuns") == 0 and s,
    )
    assert {k: n for k, n in st["runs"].items() if n} == {"COMPLETED": 3}
    assert {c["type"]: c["status"] for c in st["conditions"]}["Reconciling"] == "False"


def test_concurrency_forbid_fails_the_others(kube_cluster: Cluster, operator: Operator) -> None:
    ns = kube_cluster.namespace()
    kube_cluster.apply(limited_runbook("f", "Forbid"), ns)
    kube_cluster.apply(run("r0", "f"), ns)
    wait_for(
        "r0 running",
        lambda: (
            (kube_cluster.get("run", "r0", ns).get("status") or {}).get("state", {}).get("type")
            == "RUNNING"
        ),
        timeout=30,
    )
    for i in (1, 2):
        kube_cluster.apply(run(f"r{i}", "f"), ns)
    for i in (1, 2):
        st = final_status(kube_cluster, ns, f"r{i}")
        assert st["state"]["type"] == "FAILED"
        assert st["state"]["message"] == ("Concurrency limit 1 reached (policy Forbid): r0 running")
    assert final_status(kube_cluster, ns, "r0")["state"]["type"] == "COMPLETED"


def test_concurrency_replace_cancels_the_running_one(
    kube_cluster: Cluster, operator: Operator
) -> None:
    ns = kube_cluster.namespace()
    kube_cluster.apply(
        runbook(
            "rp",
            ops=[{"name": "work", "run": "sleep 30"}],
            hosts=1,
            trigger={"concurrency": {"limit": 1, "policy": "Replace"}},
        ),
        ns,
    )
    kube_cluster.apply(run("old", "rp"), ns)
    pods_running(kube_cluster, ns, 1)
    kube_cluster.kubectl(
        "patch",
        "runbook",
        "rp",
        "-n",
        ns,
        "--type",
        "merge",
        "-p",
        '{"spec": {"operations": [{"name": "work", "run": "true"}]}}',
    )
    kube_cluster.apply(run("new", "rp"), ns)
    old = final_status(kube_cluster, ns, "old", timeout=60)
    assert old["state"]["type"] == "CANCELLED"
    new = final_status(kube_cluster, ns, "new", timeout=60)
    assert new["state"]["type"] == "COMPLETED"
    assert "AwaitingConcurrencySlot" in history_of(new)


# ---- Hooks, deletion, eviction.


def hook_runbook(name: str, log: str, ops: list[dict[str, Any]], **spec: Any) -> str:
    record = f'echo "$RUNSTATE_RUN $RUNSTATE_STATE_NAME" >> {log}'
    return runbook(
        name,
        ops=ops,
        hosts=2,
        hooks={
            "onCompletion": ["notify", "broken"],
            "onFailure": ["notify"],
            "onCancellation": ["notify"],
        },
        hookOperations=[
            {"name": "notify", "run": record},
            {"name": "broken", "run": "echo cannot reach chat; exit 4"},
        ],
        **spec,
    )


def hooks_over(cluster: Cluster, ns: str, name: str) -> list[dict[str, Any]]:
    def over() -> list[dict[str, Any]] | None:
        hooks = (cluster.get("run", name, ns).get("status") or {}).get("hooks") or []
        if hooks and all(h["result"] in ("Succeeded", "Failed", "Lost") for h in hooks):
            return list(hooks)
        return None

    result: list[dict[str, Any]] = wait_for(f"hooks of {name} to finish", over, timeout=60)
    return result


def test_hooks_run_once_when_a_run_ends_and_a_failing_one_is_a_warning(
    kube_cluster: Cluster, operator: Operator, tmp_path: Any
) -> None:
    ns = kube_cluster.namespace()
    log = tmp_path / "hooks.log"
    kube_cluster.apply(hook_runbook("hooked", str(log), [{"name": "work", "run": "true"}]), ns)
    kube_cluster.apply(run("ok", "hooked"), ns)
    kube_cluster.kubectl("wait", "-n", ns, "run/ok", "--for=condition=Ready", "--timeout=60s")
    hooks = hooks_over(kube_cluster, ns, "ok")
    assert hooks == [
        {"name": "notify", "on": "onCompletion", "result": "Succeeded", "message": ""},
        {
            "name": "broken",
            "on": "onCompletion",
            "result": "Failed",
            "message": "cannot reach chat",
        },
    ]
    st = kube_cluster.get("run", "ok", ns)["status"]
    assert st["state"]["name"] == "Completed"  # a failed hook never changes the state
    assert [h["to"] for h in st["history"]][-1] == "COMPLETED/Completed"
    assert st["stageWarnings"]["Disconnect"] == 1
    conds = {c["type"]: c["status"] for c in st["conditions"]}
    assert conds == {"Ready": "True", "Reconciling": "False", "Stalled": "False"}
    assert log.read_text() == "ok Completed\n"  # once per run, not per host
    hook_pods = kube_cluster.items("pods", ns, "-l", "runstate.dev/kind=hook")
    assert len(hook_pods) == 2
    failed = [e for e in events_of(kube_cluster, ns, "ok") if e["reason"] == "HookFailed"]
    assert [(e["type"], e["message"]) for e in failed] == [
        ("Warning", "onCompletion hook broken failed: cannot reach chat")
    ]
    assert (
        operator.metric(
            "runstate_stage_warnings_total", namespace=ns, runbook="hooked", stage="Disconnect"
        )
        == 1
    )

    # A failing run runs the failure hook instead.
    kube_cluster.apply(
        hook_runbook("hooked-fail", str(log), [{"name": "work", "run": "exit 1"}]), ns
    )
    kube_cluster.apply(run("bad", "hooked-fail"), ns)
    assert final_status(kube_cluster, ns, "bad")["state"]["type"] == "FAILED"
    assert [h["name"] for h in hooks_over(kube_cluster, ns, "bad")] == ["notify"]
    assert log.read_text().splitlines()[-1] == "bad Failed"


def test_deleting_a_running_run_cancels_it_cleans_up_then_lets_it_go(
    kube_cluster: Cluster, operator: Operator, redis_url: str, tmp_path: Any
) -> None:
    ns = kube_cluster.namespace()
    log = tmp_path / "hooks.log"
    kube_cluster.apply(hook_runbook("doomed", str(log), [{"name": "wait", "run": "sleep 60"}]), ns)
    kube_cluster.apply(run("r1", "doomed"), ns)
    pods_running(kube_cluster, ns, 2)
    obj = kube_cluster.get("run", "r1", ns)
    assert obj["metadata"]["finalizers"] == ["runstate.dev/cleanup"]
    uid = obj["metadata"]["uid"]
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    assert client.exists(f"runstate:{{{uid}}}:state")

    kube_cluster.kubectl("delete", "run", "r1", "-n", ns, "--wait=false")
    wait_for(
        "the Run to be gone",
        lambda: kube_cluster.kubectl("get", "run", "r1", "-n", ns, check=False).returncode != 0,
        timeout=60,
    )
    reasons = [e["reason"] for e in events_of(kube_cluster, ns, "r1")]
    assert {"Cancelling", "Cancelled"} <= set(reasons)
    cancelling = next(e for e in events_of(kube_cluster, ns, "r1") if e["reason"] == "Cancelling")
    assert cancelling["message"] == "Run deleted: stopping 2 pod(s)"
    # The cancellation hook ran before the Run went, and nothing is left behind.
    assert log.read_text() == "r1 Cancelled\n"
    assert client.keys(f"runstate:{{{uid}}}:*") == []
    wait_for("the run's pods to be gone", lambda: kube_cluster.items("pods", ns) == [], timeout=60)


def test_an_evicted_pod_crashes_the_run(kube_cluster: Cluster, operator: Operator) -> None:
    ns = kube_cluster.namespace()
    kube_cluster.apply(
        runbook(
            "hungry",
            ops=[{"name": "fill", "run": "head -c 4194304 /dev/zero > big; sleep 60"}],
            hosts=1,
            defaults={"resources": {"limits": {"ephemeral-storage": "1Mi"}}},
        ),
        ns,
    )
    kube_cluster.apply(run("r1", "hungry"), ns)
    st = final_status(kube_cluster, ns, "r1", timeout=60)
    assert st["state"]["type"] == "CRASHED", st["state"]
    assert st["state"]["message"] == (
        "1 pod(s) of this run ended by their node (first: run fill on web1.example.com: "
        "Evicted: Pod ephemeral local storage usage exceeds the total limit of containers 1Mi.)"
    )
    [pod] = kube_cluster.items("pods", ns)  # evicted, and not started again
    assert pod["status"]["reason"] == "Evicted"
    assert (
        operator.metric(
            "runstate_run_failures_total",
            namespace=ns,
            runbook="hungry",
            state_type="CRASHED",
            reason="infrastructure",
        )
        == 1
    )


# ---- Node inventories: the cluster's Nodes are the hosts.


def test_nodes_matching_the_selector_are_the_hosts_and_pods_are_pinned_to_them(
    kube_cluster: Cluster, operator: Operator, redis_url: str
) -> None:
    ns = kube_cluster.namespace()
    role = f"edge-{ns}"
    taint = {"key": "dedicated", "value": "edge", "effect": "NoSchedule"}
    for name, labels, taints in [
        (f"{ns}-a", {"role": role, "node-role.kubernetes.io/edge": ""}, [taint]),
        (f"{ns}-b", {"role": role}, []),
        (f"{ns}-c", {"role": "core"}, []),
    ]:
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": labels},
            "spec": {"taints": taints},
        }
        kube_cluster.apply(json.dumps(node))
    body = json.loads(runbook("fleet", ops=[{"name": "patch", "run": "echo $RUNSTATE_HOST_DATA"}]))
    body["spec"]["inventory"] = {
        "nodeSelector": {"matchLabels": {"role": role}},
        "tolerateTaints": True,
    }
    kube_cluster.apply(json.dumps(body), ns)
    kube_cluster.apply(run("r1", "fleet"), ns)
    st = final_status(kube_cluster, ns, "r1")
    assert st["state"]["type"] == "COMPLETED", st["state"]
    assert st["hosts"]["total"] == 2 and st["hostsSummary"] == "2/2"
    pods = {p["spec"]["nodeName"]: p for p in kube_cluster.items("pods", ns)}
    assert sorted(pods) == [f"{ns}-a", f"{ns}-b"]

    def ours(pod: dict[str, Any]) -> list[dict[str, Any]]:
        # The API server's DefaultTolerationSeconds plugin adds not-ready/unreachable ones.
        return [t for t in pod["spec"].get("tolerations") or [] if t["key"] == "dedicated"]

    assert ours(pods[f"{ns}-a"]) == [
        {"key": "dedicated", "operator": "Equal", "value": "edge", "effect": "NoSchedule"}
    ]
    assert ours(pods[f"{ns}-b"]) == []
    host = {e["name"]: e.get("value") for e in pods[f"{ns}-a"]["spec"]["containers"][0]["env"]}
    assert host["RUNSTATE_HOST"] == f"{ns}-a" and host["RUNSTATE_GROUPS"] == "edge"
    # The Nodes the run started with are kept with its hot state.
    uid = kube_cluster.get("run", "r1", ns)["metadata"]["uid"]
    snapshot = redis.Redis.from_url(redis_url, decode_responses=True).hget(
        f"runstate:{{{uid}}}:results", "@inventory"
    )
    assert snapshot is not None
    assert [h["name"] for h in json.loads(snapshot)["hosts"]] == [f"{ns}-a", f"{ns}-b"]

    # A selector no Node matches fails the run at Setup, naming the field.
    body["metadata"]["name"] = "nowhere"
    body["spec"]["inventory"] = {"nodeSelector": {"matchLabels": {"role": f"none-{ns}"}}}
    kube_cluster.apply(json.dumps(body), ns)
    kube_cluster.apply(run("r2", "nowhere"), ns)
    st = final_status(kube_cluster, ns, "r2")
    assert st["state"]["type"] == "FAILED"
    assert st["state"]["message"] == (
        f"Setup failed: spec.inventory.nodeSelector: no Node matches 'role=none-{ns}'"
    )


def test_a_pod_that_starts_slowly_is_a_stage_warning(
    kube_cluster: Cluster, operator: Operator
) -> None:
    ns = kube_cluster.namespace()
    # Like a real kubelet, the process kubelet holds a pod whose ConfigMap does not exist yet.
    env = [{"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "late", "key": "hi"}}}]
    kube_cluster.apply(
        runbook(
            "sluggish",
            ops=[{"name": "greet", "run": "echo $GREETING", "env": env}],
            hosts=1,
            config={"slowStartSeconds": 1},
        ),
        ns,
    )
    kube_cluster.apply(run("r1", "sluggish"), ns)
    wait_for("the pod", lambda: kube_cluster.items("pods", ns), timeout=30)
    time.sleep(3)
    kube_cluster.kubectl("create", "configmap", "late", "-n", ns, "--from-literal=hi=hello")
    st = final_status(kube_cluster, ns, "r1")
    assert st["state"]["type"] == "COMPLETED"
    assert st["stageWarnings"]["Execute"] == 1
    # Counted just after the status is written: wait for it rather than race it.
    wait_for(
        "the stage warning metric",
        lambda: (
            operator.metric(
                "runstate_stage_warnings_total", namespace=ns, runbook="sluggish", stage="Execute"
            )
            == 1
        ),
        timeout=10,
    )


# ---- Nothing lost, nothing twice. These replace the session's operator process: keep them last.


SLOW_OPS = [
    {"name": "first", "run": "sleep 1; echo first on $RUNSTATE_HOST"},
    {"name": "second", "run": "sleep 1; echo second on $RUNSTATE_HOST"},
]


def assert_each_unit_ran_once(cluster: Cluster, ns: str, run_name: str, hosts: int) -> None:
    pods = cluster.items("pods", ns, "-l", f"runstate.dev/run={run_name}")
    units = [
        (
            p["metadata"]["labels"]["runstate.dev/operation"],
            p["metadata"]["labels"]["runstate.dev/host"],
        )
        for p in pods
    ]
    assert len(units) == len(set(units)) == 2 * hosts, sorted(units)
    assert all(p["status"]["phase"] == "Succeeded" for p in pods)


def test_status_writes_that_conflict_are_retried_and_lose_nothing(
    kube_cluster: Cluster, operator: Operator
) -> None:
    """Someone else keeps changing the Run (as Argo CD or a user annotating it would), so the
    operator's status patches, which carry the resourceVersion they were decided from, meet
    409s. Each is retried on the current object: the run, its status and their annotations
    all come out whole."""
    ns = kube_cluster.namespace()
    kube_cluster.apply(runbook("contested", ops=SLOW_OPS, hosts=3, config={"parallel": 1}), ns)
    conflicts_before = operator.metric("runstate_api_conflicts_total", resource="runs/status")
    kube_cluster.apply(run("r1", "contested"), ns)
    stop = threading.Event()
    marks: dict[str, int] = {}
    crashed: dict[int, BaseException] = {}
    # One configuration, loaded before the writers start: kubernetes_asyncio writes the
    # kubeconfig's CA to a temporary file it shares between loads, and four loads at once in
    # four threads can read it half-written (an SSL error that killed a writer on CI).
    cfg = k8s.Configuration()
    asyncio.run(
        k8s_config.load_kube_config(config_file=kube_cluster.kubeconfig, client_configuration=cfg)
    )

    def annotate(writer: int) -> None:
        # Several writers, each on its own annotation, patching as fast as the API server
        # answers (a client in-process, not a kubectl per change), so the Run changes every
        # few ms: the operator's cache (kopf batches watch events for 0.1 s) is then nearly
        # always behind its status writes.
        async def loop() -> None:
            async with k8s.ApiClient(cfg) as api:
                custom: Any = k8s.CustomObjectsApi(api)
                for i in itertools.count():
                    if stop.is_set():
                        return
                    key = f"example.com/sync-{writer}"
                    try:
                        await custom.patch_namespaced_custom_object(
                            "runstate.dev", "v1alpha1", ns, "runs", "r1",
                            {"metadata": {"annotations": {key: str(i)}}},
                            _content_type="application/merge-patch+json",
                        )  # fmt: skip
                    except ApiException:
                        await asyncio.sleep(0.05)  # not there yet, or gone: try again
                        continue
                    marks[key] = i
                    await asyncio.sleep(0.01)

        try:
            asyncio.run(loop())
        except BaseException as exc:  # reported by the test, not lost in a thread
            crashed[writer] = exc

    writers = [threading.Thread(target=annotate, args=(w,), daemon=True) for w in range(4)]
    for writer in writers:
        writer.start()
    try:
        st = final_status(kube_cluster, ns, "r1")
    finally:
        stop.set()
        for writer in writers:
            writer.join(timeout=30)

    assert not crashed, f"a writer died, so the Run was less contested than meant: {crashed!r}"
    assert st["state"]["type"] == "COMPLETED", st["state"]
    assert history_of(st) == ["Pending", "Running", "Completed"]
    assert st["hosts"] == {"total": 3, "active": 3, "failed": 0, "unreachable": 0, "limited": 0}
    assert [(o["name"], o["success"]) for o in st["operations"]] == [("first", 3), ("second", 3)]
    assert st["stage"] == "Disconnect" and st["hostsSummary"] == "3/3"
    obj = kube_cluster.get("run", "r1", ns)
    annotations = obj["metadata"]["annotations"]
    assert len(marks) == 4 and all(annotations[k] == str(v) for k, v in marks.items())
    assert "runstate.dev/cleanup" in obj["metadata"]["finalizers"]
    conflicts = operator.metric("runstate_api_conflicts_total", resource="runs/status")
    assert conflicts > conflicts_before, "no status write met a 409: the test proved nothing"
    print(f"\n{conflicts - conflicts_before:.0f} status write(s) met a 409")
    assert_each_unit_ran_once(kube_cluster, ns, "r1", hosts=3)


@pytest.mark.disruptive
def test_operator_killed_mid_run_finishes_it_without_repeating_anything(
    kube_cluster: Cluster, operator: Operator, redis_url: str
) -> None:
    ns = kube_cluster.namespace()
    kube_cluster.apply(runbook("slow", ops=SLOW_OPS, hosts=4, config={"parallel": 2}), ns)
    kube_cluster.apply(run("r1", "slow"), ns)
    wait_for(
        "the run to be executing",
        lambda: (
            kube_cluster.get("run", "r1", ns).get("status", {}).get("stage") == "Execute"
            and kube_cluster.items("pods", ns)
        ),
        timeout=30,
    )
    operator.kill()
    pods_at_kill = len(kube_cluster.items("pods", ns))
    assert 0 < pods_at_kill < 8, "the kill must land mid-run"
    operator.start()

    st = final_status(kube_cluster, ns, "r1")
    assert st["state"]["type"] == "COMPLETED", st["state"]
    assert_each_unit_ran_once(kube_cluster, ns, "r1", hosts=4)
    assert [h["to"] for h in st["history"]] == [
        "PENDING/Pending",
        "RUNNING/Running",
        "COMPLETED/Completed",
    ]
    uid = kube_cluster.get("run", "r1", ns)["metadata"]["uid"]
    assert history_stream(redis_url, uid) == [h["to"] for h in st["history"]]


@pytest.mark.disruptive
def test_redis_wiped_mid_run_is_rebuilt_from_status_and_pods(
    kube_cluster: Cluster, operator: Operator, redis_url: str
) -> None:
    ns = kube_cluster.namespace()
    kube_cluster.apply(runbook("wiped", ops=SLOW_OPS, hosts=3, config={"parallel": 2}), ns)
    kube_cluster.apply(run("r1", "wiped"), ns)
    wait_for(
        "the run to be executing",
        lambda: kube_cluster.get("run", "r1", ns).get("status", {}).get("stage") == "Execute",
        timeout=30,
    )
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushall()

    st = final_status(kube_cluster, ns, "r1")
    assert st["state"]["type"] == "COMPLETED", st["state"]
    assert_each_unit_ran_once(kube_cluster, ns, "r1", hosts=3)
    uid = kube_cluster.get("run", "r1", ns)["metadata"]["uid"]
    state = client.hgetall(f"runstate:{{{uid}}}:state")
    assert state["type"] == "COMPLETED"  # the store knows the run again
    assert operator.process.poll() is None
