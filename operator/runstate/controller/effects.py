"""Effects: every write a reconcile can make, as data.

The planners (`plan`, `announce`, `runbooks`) return an `Effects` list in the order that makes
a crash harmless; the applier (`apply`) is the only code that carries them out. Keeping them
as data lets the unit tests check the order itself, and crash between any two of them.

It must not do I/O or decide anything: these are plain records.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from runstate.controller.hotstate import Payload
from runstate.domain.work import WorkKey
from runstate_stores.base import HistoryEntry, StateRecord


class Metric(enum.StrEnum):
    """The counters and histograms a reconcile moves (names in `runstate.metrics`)."""

    STAGE_WARNINGS = "stage_warnings"
    RUN_FAILURES = "run_failures"
    HOST_FAILURES = "host_failures"
    OPERATION_RESULTS = "operation_results"
    STATE_TRANSITIONS = "state_transitions"
    RUN_DURATION = "run_duration"
    STAGE_DURATION = "stage_duration"


@dataclass(frozen=True)
class Measure:
    metric: Metric
    labels: tuple[str, ...] = ()
    value: float = 1.0  # a counter's increment, or a histogram's observation


@dataclass(frozen=True)
class Event:
    reason: str
    message: str
    kind: str = "Run"


# ---- the effects, in the order a run's plan lists them ---------------------------------------


@dataclass(frozen=True)
class AddFinalizer:
    """Before anything is written for a live run: deleting it then cancels it first."""

    finalizers: tuple[str, ...]
    resource_version: str


@dataclass(frozen=True)
class StoreResults:
    """New per operation × host results and failed hosts, before the state that counts them."""

    payload: Payload
    measures: tuple[Measure, ...] = ()


@dataclass(frozen=True)
class Commit:
    """The state transition (or stage / message change), compare-and-set on the version."""

    record: StateRecord
    expected_version: int
    history: tuple[HistoryEntry, ...] = ()


@dataclass(frozen=True)
class ReleaseSlot:
    """An ended run gives its concurrency slot back (and the queued runs are woken)."""


@dataclass(frozen=True)
class CancelRuns:
    """Concurrency policy Replace: cancel the runs holding the slots (each asked once)."""

    names: tuple[str, ...]


@dataclass(frozen=True)
class PodToCreate:
    key: WorkKey
    name: str
    body: Mapping[str, Any]


@dataclass(frozen=True)
class CreatePods:
    """Pods with deterministic names: a repeated create is a 409, never a second pod."""

    pods: tuple[PodToCreate, ...]


@dataclass(frozen=True)
class DeletePods:
    """Stop pods (cancel, timeout, crash)."""

    names: tuple[str, ...]


@dataclass(frozen=True)
class StoreLaunched:
    """Record the units started: after their pods exist, so a crash can only miss a record,
    never invent one. Units whose pod the API server refused are left out by the applier."""

    keys: frozenset[WorkKey]


@dataclass(frozen=True)
class WriteStatus:
    """The whole status, fenced by the resourceVersion it was decided from; `write` False:
    the object already shows it, only remember it."""

    status: Mapping[str, Any]
    baseline: Mapping[str, Any]
    write: bool = True


@dataclass(frozen=True)
class Announce:
    """Events and metrics for what was committed, and what they mark as announced."""

    events: tuple[Event, ...] = ()
    measures: tuple[Measure, ...] = ()
    warnings: Mapping[str, int] | None = None  # stage warnings now counted
    stalled_reason: str | None = None
    hook_failures: frozenset[tuple[str, str]] = frozenset()
    stage: tuple[str, float] | None = None  # the stage and since when (monotonic)


@dataclass(frozen=True)
class CleanUpPods:
    """Pod retention of an ended run: after its final status is written, never before."""

    keys: tuple[WorkKey, ...]
    names: tuple[str, ...]
    selector: str | None = None  # all of them at once, by label, in one call
    event: Event | None = None


@dataclass(frozen=True)
class Expire:
    """The run is over: its hot state expires after a TTL."""

    ttl_seconds: int


@dataclass(frozen=True)
class Finalize:
    """A deleted run that is over: drop its hot state, then remove our finalizer."""

    finalizers: tuple[str, ...]
    remove: bool


# ---- a Runbook's effects ----------------------------------------------------------------------


@dataclass(frozen=True)
class CreateRun:
    """A Run its triggers call for (deterministic name: a second create is a 409); the Event
    is posted only when this create made it."""

    body: Mapping[str, Any]
    event: Event


@dataclass(frozen=True)
class DeleteRuns:
    """Finished Runs the Runbook's `history` no longer keeps."""

    names: tuple[str, ...]
    event: Event


@dataclass(frozen=True)
class WriteRunbookStatus:
    status: Mapping[str, Any]


@dataclass(frozen=True)
class PostEvent:
    event: Event


Effect = (
    AddFinalizer
    | StoreResults
    | Commit
    | ReleaseSlot
    | CancelRuns
    | CreatePods
    | DeletePods
    | StoreLaunched
    | WriteStatus
    | Announce
    | CleanUpPods
    | Expire
    | Finalize
    | CreateRun
    | DeleteRuns
    | WriteRunbookStatus
    | PostEvent
)


@dataclass(frozen=True)
class Effects:
    """A plan: effects in the order they must be applied, and when to look again."""

    steps: tuple[Effect, ...] = ()
    requeue_after: float | None = None
    done: bool = False  # ended, hooks included: later events change nothing
    cleanup_due_in: float | None = None  # an ended run's next pod to go under retention
