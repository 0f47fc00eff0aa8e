"""How and when a Runbook's runs run: config, retries, triggers, hooks, history.

Owns `RunConfig` (parallelism, fail percent, timeouts, `PodRetention`), `Retries`, `Trigger`
(onChange, the schedule, `Concurrency` and its `ConcurrencyPolicy`), `Hooks` and `History`:
the knobs, their bounds and defaults. The rules that apply them live in `runstate.domain`
(`policy`, `retention`, `triggers`, `concurrency`, `hooks`, `history`). Must not import anything
with I/O.
"""

from __future__ import annotations

import enum
from typing import Annotated

from pydantic import Field

from runstate.api.model import ApiModel
from runstate.api.v1alpha1.formats import TIME_ZONE, PositiveSeconds, Seconds


class PodRetention(ApiModel):
    """What becomes of a run's pods once it has ended (Disconnect). Hook pods stay until the
    Run is deleted: they are the record of what the hooks did."""

    succeeded_seconds: Seconds = Field(
        default=0,
        description="Pods whose command did its job (a passed probe, a check that answered, a "
        "successful operation) are deleted this long after the run ended; 0: at once",
    )
    failed_seconds: Seconds = Field(
        default=86400,
        description="Failed pods (an error, a timeout, a failed probe or check, an evicted or "
        "stopped pod) are kept this long after the run ended, for `kubectl logs`",
    )


class RunConfig(ApiModel):
    """How a run executes: parallelism, failure tolerance, timeouts, pod retention."""

    parallel: Annotated[int, Field(ge=1, le=10000)] = Field(
        default=10, description="At most this many pods of a run at once (pyinfra PARALLEL)"
    )
    fail_percent: Annotated[int, Field(ge=0, le=100)] | None = Field(
        default=None,
        description="Stop when more than this percent of hosts failed (pyinfra FAIL_PERCENT); "
        "failures within it still complete the run",
    )
    timeout_seconds: PositiveSeconds | None = Field(
        default=None, description="An attempt running longer fails (timed out)"
    )
    slow_start_seconds: PositiveSeconds = Field(
        default=60,
        description="A pod that takes longer than this from creation to start (image pull, "
        "scheduling, a missing ConfigMap) is a warning of its stage",
    )
    pod_retention: PodRetention = Field(
        default_factory=PodRetention,
        description="Which pods of an ended run are deleted, and when (the Run's deletion "
        "deletes the rest)",
    )


class Retries(ApiModel):
    """Run-level retries: a failed attempt waits (AwaitingRetry), then runs again (Retrying)."""

    limit: Annotated[int, Field(ge=0, le=100)] = Field(
        default=0, description="Attempts after the first"
    )
    delay_seconds: Annotated[int, Field(ge=0, le=86400)] = Field(
        default=30, description="Wait before the first retry"
    )
    backoff_factor: Annotated[float, Field(ge=1, le=10)] = Field(
        default=2.0,
        description="Each further wait is this many times longer (a wait is at most 10 years)",
    )


class ConcurrencyPolicy(enum.StrEnum):
    Queue = "Queue"  # wait (AwaitingConcurrencySlot) until a slot frees
    Forbid = "Forbid"  # fail the new run at once
    Replace = "Replace"  # cancel the running ones, then start


class Concurrency(ApiModel):
    limit: Annotated[int, Field(ge=1, le=1000)] = Field(
        default=1, description="At most this many Runs of the Runbook at once"
    )
    policy: ConcurrencyPolicy = Field(
        default=ConcurrencyPolicy.Queue,
        description="At the limit, a new Run waits (Queue), fails (Forbid) or cancels the "
        "running ones (Replace)",
    )


class Trigger(ApiModel):
    """What starts Runs of a Runbook by itself, and how many may run at once."""

    on_change: bool = Field(
        default=False, description="Every new spec generation starts a Run (a GitOps sync deploys)"
    )
    schedule: str | None = Field(
        default=None,
        max_length=256,
        description="Cron (5 fields, or 6 with seconds last) in timeZone; starts a Run per time",
    )
    time_zone: str = Field(
        default="UTC", max_length=64, pattern=TIME_ZONE, description="IANA time zone of schedule"
    )
    starting_deadline_seconds: PositiveSeconds = Field(
        default=300,
        description="After downtime only the latest missed time starts a Run, and only if it "
        "is at most this old; the others are skipped and counted",
    )
    concurrency: Concurrency | None = Field(
        default=None, description="Limit on concurrent Runs of this Runbook (any trigger)"
    )


class Hooks(ApiModel):
    """Prefect's state hooks: names of `hookOperations` run once when a run ends so."""

    on_completion: list[str] = Field(
        default_factory=list, description="Run when a run reaches Completed"
    )
    on_failure: list[str] = Field(
        default_factory=list, description="Run when a run reaches Failed or Crashed"
    )
    on_cancellation: list[str] = Field(
        default_factory=list, description="Run when a run reaches Cancelled (also by deletion)"
    )


class History(ApiModel):
    """How many finished Runs a Runbook keeps of those it started (as a CronJob keeps Jobs).
    Runs a user created are never deleted by this."""

    keep_runs: Annotated[int, Field(ge=0, le=10000)] | None = Field(
        default=20,
        description="Keep this many finished Runs, the newest; null keeps them all",
    )
    ttl_seconds_after_finished: Seconds | None = Field(
        default=None,
        description="Delete a finished Run this long after it ended; null: never by age",
    )
