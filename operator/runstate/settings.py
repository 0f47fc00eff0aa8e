"""Operator configuration from the environment (the Helm chart sets these).

Secrets (the Redis URL may hold a password) are read here and never logged: `describe()`
gives a printable summary with the password masked.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from runstate.stores import redact_url


def _masked(url: str | None) -> str:
    # redact_url copes with every store URL (several hosts, secrets in the query) and never
    # raises: a log line must not be what stops the operator from starting.
    return redact_url(url) if url else "memory"


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
            standalone=e.get("RUNSTATE_STANDALONE", "").lower() in ("1", "true", "yes"),
            peering=e.get("RUNSTATE_PEERING") or None,
            peering_priority=int(e.get("RUNSTATE_PEERING_PRIORITY") or "0"),
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
