"""`Run.status` and `Runbook.status`: what the operator observed and decided, as shown.

Owns the shapes of both statuses and their parts: kstatus `Condition`s, host and per-operation
counts, stage warnings, failed hosts, the state history, a dry run's plan, hook results and a
Runbook's last run. What goes into them is decided by `runstate.domain` and built by
`runstate.kube.status`; this module must not compute any of it, nor import anything with I/O.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Field, WithJsonSchema
from pydantic.alias_generators import to_camel

from runstate.api.model import ApiModel, list_map
from runstate.api.v1alpha1.states import HookOutcome, RunState, Stage, StateType


class Condition(ApiModel):
    """A kstatus-compatible condition (Ready, Reconciling, Stalled)."""

    type: str = Field(description="Ready, Reconciling or Stalled")
    status: str = Field(description="True, False or Unknown")
    reason: str = Field(default="", description="Why, in CamelCase")
    message: str = Field(default="", description="Why, for people")
    last_transition_time: str = Field(default="", description="When status last changed")
    observed_generation: int | None = Field(
        default=None, description="The generation it was decided for"
    )


class HostCounts(ApiModel):
    """Hosts of the current attempt."""

    total: int = Field(default=0, description="Hosts of the run (after spec.limit)")
    active: int = Field(default=0, description="Hosts not failed")
    failed: int = Field(default=0, description="Hosts that failed, at any stage")
    unreachable: int = Field(
        default=0,
        description="Failed hosts that could not be reached at Connect (AWX's dark hosts); "
        "also counted in failed",
    )
    limited: int = Field(default=0, description="Hosts left out by spec.limit")


class StageWarnings(ApiModel):
    """Warnings per stage: retries, slow pod starts, ignored errors, skipped hosts, ..."""

    model_config = ConfigDict(
        alias_generator=None, populate_by_name=True, extra="ignore", frozen=True
    )

    Setup: int = Field(default=0, description="Warnings of Setup")
    Connect: int = Field(default=0, description="Warnings of Connect")
    Prepare: int = Field(default=0, description="Warnings of Prepare")
    Execute: int = Field(default=0, description="Warnings of Execute")
    Disconnect: int = Field(default=0, description="Warnings of Disconnect")


class OperationCounts(ApiModel):
    """One operation's hosts, by what its check and its run found."""

    name: str = Field(description="The operation")
    hosts: int = Field(default=0, description="Hosts it targets")
    changed: int = Field(default=0, description="Hosts it changes (or would)")
    no_change: int = Field(default=0, description="Hosts already in state")
    success: int = Field(default=0, description="Hosts it ran on successfully")
    error: int = Field(default=0, description="Hosts it failed on")
    ignored: int = Field(default=0, description="Failures ignored (ignoreErrors)")
    partial: int = Field(default=0, description="Runs cut short (timed out, interrupted)")


class FailedHost(ApiModel):
    """A host that failed, and where."""

    host: str = Field(description="The host")
    stage: Stage = Field(description="The stage it failed at")
    operation: str | None = Field(default=None, description="The operation it failed at")
    reason: str = Field(default="", description="Why, as a class (unreachable, timeout, ...)")
    message: str = Field(default="", description="Why, for people")


class HistoryItem(ApiModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True
    )

    from_: str = Field(default="", alias="from", description="The state name before")
    to: str = Field(description="The state name after")
    at: str = Field(description="When (RFC 3339)")
    message: str = Field(default="", description="Why")


class PlannedOperation(ApiModel):
    """What an operation would do (dry runs)."""

    name: str = Field(description="The operation")
    change: list[str] = Field(default_factory=list, description="Hosts that would change")
    no_change: list[str] = Field(default_factory=list, description="Hosts already in state")
    commands: dict[str, list[str]] | None = Field(
        default=None,
        description="pyinfra operations: per host that would change, the commands pyinfra "
        "would run (bounded)",
    )
    truncated: bool = Field(default=False, description="Host lists cut short (too many)")


class HookResult(ApiModel):
    name: str = Field(description="The hook operation (spec.hookOperations)")
    on: str = Field(description="onCompletion, onFailure or onCancellation")
    host: str | None = Field(default=None, description="The host it ran for (hooks with hosts)")
    result: Annotated[HookOutcome, WithJsonSchema({"type": "string"})] = Field(
        description="Pending, Running, Succeeded, Failed or Lost"
    )
    message: str = Field(default="", description="Why, for people")


class RunStatus(ApiModel):
    """What the operator observed and decided of the Run."""

    observed_generation: int | None = Field(
        default=None, description="The generation this status is about"
    )
    state: RunState | None = None
    stage: Stage | None = Field(
        default=None,
        description="Setup, Connect, Prepare, Execute or Disconnect (pyinfra's; only forward)",
    )
    attempt: int | None = Field(default=None, description="The current attempt (1: the first)")
    hosts: HostCounts | None = None
    hosts_summary: str | None = Field(
        default=None, description="'ok/total' for kubectl get (printer column)"
    )
    stage_warnings: StageWarnings | None = None
    operations: list[OperationCounts] | None = Field(
        default=None, description="Per operation", json_schema_extra=list_map("name")
    )
    failed_hosts: list[FailedHost] | None = Field(
        default=None, description="Failed hosts (bounded)", json_schema_extra=list_map("host")
    )
    history: list[HistoryItem] | None = Field(
        default=None, description="State transitions, the latest last (bounded)"
    )
    plan: list[PlannedOperation] | None = Field(
        default=None,
        description="Dry runs: per operation, what it would do",
        json_schema_extra=list_map("name"),
    )
    hooks: list[HookResult] | None = Field(
        default=None, description="Hooks run after the run ended (a failure is a warning)"
    )
    start_time: str | None = Field(default=None, description="When the run started")
    end_time: str | None = Field(default=None, description="When the run ended")
    duration_seconds: float | None = Field(default=None, description="endTime - startTime")
    conditions: list[Condition] | None = Field(
        default=None, description="kstatus conditions", json_schema_extra=list_map("type")
    )


class LastRun(ApiModel):
    """The newest Run of the Runbook."""

    name: str = Field(description="Its name")
    type: StateType | None = Field(default=None, description="Its state type")
    state: str | None = Field(default=None, description="Its state name")
    created: str | None = Field(default=None, description="Its creationTimestamp")


class RunbookStatus(ApiModel):
    """What the operator observed of the Runbook and its Runs."""

    observed_generation: int | None = Field(
        default=None, description="The generation this status is about"
    )
    conditions: list[Condition] | None = Field(
        default=None, description="kstatus conditions", json_schema_extra=list_map("type")
    )
    hosts: int | None = Field(default=None, description="Static hosts")
    operations: int | None = Field(default=None, description="Operations")
    last_run: LastRun | None = None
    active_runs: int | None = Field(default=None, description="Runs not ended")
    runs: dict[str, int] | None = Field(default=None, description="Runs by state type")
    last_triggered_generation: int | None = Field(
        default=None, description="The generation onChange last started a Run for"
    )
    last_schedule_time: str | None = Field(
        default=None, description="The schedule time of the last scheduled Run"
    )
    next_scheduled_time: str | None = Field(default=None, description="The next schedule time")
    missed_schedules: int | None = Field(
        default=None, description="Schedule times skipped after downtime (total)"
    )
