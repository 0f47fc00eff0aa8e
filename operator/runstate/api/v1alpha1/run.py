"""`Run.spec`: one execution of a Runbook, and what to do with it.

Owns `RunSpec` (the Runbook by reference or inline, parameters, limit, dry run, scheduled time,
pause and cancel) and `RunbookRef`, with their field checks: an RFC 3339 scheduled time within
the years the domain can add durations to, parameters whose env vars do not collide. What a Run
does over time is the domain's. Must not import anything with I/O.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field, field_validator, model_validator

from runstate.api.model import ApiModel
from runstate.api.v1alpha1.formats import (
    MAX_YEAR,
    MIN_YEAR,
    SCHEDULED_YEAR,
    PositiveSeconds,
    param_env_name,
)
from runstate.api.v1alpha1.runbook import RunbookSpec


class RunbookRef(ApiModel):
    name: Annotated[str, Field(min_length=1, max_length=253)] = Field(
        description="The Runbook's name"
    )


class RunSpec(ApiModel):
    """One execution of a Runbook (named by runbookRef, or inline), and what to do with it."""

    runbook_ref: RunbookRef | None = Field(
        default=None, description="A Runbook in the Run's namespace"
    )
    runbook: RunbookSpec | None = Field(default=None, description="An inline Runbook spec")
    parameters: dict[str, str] = Field(
        default_factory=dict, description="Exposed to every pod as RUNSTATE_PARAM_<NAME>"
    )
    limit: list[str] | None = Field(
        default=None, description="Only these hosts (pyinfra limit_hosts)"
    )
    dry_run: bool = Field(default=False, description="Stop after Prepare; report status.plan")
    scheduled_time: str | None = Field(
        default=None,
        description=f"Start at this RFC 3339 time (Scheduled until then), years {MIN_YEAR} "
        f"to {MAX_YEAR - 1}",
        json_schema_extra={"format": "date-time", "pattern": SCHEDULED_YEAR},
    )
    paused: bool = Field(
        default=False, description="true: no new pods start (Paused); false again: resume"
    )
    pause_timeout_seconds: PositiveSeconds | None = Field(
        default=None, description="A pause longer than this fails the run"
    )
    cancel: bool = Field(default=False, description="true: stop the run (Cancelling → Cancelled)")

    @field_validator("scheduled_time")
    @classmethod
    def _rfc3339(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                raise ValueError(f"not an RFC 3339 time: {value!r}") from None
            if moment.tzinfo is None:
                raise ValueError(f"needs a time zone (e.g. Z): {value!r}")
            if not MIN_YEAR <= moment.year < MAX_YEAR:
                raise ValueError(f"must be in the years {MIN_YEAR} to {MAX_YEAR - 1}: {value!r}")
        return value

    @field_validator("parameters")
    @classmethod
    def _distinct_env(cls, value: dict[str, str]) -> dict[str, str]:
        seen: dict[str, str] = {}
        for key in value:
            env = param_env_name(key)
            if env in seen:
                raise ValueError(
                    f"parameters {seen[env]!r} and {key!r} both become the env var {env}"
                )
            seen[env] = key
        return value

    @model_validator(mode="after")
    def _one_runbook(self) -> RunSpec:
        if (self.runbook_ref is None) == (self.runbook is None):
            raise ValueError("exactly one of runbookRef and runbook must be set")
        return self
