"""What kstatus (Flux) and Argo CD read from the status runstate writes: a Runbook follows the
Run its onChange trigger started for the current generation, from the moment the generation is
seen until that Run ends; a cancelled Run is not Current. Argo CD's verdicts come from the
shipped Lua scripts run by lua5.1 (the objects from the test cluster: tests/integration)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from runstate.domain.triggers import RunToStart, TriggerPlan
from runstate.kube.status import run_status, runbook_status
from tests import argocd, flux, kstatus
from tests.availability import require
from tests.unit.sim import T0, run_spec, runbook, simulate

SPEC = runbook(trigger={"onChange": True})
NAME = "deploy"
GEN_RUN = "deploy-g2"


def _obj(status: dict[str, Any], generation: int = 2) -> dict[str, Any]:
    return {"metadata": {"name": NAME, "generation": generation}, "status": status}


def _run(state_type: str, name: str = GEN_RUN, message: str = "") -> dict[str, Any]:
    state = {"type": state_type, "name": state_type.title(), "message": message}
    return {"metadata": {"name": name, "creationTimestamp": "t"}, "status": {"state": state}}


def _status(runs: list[dict[str, Any]], previous: dict[str, Any], started: bool) -> dict[str, Any]:
    plan = TriggerPlan(
        start=(RunToStart(GEN_RUN, "onChange"),) if started else (),
        last_triggered_generation=2,
    )
    return runbook_status(
        SPEC, None, previous=previous, generation=2, now=T0, plan=plan, runs=runs, name=NAME
    )


def test_runbook_is_in_progress_from_its_new_generation_until_its_run_ends() -> None:
    created = _status([], {}, started=True)
    assert kstatus.compute(_obj(created))[0] == kstatus.IN_PROGRESS
    # The cache has not seen the new Run yet: still in progress, not Current.
    unseen = _status([], created, started=False)
    assert kstatus.compute(_obj(unseen)) == (
        kstatus.IN_PROGRESS,
        "waiting for run deploy-g2 of generation 2 to appear",
    )
    running = _status([_run("RUNNING")], unseen, started=False)
    assert kstatus.compute(_obj(running))[0] == kstatus.IN_PROGRESS
    done = _status([_run("COMPLETED")], running, started=False)
    assert kstatus.compute(_obj(done))[0] == kstatus.CURRENT
    ready = {c["type"]: c["status"] for c in done["conditions"]}["Ready"]
    assert ready == "True"


@pytest.mark.parametrize("state_type", ["FAILED", "CRASHED", "CANCELLED"])
def test_runbook_whose_generation_run_did_not_complete_is_failed(state_type: str) -> None:
    st = _status([_run(state_type, message="1/3 hosts failed.")], {}, started=False)
    verdict, message = kstatus.compute(_obj(st))
    assert verdict == kstatus.FAILED
    assert message == f"run deploy-g2 of generation 2 {state_type.title()}: 1/3 hosts failed."
    # History deleting that Run later does not turn the Runbook Current again.
    later = _status([], st, started=False)
    assert kstatus.compute(_obj(later)) == (verdict, message)


def test_other_runs_failing_do_not_fail_the_runbook() -> None:
    """A scheduled run's failure is the Run's, not the Runbook's: it stays Current."""
    st = _status([_run("COMPLETED"), _run("FAILED", name="deploy-s1")], {}, started=False)
    assert kstatus.compute(_obj(st))[0] == kstatus.CURRENT


def test_new_generation_clears_the_failure() -> None:
    failed = _status([_run("FAILED")], {}, started=False)
    plan = TriggerPlan(start=(RunToStart("deploy-g3", "onChange"),), last_triggered_generation=3)
    st = runbook_status(
        SPEC,
        None,
        previous=failed,
        generation=3,
        now=T0,
        plan=plan,
        runs=[_run("FAILED")],
        name=NAME,
    )
    assert kstatus.compute(_obj(st, generation=3))[0] == kstatus.IN_PROGRESS


def test_cancelled_run_is_stalled_not_current() -> None:
    d = simulate(runbook(), spec=run_spec(cancel=True)).last
    st = run_status(d, previous={}, generation=1, history=[], now=T0)
    assert st["state"]["type"] == "CANCELLED"
    stalled = {c["type"]: c for c in st["conditions"]}["Stalled"]
    assert (stalled["status"], stalled["reason"]) == ("True", "Cancelled")
    assert kstatus.compute(_obj(st, generation=1))[0] == kstatus.FAILED


@pytest.fixture
def lua() -> None:
    """Argo CD's health scripts run in a real Lua 5.1: missing, CI fails (never skips)."""
    require(argocd.lua_available(), "lua5.1 is not installed")


LUA = pytest.mark.usefixtures("lua")


@LUA
@pytest.mark.parametrize(
    ("state_type", "health"),
    [
        ("SCHEDULED", "Progressing"),
        ("PENDING", "Progressing"),
        ("RUNNING", "Progressing"),
        ("CANCELLING", "Progressing"),
        ("PAUSED", "Suspended"),
        ("COMPLETED", "Healthy"),
        ("FAILED", "Degraded"),
        ("CRASHED", "Degraded"),
        ("CANCELLED", "Degraded"),
    ],
)
def test_argocd_run_health_per_state(state_type: str, health: str) -> None:
    obj = _obj({"observedGeneration": 2, **_run(state_type, message="why")["status"]})
    assert argocd.health("Run", obj) == (health, f"{state_type.title()}: why")


@LUA
def test_argocd_run_health_waits_for_the_operator() -> None:
    assert argocd.health("Run", {"metadata": {"generation": 1}})[0] == "Progressing"
    behind = _obj({"observedGeneration": 1, **_run("COMPLETED")["status"]})
    assert argocd.health("Run", behind) == (
        "Progressing",
        "Waiting for the operator to observe generation 2",
    )


@LUA
def test_argocd_runbook_health_follows_the_generation_run() -> None:
    pending = _status([], {}, started=True)
    assert argocd.health("Runbook", _obj(pending)) == (
        "Progressing",
        "waiting for run deploy-g2 of generation 2 to appear",
    )
    failed = _status([_run("FAILED", message="1/1 hosts failed. ünïcode")], {}, started=False)
    assert argocd.health("Runbook", _obj(failed)) == (
        "Degraded",
        "run deploy-g2 of generation 2 Failed: 1/1 hosts failed. ünïcode",
    )
    done = _status([_run("COMPLETED")], {}, started=False)
    assert argocd.health("Runbook", _obj(done)) == ("Healthy", "Last run deploy-g2: Completed")


def test_shipped_argocd_config_carries_the_scripts_verbatim() -> None:
    """argocd-cm-patch.yaml and argo-cd-values.yaml are generated from the Lua files."""
    assert argocd.PATCH.read_text() == argocd.render_patch(), "python -m tests.argocd"
    assert argocd.ARGO_CD_VALUES.read_text() == argocd.render_argo_cd_values()


@pytest.fixture
def cel() -> None:
    """Flux's expressions are evaluated with cel-python (the test extras): required in CI."""
    require(flux.cel_available(), "cel-python is not installed")


CEL = pytest.mark.usefixtures("cel")


@CEL
@pytest.mark.parametrize(
    ("state_type", "verdict"),
    [
        ("SCHEDULED", "InProgress"),
        ("RUNNING", "InProgress"),
        ("PAUSED", "InProgress"),
        ("COMPLETED", "Current"),
        ("FAILED", "Failed"),
        ("CRASHED", "Failed"),
        ("CANCELLED", "Failed"),
    ],
)
def test_flux_run_health_per_state(state_type: str, verdict: str) -> None:
    obj = _obj({"observedGeneration": 2, "conditions": [], **_run(state_type)["status"]})
    assert flux.health("Run", obj) == verdict


@CEL
def test_flux_never_reads_current_before_the_operator_wrote_a_status() -> None:
    assert flux.health("Run", {"metadata": {"generation": 1}}) == "InProgress"
    assert flux.health("Runbook", {"metadata": {"generation": 1}}) == "InProgress"


@CEL
def test_flux_runbook_health_follows_the_generation_run() -> None:
    pending = _status([], {}, started=True)
    failed = _status([_run("FAILED")], {}, started=False)
    done = _status([_run("COMPLETED")], {}, started=False)
    verdicts = [flux.health("Runbook", _obj(st)) for st in (pending, failed, done)]
    assert verdicts == ["InProgress", "Failed", "Current"]


def test_user_guide_shows_the_shipped_flux_expressions() -> None:
    guide = (flux.EXPRS.parents[3] / "docs" / "user-guide.md").read_text()
    block = guide.split("kind: Kustomization\n", 1)[1].split("```", 1)[0]
    shown = yaml.safe_load("kind: Kustomization\n" + block)["spec"]["healthCheckExprs"]
    assert shown == yaml.safe_load(flux.EXPRS.read_text())
