"""In-memory-only behaviour (expiry bookkeeping) and the `store_from_url` factory."""

from __future__ import annotations

import uuid

import pytest
from store_helpers import FakeClock

from runstate_stores import (
    InMemoryStateStore,
    RedisStateStore,
    StateRecord,
    store_from_url,
)


def running() -> StateRecord:
    return StateRecord(type="RUNNING", name="Running", stage="Execute")


async def test_expired_runs_are_dropped_even_if_never_read_again(clock: FakeClock) -> None:
    store = InMemoryStateStore(clock=clock)
    finished = [str(uuid.uuid4()) for _ in range(10)]
    for uid in finished:
        await store.acommit(uid, running(), expected_version=0)
        await store.aexpire(uid, 60)
    clock.advance(61)
    other = str(uuid.uuid4())
    await store.acommit(other, running(), expected_version=0)
    # Private look on purpose: nobody reads the finished runs, yet their memory is freed.
    assert set(store._runs) == {other}


async def test_a_later_expire_replaces_the_earlier_one(clock: FakeClock) -> None:
    store = InMemoryStateStore(clock=clock)
    uid = str(uuid.uuid4())
    await store.acommit(uid, running(), expected_version=0)
    await store.aexpire(uid, 10)
    await store.aexpire(uid, 100)
    clock.advance(50)
    assert await store.aget_state(uid) is not None
    clock.advance(51)
    assert await store.aget_state(uid) is None


async def test_expire_zero_drops_the_run_at_once(clock: FakeClock) -> None:
    store = InMemoryStateStore(clock=clock)
    uid = str(uuid.uuid4())
    await store.acommit(uid, running(), expected_version=0)
    await store.aexpire(uid, 0)
    assert await store.aget_state(uid) is None


def test_history_cap_must_be_positive() -> None:
    with pytest.raises(ValueError, match="history_cap"):
        InMemoryStateStore(history_cap=0)


async def test_memory_store_repr_and_name() -> None:
    store = InMemoryStateStore()
    assert store.name == "memory"
    assert "InMemoryStateStore" in repr(store)


@pytest.mark.parametrize("url", [None, ""])
def test_factory_defaults_to_memory(url: str | None) -> None:
    assert isinstance(store_from_url(url), InMemoryStateStore)


@pytest.mark.parametrize("url", ["redis://localhost:6379/0", "rediss://:pw@redis.example:6380/1"])
async def test_factory_builds_redis_for_redis_urls(url: str) -> None:
    store = store_from_url(url)
    assert isinstance(store, RedisStateStore)
    assert store.name == "redis"
    assert "pw" not in repr(store)
    await store.aclose()


@pytest.mark.parametrize(
    ("url", "scheme"),
    [
        ("postgresql://admin:hunter2@db/runs", "postgresql"),
        ("memcached://cache:11211", "memcached"),
        ("localhost:6379", "localhost"),
    ],
)
def test_factory_rejects_other_schemes_without_echoing_the_url(url: str, scheme: str) -> None:
    with pytest.raises(ValueError, match=scheme) as rejected:
        store_from_url(url)
    assert "hunter2" not in str(rejected.value)
