"""Run history of a Runbook: which of the finished Runs it started are deleted, and when.

Owns the rule of `spec.history` (as a CronJob's history limits and a Job's
ttlSecondsAfterFinished): keep the newest `keepRuns` finished Runs, and none longer than
`ttlSecondsAfterFinished` after it ended. Runs still under way are never candidates; Runs a user
created are not the Runbook's to delete, which the caller sees to by what it passes in.

It must not do I/O or know about Kubernetes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from runstate.api.v1alpha1 import History


@dataclass(frozen=True)
class FinishedRun:
    name: str
    ended_at: datetime


@dataclass(frozen=True)
class Expiry:
    delete: tuple[str, ...]  # names, sorted
    next_in: float | None  # seconds until the next kept Run reaches its TTL
    by_count: int  # how many go for keepRuns (the rest for the TTL), for the Event


def expired(finished: Sequence[FinishedRun], history: History, now: datetime) -> Expiry:
    newest_first = sorted(finished, key=lambda r: (r.ended_at, r.name), reverse=True)
    over = newest_first[history.keep_runs :] if history.keep_runs is not None else []
    delete = {r.name for r in over}
    next_in: float | None = None
    ttl = history.ttl_seconds_after_finished
    if ttl is not None:
        for run in newest_first:
            if run.name in delete:
                continue
            due = run.ended_at + timedelta(seconds=ttl)
            if now >= due:
                delete.add(run.name)
            else:
                wait = (due - now).total_seconds()
                next_in = wait if next_in is None else min(next_in, wait)
    return Expiry(tuple(sorted(delete)), next_in, len(over))


def deleted_message(expiry: Expiry, history: History, deleted: Sequence[str]) -> str:
    """The RunsDeleted Event: how many went, why, and the first names."""
    reasons = []
    if expiry.by_count:
        reasons.append(f"{expiry.by_count} over history.keepRuns {history.keep_runs}")
    if len(expiry.delete) > expiry.by_count:
        reasons.append(
            f"{len(expiry.delete) - expiry.by_count} older than "
            f"history.ttlSecondsAfterFinished {history.ttl_seconds_after_finished}s"
        )
    names = ", ".join(deleted[:10]) + (" …" if len(deleted) > 10 else "")
    return f"Deleted {len(deleted)} finished Run(s) ({', '.join(reasons)}): {names}"
