"""The embedded in-memory state store: the default when no Redis is configured.

Owns `InMemoryStateStore`, a `StateStore` and an `AsyncStateStore` that keeps every run's hot
state in this process. Its observable behaviour must match `RedisStateStore` (same compare-and-set
fence, same JSON round trip of context and results, same history cap on read, same lease rules),
so the operator and the contract tests cannot tell the two apart except by `name` and durability.

The blocking methods hold the logic; each async method yields to the loop once, then calls its
blocking twin, so the two faces cannot drift apart. It must not do I/O, must not block the event
loop for longer than a dict update, and must not know about Kubernetes: state is opaque and keyed
by run UID. A lock makes every method atomic, so the store is safe for threads (the blocking face)
and for any number of asyncio tasks (the async face: no await inside a critical section).
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._common import (
    check_key_part,
    check_slot_args,
    commit_context,
    dump_json,
    load_object,
    split_state,
)
from .base import HISTORY_CAP, HistoryEntry, StateRecord, VersionConflict

__all__ = ["InMemoryStateStore"]

Clock = Callable[[], float]

_STORE = "memory"


def _check_run_uid(run_uid: str) -> None:
    check_key_part(_STORE, "run uid", run_uid)


@dataclass
class _Run:
    """Everything the store keeps of one run (Redis keeps the same in three keys)."""

    history: deque[HistoryEntry]
    record: StateRecord | None = None  # its `context` is unused; see context_json
    # Context and results are kept as JSON text even in memory, so callers get exactly what
    # Redis would give back (tuples become lists, keys strings) and never share a mutable alias
    # with the stored copy.
    context_json: str = "{}"
    results: dict[str, str] = field(default_factory=dict)
    expires_at: float | None = None

    def public_record(self, run_uid: str) -> StateRecord | None:
        if self.record is None:
            return None
        context = load_object(_STORE, "context", run_uid, self.context_json)
        return dataclasses.replace(self.record, context=context)


class InMemoryStateStore:
    """`StateStore` and `AsyncStateStore` in process memory.

    `clock` is a monotonic seconds clock used for slot leases and run expiry; tests inject a fake
    one to move time forward without sleeping.
    """

    name: str = "memory"

    def __init__(self, *, history_cap: int = HISTORY_CAP, clock: Clock = time.monotonic) -> None:
        if history_cap < 1:
            raise ValueError(f"memory store: history_cap must be >= 1, got {history_cap}")
        self._history_cap = history_cap
        self._clock = clock
        self._runs: dict[str, _Run] = {}
        # (deadline, run uid): lets expired runs be dropped even if nobody reads them again,
        # so a long-lived operator does not keep every finished run forever.
        self._expiry_heap: list[tuple[float, str]] = []
        self._slots: dict[str, dict[str, float]] = {}  # scope -> holder -> lease expiry
        # Held for whole check-and-write sections; never held across an await. Reentrant so a
        # method may call another under it.
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"InMemoryStateStore(runs={len(self._runs)}, history_cap={self._history_cap})"

    # -- run lookup and expiry (callers hold the lock) ---------------------------------------

    def _sweep(self) -> None:
        now = self._clock()
        while self._expiry_heap and self._expiry_heap[0][0] <= now:
            deadline, run_uid = heapq.heappop(self._expiry_heap)
            run = self._runs.get(run_uid)
            # A stale heap entry (the run was re-expired or deleted since) must not drop it.
            if run is not None and run.expires_at == deadline:
                del self._runs[run_uid]

    def _get(self, run_uid: str) -> _Run | None:
        _check_run_uid(run_uid)
        self._sweep()
        return self._runs.get(run_uid)

    def _get_or_create(self, run_uid: str) -> _Run:
        run = self._get(run_uid)
        if run is None:
            run = _Run(history=deque(maxlen=self._history_cap))
            self._runs[run_uid] = run
        return run

    # -- state -------------------------------------------------------------------------------

    def get_state(self, run_uid: str) -> StateRecord | None:
        with self._lock:
            run = self._get(run_uid)
            return None if run is None else run.public_record(run_uid)

    def commit(
        self,
        run_uid: str,
        record: StateRecord,
        *,
        expected_version: int,
        history: Sequence[HistoryEntry] = (),
    ) -> StateRecord:
        context_json = commit_context(run_uid, expected_version, record.context)
        with self._lock:
            run = self._get(run_uid)
            actual = 0 if run is None or run.record is None else run.record.version
            if actual != expected_version:
                raise VersionConflict(run_uid, expected_version, actual)
            run = self._get_or_create(run_uid)
            run.record = dataclasses.replace(record, version=expected_version + 1, context={})
            run.context_json = context_json
            run.history.extend(history)
            stored = run.public_record(run_uid)
        assert stored is not None  # just written
        return stored

    def set_state(
        self, run_uid: str, state: str, *, metadata: Mapping[str, Any] | None = None
    ) -> None:
        type_, name = split_state(run_uid, state)
        meta = dict(metadata or {})
        context_json = (
            dump_json("context", run_uid, dict(meta["context"])) if "context" in meta else None
        )
        with self._lock:
            run = self._get_or_create(run_uid)
            current = run.record or StateRecord(type=type_, name=name, stage="")
            # Fields the caller leaves out keep their stored values, as an HSET of only the
            # given fields does in Redis.
            run.record = dataclasses.replace(
                current,
                type=type_,
                name=name,
                stage=str(meta.get("stage", current.stage)),
                attempt=int(meta.get("attempt", current.attempt)),
                message=str(meta.get("message", current.message)),
                timestamp=str(meta.get("timestamp", current.timestamp)),
                version=(0 if run.record is None else run.record.version) + 1,
                context={},
            )
            if context_json is not None:
                run.context_json = context_json

    def get_context(self, run_uid: str) -> dict[str, Any]:
        with self._lock:
            run = self._get(run_uid)
            if run is None or run.record is None:
                return {}
            context_json = run.context_json
        return load_object(_STORE, "context", run_uid, context_json)

    def read_history(self, run_uid: str, count: int = HISTORY_CAP) -> list[HistoryEntry]:
        with self._lock:
            run = self._get(run_uid)
            if run is None or count <= 0:
                return []
            return list(run.history)[-count:]

    # -- results -----------------------------------------------------------------------------

    def set_results(self, run_uid: str, results: Mapping[str, Mapping[str, Any]]) -> None:
        encoded = {
            key: dump_json(f"result {key!r}", run_uid, dict(v)) for key, v in results.items()
        }
        with self._lock:
            if encoded:
                self._get_or_create(run_uid).results.update(encoded)
            else:
                _check_run_uid(run_uid)

    def get_results(self, run_uid: str) -> dict[str, dict[str, Any]]:
        with self._lock:
            run = self._get(run_uid)
            if run is None:
                return {}
            stored = dict(run.results)
        return {
            key: load_object(_STORE, f"result {key!r}", run_uid, text)
            for key, text in stored.items()
        }

    # -- concurrency slots -------------------------------------------------------------------

    def _live_leases(self, scope: str) -> dict[str, float]:
        check_key_part(_STORE, "slot scope", scope)
        leases = self._slots.get(scope)
        if leases is None:
            return {}
        now = self._clock()
        for holder in [h for h, expiry in leases.items() if expiry <= now]:
            del leases[holder]
        if not leases:
            del self._slots[scope]
        return leases

    def acquire_slot(self, scope: str, holder: str, *, limit: int, ttl_seconds: float) -> bool:
        check_slot_args(_STORE, scope, holder, limit, ttl_seconds)
        with self._lock:
            leases = self._live_leases(scope)
            if holder not in leases and len(leases) >= limit:
                return False
            self._slots.setdefault(scope, leases)[holder] = self._clock() + ttl_seconds
            return True

    def release_slot(self, scope: str, holder: str) -> None:
        with self._lock:
            leases = self._live_leases(scope)
            leases.pop(holder, None)
            if not leases:
                self._slots.pop(scope, None)

    def slot_holders(self, scope: str) -> list[str]:
        with self._lock:
            leases = self._live_leases(scope)
            # Same order as a Redis sorted set: by lease expiry, ties by holder.
            return [h for h, _ in sorted(leases.items(), key=lambda kv: (kv[1], kv[0]))]

    # -- lifecycle ---------------------------------------------------------------------------

    def expire(self, run_uid: str, ttl_seconds: int) -> None:
        if ttl_seconds < 0:
            raise ValueError(f"run {run_uid}: ttl_seconds must be >= 0, got {ttl_seconds}")
        with self._lock:
            run = self._get(run_uid)
            if run is None:
                return
            run.expires_at = self._clock() + ttl_seconds
            heapq.heappush(self._expiry_heap, (run.expires_at, run_uid))
            self._sweep()

    def delete(self, run_uid: str) -> None:
        _check_run_uid(run_uid)
        with self._lock:
            self._runs.pop(run_uid, None)

    def ping(self) -> None:
        """Always reachable."""

    def close(self) -> None:
        """Nothing to release; the data stays, so a store closed and reused still works."""

    # -- the async face: one yield (as a network store would), then the blocking method -----
    # The yield comes before the critical section, so concurrent tasks really interleave in
    # the tests; the section itself runs without an await, hence atomically for the loop.

    async def aget_state(self, run_uid: str) -> StateRecord | None:
        await asyncio.sleep(0)
        return self.get_state(run_uid)

    async def acommit(
        self,
        run_uid: str,
        record: StateRecord,
        *,
        expected_version: int,
        history: Sequence[HistoryEntry] = (),
    ) -> StateRecord:
        await asyncio.sleep(0)
        return self.commit(run_uid, record, expected_version=expected_version, history=history)

    async def aset_state(
        self, run_uid: str, state: str, *, metadata: Mapping[str, Any] | None = None
    ) -> None:
        await asyncio.sleep(0)
        self.set_state(run_uid, state, metadata=metadata)

    async def aget_context(self, run_uid: str) -> dict[str, Any]:
        await asyncio.sleep(0)
        return self.get_context(run_uid)

    async def aread_history(self, run_uid: str, count: int = HISTORY_CAP) -> list[HistoryEntry]:
        await asyncio.sleep(0)
        return self.read_history(run_uid, count)

    async def aset_results(self, run_uid: str, results: Mapping[str, Mapping[str, Any]]) -> None:
        await asyncio.sleep(0)
        self.set_results(run_uid, results)

    async def aget_results(self, run_uid: str) -> dict[str, dict[str, Any]]:
        await asyncio.sleep(0)
        return self.get_results(run_uid)

    async def aacquire_slot(
        self, scope: str, holder: str, *, limit: int, ttl_seconds: float
    ) -> bool:
        await asyncio.sleep(0)
        return self.acquire_slot(scope, holder, limit=limit, ttl_seconds=ttl_seconds)

    async def arelease_slot(self, scope: str, holder: str) -> None:
        await asyncio.sleep(0)
        self.release_slot(scope, holder)

    async def aslot_holders(self, scope: str) -> list[str]:
        await asyncio.sleep(0)
        return self.slot_holders(scope)

    async def aexpire(self, run_uid: str, ttl_seconds: int) -> None:
        await asyncio.sleep(0)
        self.expire(run_uid, ttl_seconds)

    async def adelete(self, run_uid: str) -> None:
        await asyncio.sleep(0)
        self.delete(run_uid)

    async def aping(self) -> None:
        await asyncio.sleep(0)
        self.ping()

    async def aclose(self) -> None:
        await asyncio.sleep(0)
        self.close()
