"""What a decision announces: its Events and metrics, each once. Pure.

Transitions become Events (reason = the state's name) and counts; a run that ends observes its
duration; a stage left observes its time; a new stall reason, a failed hook and new stage
warnings are announced once, by comparing with what `memory.Announced` says was sent already.

It must not do I/O: the applier posts and counts what this returns.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from runstate.api.v1alpha1 import Stage, StateType
from runstate.controller.effects import Announce, Event, Measure, Metric
from runstate.controller.memory import Announced
from runstate.domain.engine import Decision
from runstate.domain.states import seconds_between

FAILURE_TYPES = (StateType.FAILED, StateType.CRASHED)


@dataclass(frozen=True)
class Labels:
    """Metric labels of a run: its namespace and Runbook (never the Run's own name)."""

    namespace: str
    runbook: str


def announce(
    decision: Decision,
    *,
    labels: Labels,
    before: Announced,
    written_warnings: Mapping[str, int] | None,
    mono_now: float,
) -> Announce:
    events: list[Event] = []
    measures: list[Measure] = []
    _transitions(decision, labels, events, measures)
    stage = decision.progress.stage.value
    since = before.stage_since
    if since is not None and since[0] != stage:
        measures.append(Measure(Metric.STAGE_DURATION, (since[0],), mono_now - since[1]))
    entered = since if since is not None and since[0] == stage else (stage, mono_now)
    stalled = decision.stalled
    failed_now = any(to.type is StateType.FAILED for _, to in decision.transitions)
    if stalled is not None and stalled.reason != before.stalled_reason and not failed_now:
        events.append(Event(stalled.reason, stalled.message))
    hook_marks = _hooks(decision, labels, before, events, measures)
    warnings = None
    if decision.summary is not None:
        warnings = decision.summary.stage_warnings.model_dump()
        counted = before.warnings if before.warnings is not None else (written_warnings or {})
        for stage_name, n in warnings.items():
            delta = n - int(counted.get(stage_name, 0))
            if delta > 0:
                measures.append(Measure(Metric.STAGE_WARNINGS, (*_pair(labels), stage_name), delta))
    return Announce(
        events=tuple(events),
        measures=tuple(measures),
        warnings=warnings,
        stalled_reason=stalled.reason if stalled else None,
        hook_failures=hook_marks,
        stage=entered,
    )


def _pair(labels: Labels) -> tuple[str, str]:
    return (labels.namespace, labels.runbook)


def _transitions(
    decision: Decision, labels: Labels, events: list[Event], measures: list[Measure]
) -> None:
    last = len(decision.transitions) - 1
    for i, (frm, to) in enumerate(decision.transitions):
        measures.append(
            Measure(Metric.STATE_TRANSITIONS, (frm.type.value if frm else "", to.type.value))
        )
        if to.type in FAILURE_TYPES:
            reason = decision.failure_reason or "infrastructure"
            measures.append(Measure(Metric.RUN_FAILURES, (*_pair(labels), to.type.value, reason)))
        # A Pending the run left within the same decision (accepted and started at once) is
        # in the history; an Event of its own would cost an API write and say nothing.
        if to.type is StateType.PENDING and i < last:
            continue
        events.append(Event(str(to.name), to.message))
    p = decision.progress
    if decision.final and decision.transitions:
        seconds = seconds_between(p.start_time, p.end_time)
        if seconds is not None:
            measures.append(Measure(Metric.RUN_DURATION, (), seconds))


def _hooks(
    decision: Decision,
    labels: Labels,
    before: Announced,
    events: list[Event],
    measures: list[Measure],
) -> frozenset[tuple[str, str]]:
    """A failed hook is a Disconnect warning, never a state change: an Event says which."""
    marks: set[tuple[str, str]] = set()
    announced = before.hook_failures or set()
    for hook in decision.hook_failures:
        key = (hook.name, hook.host or "")
        if key in announced or key in marks:
            continue
        marks.add(key)
        measures.append(Measure(Metric.STAGE_WARNINGS, (*_pair(labels), Stage.Disconnect.value)))
        where = f" on {hook.host}" if hook.host else ""
        message = f"{hook.on} hook {hook.name}{where} {hook.result.lower()}: {hook.message}"
        events.append(Event("HookFailed", message))
    return frozenset(marks)
