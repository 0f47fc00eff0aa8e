"""Fixtures for the state-store tests: real Redis topologies, and one `store` per implementation
and flavour.

The contract suite runs every test against every store kind (memory, one redis-server,
Sentinel, Cluster) in both flavours: `async` calls the `AsyncStateStore` methods, `sync` calls
the blocking `StateStore` methods, each in a worker thread, so that concurrent tests really
run concurrently. The Redis processes come from `store_topologies` and live for the session. With
CI=true a missing binary fails the run; it must never silently skip there.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

import pytest
import redis.asyncio
from store_helpers import TEST_HISTORY_CAP, Advance, FakeClock, Store, need, start_sentinel
from store_topologies import ClusterTopology, SentinelTopology, SingleRedis

from runstate_stores import (
    HISTORY_CAP,
    AsyncStateStore,
    HistoryEntry,
    InMemoryStateStore,
    RedisStateStore,
    StateRecord,
    StateStore,
)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SingleRedis]:
    """A redis-server started for this test session (TCP and a Unix socket)."""
    server = SingleRedis(need("redis-server", "redis-server"), tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: SingleRedis) -> str:
    return redis_server.url


@pytest.fixture(scope="session")
def sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelTopology]:
    """Master, replica and three sentinels for the session; tests must not fail it over."""
    topology = start_sentinel(tmp_path_factory)
    try:
        yield topology
    finally:
        topology.stop()


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterTopology]:
    """A three-master Redis Cluster for the session."""
    topology = ClusterTopology(
        need("redis-server", "redis-server"),
        need("redis-cli", "redis-tools"),
        tmp_path_factory.mktemp("cluster"),
    )
    try:
        topology.start()
        yield topology
    finally:
        topology.stop()


@pytest.fixture
async def raw_redis(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    """A plain client on the test server, to look at keys the way an operator admin would."""
    client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["memory", "redis", "sentinel", "cluster"])
def store_url(request: pytest.FixtureRequest) -> str:
    """The URL of a fresh (flushed) store of each kind; "" is the in-memory store.

    A sync fixture, so the servers start outside the event loop."""
    kind: str = request.param
    if kind == "memory":
        return ""
    topology: SingleRedis | SentinelTopology | ClusterTopology = request.getfixturevalue(
        {"redis": "redis_server", "sentinel": "sentinel", "cluster": "cluster"}[kind]
    )
    topology.flush()
    return topology.url


@pytest.fixture
async def backend(store_url: str, clock: FakeClock) -> AsyncIterator[Store]:
    """The store under test itself, implementing both protocols."""
    if not store_url:
        yield InMemoryStateStore(history_cap=TEST_HISTORY_CAP, clock=clock)
        return
    redis_store = RedisStateStore.from_url(store_url, history_cap=TEST_HISTORY_CAP)
    try:
        yield redis_store
    finally:
        await redis_store.aclose()


class BlockingAsAsync:
    """An `AsyncStateStore` that calls a store's blocking `StateStore` methods in threads.

    It adds no logic: each method is the blocking one with the same arguments, so the contract
    suite holds the blocking face to exactly the rules of the async one.
    """

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self.name = store.name

    async def aget_state(self, run_uid: str) -> StateRecord | None:
        return await asyncio.to_thread(self.store.get_state, run_uid)

    async def acommit(
        self,
        run_uid: str,
        record: StateRecord,
        *,
        expected_version: int,
        history: Sequence[HistoryEntry] = (),
    ) -> StateRecord:
        return await asyncio.to_thread(
            self.store.commit, run_uid, record, expected_version=expected_version, history=history
        )

    async def aset_state(
        self, run_uid: str, state: str, *, metadata: Mapping[str, Any] | None = None
    ) -> None:
        await asyncio.to_thread(self.store.set_state, run_uid, state, metadata=metadata)

    async def aget_context(self, run_uid: str) -> dict[str, Any]:
        return await asyncio.to_thread(self.store.get_context, run_uid)

    async def aread_history(self, run_uid: str, count: int = HISTORY_CAP) -> list[HistoryEntry]:
        return await asyncio.to_thread(self.store.read_history, run_uid, count)

    async def aset_results(self, run_uid: str, results: Mapping[str, Mapping[str, Any]]) -> None:
        await asyncio.to_thread(self.store.set_results, run_uid, results)

    async def aget_results(self, run_uid: str) -> dict[str, dict[str, Any]]:
        return await asyncio.to_thread(self.store.get_results, run_uid)

    async def aacquire_slot(
        self, scope: str, holder: str, *, limit: int, ttl_seconds: float
    ) -> bool:
        return await asyncio.to_thread(
            self.store.acquire_slot, scope, holder, limit=limit, ttl_seconds=ttl_seconds
        )

    async def arelease_slot(self, scope: str, holder: str) -> None:
        await asyncio.to_thread(self.store.release_slot, scope, holder)

    async def aslot_holders(self, scope: str) -> list[str]:
        return await asyncio.to_thread(self.store.slot_holders, scope)

    async def aexpire(self, run_uid: str, ttl_seconds: int) -> None:
        await asyncio.to_thread(self.store.expire, run_uid, ttl_seconds)

    async def adelete(self, run_uid: str) -> None:
        await asyncio.to_thread(self.store.delete, run_uid)

    async def aping(self) -> None:
        await asyncio.to_thread(self.store.ping)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.store.close)


@pytest.fixture(params=["async", "sync"])
def store(request: pytest.FixtureRequest, backend: Store) -> AsyncStateStore:
    """The store under test, through its async face or (in threads) its blocking one."""
    if request.param == "async":
        return backend
    return BlockingAsAsync(backend)


@pytest.fixture
def advance(backend: Store, clock: FakeClock) -> Advance:
    """Let `seconds` pass for the store: the fake clock for memory, real time for Redis."""

    async def _advance(seconds: float) -> None:
        if isinstance(backend, InMemoryStateStore):
            clock.advance(seconds)
        else:
            await asyncio.sleep(seconds)

    return _advance
