"""Status of Runs and Runbooks: pure builders of what is written back onto the resources.

`run_status()` turns a decision of the engine into the complete `status` a Run should show:
state, stage, counts, capped lists, history and kstatus conditions (Ready / Reconciling /
Stalled). The controller compares it with what the object already shows and writes only when
they differ, so an unchanged reconcile costs no API write.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from runstate.api.v1alpha1 import (
    Condition,
    HistoryItem,
    LastRun,
    RunbookSpec,
    RunStatus,
    StageWarnings,
    StateType,
)
from runstate.domain.engine import Decision
from runstate.domain.hooks import is_failure as hook_failed
from runstate.domain.states import is_final, rfc3339, seconds_between
from runstate.domain.triggers import TriggerPlan

HISTORY_IN_STATUS = 20


def _conditions(
    wanted: Sequence[tuple[str, bool, str, str]],
    previous: Sequence[Mapping[str, Any]] | None,
    generation: int,
    now: datetime,
) -> list[dict[str, Any]]:
    """kstatus conditions; lastTransitionTime moves only when a condition's status changes."""
    before = {c.get("type"): c for c in previous or []}
    out = []
    for ctype, truth, reason, message in wanted:
        status = "True" if truth else "False"
        old = before.get(ctype)
        since = old.get("lastTransitionTime") if old and old.get("status") == status else None
        cond = Condition(
            type=ctype,
            status=status,
            reason=reason,
            message=message,
            last_transition_time=since or rfc3339(now),
            observed_generation=generation,
        )
        out.append(cond.model_dump(by_alias=True, exclude_none=True))
    return out


def run_status(
    decision: Decision,
    *,
    previous: Mapping[str, Any],
    generation: int,
    history: Sequence[HistoryItem],
    now: datetime,
) -> dict[str, Any]:
    """The whole `status` of a Run after `decision`."""
    p = decision.progress
    state = p.state
    final = is_final(state.type)
    summary = decision.summary
    stalled = decision.stalled
    if stalled is None and state.type in (StateType.FAILED, StateType.CRASHED):
        reason, message = str(state.name), state.message
        stalled_flag = True
    elif stalled is not None:
        reason, message, stalled_flag = stalled.reason, stalled.message, True
    else:
        reason, message, stalled_flag = "", "", False
    # A run that ended is still reconciling while its hooks run, and only then.
    if not final:
        reconciling = (not stalled_flag, p.stage.value, state.message)
    elif not decision.settled:
        reconciling = (not stalled_flag, "Hooks", "state hooks running")
    else:
        reconciling = (False, str(state.name), "")
    conditions = _conditions(
        [
            ("Ready", state.type is StateType.COMPLETED, str(state.name), state.message),
            ("Reconciling", *reconciling),
            ("Stalled", stalled_flag, reason, message),
        ],
        previous.get("conditions"),
        generation,
        now,
    )
    status = RunStatus(
        observed_generation=generation,
        state=state,
        stage=p.stage,
        attempt=p.attempt,
        history=list(history)[-HISTORY_IN_STATUS:],
        start_time=p.start_time,
        end_time=p.end_time,
    )
    out = status.model_dump(by_alias=True, exclude_none=True, mode="json")
    out["conditions"] = conditions
    duration = seconds_between(p.start_time, p.end_time)
    if duration is not None:
        out["durationSeconds"] = round(duration, 3)
    if summary is not None:
        out["hosts"] = summary.hosts.model_dump(by_alias=True)
        out["hostsSummary"] = f"{summary.hosts_ok}/{summary.hosts.total}"
        out["stageWarnings"] = summary.stage_warnings.model_dump(by_alias=True)
        out["operations"] = [o.model_dump(by_alias=True) for o in summary.operations]
        out["failedHosts"] = [
            f.model_dump(by_alias=True, exclude_none=True, mode="json")
            for f in summary.failed_hosts
        ]
        if summary.plan is not None:
            out["plan"] = [pl.model_dump(by_alias=True) for pl in summary.plan]
    else:
        # A decision without a summary (waiting for the runbook, failed at Setup) keeps
        # whatever counts the status had.
        for field in (
            "hosts",
            "hostsSummary",
            "stageWarnings",
            "operations",
            "failedHosts",
            "plan",
        ):
            if field in previous:
                out[field] = previous[field]
    if decision.hooks is not None:
        _hooks(out, decision, previous, summary_given=summary is not None)
    elif "hooks" in previous:
        out["hooks"] = previous["hooks"]
    return out


def _failed_hooks(items: Sequence[Mapping[str, Any]]) -> int:
    return sum(1 for h in items if hook_failed(h.get("result")))


def _hooks(
    out: dict[str, Any], decision: Decision, previous: Mapping[str, Any], *, summary_given: bool
) -> None:
    """`status.hooks`, and each failed hook as a Disconnect warning. Idempotent: the warnings
    the previous status counted for hooks are taken out before this decision's are added."""
    out["hooks"] = [
        h.model_dump(by_alias=True, exclude_none=True, mode="json") for h in decision.hooks or ()
    ]
    warnings = dict(out.get("stageWarnings") or {})
    base = int(warnings.get("Disconnect") or 0)
    if not summary_given:
        base -= _failed_hooks(previous.get("hooks") or [])
    warnings["Disconnect"] = max(0, base) + len(decision.hook_failures)
    out["stageWarnings"] = {**StageWarnings().model_dump(by_alias=True), **warnings}


def status_differs(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """True when writing `wanted` would change what the object shows."""
    return any(current.get(k) != v for k, v in wanted.items())


def runbook_status(
    spec: RunbookSpec | None,
    problem: str | None,
    *,
    previous: Mapping[str, Any],
    generation: int,
    now: datetime,
    plan: TriggerPlan | None = None,
    runs: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """A Runbook's status: validation as kstatus conditions, what its triggers did, and an
    aggregate of its Runs (last run, active runs, counts by state type)."""
    ok = problem is None
    # Every key always present: the status is merge-patched, where a key left out is kept.
    counts: dict[str, int] = {t.value: 0 for t in StateType} | {"NONE": 0}
    active = 0
    last: Mapping[str, Any] | None = None
    for run in runs:
        state = (run.get("status") or {}).get("state") or {}
        kind = state.get("type") or "NONE"
        counts[kind] = counts.get(kind, 0) + 1
        if kind not in ("COMPLETED", "FAILED", "CANCELLED", "CRASHED"):
            active += 1
        meta = run.get("metadata") or {}
        order = (meta.get("creationTimestamp") or "", meta.get("name") or "")
        if last is None or order > (
            last["metadata"].get("creationTimestamp") or "",
            last["metadata"].get("name") or "",
        ):
            last = run
    # Reconciling while runs are active: GitOps tools show a deploy in progress, not healthy.
    busy = ok and active > 0
    out: dict[str, Any] = {
        "observedGeneration": generation,
        "conditions": _conditions(
            [
                ("Ready", ok, "Valid" if ok else "InvalidSpec", "" if ok else str(problem)),
                (
                    "Reconciling",
                    busy,
                    "RunsActive" if busy else "",
                    f"{active} run(s) active" if busy else "",
                ),
                ("Stalled", not ok, "" if ok else "InvalidSpec", "" if ok else str(problem)),
            ],
            previous.get("conditions"),
            generation,
            now,
        ),
    }
    if spec is not None:
        if spec.inventory.node_selector is None:  # Nodes are counted per run
            out["hosts"] = len(spec.inventory.hosts)
        out["operations"] = len(spec.operations)
    for field in (
        "lastTriggeredGeneration",
        "lastScheduleTime",
        "nextScheduledTime",
        "missedSchedules",
    ):
        if previous.get(field) is not None:
            out[field] = previous[field]
    if plan is not None:
        if plan.last_triggered_generation is not None:
            out["lastTriggeredGeneration"] = plan.last_triggered_generation
        if plan.last_schedule_time is not None:
            out["lastScheduleTime"] = plan.last_schedule_time
        if plan.next_scheduled_time is not None:
            out["nextScheduledTime"] = plan.next_scheduled_time
        if plan.missed:
            out["missedSchedules"] = int(previous.get("missedSchedules") or 0) + plan.missed
    out["activeRuns"] = active
    out["runs"] = counts
    if last is not None:
        state = (last.get("status") or {}).get("state") or {}
        out["lastRun"] = LastRun(
            name=last["metadata"]["name"],
            type=state.get("type"),
            state=state.get("name"),
            created=last["metadata"].get("creationTimestamp"),
        ).model_dump(by_alias=True, exclude_none=True, mode="json")
    return out
