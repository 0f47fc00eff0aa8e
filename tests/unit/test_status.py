from datetime import timedelta

from runstate.api.v1alpha1 import HistoryItem
from runstate.kube.status import run_status, runbook_status, status_differs
from tests.unit.sim import T0, runbook, simulate


def test_completed_run_status_has_counts_conditions_and_duration() -> None:
    d = simulate(runbook()).last
    hist = [HistoryItem(from_="", to="PENDING/Pending", at="t0")]
    st = run_status(d, previous={}, generation=3, history=hist, now=T0)
    assert st["state"]["type"] == "COMPLETED" and st["stage"] == "Disconnect"
    assert st["observedGeneration"] == 3
    assert st["hosts"] == {"total": 3, "active": 3, "failed": 0, "limited": 0}
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
