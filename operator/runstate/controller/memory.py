"""What this process remembers of a run between reconciles, split by purpose.

Everything here can be lost (an operator restart, a replica taking over) and re-derived from
the store and the cluster: it only saves API writes and double counting. Each part has one
job: the write fence (which resourceVersions are our own writes), expectations (pods created
and not yet seen), the status cache (what was last written, and when), what was announced
(Events and metrics already sent), the hot state loaded from the store, and the run's
life-cycle marks (finalizer, slot, ended, pods cleaned up).

It must not do I/O, and decides nothing beyond its own bookkeeping.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from runstate.api.v1alpha1 import HistoryItem, RunSpec
from runstate.controller.hotstate import HotState
from runstate.domain.work import Observed, WorkKey
from runstate_stores.base import StateRecord

OWN_VERSIONS_KEPT = 64
EXPECTATION_TIMEOUT = 60.0  # a created pod not seen in the cache by then is looked at again


@dataclass
class WriteFence:
    """resourceVersions our own writes went onto or produced, and the latest: a cache that
    shows one of them is behind our writes, not showing someone else's."""

    own_versions: set[str] = field(default_factory=set)
    own_latest: str | None = None

    def wrote(self, before: str, after: str | None) -> None:
        if not after:
            return
        if len(self.own_versions) > OWN_VERSIONS_KEPT:
            self.own_versions.clear()
        self.own_versions.update((before, after))
        self.own_latest = after

    def version(self, cached: str) -> str:
        """The resourceVersion to write onto: ours when the cache has not caught up."""
        if cached in self.own_versions and self.own_latest:
            return self.own_latest
        return cached


@dataclass
class Expectations:
    """Pods created and not yet shown by the watch: counted as pending, so `parallel` holds
    while the cache lags (controller-runtime's expectations)."""

    pending: dict[str, tuple[float, Observed]] = field(default_factory=dict)

    def expect(self, pod_name: str, unit: Observed) -> None:
        self.pending[pod_name] = (time.monotonic(), unit)

    def merge(self, seen: Sequence[tuple[str, Observed]]) -> list[Observed]:
        """The units the cache shows plus those expected and not shown yet."""
        shown = dict(seen)
        now = time.monotonic()
        for name, (since, _) in list(self.pending.items()):
            if name in shown or now - since > EXPECTATION_TIMEOUT:
                del self.pending[name]
        return [*shown.values(), *(unit for _, unit in self.pending.values())]

    def clear(self) -> None:
        self.pending.clear()


@dataclass
class StatusCache:
    """The status this process last wrote (newer than a lagging cache), when, and the run's
    history as committed (seeded once from the store, then extended by every commit)."""

    written: dict[str, object] | None = None
    last_write: float | None = None
    history: list[HistoryItem] | None = None
    first_seen: float = field(default_factory=time.monotonic)

    def forget(self) -> None:
        self.written = None
        self.history = None


@dataclass
class Announced:
    """Events and metrics already sent for a run, so a reconcile never sends them twice."""

    warnings: dict[str, int] | None = None  # stage warnings counted in metrics
    stalled_reason: str | None = None
    hook_failures: set[tuple[str, str]] | None = None  # (hook, host) with a HookFailed Event
    stage_since: tuple[str, float] | None = None  # the stage and when it was entered


@dataclass
class SlotHold:
    """The concurrency slot a run holds, when it was last renewed, and the runs it asked to be
    replaced (policy Replace), each asked once."""

    scope: str | None = None
    renewed: float = 0.0
    replaced: set[str] = field(default_factory=set)


@dataclass
class Cleanup:
    """Pod retention of an ended run: the units whose pods were deleted, and when more fall due."""

    cleaned: set[WorkKey] = field(default_factory=set)
    due_at: float | None = None


@dataclass
class RunMemory:
    uid: str
    fence: WriteFence = field(default_factory=WriteFence)
    expected: Expectations = field(default_factory=Expectations)
    status: StatusCache = field(default_factory=StatusCache)
    announced: Announced = field(default_factory=Announced)
    slot: SlotHold = field(default_factory=SlotHold)
    cleanup: Cleanup = field(default_factory=Cleanup)
    # The record this process last committed: the version fence makes reading it from here
    # safe (any other writer makes the next commit fail, and then the store is read again).
    record: StateRecord | None = None
    hot: HotState | None = None  # loaded once from the store, then kept current by our writes
    spec: tuple[int, RunSpec] | None = None  # the parsed spec of a generation (parsing is CPU)
    finalizer_added: bool = False  # until the cache shows it, do not add it twice
    done: bool = False  # ended and its hooks over: later events change nothing
    # A pod the API server refused (PodCreateFailed): the run is Stalled until one goes in.
    refusal: tuple[str, str] | None = None  # (pod name, the API server's message)
    refusals: int = 0  # refusals in a row, for the backoff
    refused_keys: set[WorkKey] = field(default_factory=set)  # units whose pod was refused
    lost_status_write: bool = False  # another writer's status won: announce, then read again
    finalized: bool = False  # a deleted run's finalizer is off: forget it

    def reread(self) -> None:
        """Another writer moved the run: read the store and the object again."""
        self.record = None
        self.status.forget()

    def launched(self, keys: Iterable[WorkKey]) -> None:
        if self.hot is not None:
            self.hot.launched.update(keys)


class Memories:
    """Every run's memory, by object key; a new UID under the same name starts afresh."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str], RunMemory] = {}

    def get(self, key: tuple[str, str], uid: str) -> RunMemory:
        mem = self._by_key.get(key)
        if mem is None or mem.uid != uid:
            mem = self._by_key[key] = RunMemory(uid=uid)
        return mem

    def pop(self, key: tuple[str, str]) -> RunMemory | None:
        return self._by_key.pop(key, None)

    def clear(self) -> None:
        self._by_key.clear()
