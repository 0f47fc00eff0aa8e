"""The measured client workload: runs walked Pending -> Running -> Completed through a store's
commit, as the operator's workers do (async tasks, or threads for the blocking face).

Owns the walk and the records it commits. Must not time, check or print anything (the child
process does), nor talk to Redis other than through the store it is given.
"""

from __future__ import annotations

import asyncio
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from runstate_stores import (
    AsyncStateStore,
    HistoryEntry,
    StateRecord,
)

WALK = (
    ("PENDING", "Pending", "Setup", ""),
    ("RUNNING", "Running", "Execute", "1 host × 1 operation"),
    ("COMPLETED", "Completed", "Disconnect", "all operations succeeded"),
)
FINAL = f"{WALK[-1][0]}/{WALK[-1][1]}"
LABELS = [f"{t}/{n}" for t, n, _, _ in WALK]
SAMPLE = 50  # runs read back through the store's own API, per row


def run_uid(i: int) -> str:
    """A run UID as Kubernetes makes them (36 characters), deterministic."""
    return str(uuid.UUID(int=(0xB5 << 120) | i))


def rfc3339_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def step(index: int, start: str, previous: str) -> tuple[StateRecord, HistoryEntry]:
    """The record and history entry of a run's `index`-th transition, as the operator builds
    them (its context keeps the attempt's start, the run's start and end)."""
    type_, name, stage, message = WALK[index]
    now = rfc3339_now()
    start = start or now
    context: dict[str, Any] = {"attemptStart": start}
    if type_ != "PENDING":
        context["startTime"] = start
    if type_ == "COMPLETED":
        context["endTime"] = now
    record = StateRecord(
        type=type_, name=name, stage=stage, message=message, timestamp=now, context=context
    )
    entry = HistoryEntry(from_state=previous, to_state=f"{type_}/{name}", at=now, message=message)
    return record, entry


async def walk_runs(committer: AsyncStateStore, uids: list[str], concurrency: int) -> None:
    """`concurrency` workers take runs one at a time and walk each through WALK, each commit
    fenced by the version the previous one returned (the operator caches its record)."""
    todo = iter(uids)

    async def worker() -> None:
        for uid in todo:
            version, previous, start = 0, "", ""
            for index in range(len(WALK)):
                record, entry = step(index, start, previous)
                committed = await committer.acommit(
                    uid, record, expected_version=version, history=[entry]
                )
                version, previous = committed.version, entry.to_state
                start = start or entry.at

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def walk_runs_sync(store: Any, uids: list[str], concurrency: int) -> None:
    """The same walk through the store's blocking `commit`, by `concurrency` threads."""

    def worker(chunk: list[str]) -> None:
        for uid in chunk:
            version, previous, start = 0, "", ""
            for index in range(len(WALK)):
                record, entry = step(index, start, previous)
                committed = store.commit(uid, record, expected_version=version, history=[entry])
                version, previous = committed.version, entry.to_state
                start = start or entry.at

    if concurrency == 1:
        worker(uids)
        return
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(worker, [uids[k::concurrency] for k in range(concurrency)]))
