"""State-store calls, timed and counted: `runstate_store_operation_seconds` and
`runstate_store_errors_total` for every call the controller makes to the store.

It must not decide anything or swallow an error: a failed call is counted and raised.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from typing import TypeVar

from runstate import metrics
from runstate_stores.base import AsyncStateStore, VersionConflict

T = TypeVar("T")


class Metered:
    """Wraps each store call: `await metered("commit", store.acommit(...))`."""

    def __init__(self, store: AsyncStateStore) -> None:
        self.store = store

    async def __call__(self, operation: str, call: Awaitable[T]) -> T:
        started = time.perf_counter()
        try:
            return await call
        except VersionConflict:
            raise  # a lost compare-and-set is an answer, not an error of the store
        except Exception:
            metrics.STORE_ERRORS.labels(self.store.name).inc()
            raise
        finally:
            metrics.STORE_OPERATION.labels(self.store.name, operation).observe(
                time.perf_counter() - started
            )
