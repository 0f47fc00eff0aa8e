"""The state-store contract: what the operator keeps of a run's hot state, and the protocols.

Owns the record types and the `AsyncStateStore` / `StateStore` protocols that every store
implements (in-memory, Redis). It must not know about Kubernetes or kopf: a store keeps opaque
run state keyed by the run's UID, and the operator decides what the state means.

The shape follows PyStator's stores (state + metadata + context + history), widened with what an
operator needs to be crash-safe: a version fence for compare-and-set transitions, per op × host
results, and concurrency-slot leases.

Two protocols with the same operations and the same semantics: `AsyncStateStore` (methods with
an `a` prefix; what the operator uses, async end to end) and `StateStore` (blocking, for scripts,
tools and PyStator-style callers; `get_state`, `set_state` and `get_context` keep PyStator's
names, though `get_state` returns the whole `StateRecord`). Every store implements both, and
each implementation keeps one copy of the logic behind the two faces.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

#: Default cap of a run's history stream (XADD MAXLEN ~).
HISTORY_CAP = 100


@dataclass(frozen=True)
class StateRecord:
    """A run's current state as the store holds it.

    `version` is the fence for compare-and-set: it starts at 1 with the first commit and grows
    by one with every commit. `context` is free-form JSON (the operator keeps e.g. the
    generation it acted on).
    """

    type: str
    name: str
    stage: str
    attempt: int = 1
    version: int = 0
    message: str = ""
    timestamp: str = ""
    context: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class HistoryEntry:
    """One state transition, as appended to a run's capped history."""

    from_state: str  # "TYPE/Name", or "" for the first state of a run
    to_state: str  # "TYPE/Name"
    at: str  # RFC 3339 timestamp
    message: str = ""
    attempt: int = 1


class VersionConflict(Exception):
    """A compare-and-set lost: the run's state moved on since it was read."""

    def __init__(self, run_uid: str, expected: int, actual: int) -> None:
        super().__init__(
            f"run {run_uid}: state version conflict (expected {expected}, found {actual})"
        )
        self.run_uid = run_uid
        self.expected = expected
        self.actual = actual


class StoreUnavailable(Exception):
    """The store cannot be reached; the message names the store, never a password."""


@runtime_checkable
class AsyncStateStore(Protocol):
    """Hot run state, async. All methods are keyed by the run's UID."""

    name: str  # "memory", "redis": a bounded label for metrics and logs

    async def aget_state(self, run_uid: str) -> StateRecord | None:
        """The current record, or None when the store has never seen the run."""
        ...

    async def acommit(
        self,
        run_uid: str,
        record: StateRecord,
        *,
        expected_version: int,
        history: Sequence[HistoryEntry] = (),
    ) -> StateRecord:
        """Atomically: check the version, write `record`, append `history`.

        `expected_version` 0 means "the run must not exist yet". The stored record gets version
        `expected_version + 1` (whatever `record.version` says) and is returned. Raises
        `VersionConflict` when the stored version differs: two writers can never both win.
        """
        ...

    async def aset_state(
        self, run_uid: str, state: str, *, metadata: Mapping[str, Any] | None = None
    ) -> None:
        """PyStator-compatible unconditional write: `state` is "TYPE/Name"; metadata may carry
        `stage`, `attempt`, `message`, `timestamp`, `context`. Fields not given keep their
        stored value (defaults for a new run); bumps the version; appends no history."""
        ...

    async def aget_context(self, run_uid: str) -> dict[str, Any]:
        """The record's context, or {} for an unknown run."""
        ...

    async def aread_history(self, run_uid: str, count: int = HISTORY_CAP) -> list[HistoryEntry]:
        """The last `count` transitions, oldest first."""
        ...

    async def aset_results(self, run_uid: str, results: Mapping[str, Mapping[str, Any]]) -> None:
        """Merge per op × host results (key "operation|host") into the run's results."""
        ...

    async def aget_results(self, run_uid: str) -> dict[str, dict[str, Any]]:
        """All results of the run, by "operation|host"."""
        ...

    async def aacquire_slot(
        self, scope: str, holder: str, *, limit: int, ttl_seconds: float
    ) -> bool:
        """Take one of `limit` concurrency slots of `scope` for `holder` (idempotent for the
        same holder, which renews its lease). Expired leases of dead holders do not count."""
        ...

    async def arelease_slot(self, scope: str, holder: str) -> None:
        """Give the slot back (no-op when not held)."""
        ...

    async def aslot_holders(self, scope: str) -> list[str]:
        """Holders with a live lease, in order of lease expiry (a renewal moves a holder last)."""
        ...

    async def aexpire(self, run_uid: str, ttl_seconds: int) -> None:
        """Let a finished run's keys expire after `ttl_seconds`. It must be the run's last
        write: Redis sets the TTL only on keys that exist at that moment."""
        ...

    async def adelete(self, run_uid: str) -> None:
        """Delete every key of the run."""
        ...

    async def aping(self) -> None:
        """Raise `StoreUnavailable` when the store cannot be reached."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


@runtime_checkable
class StateStore(Protocol):
    """Hot run state, blocking: `AsyncStateStore` without the `a` prefix, same semantics.

    Implementations are safe to call from several threads at once.
    """

    name: str

    def get_state(self, run_uid: str) -> StateRecord | None:
        """The current record, or None when the store has never seen the run."""
        ...

    def commit(
        self,
        run_uid: str,
        record: StateRecord,
        *,
        expected_version: int,
        history: Sequence[HistoryEntry] = (),
    ) -> StateRecord:
        """Atomic compare-and-set, as `AsyncStateStore.acommit`."""
        ...

    def set_state(
        self, run_uid: str, state: str, *, metadata: Mapping[str, Any] | None = None
    ) -> None:
        """PyStator-compatible unconditional write, as `AsyncStateStore.aset_state`."""
        ...

    def get_context(self, run_uid: str) -> dict[str, Any]:
        """The record's context, or {} for an unknown run."""
        ...

    def read_history(self, run_uid: str, count: int = HISTORY_CAP) -> list[HistoryEntry]:
        """The last `count` transitions, oldest first."""
        ...

    def set_results(self, run_uid: str, results: Mapping[str, Mapping[str, Any]]) -> None:
        """Merge per op × host results into the run's results."""
        ...

    def get_results(self, run_uid: str) -> dict[str, dict[str, Any]]:
        """All results of the run, by "operation|host"."""
        ...

    def acquire_slot(self, scope: str, holder: str, *, limit: int, ttl_seconds: float) -> bool:
        """Take (or renew) one of `limit` concurrency slots of `scope` for `holder`."""
        ...

    def release_slot(self, scope: str, holder: str) -> None:
        """Give the slot back (no-op when not held)."""
        ...

    def slot_holders(self, scope: str) -> list[str]:
        """Holders with a live lease, in order of lease expiry."""
        ...

    def expire(self, run_uid: str, ttl_seconds: int) -> None:
        """Let a finished run's keys expire after `ttl_seconds` (the run's last write)."""
        ...

    def delete(self, run_uid: str) -> None:
        """Delete every key of the run."""
        ...

    def ping(self) -> None:
        """Raise `StoreUnavailable` when the store cannot be reached."""
        ...

    def close(self) -> None:
        """Release the connections the blocking methods use."""
        ...
