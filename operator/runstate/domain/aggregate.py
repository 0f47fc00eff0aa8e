"""How host outcomes become a run's final state: FAIL_PERCENT and Prefect's aggregate rule.

pyinfra stops a deploy when more than FAIL_PERCENT of the activated hosts failed, or when no
host is left; Prefect's aggregate rule turns many states into one (all completed → COMPLETED,
any cancelled → CANCELLED, any paused → PAUSED, else FAILED, with "n/m ... " messages).
runstate adds one thing: failures within a configured `failPercent` are tolerated, so such a
run completes, and says how many hosts failed.

It owns these two rules only: it must not move a run's state (the engine does, from the verdict
planner) and does no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from runstate.api.v1alpha1 import StateType


@dataclass(frozen=True)
class Verdict:
    type: StateType
    message: str


def percent_failed(activated: int, active: int) -> float:
    """pyinfra: (1 - active / activated) * 100."""
    if activated <= 0:
        return 0.0
    return (1 - active / activated) * 100


def fail_percent_stop(activated: int, active: int, fail_percent: int | None) -> str | None:
    """The message that stops the run, or None to carry on (pyinfra's fail_hosts)."""
    if activated and not active:
        return f"No hosts remaining! ({activated}/{activated} hosts failed)"
    if fail_percent is None:
        return None
    failed = percent_failed(activated, active)
    if failed > fail_percent:
        return f"Over {fail_percent}% of hosts failed ({round(failed)}%)"
    return None


def aggregate(
    outcomes: Sequence[StateType], fail_percent: int | None = None, changed: int | None = None
) -> Verdict:
    """Prefect's aggregate rule over per-host outcomes (COMPLETED / FAILED / CANCELLED / ...)."""
    total = len(outcomes)
    done = sum(1 for o in outcomes if o is StateType.COMPLETED)
    cancelled = sum(1 for o in outcomes if o is StateType.CANCELLED)
    paused = sum(1 for o in outcomes if o is StateType.PAUSED)
    failed = sum(1 for o in outcomes if o in (StateType.FAILED, StateType.CRASHED))
    suffix = f" ({changed} changed)" if changed is not None else ""
    if done == total:
        return Verdict(StateType.COMPLETED, f"All {total} hosts completed{suffix}.")
    if cancelled:
        return Verdict(StateType.CANCELLED, f"{cancelled}/{total} hosts cancelled.")
    if paused:
        return Verdict(StateType.PAUSED, f"{paused}/{total} hosts paused.")
    if failed and fail_percent is not None and failed + done == total:
        # The stop rule already ran: reaching here means the failures are within failPercent.
        return Verdict(
            StateType.COMPLETED,
            f"{failed}/{total} hosts failed (within failPercent {fail_percent}%){suffix}.",
        )
    if failed:
        return Verdict(StateType.FAILED, f"{failed}/{total} hosts failed.")
    return Verdict(StateType.FAILED, f"{total - done}/{total} hosts are not final.")
