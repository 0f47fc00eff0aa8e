"""Disconnect's verdict: is the attempt over, and how did it end?

Owns the order of the rules: a paused run reaches no verdict; a run-level timeout fails the
attempt (and stops its pods); a dry run completes once its plan is known; a run whose pods are
all over completes or fails by FAIL_PERCENT and Prefect's aggregate rule; otherwise it looks
again at its deadline. It returns a `VerdictPlan`; moving the run's state (and retrying a
failed attempt) is the engine's.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from runstate.api.v1alpha1 import StateType
from runstate.domain.aggregate import aggregate
from runstate.domain.planners.execute import ExecutePlan


class Ruling(enum.Enum):
    COMPLETE = "complete"
    FAIL = "fail"  # the attempt failed: retried while retries remain, else Failed


@dataclass(frozen=True)
class VerdictPlan:
    ruling: Ruling | None = None  # None: no verdict yet
    message: str = ""
    reason: str | None = None  # bounded failure code for metrics (a FAIL ruling)
    stop_pods: bool = False  # stop this attempt's pods and start none (a timeout)
    requeue_after: float | None = None  # no verdict: look again after this many seconds


@dataclass(frozen=True)
class Clock:
    """The attempt's time: `deadline` (None: no run timeout, or paused) and `now`."""

    now: datetime
    deadline: datetime | None = None
    timeout: int | None = None  # seconds, for the message
    hold_for: float | None = None  # paused: when to look again

    @property
    def timed_out(self) -> bool:
        return self.deadline is not None and self.now >= self.deadline


def plan_verdict(
    hosts: Sequence[str],
    execute: ExecutePlan,
    *,
    operations: int,
    changed: int,
    executing: bool,
    dry_run_ready: bool,
    busy: bool,
    hold: bool,
    clock: Clock,
    fail_percent: int | None,
) -> VerdictPlan:
    """`busy`: some pod of the run is running, or this decision starts one. A verdict comes
    only once none of the run's pods runs any more (a check of a host that already failed may
    still be running): the next attempt must not overlap this one."""
    failed = execute.failed
    if hold:
        return VerdictPlan(requeue_after=clock.hold_for)
    if clock.timed_out:
        message = f"Run timed out after {clock.timeout}s"
        return VerdictPlan(Ruling.FAIL, message, "timeout", stop_pods=True)
    if dry_run_ready:
        active = len(hosts) - len(failed)
        message = f"Dry run: {changed} change(s) planned on {active} host(s)"
        return VerdictPlan(Ruling.COMPLETE, message)
    all_done = len(execute.finished) == operations
    if executing and not busy and (all_done or execute.stop is not None):
        if execute.stop is not None:
            reason = "no_hosts" if execute.stop.startswith("No hosts") else "fail_percent"
            return VerdictPlan(Ruling.FAIL, execute.stop, reason)
        outcomes = [StateType.FAILED if h in failed else StateType.COMPLETED for h in hosts]
        final = aggregate(outcomes, fail_percent, changed)
        if final.type is StateType.COMPLETED:
            return VerdictPlan(Ruling.COMPLETE, final.message)
        return VerdictPlan(Ruling.FAIL, final.message, "hosts_failed")
    if clock.deadline is not None:
        return VerdictPlan(requeue_after=max(0.0, (clock.deadline - clock.now).total_seconds()))
    return VerdictPlan()
