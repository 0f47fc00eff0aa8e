"""The vocabulary of a run's progress: state types and names, hook outcomes, stages.

Owns the enums of Prefect's states (`StateType`, `StateName`), of a hook's result
(`HookOutcome`) and of pyinfra's stages (`Stage`), and `RunState`, the shape of
`status.state`. What they mean (transitions, which are final, the order of stages) lives in
`runstate.domain.states`, `policy` and `stages`: this module must not hold rules, nor import
anything with I/O.
"""

from __future__ import annotations

import enum
from typing import Annotated

from pydantic import Field, WithJsonSchema

from runstate.api.model import ApiModel


class StateType(enum.StrEnum):
    SCHEDULED = "SCHEDULED"
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    CANCELLING = "CANCELLING"
    CANCELLED = "CANCELLED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CRASHED = "CRASHED"


class StateName(enum.StrEnum):
    """Prefect's named states; each has one `StateType` (`runstate.domain.states.TYPE_OF_NAME`).

    A StrEnum: on the wire a name is the plain string it always was, and the CRD schema types it
    as a string (no enum), so an older or newer operator reads every status the same way."""

    SCHEDULED = "Scheduled"
    LATE = "Late"
    AWAITING_RETRY = "AwaitingRetry"
    AWAITING_CONCURRENCY_SLOT = "AwaitingConcurrencySlot"
    PENDING = "Pending"
    RUNNING = "Running"
    RETRYING = "Retrying"
    PAUSED = "Paused"
    SUSPENDED = "Suspended"
    CANCELLING = "Cancelling"
    CANCELLED = "Cancelled"
    COMPLETED = "Completed"
    FAILED = "Failed"
    CRASHED = "Crashed"


class HookOutcome(enum.StrEnum):
    """What a state hook's pods show (`status.hooks[].result`); a plain string on the wire."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    LOST = "Lost"  # started once, and its pod is gone before it finished


class Stage(enum.StrEnum):
    """pyinfra's StateStage, in order. Order matters: stages only move forward."""

    Setup = "Setup"
    Connect = "Connect"
    Prepare = "Prepare"
    Execute = "Execute"
    Disconnect = "Disconnect"


class RunState(ApiModel):
    """`status.state`: Prefect's State, without result data."""

    type: StateType = Field(
        description="The state's type (Prefect's); COMPLETED, FAILED, CANCELLED and CRASHED are "
        "final"
    )
    name: Annotated[StateName, WithJsonSchema({"type": "string"})] = Field(
        description="The state's name within its type (Scheduled, Late, AwaitingRetry, Pending, "
        "Running, Retrying, Paused, Completed, Failed, ...)"
    )
    message: str = Field(default="", description="Why the run is in this state")
    timestamp: str = Field(description="RFC 3339 time the state was entered")
    scheduled_time: str | None = Field(default=None, description="SCHEDULED states: start-at")
    pause_timeout: str | None = Field(default=None, description="PAUSED states: fail after this")
    attempt: int | None = Field(default=None, description="The attempt it is about (1: the first)")
    retriable: bool | None = Field(default=None, description="AwaitingRetry: a retry follows")
