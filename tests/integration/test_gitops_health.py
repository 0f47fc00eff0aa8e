"""What Argo CD and Flux show for real Runs and Runbooks taken from the test cluster in every
state: Argo CD's verdict from the shipped Lua health scripts run by lua5.1, Flux's from the
kstatus rules (tests/kstatus.py)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests import argocd, flux, kstatus
from tests.availability import require
from tests.conftest import Cluster, Operator, wait_for
from tests.integration.test_runs import final_status, pods_running, run, runbook

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("lua")]


@pytest.fixture
def lua() -> None:
    """Argo CD's health scripts run in a real Lua 5.1: missing, CI fails (never skips)."""
    require(argocd.lua_available(), "lua5.1 is not installed")


OK = [{"name": "a", "run": "true"}]
BAD = [{"name": "a", "run": "echo disk full >&2; exit 3"}]
LONG = [{"name": "wait", "run": "sleep 60"}]


def verdicts(kind: str, obj: dict[str, Any]) -> tuple[str, str]:
    """(Argo CD health, kstatus status) of a real object. Flux's verdict with the shipped
    `healthCheckExprs` is kstatus's for every object the operator has written a status on."""
    flux_says, kstatus_says = flux.health(kind, obj), kstatus.compute(obj)[0]
    assert "status" in obj and flux_says == kstatus_says, (kind, obj.get("status"))
    return argocd.health(kind, obj)[0], kstatus_says


def state_of(cluster: Cluster, ns: str, name: str) -> str:
    return str(((cluster.get("run", name, ns).get("status") or {}).get("state") or {}).get("type"))


def run_in(cluster: Cluster, ns: str, name: str, state_type: str) -> dict[str, Any]:
    wait_for(f"{name} {state_type}", lambda: state_of(cluster, ns, name) == state_type, 60)
    return cluster.get("run", name, ns)


def test_runs_in_every_state(kube_cluster: Cluster, operator: Operator) -> None:
    ns = kube_cluster.namespace()
    for name, ops in (("ok", OK), ("bad", BAD), ("long", LONG)):
        kube_cluster.apply(runbook(name, ops=ops, hosts=1), ns)
    later = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    # Straight from the API server, before the operator wrote any status.
    fresh = kube_cluster.kubectl(
        "create", "-n", ns, "-o", "json", "-f", "-", input=run("done", "ok")
    ).stdout
    unwritten = json.loads(fresh)
    assert "status" not in unwritten
    # kstatus alone reads it Current (no status, no conditions): the window the docs name.
    assert kstatus.compute(unwritten)[0] == kstatus.CURRENT
    assert argocd.health("Run", unwritten)[0] == "Progressing"
    assert flux.health("Run", unwritten) == "InProgress"
    for manifest in (
        run("failed", "bad"),
        run("running", "long"),
        run("crashed", "long"),
        run("paused", "ok", paused=True),
        run("scheduled", "ok", scheduledTime=later),
    ):
        kube_cluster.apply(manifest, ns)
    pods_running(kube_cluster, ns, 2)
    running = run_in(kube_cluster, ns, "running", "RUNNING")
    assert verdicts("Run", running) == ("Progressing", kstatus.IN_PROGRESS)
    kube_cluster.kubectl(
        "patch", "run", "running", "-n", ns, "--type", "merge", "-p", '{"spec": {"cancel": true}}'
    )
    [victim] = kube_cluster.items("pods", ns, "-l", "runstate.dev/run=crashed")
    kube_cluster.kubectl("delete", "pod", victim["metadata"]["name"], "-n", ns, "--wait=false")
    expected = {
        "done": ("COMPLETED", "Healthy", kstatus.CURRENT),
        "failed": ("FAILED", "Degraded", kstatus.FAILED),
        "running": ("CANCELLED", "Degraded", kstatus.FAILED),
        "crashed": ("CRASHED", "Degraded", kstatus.FAILED),
        "paused": ("PAUSED", "Suspended", kstatus.IN_PROGRESS),
        "scheduled": ("SCHEDULED", "Progressing", kstatus.IN_PROGRESS),
    }
    for name, (state_type, health, said) in expected.items():
        obj = run_in(kube_cluster, ns, name, state_type)
        assert verdicts("Run", obj) == (health, said), (name, obj["status"])
    failed = kube_cluster.get("run", "failed", ns)
    assert argocd.health("Run", failed)[1] == "Failed: " + failed["status"]["state"]["message"]
    stalled = {c["type"]: c for c in kube_cluster.get("run", "running", ns)["status"]["conditions"]}
    assert stalled["Stalled"]["reason"] == "Cancelled"


Seen = tuple[bool, str, str, str]  # status written, Argo CD, kstatus, Flux


def watch_runbook(cluster: Cluster, ns: str, name: str, run_name: str) -> list[Seen]:
    """Every verdict the Runbook shows from now until `run_name` has ended."""
    seen = []
    while True:
        obj = cluster.get("runbook", name, ns)
        kind = "Runbook"
        said = (argocd.health(kind, obj)[0], kstatus.compute(obj)[0], flux.health(kind, obj))
        seen.append(("status" in obj, *said))
        runs = {r["metadata"]["name"]: r for r in cluster.items("runs", ns)}
        state = ((runs.get(run_name) or {}).get("status") or {}).get("state") or {}
        if state.get("type") in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return seen
        time.sleep(0.1)


def assert_never_done(seen: list[Seen]) -> None:
    """Nothing read the Runbook as done before its Run ended. kstatus alone reads a Runbook
    the operator has not yet written a status on as Current: the documented window."""
    assert all(argo != "Healthy" and flux_says != "Current" for _, argo, _, flux_says in seen)
    assert all(ks != kstatus.CURRENT for written, _, ks, _ in seen if written), seen


def settled(cluster: Cluster, ns: str, name: str) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        obj = cluster.get("runbook", name, ns)
        return obj if (obj.get("status") or {}).get("activeRuns") == 0 else None

    result: dict[str, Any] = wait_for(f"runbook {name} to settle", probe, timeout=60)
    return result


def test_runbook_is_never_current_before_its_generation_run_ends(
    kube_cluster: Cluster, operator: Operator
) -> None:
    ns = kube_cluster.namespace()
    ops = [{"name": "deploy", "run": "sleep 2; echo v1"}]
    kube_cluster.apply(runbook("app", ops=ops, hosts=1, trigger={"onChange": True}), ns)
    for generation in (1, 2):
        seen = watch_runbook(kube_cluster, ns, "app", f"app-g{generation}")
        assert_never_done(seen)
        if generation == 2:  # the change is read as in progress from the first look
            assert all(written for written, *_ in seen)
            assert seen[0][1:] == ("Progressing", kstatus.IN_PROGRESS, "InProgress")
        assert verdicts("Runbook", settled(kube_cluster, ns, "app")) == (
            "Healthy",
            kstatus.CURRENT,
        )
        ops[0]["run"] = "sleep 2; echo v2"  # a GitOps sync of a changed Runbook
        if generation == 1:
            kube_cluster.apply(runbook("app", ops=ops, hosts=1, trigger={"onChange": True}), ns)

    # A change whose deploy fails: Degraded and Failed, naming the run, until the next change.
    kube_cluster.apply(runbook("app", ops=BAD, hosts=1, trigger={"onChange": True}), ns)
    final_status(kube_cluster, ns, "app-g3")

    def stalled() -> dict[str, Any] | None:
        obj = kube_cluster.get("runbook", "app", ns)
        return obj if kstatus.compute(obj)[0] == kstatus.FAILED else None

    failed = wait_for("the runbook to fail", stalled)
    health, message = argocd.health("Runbook", failed)
    assert health == "Degraded"
    assert message.startswith("run app-g3 of generation 3 Failed: ")
    kube_cluster.apply(runbook("app", ops=OK, hosts=1, trigger={"onChange": True}), ns)
    final_status(kube_cluster, ns, "app-g4")
    assert verdicts("Runbook", settled(kube_cluster, ns, "app")) == ("Healthy", kstatus.CURRENT)


def test_runbooks_invalid_idle_and_busy(kube_cluster: Cluster, operator: Operator) -> None:
    ns = kube_cluster.namespace()
    kube_cluster.apply(runbook("oops", ops=OK, hosts=1, trigger={"schedule": "every tuesday"}), ns)
    kube_cluster.apply(runbook("idle", ops=OK, hosts=1), ns)
    kube_cluster.apply(runbook("busy", ops=LONG, hosts=1), ns)
    kube_cluster.apply(run("r1", "busy"), ns)
    oops = wait_for(
        "oops stalled",
        lambda: (o := kube_cluster.get("runbook", "oops", ns)).get("status") and o,
    )
    assert argocd.health("Runbook", oops) == (
        "Degraded",
        "spec.trigger.schedule: 'every tuesday': a cron expression has 5 fields, "
        "or 6 with seconds last",
    )
    assert kstatus.compute(oops)[0] == kstatus.FAILED
    idle = wait_for(
        "idle status", lambda: (o := kube_cluster.get("runbook", "idle", ns)).get("status") and o
    )
    assert verdicts("Runbook", idle) == ("Healthy", kstatus.CURRENT)
    assert argocd.health("Runbook", idle)[1] == "No runs yet"
    run_in(kube_cluster, ns, "r1", "RUNNING")
    busy = wait_for(
        "busy reconciling",
        lambda: (
            (o := kube_cluster.get("runbook", "busy", ns)).get("status", {}).get("activeRuns") and o
        ),
    )
    assert verdicts("Runbook", busy) == ("Progressing", kstatus.IN_PROGRESS)
    kube_cluster.kubectl("delete", "run", "r1", "-n", ns, "--wait=false")


def test_argocd_cm_patch_applies_as_documented(kube_cluster: Cluster) -> None:
    """The documented `kubectl patch` of argocd-cm leaves exactly the scripts in its data."""
    ns = kube_cluster.namespace()
    kube_cluster.kubectl("create", "configmap", "argocd-cm", "-n", ns, "--from-literal=url=x")
    kube_cluster.kubectl(
        "patch",
        "configmap",
        "argocd-cm",
        "-n",
        ns,
        "--type",
        "merge",
        "--patch-file",
        str(argocd.PATCH),
    )
    data = kube_cluster.get("configmap", "argocd-cm", ns)["data"]
    assert data.pop("url") == "x"
    assert data == {
        f"resource.customizations.health.runstate.dev_{kind}": (
            argocd.SCRIPTS / f"health-{kind.lower()}.lua"
        ).read_text()
        for kind in argocd.KINDS
    }
