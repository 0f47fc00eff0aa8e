"""`spec.operations[]` and `spec.connect`: the commands a run executes on its hosts.

Owns `Operation` (a command with its check, or a pyinfra operation; its targets, image, env,
timeout, retries, connector and pod template), `HostSelector` (the hosts it targets) and
`Connect` (the Connect stage's probe). What needs the rest of the spec (dependencies that
exist, a DAG without cycles, hooks that name operations) is judged in
`runstate.domain.validation`. Must not import anything with I/O.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator, model_validator

from runstate.api.connector import Connector
from runstate.api.model import ApiModel, list_map
from runstate.api.podtemplate import PodTemplate
from runstate.api.pyinfra import PyinfraOperation
from runstate.api.v1alpha1.env import EnvVar, unique_env
from runstate.api.v1alpha1.formats import DNS_LABEL, IMAGE, PositiveSeconds


class HostSelector(ApiModel):
    groups: list[str] = Field(default_factory=list, description="Hosts in any of these groups")
    names: list[str] = Field(default_factory=list, description="Hosts with these names")


class Connect(ApiModel):
    """The Connect-stage probe: runs once per host; a host whose probe fails is a failed host."""

    run: Annotated[str, Field(min_length=1)] = Field(
        description="Shell command (sh -c) probing a host: exit 0 = reachable"
    )
    timeout_seconds: PositiveSeconds | None = Field(
        default=None, description="A probe running longer fails"
    )
    retries: Annotated[int, Field(ge=0, le=10)] = Field(
        default=0,
        description="Probe again this many times before the host counts as failed; a probe "
        "that needed a retry is a Connect stage warning",
    )


class Operation(ApiModel):
    """A command (or pyinfra operation) run on each targeted host."""

    name: Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL)] = Field(
        description="Unique in its list (a DNS label: pod names and labels carry it)"
    )
    run: Annotated[str, Field(min_length=1)] | None = Field(
        default=None, description="Shell command (sh -c) run per host; or pyinfra"
    )
    check: Annotated[str, Field(min_length=1)] | None = Field(
        default=None,
        description="Prepare stage: exit 0 = already in the desired state, 1-125 = change needed",
    )
    pyinfra: PyinfraOperation | None = Field(
        default=None,
        description="Instead of run and check: a pyinfra operation (or deploy), whose own "
        "change detection (dry mode) is the check",
    )
    depends_on: list[str] | None = Field(
        default=None, description="Operations that must finish first (default: the previous one)"
    )
    hosts: HostSelector | None = Field(default=None, description="Targeted hosts (default: all)")
    image: Annotated[str, Field(min_length=1, max_length=512, pattern=IMAGE)] | None = Field(
        default=None, description="Work image (default: spec.defaults.image)"
    )
    env: list[EnvVar] = Field(
        default_factory=list,
        description="Env after spec.defaults.env (a name here wins)",
        json_schema_extra=list_map("name"),
    )
    timeout_seconds: PositiveSeconds | None = Field(
        default=None, description="A pod running longer fails (timed out)"
    )
    retries: Annotated[int, Field(ge=0, le=10)] = Field(
        default=0, description="Run a failed pod again this many times before its host fails"
    )
    ignore_errors: bool = Field(
        default=False, description="A failure here does not fail the host (counted as ignored)"
    )
    connector: Connector | None = Field(
        default=None, description="This operation's connector (default: spec.connector)"
    )
    pod_template: PodTemplate | None = Field(
        default=None, description="Merged over spec.defaults.podTemplate for this operation"
    )

    @field_validator("env")
    @classmethod
    def _env_unique(cls, env: list[EnvVar]) -> list[EnvVar]:
        unique_env(env)
        return env

    @model_validator(mode="after")
    def _run_or_pyinfra(self) -> Operation:
        if (self.run is None) == (self.pyinfra is None):
            raise ValueError("set exactly one of run and pyinfra")
        if self.pyinfra is not None and self.check is not None:
            raise ValueError("a pyinfra operation takes no check: pyinfra's dry mode is its check")
        return self
