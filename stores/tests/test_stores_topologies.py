"""Sentinel and Cluster for real: a failover under the store, one hash slot per run, runs spread
over every master, and errors that name where the store is without showing a password.

The contract suite already runs against both topologies (see conftest); this module covers what
only a topology can show.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator

import pytest
from store_helpers import start_sentinel
from store_topologies import SERVICE, ClusterTopology, SentinelTopology, free_port

from runstate_stores import (
    HistoryEntry,
    RedisStateStore,
    StateRecord,
    StoreUnavailable,
    VersionConflict,
    store_from_url,
)

PASSWORD = "s3cret-Pw"
FAILOVER_DEADLINE = 60.0  # seconds; Sentinel needs ~1 s to see the master down, then elects


def running(message: str = "") -> StateRecord:
    return StateRecord(type="RUNNING", name="Running", stage="Execute", message=message)


@pytest.fixture
def failover_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelTopology]:
    """A Sentinel setup of its own: the failover test breaks it."""
    topology = start_sentinel(tmp_path_factory)
    try:
        yield topology
    finally:
        topology.stop()


class Writer:
    """Commits to one run through one face of the store and remembers every write it made.

    A write counts as made when the commit returned, or when it raised and the stored record
    shows it anyway (a reply lost after the write landed); `StoreUnavailable` means "not made",
    and the next attempt reuses the same expected version.
    """

    def __init__(self, label: str, commit: Callable[[int, StateRecord], Awaitable[StateRecord]]):
        self.label = label
        self.commit = commit
        self.version = 0
        self.made: list[str] = []
        self.unavailable: list[StoreUnavailable] = []

    async def attempt(self, store: RedisStateStore, uid: str) -> bool:
        message = f"{self.label} write {len(self.made) + 1}"
        try:
            stored = await self.commit(self.version, running(message))
        except StoreUnavailable as exc:
            self.unavailable.append(exc)
            return False
        except VersionConflict:
            # Only this writer writes this run: a conflict means our last attempt landed.
            state = await store.aget_state(uid)
            assert state is not None and state.message == message, state
            stored = state
        assert stored.version == self.version + 1
        self.version = stored.version
        self.made.append(message)
        return True


async def test_sentinel_failover_keeps_the_same_store_working(
    failover_sentinel: SentinelTopology,
) -> None:
    topology = failover_sentinel
    store = RedisStateStore.from_url(topology.url)
    uid_async, uid_sync = str(uuid.uuid4()), str(uuid.uuid4())

    async def via_async(version: int, record: StateRecord) -> StateRecord:
        step = HistoryEntry("", f"RUNNING/{record.message}", "t")
        return await store.acommit(uid_async, record, expected_version=version, history=[step])

    async def via_sync(version: int, record: StateRecord) -> StateRecord:
        step = HistoryEntry("", f"RUNNING/{record.message}", "t")
        return await asyncio.to_thread(
            store.commit, uid_sync, record, expected_version=version, history=[step]
        )

    writers = {uid_async: Writer("async", via_async), uid_sync: Writer("sync", via_sync)}
    try:
        for uid, writer in writers.items():
            assert await writer.attempt(store, uid)
        await store.aset_results(uid_async, {"apt|web-1": {"exit": 0}})
        old_master = topology.master_port()
        with topology.node(old_master).client() as master:
            # Replication is asynchronous: make sure the replica has what was acknowledged,
            # so the read-back below tests the store, not Redis's replication lag.
            assert master.execute_command("WAIT", 1, 5000) == 1
        topology.node(old_master).kill()

        # Keep writing through both faces while Sentinel notices and promotes the replica.
        deadline = time.monotonic() + FAILOVER_DEADLINE
        while not all(len(w.made) >= 3 for w in writers.values()):
            assert time.monotonic() < deadline, {
                w.label: w.unavailable[-1:] for w in writers.values()
            }
            for uid, writer in writers.items():
                if not await writer.attempt(store, uid):
                    await asyncio.sleep(0.2)

        assert topology.master_port() == topology.replica.port != old_master
        # Nothing acknowledged was lost, before or during the failover, on either face.
        for uid, writer in writers.items():
            state = await store.aget_state(uid)
            assert state is not None
            assert (state.version, state.message) == (writer.version, writer.made[-1])
            history = await store.aread_history(uid)
            assert [h.to_state for h in history] == [f"RUNNING/{m}" for m in writer.made]
        assert store.get_results(uid_async) == {"apt|web-1": {"exit": 0}}
        # Whatever failed said where and why, and no password.
        for writer in writers.values():
            for exc in writer.unavailable:
                assert f"sentinel service {SERVICE}" in str(exc)
                assert topology.password not in str(exc)
                assert topology.sentinel_password not in str(exc)
        # And the store simply goes on.
        for uid, writer in writers.items():
            for _ in range(3):
                assert await writer.attempt(store, uid), writer.unavailable[-1]
    finally:
        await store.aclose()


async def test_a_runs_keys_share_one_slot_and_runs_spread_over_all_masters(
    cluster: ClusterTopology,
) -> None:
    cluster.flush()
    store = RedisStateStore.from_url(cluster.url)
    uids = [str(uuid.uuid4()) for _ in range(50)]
    try:
        for i, uid in enumerate(uids):
            step = [HistoryEntry("", "RUNNING/Running", "t")]
            if i % 2:  # half through each face: both clients route by the hash tag
                await store.acommit(uid, running(), expected_version=0, history=step)
                await store.aset_results(uid, {"op|host": {"exit": 0}})
            else:
                await asyncio.to_thread(
                    store.commit, uid, running(), expected_version=0, history=step
                )
                await asyncio.to_thread(store.set_results, uid, {"op|host": {"exit": 0}})
    finally:
        await store.aclose()

    # Ask the servers, not the client: which master holds which keys, in which slot.
    holder: dict[str, int] = {}
    for node in cluster.nodes:
        with node.client() as client:
            keys = set(client.keys("runstate:*"))
            for uid in uids:
                run_keys = {
                    f"runstate:{{{uid}}}:{part}" for part in ("state", "results", "history")
                }
                found = run_keys & keys
                if not found:
                    continue
                assert found == run_keys, f"run {uid} is split over masters"
                slots = {client.execute_command("CLUSTER", "KEYSLOT", k) for k in run_keys}
                assert len(slots) == 1, f"run {uid} spans slots {slots}"
                assert uid not in holder, f"run {uid} is on two masters"
                holder[uid] = node.port
    assert set(holder) == set(uids)
    assert set(holder.values()) == {n.port for n in cluster.nodes}


@pytest.mark.parametrize("flavour", ["async", "sync"])
@pytest.mark.parametrize("topology", ["sentinel", "cluster"])
async def test_an_unreachable_topology_is_unavailable_without_the_password(
    topology: str, flavour: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    ports = [free_port() for _ in range(3)]  # nobody listens there
    hosts = ",".join(f"127.0.0.1:{p}" for p in ports)
    url = (
        f"redis+sentinel://:{PASSWORD}@{hosts}/{SERVICE}?sentinel_password={PASSWORD}x"
        if topology == "sentinel"
        else f"redis+cluster://:{PASSWORD}@{hosts}"
    )
    store = store_from_url(url)
    assert isinstance(store, RedisStateStore)
    assert PASSWORD not in repr(store)
    assert f"127.0.0.1:{ports[0]}" in repr(store)
    uid = str(uuid.uuid4())
    try:
        for attempt in ("ping", "read"):
            with pytest.raises(StoreUnavailable) as failed:
                if flavour == "async":
                    await (store.aping() if attempt == "ping" else store.aget_state(uid))
                else:
                    await asyncio.to_thread(
                        store.ping if attempt == "ping" else lambda: store.get_state(uid)
                    )
            message = str(failed.value)
            assert f"127.0.0.1:{ports[0]}" in message
            assert PASSWORD not in message
            if attempt == "read":
                assert uid in message
    finally:
        await store.aclose()
    assert PASSWORD not in caplog.text


@pytest.mark.parametrize("wrong", ["password", "sentinel_password"])
async def test_a_wrong_sentinel_side_password_is_unavailable(
    sentinel: SentinelTopology, wrong: str
) -> None:
    bad = "not-" + (sentinel.password if wrong == "password" else sentinel.sentinel_password)
    url = sentinel.url.replace(
        sentinel.password if wrong == "password" else sentinel.sentinel_password, bad
    )
    store = RedisStateStore.from_url(url, retries=0)
    try:
        with pytest.raises(StoreUnavailable) as failed:
            await store.aping()
        with pytest.raises(StoreUnavailable) as failed_sync:
            await asyncio.to_thread(store.ping)
    finally:
        await store.aclose()
    for exc in (failed.value, failed_sync.value):
        assert f"sentinel service {SERVICE}" in str(exc)
        assert bad not in str(exc)
