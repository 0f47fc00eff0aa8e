"""The `runstate.dev/v1alpha1` API types: Runbook and Run, spec and status.

These pydantic models are the single source of truth for the custom resources: the CRD YAML in
`crds/` is generated from them (`runstate crds`), and the operator parses every object it reads
through them. This package holds data shapes and field-level validation only; what the fields
*mean* (stages, states, rules) lives in `runstate.domain`. It must not import kopf, Kubernetes
clients or anything with I/O.

Its modules, each one room (an import-linter contract in pyproject.toml keeps their layers):
`group` (the group, version and finalizer), `formats` (patterns and bounds the fields share),
`states` (state types and names, stages, `RunState`), `inventory` (hosts, the Node selector),
`env` (the work container's env vars), `defaults` (`spec.defaults`), `operation` (operations
and the Connect probe), `policy` (config, retries, trigger, hooks, history), `runbook`
(`RunbookSpec`), `run` (`RunSpec`) and `status` (both statuses). This module only re-exports
their public names: `from runstate.api.v1alpha1 import X` is how the rest of the operator
imports them.
"""

from __future__ import annotations

from runstate.api.v1alpha1.defaults import (
    Defaults,
)
from runstate.api.v1alpha1.env import (
    EnvVar,
)
from runstate.api.v1alpha1.formats import (
    DNS_LABEL,
    DNS_SUBDOMAIN,
    ENV_NAME,
    IMAGE,
    LABEL_KEY,
    LABEL_NAME,
    LABEL_VALUE,
    MAX_SECONDS,
    MAX_YEAR,
    MIN_YEAR,
    PARAM_ENV_PREFIX,
    QUANTITY,
    SCHEDULED_YEAR,
    TIME_ZONE,
    PositiveSeconds,
    Seconds,
    param_env_name,
)
from runstate.api.v1alpha1.group import (
    API_VERSION,
    FINALIZER,
    GROUP,
    VERSION,
)
from runstate.api.v1alpha1.inventory import (
    Host,
    Inventory,
    LabelValue,
    NodeSelector,
    SelectorOperator,
    SelectorRequirement,
)
from runstate.api.v1alpha1.operation import (
    Connect,
    HostSelector,
    Operation,
)
from runstate.api.v1alpha1.policy import (
    Concurrency,
    ConcurrencyPolicy,
    History,
    Hooks,
    PodRetention,
    Retries,
    RunConfig,
    Trigger,
)
from runstate.api.v1alpha1.run import (
    RunbookRef,
    RunSpec,
)
from runstate.api.v1alpha1.runbook import (
    RunbookSpec,
)
from runstate.api.v1alpha1.states import (
    HookOutcome,
    RunState,
    Stage,
    StateName,
    StateType,
)
from runstate.api.v1alpha1.status import (
    Condition,
    FailedHost,
    HistoryItem,
    HookResult,
    HostCounts,
    LastRun,
    OperationCounts,
    PlannedOperation,
    RunbookStatus,
    RunStatus,
    StageWarnings,
)

__all__ = [
    "API_VERSION",
    "DNS_LABEL",
    "DNS_SUBDOMAIN",
    "ENV_NAME",
    "FINALIZER",
    "GROUP",
    "IMAGE",
    "LABEL_KEY",
    "LABEL_NAME",
    "LABEL_VALUE",
    "MAX_SECONDS",
    "MAX_YEAR",
    "MIN_YEAR",
    "PARAM_ENV_PREFIX",
    "QUANTITY",
    "SCHEDULED_YEAR",
    "TIME_ZONE",
    "VERSION",
    "Concurrency",
    "ConcurrencyPolicy",
    "Condition",
    "Connect",
    "Defaults",
    "EnvVar",
    "FailedHost",
    "History",
    "HistoryItem",
    "HookOutcome",
    "HookResult",
    "Hooks",
    "Host",
    "HostCounts",
    "HostSelector",
    "Inventory",
    "LabelValue",
    "LastRun",
    "NodeSelector",
    "Operation",
    "OperationCounts",
    "PlannedOperation",
    "PodRetention",
    "PositiveSeconds",
    "Retries",
    "RunConfig",
    "RunSpec",
    "RunState",
    "RunStatus",
    "RunbookRef",
    "RunbookSpec",
    "RunbookStatus",
    "Seconds",
    "SelectorOperator",
    "SelectorRequirement",
    "Stage",
    "StageWarnings",
    "StateName",
    "StateType",
    "Trigger",
    "param_env_name",
]
