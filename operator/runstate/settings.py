"""Operator settings: small grouped dataclasses, each field documented, read from the environment.

Every knob has its default here and nowhere else. `Settings.from_env` reads the variables the
Helm chart sets (table `VARIABLES`: one row per variable) and fails with a message naming the
variable when a value does not parse. Secrets (the Redis URL may hold a password) are never
logged: `describe()` masks them.
"""

from __future__ import annotations

import dataclasses
import functools
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from runstate_stores import redact_url

# RUNSTATE_PEERING_PRIORITY=random draws from 1..2**31-1: a tie between two replicas (both
# would stand by forever, kopf's rule) is then a one-in-two-billion event, and the value still
# fits a 32-bit integer for whatever reads the peering object.
RANDOM_PRIORITY_MAX = 2**31 - 1
WEEK = 7 * 24 * 3600


class SettingsError(ValueError):
    """A variable of the environment that does not parse; the message names it."""


@dataclass(frozen=True)
class StoreSettings:
    redis_url: str | None = None
    """Where hot run state lives: redis://, rediss://, redis+sentinel://, redis+cluster://;
    None keeps it in the operator's memory (one replica, lost on restart)."""


@dataclass(frozen=True)
class ServerSettings:
    host: str = "0.0.0.0"
    """Address of the /metrics, /healthz and /readyz server."""
    port: int = 8080
    """Port of that server (0: any free port)."""


@dataclass(frozen=True)
class WatchSettings:
    namespaces: tuple[str, ...] = ()
    """Namespaces whose Runs and Runbooks the operator serves; empty: all."""


@dataclass(frozen=True)
class ReconcileSettings:
    workers: int = 16
    """Reconciles at once (different objects; one object is never reconciled twice at once)."""
    resync_seconds: float = 60.0
    """Every live Run is reconciled at least this often, whatever events were missed."""
    create_concurrency: int = 16
    """Pod creations in flight at once, across all runs."""
    status_coalesce_seconds: float = 1.0
    """Progress of a run under way is written to its status at most this often (an end, a
    stall or a problem is written at once)."""
    slot_ttl_seconds: float = 180.0
    """A concurrency slot's lease: renewed by every reconcile of its run, it outlives a few
    resyncs and expires with an operator that stopped renewing it."""
    finished_ttl_seconds: int = WEEK
    """An ended run's hot state expires this long after it ended (its status stays)."""


@dataclass(frozen=True)
class PeeringSettings:
    standalone: bool = False
    """No peering: this process acts alone, whatever other replicas do."""
    name: str | None = None
    """kopf peering object shared by the replicas (makes peering mandatory)."""
    priority: int = 0
    """The replica with the highest priority acts, the others stand by."""
    lifetime: int = 60
    """A peer that stops renewing its record is presumed dead after this many seconds."""


@dataclass(frozen=True)
class OperationsSettings:
    runner_image: str = "ghcr.io/runstate/runstate:0.1.0"
    """The image of `ssh` and `node` work pods: runstate's own, whose `runstate exec` runner
    connects to the host and reports a typed result (the chart sets the operator's image)."""
    allow_privileged: bool = False
    """Runbooks may use the `node` connector: privileged pods with their Node's root at
    /host. Off, such a run fails at Setup with a message naming the field."""


@dataclass(frozen=True)
class Settings:
    store: StoreSettings = field(default_factory=StoreSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    watch: WatchSettings = field(default_factory=WatchSettings)
    reconcile: ReconcileSettings = field(default_factory=ReconcileSettings)
    peering: PeeringSettings = field(default_factory=PeeringSettings)
    operations: OperationsSettings = field(default_factory=OperationsSettings)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        import os

        e = dict(os.environ if env is None else env)
        groups: dict[str, dict[str, Any]] = {}
        for var in VARIABLES:
            raw = e.get(var.name)
            if raw is None or raw.strip() == "":
                continue
            try:
                value = var.parse(raw)
            except (ValueError, TypeError) as exc:
                raise SettingsError(f"{var.name}: {exc} (got {raw!r})") from None
            groups.setdefault(var.group, {})[var.field] = value
        return cls.with_values(groups)

    @classmethod
    def with_values(cls, groups: Mapping[str, Mapping[str, Any]]) -> Settings:
        base = cls()
        return dataclasses.replace(
            base,
            **{g: dataclasses.replace(getattr(base, g), **values) for g, values in groups.items()},
        )

    def replace(self, group: str, **values: Any) -> Settings:
        """These settings with some fields of one group changed (command-line overrides)."""
        return dataclasses.replace(
            self, **{group: dataclasses.replace(getattr(self, group), **values)}
        )

    def describe(self) -> str:
        where = ",".join(self.watch.namespaces) or "all namespaces"
        p = self.peering
        peering = (
            "standalone"
            if p.standalone
            else f"{p.name or 'default (if present)'} priority {p.priority}"
        )
        return (
            f"store={_masked(self.store.redis_url)} namespaces={where} "
            f"metrics={self.server.host}:{self.server.port} workers={self.reconcile.workers} "
            f"peering={peering}"
        )


def _masked(url: str | None) -> str:
    # redact_url copes with every store URL (several hosts, secrets in the query) and never
    # raises: a log line must not be what stops the operator from starting.
    return redact_url(url) if url else "memory"


# ---- the environment ------------------------------------------------------------------------


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise ValueError("must be an integer ≥ 1")
    return value


def _port(raw: str) -> int:
    value = int(raw)
    if not 0 <= value <= 65535:
        raise ValueError("must be a port number (0-65535)")
    return value


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise ValueError("must be a number > 0")
    return value


def _seconds(raw: str) -> float:
    value = float(raw)
    if not 0 <= value <= 10 * 365 * 86400:
        raise ValueError("must be a number of seconds between 0 and 10 years")
    return value


def _flag(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def _namespaces(raw: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in raw.split(",") if n.strip())


@functools.cache
def random_peering_priority() -> int:
    """This process's random peering priority: drawn once, so every read of the settings in
    the process agrees with what kopf was given.

    Why random is safe for replicas of one Deployment (which cannot be told apart otherwise):
    the replicas need distinct priorities, not meaningful ones. A restarted replica draws anew
    and simply joins as a standby, or takes over from a lower one; during such a hand-over two
    replicas may act for a moment before the lower one sees the higher and pauses, which is
    harmless because every state change is fenced by the shared store's compare-and-set (the
    chart requires Redis for more than one replica) and every status write by the Run's
    resourceVersion.
    """
    return secrets.randbelow(RANDOM_PRIORITY_MAX) + 1


def _priority(raw: str) -> int:
    if raw.strip().lower() == "random":
        return random_peering_priority()
    try:
        return int(raw)
    except ValueError:
        raise ValueError("must be an integer or 'random'") from None


@dataclass(frozen=True)
class Variable:
    name: str
    group: str
    field: str
    parse: Callable[[str], Any]


VARIABLES: tuple[Variable, ...] = (
    Variable("RUNSTATE_REDIS_URL", "store", "redis_url", str),
    Variable("RUNSTATE_METRICS_HOST", "server", "host", str),
    Variable("RUNSTATE_METRICS_PORT", "server", "port", _port),
    Variable("RUNSTATE_NAMESPACES", "watch", "namespaces", _namespaces),
    Variable("RUNSTATE_WORKERS", "reconcile", "workers", _positive_int),
    Variable("RUNSTATE_RESYNC_SECONDS", "reconcile", "resync_seconds", _positive_float),
    Variable("RUNSTATE_CREATE_CONCURRENCY", "reconcile", "create_concurrency", _positive_int),
    Variable("RUNSTATE_STATUS_COALESCE_SECONDS", "reconcile", "status_coalesce_seconds", _seconds),
    Variable("RUNSTATE_SLOT_TTL_SECONDS", "reconcile", "slot_ttl_seconds", _positive_float),
    Variable("RUNSTATE_FINISHED_TTL_SECONDS", "reconcile", "finished_ttl_seconds", _positive_int),
    Variable("RUNSTATE_STANDALONE", "peering", "standalone", _flag),
    Variable("RUNSTATE_PEERING", "peering", "name", str),
    Variable("RUNSTATE_PEERING_PRIORITY", "peering", "priority", _priority),
    Variable("RUNSTATE_PEERING_LIFETIME", "peering", "lifetime", _positive_int),
    Variable("RUNSTATE_RUNNER_IMAGE", "operations", "runner_image", str),
    Variable("RUNSTATE_ALLOW_PRIVILEGED", "operations", "allow_privileged", _flag),
)
