"""Redis-only behaviour of `RedisStateStore`: the key layout, TTLs, script handling, pooling,
its two clients (async and blocking), and that a password never leaks into messages, repr or
logs."""

from __future__ import annotations

import asyncio
import logging
import traceback
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis
import redis.asyncio
from redis.crc import key_slot
from store_topologies import SingleRedis, free_port

from runstate_stores import (
    HistoryEntry,
    StateRecord,
    StoreUnavailable,
    VersionConflict,
    store_from_url,
)
from runstate_stores.redis import RedisStateStore

PASSWORD = "s3cret"


@pytest.fixture
async def rstore(redis_url: str, raw_redis: redis.asyncio.Redis) -> AsyncIterator[RedisStateStore]:
    await raw_redis.flushdb()
    store = RedisStateStore.from_url(redis_url, history_cap=5)
    try:
        yield store
    finally:
        await store.aclose()


def running(**kw: Any) -> StateRecord:
    return StateRecord(type="RUNNING", name="Running", stage="Execute", **kw)


async def test_key_names_and_types(rstore: RedisStateStore, raw_redis: redis.asyncio.Redis) -> None:
    uid = str(uuid.uuid4())
    step = HistoryEntry("PENDING/Pending", "RUNNING/Running", "2024-01-01T00:00:00Z", "go", 2)
    await rstore.acommit(
        uid,
        running(attempt=2, message="m", timestamp="t", context={"g": 1}),
        expected_version=0,
        history=[step],
    )
    await rstore.aset_results(uid, {"apt|web-1": {"exit": 0}})
    await rstore.aacquire_slot("team-a/deploy", uid, limit=1, ttl_seconds=30)

    state_key = f"runstate:{{{uid}}}:state"
    results_key = f"runstate:{{{uid}}}:results"
    history_key = f"runstate:{{{uid}}}:history"
    slots_key = "runstate:slots:{team-a/deploy}"
    assert sorted(await raw_redis.keys("*")) == sorted(
        [state_key, results_key, history_key, slots_key]
    )
    assert await raw_redis.type(state_key) == "hash"
    assert await raw_redis.type(results_key) == "hash"
    assert await raw_redis.type(history_key) == "stream"
    assert await raw_redis.type(slots_key) == "zset"

    assert await raw_redis.hgetall(state_key) == {
        "type": "RUNNING",
        "name": "Running",
        "stage": "Execute",
        "attempt": "2",
        "version": "1",
        "message": "m",
        "timestamp": "t",
        "context": '{"g":1}',
    }
    assert await raw_redis.hgetall(results_key) == {"apt|web-1": '{"exit":0}'}
    ((_, fields),) = await raw_redis.xrange(history_key) or []
    assert fields == {
        "from": "PENDING/Pending",
        "to": "RUNNING/Running",
        "at": "2024-01-01T00:00:00Z",
        "message": "go",
        "attempt": "2",
    }
    # The lease's score is its expiry in ms on the server's clock.
    seconds, micros = await raw_redis.time()
    server_ms = seconds * 1000 + micros // 1000
    score = await raw_redis.zscore(slots_key, uid)
    assert score is not None and server_ms + 25_000 < score <= server_ms + 30_000
    # One run, one cluster slot.
    assert key_slot(state_key.encode()) == key_slot(results_key.encode())
    assert key_slot(state_key.encode()) == key_slot(history_key.encode())


async def test_key_prefix_is_configurable(redis_url: str, raw_redis: redis.asyncio.Redis) -> None:
    store = RedisStateStore.from_url(redis_url, key_prefix="rs-test")
    try:
        uid = str(uuid.uuid4())
        await store.acommit(uid, running(), expected_version=0)
        assert await raw_redis.exists(f"rs-test:{{{uid}}}:state") == 1
    finally:
        await raw_redis.delete(f"rs-test:{{{uid}}}:state")
        await store.aclose()
    with pytest.raises(ValueError, match="key prefix"):
        RedisStateStore.from_url(redis_url, key_prefix="a{b}")


async def test_expire_sets_a_ttl_on_every_run_key(
    rstore: RedisStateStore, raw_redis: redis.asyncio.Redis
) -> None:
    uid = str(uuid.uuid4())
    await rstore.acommit(uid, running(), expected_version=0, history=[HistoryEntry("", "A/B", "t")])
    await rstore.aset_results(uid, {"op|h": {}})
    await rstore.aexpire(uid, 3600)
    for suffix in ("state", "results", "history"):
        ttl = await raw_redis.ttl(f"runstate:{{{uid}}}:{suffix}")
        assert 0 < ttl <= 3600, suffix


async def test_history_stream_is_trimmed_on_the_server(
    rstore: RedisStateStore, raw_redis: redis.asyncio.Redis
) -> None:
    uid = str(uuid.uuid4())
    many = [HistoryEntry("", f"RUNNING/S{i}", "t") for i in range(250)]
    await rstore.acommit(uid, running(), expected_version=0, history=many)
    length = await raw_redis.xlen(f"runstate:{{{uid}}}:history")
    # MAXLEN ~ trims whole stream nodes (100 entries by default), never below the cap.
    assert 5 <= length <= 5 + 100
    assert [h.to_state for h in await rstore.aread_history(uid, 1000)] == [
        f"RUNNING/S{i}" for i in range(245, 250)
    ]


async def test_two_stores_racing_on_one_server_cannot_both_win(redis_url: str) -> None:
    stores = [RedisStateStore.from_url(redis_url) for _ in range(2)]
    uid = str(uuid.uuid4())
    try:
        outcomes = await asyncio.gather(
            *(
                s.acommit(uid, running(message=str(i)), expected_version=0)
                for i, s in enumerate(stores)
            ),
            return_exceptions=True,
        )
    finally:
        for s in stores:
            await s.adelete(uid)
            await s.aclose()
    assert sorted(type(o).__name__ for o in outcomes) == ["StateRecord", "VersionConflict"]


async def test_scripts_survive_a_script_flush(
    rstore: RedisStateStore, raw_redis: redis.asyncio.Redis
) -> None:
    uid = str(uuid.uuid4())
    await rstore.acommit(uid, running(), expected_version=0)
    assert await rstore.aacquire_slot("ns/rb", "a", limit=1, ttl_seconds=5)
    # What a failover to a fresh replica looks like to the client: NOSCRIPT, then reload.
    await raw_redis.script_flush()
    assert (await rstore.acommit(uid, running(), expected_version=1)).version == 2
    assert await rstore.aacquire_slot("ns/rb", "a", limit=1, ttl_seconds=5)
    assert await rstore.aslot_holders("ns/rb") == ["a"]


async def test_works_with_a_client_that_does_not_decode(
    redis_url: str, raw_redis: redis.asyncio.Redis
) -> None:
    await raw_redis.flushdb()
    client = redis.asyncio.Redis.from_url(redis_url)  # decode_responses=False
    store = RedisStateStore(client)
    uid = str(uuid.uuid4())
    try:
        await store.acommit(
            uid,
            running(context={"x": "ü"}),
            expected_version=0,
            history=[HistoryEntry("", "A/B", "t")],
        )
        await store.aset_results(uid, {"op|h": {"exit": 3}})
        await store.aacquire_slot("ns/rb", "holder", limit=1, ttl_seconds=5)
        state = await store.aget_state(uid)
        assert state is not None and state.context == {"x": "ü"} and state.version == 1
        assert await store.aread_history(uid) == [HistoryEntry("", "A/B", "t")]
        assert await store.aget_results(uid) == {"op|h": {"exit": 3}}
        assert await store.aslot_holders("ns/rb") == ["holder"]
        await store.aclose()  # not ours: must leave the client usable
        assert await client.ping()
    finally:
        await client.aclose()


async def test_aclose_closes_the_pool(redis_url: str, raw_redis: redis.asyncio.Redis) -> None:
    name = f"runstate-test-{uuid.uuid4().hex[:8]}"
    store = RedisStateStore.from_url(f"{redis_url}?client_name={name}")
    await asyncio.gather(*(store.aget_state(str(uuid.uuid4())) for _ in range(5)))

    async def ours() -> int:
        return sum(1 for c in await raw_redis.client_list() if c.get("name") == name)

    assert await ours() >= 1
    await store.aclose()
    # The server notices closed sockets asynchronously; give it a moment.
    for _ in range(100):
        if not await ours():
            break
        await asyncio.sleep(0.05)
    assert await ours() == 0


async def test_unreachable_store_never_shows_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    port = free_port()  # nobody listens there
    store = store_from_url(f"redis://:{PASSWORD}@127.0.0.1:{port}/0")
    assert isinstance(store, RedisStateStore)
    try:
        assert PASSWORD not in repr(store)
        with pytest.raises(StoreUnavailable) as unavailable:
            await store.aping()
        message = str(unavailable.value)
        assert f"127.0.0.1:{port}" in message
        assert "redis" in message
        assert PASSWORD not in message
        assert PASSWORD not in "".join(traceback.format_exception(unavailable.value))

        uid = str(uuid.uuid4())
        with pytest.raises(StoreUnavailable) as on_read:
            await store.aget_state(uid)
        assert uid in str(on_read.value) and PASSWORD not in str(on_read.value)
        with pytest.raises(StoreUnavailable):
            await store.acommit(uid, running(), expected_version=0)
    finally:
        await store.aclose()
    assert PASSWORD not in caplog.text


async def test_wrong_password_is_unavailable_without_showing_it(
    redis_url: str, raw_redis: redis.asyncio.Redis
) -> None:
    # An ACL user with another password: WRONGPASS, without touching the default user.
    user = f"runstate-test-{uuid.uuid4().hex[:8]}"
    await raw_redis.acl_setuser(user, enabled=True, passwords=["+right-one"], commands=["+@all"])
    store = RedisStateStore.from_url(redis_url.replace("redis://", f"redis://{user}:{PASSWORD}@"))
    try:
        with pytest.raises(StoreUnavailable) as unavailable:
            await store.aping()
        assert "127.0.0.1" in str(unavailable.value)
        assert PASSWORD not in str(unavailable.value)
        assert PASSWORD not in "".join(traceback.format_exception(unavailable.value))
        assert PASSWORD not in repr(store)
    finally:
        await store.aclose()
        await raw_redis.acl_deluser(user)


async def test_conflict_message_names_the_run(rstore: RedisStateStore) -> None:
    uid = str(uuid.uuid4())
    await rstore.acommit(uid, running(), expected_version=0)
    with pytest.raises(VersionConflict, match=f"run {uid}.*expected 0, found 1"):
        await rstore.acommit(uid, running(), expected_version=0)


@pytest.mark.parametrize("retries", [3, 0])
async def test_a_dropped_connection_is_retried(
    redis_url: str, raw_redis: redis.asyncio.Redis, retries: int
) -> None:
    name = f"runstate-test-{uuid.uuid4().hex[:8]}"
    store = RedisStateStore.from_url(f"{redis_url}?client_name={name}", retries=retries)
    uid = str(uuid.uuid4())
    try:
        await store.acommit(uid, running(), expected_version=0)
        # The server drops our pooled connection, as on a restart or a failover.
        for client in await raw_redis.client_list():
            if client.get("name") == name:
                await raw_redis.client_kill_filter(_id=client["id"])
        if retries:
            assert (await store.acommit(uid, running(), expected_version=1)).version == 2
        else:
            with pytest.raises(StoreUnavailable, match=uid):
                await store.acommit(uid, running(), expected_version=1)
    finally:
        await store.adelete(uid)
        await store.aclose()


async def test_a_store_with_one_flavour_of_client_says_what_is_missing(redis_url: str) -> None:
    uid = str(uuid.uuid4())
    async_client = redis.asyncio.Redis.from_url(redis_url)
    sync_client = redis.Redis.from_url(redis_url)
    try:
        async_only = RedisStateStore(async_client)
        with pytest.raises(RuntimeError, match=f"run {uid} needs a blocking .*sync_client="):
            async_only.get_state(uid)
        sync_only = RedisStateStore(sync_client=sync_client)
        with pytest.raises(RuntimeError, match=f"run {uid} needs an async .*client="):
            await sync_only.acommit(uid, running(), expected_version=0)
        # Given both, one store serves both faces from the same data.
        both = RedisStateStore(async_client, sync_client=sync_client)
        written = both.commit(uid, running(context={"via": "sync"}), expected_version=0)
        assert await both.aget_state(uid) == written
        await both.aset_results(uid, {"op|h": {"exit": 0}})
        assert both.get_results(uid) == {"op|h": {"exit": 0}}
        both.delete(uid)
        # Not owned: closing the store leaves the caller's clients usable.
        both.close()
        await both.aclose()
        assert sync_client.ping() and await async_client.ping()
    finally:
        sync_client.close()
        await async_client.aclose()
    with pytest.raises(ValueError, match="needs a client"):
        RedisStateStore()
    with pytest.raises(ValueError, match="needs a client"):
        RedisStateStore(sync_client=lambda: redis.Redis.from_url(redis_url))


async def test_the_blocking_client_is_made_on_first_use_and_closed(
    redis_url: str, raw_redis: redis.asyncio.Redis
) -> None:
    name = f"runstate-test-{uuid.uuid4().hex[:8]}"
    store = RedisStateStore.from_url(f"{redis_url}?client_name={name}")

    async def ours() -> int:
        # The server notices closed sockets asynchronously; give it a moment to settle.
        await asyncio.sleep(0.1)
        return sum(1 for c in await raw_redis.client_list() if c.get("name") == name)

    try:
        await store.aping()
        assert await ours() == 1  # the async pool only
        store.ping()
        assert await ours() == 2  # the blocking client exists now, from the same URL
        store.close()
        assert await ours() == 1
        store.ping()  # like redis-py's clients, it reconnects when used again
        assert await ours() == 2
    finally:
        await store.aclose()
    assert await ours() == 0  # aclose releases both


async def test_a_unix_socket_url_serves_both_faces(redis_server: SingleRedis) -> None:
    store = store_from_url(f"unix://{redis_server.unix_socket}?db=0")
    assert isinstance(store, RedisStateStore)
    assert f"unix:{redis_server.unix_socket}" in repr(store)
    uid = str(uuid.uuid4())
    try:
        stored = await store.acommit(uid, running(), expected_version=0)
        assert await asyncio.to_thread(store.get_state, uid) == stored
        store.delete(uid)
    finally:
        await store.aclose()


async def test_blocking_face_errors_match_the_async_ones(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    port = free_port()  # nobody listens there
    store = store_from_url(f"redis://:{PASSWORD}@127.0.0.1:{port}/0")
    uid = str(uuid.uuid4())
    try:
        with pytest.raises(StoreUnavailable) as on_commit:
            await asyncio.to_thread(store.commit, uid, running(), expected_version=0)
        assert f"127.0.0.1:{port}" in str(on_commit.value) and uid in str(on_commit.value)
        assert PASSWORD not in "".join(traceback.format_exception(on_commit.value))
        with pytest.raises(StoreUnavailable):
            await asyncio.to_thread(store.ping)
    finally:
        await store.aclose()
    assert PASSWORD not in caplog.text
