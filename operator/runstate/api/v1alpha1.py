"""The `runstate.dev/v1alpha1` API types: Runbook and Run, spec and status.

These pydantic models are the single source of truth for the custom resources: the CRD YAML in
`crds/` is generated from them (`runstate crds`), and the operator parses every object it reads
through them. This module holds data shapes and field-level validation only; what the fields
*mean* (stages, states, rules) lives in `runstate.domain`. It must not import kopf, Kubernetes
clients or anything with I/O.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from runstate.api.connector import Connector
from runstate.api.model import ApiModel, list_map
from runstate.api.podtemplate import PodTemplate
from runstate.api.pyinfra import PyinfraOperation

GROUP = "runstate.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
# Kept on a Run while it has pods or hot state to clean up: deleting the Run cancels it first.
FINALIZER = f"{GROUP}/cleanup"

# Operation names become label values and parts of pod names: keep them DNS-label shaped.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# A service account name (a DNS subdomain, RFC 1123).
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# A container env var name as the API server accepts it (IsEnvVarName).
ENV_NAME = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
# An image reference (the distribution reference grammar, without IPv6 registry hosts):
# [registry[:port]/]path[/path...][:tag][@digest].
_DOMAIN = r"[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
_PATH = r"[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*"
IMAGE = (
    rf"^({_DOMAIN}(:[0-9]+)?/)?{_PATH}(/{_PATH})*"
    r"(:[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,127})?"
    r"(@[A-Za-z][A-Za-z0-9]*([-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$"
)
# An IANA time zone name (`Europe/Berlin`, `Etc/GMT+5`, `America/Port-au-Prince`).
TIME_ZONE = r"^[A-Za-z][-A-Za-z0-9_+]*(/[-A-Za-z0-9_+]+)*$"
# A resource.Quantity (`500m`, `1.5Gi`, `2`, `1e3`); negative ones are no resource amount.
QUANTITY = r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)([KMGTPE]i|[numkMGTPE]|[eE][-+]?[0-9]+)?$"

# Every duration of a spec, in seconds, is at most 10 years: far beyond any sensible wait, and
# far below what `datetime` arithmetic (year 9999) and a pod's activeDeadlineSeconds hold.
MAX_SECONDS = 315_360_000
# Scheduled times are between these years: a time plus any bounded duration stays a datetime.
MIN_YEAR, MAX_YEAR = 1970, 9000
# Label keys (`[prefix/]name`) and values, as a label selector of the Node LIST must have them.
LABEL_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
LABEL_KEY = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?" + LABEL_NAME + "$"
)
LABEL_VALUE = r"^(" + LABEL_NAME + r")?$"
# The prefix of the env var each Run parameter becomes.
PARAM_ENV_PREFIX = "RUNSTATE_PARAM_"
# The schema's side of the year bound of `scheduledTime` (format date-time checks the rest).
SCHEDULED_YEAR = r"^(19[7-9][0-9]|[2-8][0-9]{3})-"

Seconds = Annotated[int, Field(ge=0, le=MAX_SECONDS)]
PositiveSeconds = Annotated[int, Field(ge=1, le=MAX_SECONDS)]


def param_env_name(name: str) -> str:
    """The env var a Run parameter becomes: non-alphanumerics become `_`, upper-cased."""
    return PARAM_ENV_PREFIX + re.sub(r"[^A-Za-z0-9]", "_", name).upper()


# --------------------------------------------------------------------------------------------
# States (Prefect semantics; the rules live in runstate.domain.states / policy)


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


# --------------------------------------------------------------------------------------------
# Runbook spec


class Host(ApiModel):
    name: Annotated[str, Field(min_length=1, max_length=253)] = Field(
        description="Unique in the inventory; pods and status name the host by it (ssh: its "
        "address unless host data ssh_hostname)"
    )
    groups: list[Annotated[str, Field(min_length=1, max_length=63)]] = Field(
        default_factory=list, description="Groups it is in (operations[].hosts.groups)"
    )
    data: dict[str, Any] = Field(
        default_factory=dict, description="Host data, exposed to pods as RUNSTATE_HOST_DATA (JSON)"
    )


class SelectorOperator(enum.StrEnum):
    In = "In"
    NotIn = "NotIn"
    Exists = "Exists"
    DoesNotExist = "DoesNotExist"


def _check_label_key(key: str) -> None:
    prefix, _, name = key.rpartition("/")
    if re.match(LABEL_KEY, key) is None or len(name) > 63 or len(prefix) > 253:
        raise ValueError(
            f"{key!r} is not a label key ([prefix/]name: a DNS subdomain, then at most 63 "
            "alphanumerics, '-', '_' or '.')"
        )


LabelValue = Annotated[str, Field(max_length=63, pattern=LABEL_VALUE)]


class SelectorRequirement(ApiModel):
    key: Annotated[str, Field(min_length=1, max_length=317, pattern=LABEL_KEY)] = Field(
        description="A label key"
    )
    operator: SelectorOperator = Field(description="In, NotIn, Exists or DoesNotExist")
    values: list[LabelValue] = Field(
        default_factory=list, description="In and NotIn: the values (Exists and DoesNotExist: none)"
    )

    @field_validator("key")
    @classmethod
    def _label_key(cls, key: str) -> str:
        _check_label_key(key)
        return key

    @model_validator(mode="after")
    def _values_fit(self) -> SelectorRequirement:
        needs = self.operator in (SelectorOperator.In, SelectorOperator.NotIn)
        if needs and not self.values:
            raise ValueError(f"operator {self.operator.value} needs at least one value")
        if not needs and self.values:
            raise ValueError(f"operator {self.operator.value} takes no values")
        return self


class NodeSelector(ApiModel):
    """A Kubernetes label selector over Nodes (both parts must match)."""

    match_labels: dict[str, LabelValue] = Field(
        default_factory=dict, description="Nodes with all these labels"
    )
    match_expressions: list[SelectorRequirement] = Field(
        default_factory=list, description="Nodes matching all these requirements"
    )

    @field_validator("match_labels")
    @classmethod
    def _label_keys(cls, labels: dict[str, str]) -> dict[str, str]:
        for key in labels:
            _check_label_key(key)
        return labels


class Inventory(ApiModel):
    """The hosts runs work on: a static list, or the Nodes a selector matches."""

    hosts: list[Host] = Field(
        default_factory=list,
        description="Static hosts (pyinfra Inventory), names unique",
        json_schema_extra=list_map("name"),
    )
    node_selector: NodeSelector | None = Field(
        default=None,
        description="Alternative to hosts: each Node matching this selector is a host, its pods "
        "pinned to it with nodeName. Resolved once, when a run starts.",
    )
    tolerate_taints: bool = Field(
        default=False,
        description="Node inventories: pods tolerate the taints of the Node they are pinned to",
    )

    @model_validator(mode="after")
    def _one_source(self) -> Inventory:
        if self.hosts and self.node_selector is not None:
            raise ValueError("hosts and nodeSelector are alternatives: set one of them")
        return self


# valueFrom: each source and the fields it needs (as the API server would demand them).
_VALUE_SOURCES: dict[str, tuple[str, ...]] = {
    "secretKeyRef": ("key",),
    "configMapKeyRef": ("key",),
    "fieldRef": ("fieldPath",),
    "resourceFieldRef": ("resource",),
}


class EnvVar(ApiModel):
    """An environment variable of the work container."""

    name: Annotated[str, Field(min_length=1, max_length=1024, pattern=ENV_NAME)] = Field(
        description="Unique in its list; RUNSTATE_* are runstate's"
    )
    value: str | None = Field(default=None, description="The value (or valueFrom)")
    value_from: dict[str, Any] | None = Field(
        default=None,
        description="Passed to the pod as is: exactly one of secretKeyRef, configMapKeyRef, "
        "fieldRef, resourceFieldRef",
    )

    @model_validator(mode="after")
    def _value_from_shape(self) -> EnvVar:
        source = self.value_from
        if source is None:
            return self
        if self.value:
            raise ValueError(f"env {self.name!r}: value and valueFrom are alternatives")
        kinds = sorted(source)
        if len(kinds) != 1 or kinds[0] not in _VALUE_SOURCES:
            raise ValueError(
                f"env {self.name!r}: valueFrom needs exactly one of "
                f"{', '.join(_VALUE_SOURCES)}; got {', '.join(kinds) or 'none'}"
            )
        ref = source[kinds[0]]
        if not isinstance(ref, dict):
            raise ValueError(f"env {self.name!r}: valueFrom.{kinds[0]} must be an object")
        for needed in _VALUE_SOURCES[kinds[0]]:
            if not isinstance(ref.get(needed), str) or not ref[needed]:
                raise ValueError(f"env {self.name!r}: valueFrom.{kinds[0]}.{needed} is required")
        return self


def _unique_env(env: Sequence[EnvVar]) -> None:
    seen: dict[str, int] = {}
    for i, var in enumerate(env):
        if var.name in seen:
            raise ValueError(
                f"duplicate env name {var.name!r} (env[{seen[var.name]}] and env[{i}])"
            )
        seen[var.name] = i


_RESOURCE_KEYS = ("limits", "requests", "claims")


def _check_resources(resources: dict[str, Any] | None) -> None:
    """Container resources as the API server would take them: limits/requests of quantities."""
    if resources is None:
        return
    for key, amounts in resources.items():
        if key not in _RESOURCE_KEYS:
            raise ValueError(f"unknown key {key!r} (limits, requests or claims)")
        if key == "claims" or amounts is None:
            continue
        if not isinstance(amounts, dict):
            raise ValueError(f"{key} must map resource names to quantities")
        for name, amount in amounts.items():
            ok = (
                isinstance(amount, int | float)
                and not isinstance(amount, bool)
                and 0 <= amount < 1e18
            ) or (isinstance(amount, str) and re.match(QUANTITY, amount) is not None)
            if not ok:
                raise ValueError(f"{key}.{name}: {amount!r} is not a quantity (e.g. 500m, 1Gi)")


class Defaults(ApiModel):
    """What every operation (and hook) takes unless it sets its own."""

    image: str = Field(
        default="alpine:3.20",
        min_length=1,
        max_length=512,
        pattern=IMAGE,
        description="The work image (an operation's image replaces it)",
    )
    env: list[EnvVar] = Field(
        default_factory=list,
        description="Env of every work container (an operation's own of a name wins)",
        json_schema_extra=list_map("name"),
    )
    service_account_name: (
        Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)] | None
    ) = Field(default=None, description="The work pods' service account")
    resources: dict[str, Any] | None = Field(
        default=None,
        description="Container resources (requests/limits of quantities), passed to pods as is",
    )
    pod_template: PodTemplate | None = Field(
        default=None,
        description="Added to every work pod (volumes, nodeSelector, tolerations, "
        "securityContext ...); an operation's own podTemplate is merged over it",
    )

    @field_validator("env")
    @classmethod
    def _env_unique(cls, env: list[EnvVar]) -> list[EnvVar]:
        _unique_env(env)
        return env

    @field_validator("resources")
    @classmethod
    def _quantities(cls, resources: dict[str, Any] | None) -> dict[str, Any] | None:
        _check_resources(resources)
        return resources


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
        _unique_env(env)
        return env

    @model_validator(mode="after")
    def _run_or_pyinfra(self) -> Operation:
        if (self.run is None) == (self.pyinfra is None):
            raise ValueError("set exactly one of run and pyinfra")
        if self.pyinfra is not None and self.check is not None:
            raise ValueError("a pyinfra operation takes no check: pyinfra's dry mode is its check")
        return self


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


class RunbookSpec(ApiModel):
    """Hosts, the operations run on them (a DAG), and how and when Runs of it run."""

    inventory: Inventory = Field(default_factory=Inventory)
    connector: Connector = Field(
        default_factory=Connector,
        description="How run and check reach the hosts: in the pod (pod), on the host over "
        "SSH (ssh), or chrooted into the Node (node)",
    )
    defaults: Defaults = Field(default_factory=Defaults)
    connect: Connect | None = None
    operations: list[Operation] = Field(
        min_length=1,
        max_length=200,
        description="The work: a DAG by dependsOn, run in order of the list otherwise",
        json_schema_extra=list_map("name"),
    )
    config: RunConfig = Field(default_factory=RunConfig)
    retries: Retries = Field(default_factory=Retries)
    late_after_seconds: Seconds = Field(
        default=15, description="A scheduled run not started this long after its time is Late"
    )
    trigger: Trigger = Field(default_factory=Trigger)
    hooks: Hooks = Field(default_factory=Hooks)
    history: History = Field(
        default_factory=History, description="Which finished Runs it started are deleted"
    )
    hook_operations: list[Operation] = Field(
        default_factory=list,
        max_length=50,
        description="Operations that `hooks` name: one pod per run (per selected host when "
        "`hosts` is given), never part of the DAG",
        json_schema_extra=list_map("name"),
    )


# --------------------------------------------------------------------------------------------
# Run spec


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


# --------------------------------------------------------------------------------------------
# Status


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
