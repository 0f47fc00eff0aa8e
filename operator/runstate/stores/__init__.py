"""Hot run state: pluggable stores (in-memory, Redis).

Owns the public face of `runstate.stores`: the contract from `base` (records, errors, the
`AsyncStateStore` protocol), the two implementations, and `store_from_url`, which picks one from
the operator's configuration. It must not know about Kubernetes or kopf, and must never echo a
store URL (it may carry a password) in an error.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from .base import (
    HISTORY_CAP,
    AsyncStateStore,
    HistoryEntry,
    StateRecord,
    StoreUnavailable,
    VersionConflict,
)
from .memory import InMemoryStateStore
from .redis import RedisStateStore

__all__ = [
    "HISTORY_CAP",
    "AsyncStateStore",
    "HistoryEntry",
    "InMemoryStateStore",
    "RedisStateStore",
    "StateRecord",
    "StoreUnavailable",
    "VersionConflict",
    "store_from_url",
]


def store_from_url(url: str | None) -> AsyncStateStore:
    """The store for `url`: none or "" -> in-memory; redis:// or rediss:// -> Redis.

    Raises `ValueError` naming the scheme (never the URL) for anything else.
    """
    if not url:
        return InMemoryStateStore()
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("redis", "rediss"):
        return RedisStateStore.from_url(url)
    raise ValueError(
        f"state store URL scheme {scheme or '(none)'!r} is not supported; "
        "use redis:// or rediss://, or leave the URL empty for the in-memory store"
    )
