"""Operator configuration from the environment (the Helm chart sets these).

Secrets (the Redis URL may hold a password) are read here and never logged: `describe()`
gives a printable summary with the password masked.
"""

from __future__ import annotations

import functools
import os
import secrets
from dataclasses import dataclass

from runstate_stores import redact_url


def _masked(url: str | None) -> str:
    # redact_url copes with every store URL (several hosts, secrets in the query) and never
    # raises: a log line must not be what stops the operator from starting.
    return redact_url(url) if url else "memory"


# RUNSTATE_PEERING_PRIORITY=random draws from 1..2**31-1: a tie between two replicas (both
# would stand by forever, kopf's rule) is then a one-in-two-billion event, and the value still
# fits a 32-bit integer for whatever reads the peering object.
RANDOM_PRIORITY_MAX = 2**31 - 1


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


def _peering_priority(raw: str | None) -> int:
    value = (raw or "").strip()
    if value.lower() == "random":
        return random_peering_priority()
    try:
        return int(value or "0")
    except ValueError:
        raise ValueError(
            f"RUNSTATE_PEERING_PRIORITY must be an integer or 'random', not {raw!r}"
        ) from None


@dataclass(frozen=True)
class Settings:
    redis_url: str | None = None
    metrics_host: str = "0.0.0.0"
    metrics_port: int = 8080
    namespaces: tuple[str, ...] = ()  # empty: all namespaces
    workers: int = 16
    resync_seconds: float = 60.0
    finished_ttl_seconds: int = 7 * 24 * 3600
    standalone: bool = False
    peering: str | None = None
    # kopf peering: the replica with the highest priority acts, the others stand by; a peer
    # that stops renewing its record is presumed dead after `peering_lifetime` seconds.
    peering_priority: int = 0
    peering_lifetime: int = 60

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        e = dict(os.environ if env is None else env)
        ns = tuple(n for n in e.get("RUNSTATE_NAMESPACES", "").split(",") if n.strip())
        return cls(
            redis_url=e.get("RUNSTATE_REDIS_URL") or None,
            metrics_host=e.get("RUNSTATE_METRICS_HOST", "0.0.0.0"),
            metrics_port=int(e.get("RUNSTATE_METRICS_PORT", "8080")),
            namespaces=tuple(n.strip() for n in ns),
            workers=int(e.get("RUNSTATE_WORKERS", "16")),
            resync_seconds=float(e.get("RUNSTATE_RESYNC_SECONDS", "60")),
            finished_ttl_seconds=int(e.get("RUNSTATE_FINISHED_TTL_SECONDS") or 7 * 24 * 3600),
            standalone=e.get("RUNSTATE_STANDALONE", "").lower() in ("1", "true", "yes"),
            peering=e.get("RUNSTATE_PEERING") or None,
            peering_priority=_peering_priority(e.get("RUNSTATE_PEERING_PRIORITY")),
            peering_lifetime=int(e.get("RUNSTATE_PEERING_LIFETIME") or "60"),
        )

    def describe(self) -> str:
        where = ",".join(self.namespaces) or "all namespaces"
        if self.standalone:
            peering = "standalone"
        else:
            peering = f"{self.peering or 'default (if present)'} priority {self.peering_priority}"
        return (
            f"store={_masked(self.redis_url)} namespaces={where} "
            f"metrics={self.metrics_host}:{self.metrics_port} workers={self.workers} "
            f"peering={peering}"
        )
