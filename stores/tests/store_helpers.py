"""Helpers the state-store tests share: the availability verdict for a Redis binary, the
Sentinel starter, the fake clock and the test history cap.

Kept out of `conftest.py` so that test modules import them by a name of their own
(`store_helpers`): `stores/tests` is not a package, and a module named `conftest` is ambiguous.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from store_topologies import SentinelTopology, find_binary

from runstate_stores import InMemoryStateStore, RedisStateStore
from tests.availability import unavailable

#: History cap the contract tests run with (small, so capping is cheap to exercise).
TEST_HISTORY_CAP = 5

Advance = Callable[[float], Awaitable[None]]
Store = InMemoryStateStore | RedisStateStore


def need(binary: str, package: str) -> str:
    """The path of `binary`, or the availability verdict (fail under CI, skip elsewhere)."""
    found = find_binary(binary)
    if found is None:
        unavailable(f"{binary} is not installed (apt-get install {package})")
    return found


def start_sentinel(tmp: pytest.TempPathFactory) -> SentinelTopology:
    topology = SentinelTopology(
        need("redis-server", "redis-server"),
        need("redis-sentinel", "redis-sentinel"),
        tmp.mktemp("sentinel"),
    )
    try:
        topology.start()
    except BaseException:
        topology.stop()
        raise
    return topology


class FakeClock:
    """A monotonic clock that only moves when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
