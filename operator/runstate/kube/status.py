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
from runstate.domain.triggers import TriggerPlan, generation_run_name

HISTORY_IN_STATUS = 20
_UNSUCCESSFUL = (StateType.FAILED, StateType.CRASHED, StateType.CANCELLED)
_FINAL = ("COMPLETED", "FAILED", "CANCELLED", "CRASHED")
# Runbook condition reasons about the Run its onChange trigger started for its generation.
RUN_PENDING = "GenerationRunPending"
RUN_ACTIVE = "GenerationRunActive"
RUN_UNSUCCESSFUL = "GenerationRunFailed"

Wanted = tuple[str, bool, str, str]


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
    # Stalled: the run will not get its work done by itself. A cancelled run is one of them:
    # to deploy what it was for, a person starts a new one.
    if stalled is None and state.type in _UNSUCCESSFUL:
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
            out["plan"] = [pl.model_dump(by_alias=True, exclude_none=True) for pl in summary.plan]
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


def _generation_run(
    name: str,
    spec: RunbookSpec | None,
    generation: int,
    triggered: int | None,
    runs: Sequence[Mapping[str, Any]],
) -> tuple[str | None, Mapping[str, Any] | None]:
    """The name of the Run the onChange trigger started for this generation (None when it
    started none), and that Run if the operator sees it."""
    if spec is None or not spec.trigger.on_change or triggered != generation or not name:
        return None, None
    wanted = generation_run_name(name, generation)
    return wanted, next((r for r in runs if (r.get("metadata") or {}).get("name") == wanted), None)


def _previous(previous: Mapping[str, Any], ctype: str, generation: int) -> Mapping[str, Any]:
    """A condition of the previous status, if it was about this generation."""
    for cond in previous.get("conditions") or []:
        if cond.get("type") == ctype and cond.get("observedGeneration") == generation:
            return dict(cond)
    return {}


def _follow(reason: str, message: str, *, ended: bool) -> list[Wanted]:
    """Not Ready; Reconciling until the followed Run ended, Stalled once it ended badly."""
    return [
        ("Ready", False, reason, message),
        ("Reconciling", not ended, "" if ended else reason, "" if ended else message),
        ("Stalled", ended, reason if ended else "", message if ended else ""),
    ]


def _unseen_run(
    run_name: str, *, started_now: bool, previous: Mapping[str, Any], generation: int
) -> list[Wanted] | None:
    """This generation's Run is not in the cache: just created (pending until it is), or
    deleted by history after it ended (a failure is kept, a success has nothing to keep)."""
    stalled = _previous(previous, "Stalled", generation)
    if stalled.get("reason") == RUN_UNSUCCESSFUL and stalled.get("status") == "True":
        return _follow(RUN_UNSUCCESSFUL, str(stalled.get("message") or ""), ended=True)
    pending = _previous(previous, "Reconciling", generation).get("reason") == RUN_PENDING
    if not (started_now or pending):
        return None
    message = f"waiting for run {run_name} of generation {generation} to appear"
    return _follow(RUN_PENDING, message, ended=False)


def _seen_run(run_name: str, run: Mapping[str, Any], generation: int) -> list[Wanted] | None:
    """In progress until this generation's Run ends, stalled if it did not complete."""
    state = (run.get("status") or {}).get("state") or {}
    kind = state.get("type")
    if kind == "COMPLETED":
        return None
    if kind not in _FINAL:
        message = f"run {run_name} of generation {generation} is {state.get('name') or 'new'}"
        return _follow(RUN_ACTIVE, message, ended=False)
    said = str(state.get("message") or "")
    message = f"run {run_name} of generation {generation} {state.get('name')}: {said}"
    return _follow(RUN_UNSUCCESSFUL, message, ended=True)


def _generation_conditions(
    name: str,
    spec: RunbookSpec | None,
    generation: int,
    previous: Mapping[str, Any],
    plan: TriggerPlan | None,
    runs: Sequence[Mapping[str, Any]],
) -> list[Wanted] | None:
    """The conditions that follow the Run the onChange trigger started for `generation`;
    None when there is none to follow."""
    triggered = previous.get("lastTriggeredGeneration")
    if plan is not None and plan.last_triggered_generation is not None:
        triggered = plan.last_triggered_generation
    run_name, run = _generation_run(name, spec, generation, triggered, runs)
    if run_name is None:
        return None
    if run is not None:
        return _seen_run(run_name, run, generation)
    started_now = plan is not None and any(s.name == run_name for s in plan.start)
    return _unseen_run(run_name, started_now=started_now, previous=previous, generation=generation)


def _runbook_conditions(problem: str | None, active: int) -> list[Wanted]:
    if problem is not None:
        return [
            ("Ready", False, "InvalidSpec", problem),
            ("Reconciling", False, "", ""),
            ("Stalled", True, "InvalidSpec", problem),
        ]
    # Reconciling while runs are active: GitOps tools show a deploy in progress, not healthy.
    busy = active > 0
    return [
        ("Ready", True, "Valid", ""),
        (
            "Reconciling",
            busy,
            "RunsActive" if busy else "",
            f"{active} run(s) active" if busy else "",
        ),
        ("Stalled", False, "", ""),
    ]


def _aggregate(
    runs: Sequence[Mapping[str, Any]],
) -> tuple[dict[str, int], int, Mapping[str, Any] | None]:
    """Counts by state type (every key present: the status is merge-patched, where a key left
    out is kept), the number of active runs, and the newest run."""
    counts: dict[str, int] = {t.value: 0 for t in StateType} | {"NONE": 0}
    active = 0
    last: Mapping[str, Any] | None = None
    for run in runs:
        state = (run.get("status") or {}).get("state") or {}
        kind = state.get("type") or "NONE"
        counts[kind] = counts.get(kind, 0) + 1
        if kind not in _FINAL:
            active += 1
        if last is None or _order(run) > _order(last):
            last = run
    return counts, active, last


def _order(run: Mapping[str, Any]) -> tuple[str, str]:
    meta = run.get("metadata") or {}
    return (meta.get("creationTimestamp") or "", meta.get("name") or "")


def runbook_status(
    spec: RunbookSpec | None,
    problem: str | None,
    *,
    previous: Mapping[str, Any],
    generation: int,
    now: datetime,
    plan: TriggerPlan | None = None,
    runs: Sequence[Mapping[str, Any]] = (),
    name: str = "",
) -> dict[str, Any]:
    """A Runbook's status: validation as kstatus conditions, what its triggers did, and an
    aggregate of its Runs (last run, active runs, counts by state type).

    With an onChange trigger, the conditions follow the Run started for the current
    generation: Reconciling from the new generation until that Run ends (no "Current" window
    before it appears), Stalled when it did not complete."""
    counts, active, last = _aggregate(runs)
    wanted = _runbook_conditions(problem, active)
    if problem is None:
        wanted = _generation_conditions(name, spec, generation, previous, plan, runs) or wanted
    out: dict[str, Any] = {
        "observedGeneration": generation,
        "conditions": _conditions(wanted, previous.get("conditions"), generation, now),
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
