"""Pod retention at Disconnect: which pods of an ended run go, and when.

Owns the documented policy (`config.podRetention`): a pod whose command did its job is deleted
`succeededSeconds` after the run ended (at once by default), a failed one is kept
`failedSeconds` (a day by default) so that `kubectl logs` can still say why. Hook pods are
never deleted here: they are the only record of what a hook did, and deleting one would make
its hook look lost. The Run's deletion removes every pod through its owner reference.

It must not do I/O or know about Kubernetes: it sees units of work, not pods.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from runstate.api.v1alpha1 import PodRetention
from runstate.domain.states import rfc3339
from runstate.domain.work import CheckResult, Kind, Observed, Phase, WorkKey, classify_check


@dataclass(frozen=True)
class Cleanup:
    delete: tuple[WorkKey, ...]  # due now
    kept: int  # finished pods that stay for now
    next_in: float | None  # seconds until the next pod is due, if any
    # Every pod the policy covers is due and finished: one delete-by-label can take them all.
    everything: bool = False
    # Some of `delete` had been kept a while: their going is news (a Normal Event says so).
    overdue: bool = False


def failed(unit: Observed) -> bool:
    """Did this unit's command fail? A check that answered "change needed" (exit 1–125) did
    its job even though its pod's phase is Failed."""
    if unit.phase is not Phase.FAILED:
        return False
    if unit.key.kind is Kind.CHECK:
        return classify_check(unit) is CheckResult.ERROR
    return True


def cleanup(
    units: Iterable[Observed], ended_at: datetime, now: datetime, policy: PodRetention
) -> Cleanup:
    """The finished pods of a run that ended at `ended_at` that are due for deletion."""
    delete: list[WorkKey] = []
    kept = 0
    next_in: float | None = None
    running = False
    overdue = False
    for unit in units:
        if unit.key.kind is Kind.HOOK:
            continue
        # Pods still running (a crash or cancel is stopping them) and pods already on their
        # way out are not this policy's business.
        if not unit.finished or unit.deleting:
            running = running or not unit.finished
            continue
        keep = policy.failed_seconds if failed(unit) else policy.succeeded_seconds
        due = ended_at + timedelta(seconds=keep)
        if now >= due:
            delete.append(unit.key)
            overdue = overdue or keep > 0
        else:
            kept += 1
            wait = (due - now).total_seconds()
            next_in = wait if next_in is None else min(next_in, wait)
    everything = bool(delete) and not kept and not running
    return Cleanup(tuple(sorted(delete)), kept, next_in, everything, overdue)


def deleted_message(cleanup: Cleanup, deleted: int, now: datetime) -> str | None:
    """The PodsDeleted Event, or None: pods of a run that simply succeeded going at once is
    the policy, not news; pods that stay, or go after having stayed, are."""
    if not cleanup.kept and not cleanup.overdue:
        return None
    message = f"Deleted {deleted} pod(s) of the ended run (config.podRetention)"
    if cleanup.kept and cleanup.next_in is not None:
        until = rfc3339(now + timedelta(seconds=cleanup.next_in))
        message += f"; {cleanup.kept} kept, the next to go at {until}"
    return message
