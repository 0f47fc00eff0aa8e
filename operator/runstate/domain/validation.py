"""The static checks of a Runbook or Run spec, each naming the field it is about.

The models (`runstate.api.v1alpha1`) reject what one field shows on its own (bounds, patterns,
shapes), and the generated CRD schema rejects most of that at apply time already. What needs
more of the spec (hosts an operation names, the DAG, hooks, env names against each other, the
schedule, pyinfra operations against the pinned pyinfra) is judged here, or in the room this
module calls for it (`connection` for connectors, `templates` for podTemplates), and raised as
a `SpecError`:

- `validate_runbook(spec)`: what the Runbook's status and every Run's Setup stage judge;
- `validate_run(spec, runbook)`: a Run's own spec on top of its Runbook's (limit, parameters);
- `setup(spec, runbook, nodes)`: `validate_run` that also returns what the Setup stage needs
  (the resolved inventory and the DAG), each computed once;
- podTemplates (`_pod_templates`): mounts name volumes the pod has, no volume, env or label
  of a template takes a name runstate reserves for its own;
- `describe(prefix, exc)`: a pydantic `ValidationError` as one message naming the field as a
  user finds it in the manifest (`spec.operations[2].timeoutSeconds: ...`);
- `retry_delay(retries, attempt)`: the wait before the next attempt, clamped so that no
  `delaySeconds × backoffFactor^attempt` overflows a `timedelta`.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import ValidationError

from runstate.api.v1alpha1 import (
    DNS_LABEL,
    DNS_SUBDOMAIN,
    ENV_NAME,
    IMAGE,
    LABEL_KEY,
    LABEL_VALUE,
    MAX_SECONDS,
    PARAM_ENV_PREFIX,
    SCHEDULED_YEAR,
    TIME_ZONE,
    EnvVar,
    Host,
    Operation,
    Retries,
    RunbookSpec,
    RunSpec,
    param_env_name,
)
from runstate.domain import connection, hooks, templates, triggers
from runstate.domain.dag import Dag, build_dag
from runstate.domain.errors import SpecError
from runstate.domain.inventory import ResolvedInventory, resolve_inventory
from runstate.domain.templates import RESERVED_ENV_PREFIX
from runstate.pyinfra import catalog

# What a value that misses a pattern of the API should have been (pydantic would quote the
# regular expression).
_PATTERNS = {
    DNS_LABEL: "a DNS label (lower case alphanumerics and '-', at most 63)",
    DNS_SUBDOMAIN: "a DNS subdomain (lower case alphanumerics, '-' and '.')",
    ENV_NAME: "an env var name ([-._a-zA-Z][-._a-zA-Z0-9]*)",
    IMAGE: "an image reference ([registry[:port]/]path[:tag][@digest], path in lower case)",
    LABEL_KEY: "a label key ([prefix/]name)",
    LABEL_VALUE: "a label value (alphanumerics, '-', '_' and '.', at most 63)",
    TIME_ZONE: "an IANA time zone name (e.g. Europe/Berlin)",
    SCHEDULED_YEAR: "a time in the years 1970 to 8999",
}


def describe(prefix: str, exc: ValidationError) -> str:
    """The first error of `exc` as `prefix.path[2].field: message`."""
    first = exc.errors()[0]
    where = prefix
    for part in first["loc"]:
        where += f"[{part}]" if isinstance(part, int) else f".{part}"
    message = str(first["msg"]).removeprefix("Value error, ")
    wanted = _PATTERNS.get(str((first.get("ctx") or {}).get("pattern")))
    if first["type"] == "string_pattern_mismatch" and wanted is not None:
        message = f"{str(first['input'])[:100]!r} is not {wanted}"
    return f"{where}: {message}"


def retry_delay(retries: Retries, attempt: int) -> float:
    """Seconds to wait after failed attempt `attempt` (1-based) before the next one:
    `delaySeconds × backoffFactor^(attempt-1)`, at most `MAX_SECONDS` (10 years)."""
    exponent = max(0, attempt - 1)
    delay = float(retries.delay_seconds)
    if delay <= 0:
        return 0.0
    factor = float(retries.backoff_factor)
    # Compared in logarithms: 10^1000 is no float, and a timedelta holds ~8.6e13 s at most.
    if factor > 1 and math.log(delay) + exponent * math.log(factor) >= math.log(MAX_SECONDS):
        return float(MAX_SECONDS)
    return min(float(MAX_SECONDS), delay * factor**exponent)


def _env(env: Sequence[EnvVar], where: str) -> None:
    """Names the API server would refuse are caught by the model's pattern; duplicates by its
    validator. What is left: names that would replace the operator's own."""
    for i, var in enumerate(env):
        if var.name.startswith(RESERVED_ENV_PREFIX):
            raise SpecError(
                f"{where}[{i}].name",
                f"{var.name!r}: names starting with {RESERVED_ENV_PREFIX} are set by runstate "
                f"(parameters become {PARAM_ENV_PREFIX}<NAME>)",
            )
    seen: dict[str, int] = {}
    for i, var in enumerate(env):  # also here for specs built without the model's validation
        if var.name in seen:
            raise SpecError(
                f"{where}[{i}].name",
                f"duplicate env name {var.name!r} (also {where}[{seen[var.name]}])",
            )
        seen[var.name] = i


def _pyinfra(ops: Sequence[Operation], where: str) -> None:
    """pyinfra operations that pyinfra's library does not have, or whose arguments it would
    refuse: judged against the pinned pyinfra itself, before any pod starts."""
    for i, op in enumerate(ops):
        block = op.pyinfra
        if block is None or block.op is None:
            continue
        problems = catalog.problems(block.op, block.args)
        if problems:
            field, message = problems[0]
            raise SpecError(f"{where}[{i}].pyinfra.{field}", message)


def _rest(spec: RunbookSpec, *, privileged_allowed: bool) -> Dag:
    """Every check of `validate_runbook` but the inventory's; the DAG it built."""
    dag = build_dag(spec.operations)
    hooks.validate_hooks(spec)
    connection.validate(spec, privileged_allowed=privileged_allowed)
    _pyinfra(spec.operations, "spec.operations")
    _pyinfra(spec.hook_operations, "spec.hookOperations")
    _env(spec.defaults.env, "spec.defaults.env")
    for i, op in enumerate(spec.operations):
        _env(op.env, f"spec.operations[{i}].env")
    for i, op in enumerate(spec.hook_operations):
        _env(op.env, f"spec.hookOperations[{i}].env")
    templates.validate(spec)
    triggers.validate(spec.trigger)
    return dag


def validate_runbook(spec: RunbookSpec, *, privileged_allowed: bool = False) -> None:
    """Raise `SpecError` for the first thing in `spec` the operator cannot act on: the static
    inventory (no hosts, duplicates, unknown groups or host names in `operations[].hosts`), the
    DAG (duplicates, unknown `dependsOn`, cycles), hooks, connectors (a `node` connector the
    operator does not allow: `privileged_allowed`), env names, the trigger (zone, schedule that
    never fires). A `nodeSelector` inventory is resolved when a run starts."""
    if spec.inventory.node_selector is None:
        resolve_inventory(spec, None)
    _rest(spec, privileged_allowed=privileged_allowed)


def _parameters(spec: RunSpec) -> None:
    seen: dict[str, str] = {}
    for key in spec.parameters:
        env = param_env_name(key)
        if env in seen:
            raise SpecError(
                "spec.parameters", f"{seen[env]!r} and {key!r} both become the env var {env}"
            )
        seen[env] = key


def validate_run(
    spec: RunSpec, runbook: RunbookSpec | None, *, privileged_allowed: bool = False
) -> None:
    """Raise `SpecError` for a Run that cannot start: its parameters (two that become one env
    var), and with its Runbook (None: not there yet, nothing more to judge) everything
    `validate_runbook` judges plus `limit` against a static inventory."""
    _parameters(spec)
    if runbook is None:
        return
    if runbook.inventory.node_selector is None:
        resolve_inventory(runbook, spec.limit)  # what resolve_inventory(runbook, None) checks, too
    _rest(runbook, privileged_allowed=privileged_allowed)


class _SetupCache:
    """`setup()` answers for the spec objects it was last asked about.

    A run is decided again on every pod event with the very same parsed specs (the reconciler
    keeps them per generation), so their Setup (inventory, DAG, every static check: linear in
    hosts × operations) is worked out once per object, not once per decision. Entries hold
    the objects they answer for, so an id is never mistaken for a newer object's. Decisions
    may run in a worker thread: a lock guards the table."""

    SIZE = 256

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[int, int, int], _Entry] = OrderedDict()

    def get(self, spec: RunSpec, runbook: RunbookSpec, nodes: object) -> _Entry | None:
        key = (id(spec), id(runbook), id(nodes))
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or not entry.holds(spec, runbook, nodes):
                return None
            self._entries.move_to_end(key)
            return entry

    def put(self, entry: _Entry) -> None:
        key = (id(entry.spec), id(entry.runbook), id(entry.nodes))
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self.SIZE:
                self._entries.popitem(last=False)


@dataclass(frozen=True)
class _Entry:
    spec: RunSpec
    runbook: RunbookSpec
    nodes: object
    privileged_allowed: bool
    setup: tuple[ResolvedInventory, Dag] | None
    problem: tuple[str, str] | None  # (field, message) of the SpecError it raised

    def holds(self, spec: RunSpec, runbook: RunbookSpec, nodes: object) -> bool:
        return self.spec is spec and self.runbook is runbook and self.nodes is nodes


_SETUPS = _SetupCache()


def setup(
    spec: RunSpec,
    runbook: RunbookSpec,
    nodes: Sequence[Host] | None = None,
    *,
    privileged_allowed: bool = False,
) -> tuple[ResolvedInventory, Dag]:
    """`setup_uncached`, worked out once per (spec, runbook, nodes) objects and opt-in."""
    entry = _SETUPS.get(spec, runbook, nodes)
    if entry is not None and entry.privileged_allowed is not privileged_allowed:
        entry = None
    if entry is None:
        try:
            done = setup_uncached(spec, runbook, nodes, privileged_allowed=privileged_allowed)
            entry = _Entry(spec, runbook, nodes, privileged_allowed, done, None)
        except SpecError as exc:
            problem = (exc.field, exc.message)
            entry = _Entry(spec, runbook, nodes, privileged_allowed, None, problem)
        _SETUPS.put(entry)
    if entry.setup is None:
        field, message = entry.problem or ("spec", "invalid")
        raise SpecError(field, message)  # a fresh one: a raised error keeps its frames
    return entry.setup


def setup_uncached(
    spec: RunSpec,
    runbook: RunbookSpec,
    nodes: Sequence[Host] | None = None,
    *,
    privileged_allowed: bool = False,
) -> tuple[ResolvedInventory, Dag]:
    """The Setup stage of a run: every check of `validate_run`, then the run's inventory
    (`nodes`: a `nodeSelector` inventory's Nodes) and its DAG, each resolved once."""
    _parameters(spec)
    inventory = resolve_inventory(runbook, spec.limit, nodes)
    return inventory, _rest(runbook, privileged_allowed=privileged_allowed)


__all__ = [
    "RESERVED_ENV_PREFIX",
    "describe",
    "retry_delay",
    "setup",
    "validate_run",
    "validate_runbook",
]
