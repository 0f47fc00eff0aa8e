"""The concurrency queue of a Runbook: who gets a free slot first. Pure.

Runs that wait for a slot (policy Queue or Replace) are served first in, first out: by
creation time, then by name, so every replica and every restart sees the same order. The
slots themselves are leases in the store; this module only says whether a run may try.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime

from runstate.api.v1alpha1 import RunState, StateType
from runstate.domain.states import is_final, parse_time


@dataclass(frozen=True)
class QueuedRun:
    """What the queue needs of a run of the Runbook."""

    created: str  # creationTimestamp (RFC 3339, so it sorts as text)
    name: str
    uid: str
    state_type: StateType | None = None  # None: not reconciled yet
    start_at: datetime | None = None  # when it is scheduled to start, if it waits for a time


def queued_ahead(
    me: QueuedRun, runs: Iterable[QueuedRun], holders: Collection[str], now: datetime
) -> int:
    """How many runs created before `me` also wait for a slot: a free one is theirs first.

    Holders have a slot; final runs want none; a run scheduled for later is not in the
    queue yet; a run not reconciled yet came first and will want one."""
    ahead = 0
    for run in runs:
        if (run.created, run.name) >= (me.created, me.name) or run.uid in holders:
            continue
        if run.state_type is not None and is_final(run.state_type):
            continue
        if run.start_at is not None and run.start_at > now:
            continue
        ahead += 1
    return ahead


def needs_slot(state: RunState | None, *, scheduled_time: str | None, now: datetime) -> bool:
    """Whether a run must hold a concurrency slot now: it is about to start, or live.

    A new run needs one unless it is scheduled for later; an ended run needs none; a
    scheduled run needs one once its time has come, or while it waits for a slot or a retry
    (so that it keeps its place)."""
    if state is None:
        start_at = parse_time(scheduled_time)
        return start_at is None or start_at <= now
    if is_final(state.type):
        return False
    if state.type is not StateType.SCHEDULED:
        return True
    if state.name in ("AwaitingConcurrencySlot", "AwaitingRetry"):
        return True
    return (parse_time(state.scheduled_time) or now) <= now
