from datetime import timedelta

from runstate.api.v1alpha1 import FINALIZER, HistoryItem, StateType
from runstate.domain.triggers import RunToStart
from runstate.kube.runs import build_run
from runstate.kube.status import run_status, runbook_status, status_differs
from tests.unit.sim import T0, runbook, simulate


def test_completed_run_status_has_counts_conditions_and_duration() -> None:
    d = simulate(runbook()).last
    hist = [HistoryItem(from_="", to="PENDING/Pending", at="t0")]
    st = run_status(d, previous={}, generation=3, history=hist, now=T0)
    assert st["state"]["type"] == "COMPLETED" and st["stage"] == "Disconnect"
    assert st["observedGeneration"] == 3
    assert st["hosts"] == {"total": 3, "active": 3, "failed": 0, "unreachable": 0, "limited": 0}
    assert st["hostsSummary"] == "3/3"
    assert st["history"] == [{"from": "", "to": "PENDING/Pending", "at": "t0", "message": ""}]
    conds = {c["type"]: c for c in st["conditions"]}
    assert conds["Ready"]["status"] == "True"
    assert conds["Reconciling"]["status"] == "False"
    assert conds["Stalled"]["status"] == "False"
    assert st["durationSeconds"] >= 0
    # Writing the same status again changes nothing, so the controller skips the API write.
    again = run_status(d, previous=st, generation=3, history=hist, now=T0 + timedelta(hours=1))
    assert not status_differs(st, again)


def test_failed_run_is_stalled_for_kstatus() -> None:
    d = simulate(runbook(), outcome=lambda k: 1).last
    st = run_status(d, previous={}, generation=1, history=[], now=T0)
    conds = {c["type"]: c for c in st["conditions"]}
    assert conds["Ready"]["status"] == "False" and conds["Stalled"]["status"] == "True"
    assert conds["Stalled"]["reason"] == "Failed"
    assert len(st["failedHosts"]) == 3


def test_runbook_status_names_the_problem() -> None:
    st = runbook_status(
        None, "spec.operations: dependency cycle: a → b → a", previous={}, generation=2, now=T0
    )
    conds = {c["type"]: c for c in st["conditions"]}
    assert conds["Ready"]["status"] == "False"
    assert conds["Stalled"]["message"] == "spec.operations: dependency cycle: a → b → a"


def _run_body(name: str, created: str, state_type: str | None) -> dict[str, object]:
    st = {"state": {"type": state_type, "name": state_type.title()}} if state_type else {}
    return {"metadata": {"name": name, "creationTimestamp": created}, "status": st}


def test_runbook_status_aggregates_runs_and_reconciles_while_any_is_active() -> None:
    runs = [
        _run_body("a", "2026-11-24T11:00:00Z", "COMPLETED"),
        _run_body("b", "2026-11-24T11:30:00Z", "FAILED"),
        _run_body("c", "2026-11-24T11:45:00Z", "RUNNING"),
    ]
    st = runbook_status(None, None, previous={}, generation=1, now=T0, runs=runs)
    assert {k: v for k, v in st["runs"].items() if v} == {"COMPLETED": 1, "FAILED": 1, "RUNNING": 1}
    # Every key is written, zeros too: a merge patch would keep a key that is left out.
    assert set(st["runs"]) == {t.value for t in StateType} | {"NONE"}
    assert st["activeRuns"] == 1
    assert st["lastRun"] == {
        "name": "c",
        "type": "RUNNING",
        "state": "Running",
        "created": "2026-11-24T11:45:00Z",
    }
    conds = {c["type"]: c for c in st["conditions"]}
    assert conds["Ready"]["status"] == "True"
    assert (conds["Reconciling"]["status"], conds["Reconciling"]["message"]) == (
        "True",
        "1 run(s) active",
    )
    idle = runbook_status(None, None, previous=st, generation=1, now=T0, runs=runs[:2])
    assert {c["type"]: c["status"] for c in idle["conditions"]}["Reconciling"] == "False"


def test_runs_a_runbook_starts_carry_the_cleanup_finalizer() -> None:
    run = build_run(
        runbook="rb", runbook_uid="u", namespace="ns", run=RunToStart("rb-g2", "onChange", None)
    )
    assert run["metadata"]["finalizers"] == [FINALIZER] == ["runstate.dev/cleanup"]
