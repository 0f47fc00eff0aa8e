"""The engine's public records: what `decide()` reads (`Observation`, the committed `Progress`)
and what it returns (`Decision`, with a `Stalled` condition and the stage `Summary`).

It owns these shapes and their derived properties only: it decides nothing, and it must not
import the modules that orchestrate a run (`walk`, the lifecycle modules, `engine`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from runstate.api.v1alpha1 import HookResult, Host, RunbookSpec, RunSpec, RunState, Stage
from runstate.domain import retention
from runstate.domain.planners.summary import Summary
from runstate.domain.states import is_final
from runstate.domain.work import Intent, Observed, WorkKey


@dataclass(frozen=True)
class Progress:
    """What the operator committed about a run (hot state in the store, mirrored in status)."""

    state: RunState
    stage: Stage
    attempt: int = 1
    start_time: str | None = None  # the run's first start
    end_time: str | None = None
    attempt_start: str | None = None  # this attempt's start: run timeouts count from here
    # A final run's summary (counts, failed hosts, plan), committed with its final state: the
    # status of an ended run is rebuilt from it, never from pods that retention may delete.
    summary: Summary | None = None


@dataclass(frozen=True)
class Observation:
    spec: RunSpec
    runbook: RunbookSpec | None
    runbook_problem: str | None  # why `runbook` is None (names the field)
    progress: Progress | None
    units: Sequence[Observed]
    now: datetime
    # Units the operator is known to have started (recorded in the store). One of them that no
    # pod shows any more was deleted behind the operator's back: starting it again would run an
    # operation twice, so the run crashes instead.
    launched: frozenset[WorkKey] = frozenset()
    # The Runbook's concurrency slot: None when it sets no limit, True when this run holds
    # one, False when the limit is reached; `holders` names the runs that hold them.
    slot: bool | None = None
    holders: tuple[str, ...] = ()
    # When the Run object was deleted: the run is cancelled, as by `spec.cancel`, and the
    # object may go once the run is over (`Decision.release`).
    deleted_at: datetime | None = None
    # A `nodeSelector` inventory: the Nodes (as hosts) that matched when the run started.
    nodes: tuple[Host, ...] | None = None
    # The operator lets Runbooks use the privileged `node` connector (operations.allowPrivileged).
    privileged_allowed: bool = False


@dataclass(frozen=True)
class Stalled:
    reason: str
    message: str


@dataclass(frozen=True)
class Decision:
    progress: Progress
    transitions: tuple[tuple[RunState | None, RunState], ...] = ()
    create: tuple[Intent, ...] = ()
    delete: tuple[WorkKey, ...] = ()
    summary: Summary | None = None
    stalled: Stalled | None = None
    requeue_after: float | None = None
    failure_reason: str | None = None  # bounded code for metrics when the run ends badly
    replace: tuple[str, ...] = ()  # runs to cancel (concurrency policy Replace)
    # State hooks of a run that ended: what their pods show (None: no hooks), the failed ones
    # (stage warnings), and whether all of them are over.
    hooks: tuple[HookResult, ...] | None = None
    hook_failures: tuple[HookResult, ...] = ()
    settled: bool = True
    release: bool = False  # a deleted Run is over: its hot state and finalizer may go
    # An ended run's pods under `config.podRetention`: those due now, and when to look again.
    cleanup: retention.Cleanup | None = None

    @property
    def final(self) -> bool:
        return is_final(self.progress.state.type)

    @property
    def done(self) -> bool:
        """Ended, hooks included: nothing more will happen to this run."""
        return self.final and self.settled


__all__ = ["Decision", "Observation", "Progress", "Stalled", "Summary"]
