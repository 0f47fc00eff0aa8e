"""Hot run state: pluggable stores (in-memory, Redis).

Owns the public face of `runstate_stores`: the contract from `base` (records, errors, the
`StateStore` and `AsyncStateStore` protocols), the two implementations, and `store_from_url`,
which picks one from the operator's configuration, and `redact_url`, the store URL fit for a
log line. It must not know about Kubernetes or kopf,
and must never echo a store URL (it may carry a password) in an error.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from ._urls import REDIS_SCHEMES, redact_url
from .base import (
    HISTORY_CAP,
    AsyncStateStore,
    HistoryEntry,
    StateRecord,
    StateStore,
    StoreUnavailable,
    VersionConflict,
)
from .memory import InMemoryStateStore
from .redis import CommitBatching, RedisStateStore

__all__ = [
    "HISTORY_CAP",
    "AsyncStateStore",
    "CommitBatching",
    "HistoryEntry",
    "InMemoryStateStore",
    "RedisStateStore",
    "StateRecord",
    "StateStore",
    "StoreUnavailable",
    "VersionConflict",
    "redact_url",
    "store_from_url",
]


def store_from_url(url: str | None) -> InMemoryStateStore | RedisStateStore:
    """The store for `url` (both protocols): none or "" -> in-memory; a Redis URL -> Redis.

    Redis URLs: redis://, rediss://, unix:// (one server), redis+sentinel://,
    rediss+sentinel:// (Sentinel), redis+cluster://, rediss+cluster:// (Cluster); the syntax
    is in stores/README.md. Raises `ValueError` naming the scheme or the faulty part, never the
    URL.
    """
    if not url:
        return InMemoryStateStore()
    scheme = urlsplit(url).scheme.lower()
    if scheme in REDIS_SCHEMES:
        return RedisStateStore.from_url(url)
    raise ValueError(
        f"state store URL scheme {scheme or '(none)'!r} is not supported; use "
        f"{', '.join(s + '://' for s in REDIS_SCHEMES)}, or leave the URL empty for the "
        "in-memory store"
    )
