"""Batching of async commits in `RedisStateStore`, against real servers (no mocks).

Concurrent `acommit` / `aset_state` calls share pipelines while a lone one goes straight out;
each commit stays its own fenced script. What must hold, and is checked here:

- every caller gets its own reply: one winner per expected version, conflicts only for the
  losers, history exactly the winners' entries in order (one server, Sentinel, Cluster);
- error replies (VersionConflict, NOPERM) reach only their caller, and NOSCRIPT in a batch is
  recovered by resending those commits as EVAL;
- batching is real (the store's counters and the server's own counters of reads and calls) and
  a lone caller is not queued;
- Redis killed or frozen during a burst: every caller gets StoreUnavailable in bounded time,
  a replayed pipeline never writes twice, and the store works again once Redis is back;
- a commit that landed but whose reply was lost comes back from the replay as VersionConflict,
  batched or not;
- cancelled callers disturb nobody, and aclose() leaves no task and no caller behind.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from store_helpers import need
from store_topologies import (
    ClusterTopology,
    RedisProcess,
    SentinelTopology,
    SingleRedis,
)

from runstate_stores import (
    HistoryEntry,
    RedisStateStore,
    StateRecord,
    StoreUnavailable,
    VersionConflict,
)
from runstate_stores._redis_calls import COMMIT_LUA
from runstate_stores.redis import CommitBatching

BOUND = 30.0  # seconds: no caller may wait longer than this, whatever happens to Redis


def record(message: str, type_: str = "RUNNING") -> StateRecord:
    return StateRecord(type=type_, name=type_.title(), stage="Execute", message=message)


def entry(to: str, message: str) -> HistoryEntry:
    return HistoryEntry("", to, "2024-01-01T00:00:00Z", message=message)


def snapshot(store: RedisStateStore) -> CommitBatching:
    return replace(store.batching)


def delta(store: RedisStateStore, before: CommitBatching) -> CommitBatching:
    now = store.batching
    return CommitBatching(
        alone=now.alone - before.alone,
        pipelines=now.pipelines - before.pipelines,
        pipelined=now.pipelined - before.pipelined,
    )


@dataclass
class Target:
    """A topology under test: the store's URL and the data nodes (masters) behind it."""

    kind: str
    url: str
    nodes: list[RedisProcess]

    def counts(self) -> Counter[str]:
        """The servers' own counters, summed over the data nodes: calls per command and
        reads (each read of a client's socket may carry many commands)."""
        total: Counter[str] = Counter()
        for node in self.nodes:
            with node.client() as client:
                stats: dict[str, Any] = client.info("commandstats")
                for name, values in stats.items():
                    total[name.removeprefix("cmdstat_")] += int(values["calls"])
                total["reads"] += int(client.info("stats")["total_reads_processed"])
        return total

    def load_commit_script(self) -> None:
        for node in self.nodes:
            with node.client() as client:
                client.script_load(COMMIT_LUA)

    def flush_scripts(self) -> None:
        for node in self.nodes:
            with node.client() as client:
                client.script_flush()

    def url_as(self, user: str, password: str) -> str:
        scheme, rest = self.url.split("://", 1)
        if "@" in rest.split("/", 1)[0]:
            rest = rest.split("@", 1)[1]
        return f"{scheme}://{user}:{password}@{rest}"


@pytest.fixture(params=["redis", "sentinel", "cluster"])
def target(request: pytest.FixtureRequest) -> Target:
    """Each topology, flushed, with the commit script cached on every data node (a sync
    fixture, so the servers start outside the event loop)."""
    kind: str = request.param
    if kind == "redis":
        single: SingleRedis = request.getfixturevalue("redis_server")
        found = Target(kind, single.url, [single.node])
    elif kind == "sentinel":
        sentinel: SentinelTopology = request.getfixturevalue("sentinel")
        master = sentinel.node(sentinel.master_port())
        found = Target(kind, sentinel.url, [master])
    else:
        cluster: ClusterTopology = request.getfixturevalue("cluster")
        found = Target(kind, cluster.url, list(cluster.nodes))
    for node in found.nodes:
        with node.client() as client:
            client.flushall()
    found.load_commit_script()
    return found


@pytest.fixture
async def store(target: Target) -> AsyncIterator[RedisStateStore]:
    """A store with a long history cap (the same-run test keeps every transition)."""
    made = RedisStateStore.from_url(target.url, history_cap=1000)
    await made.aping()  # first contact (a cluster's slot map) before any burst
    try:
        yield made
    finally:
        await made.aclose()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A redis-server of this test's own, to kill, freeze and restart."""
    node = RedisProcess(need("redis-server", "redis-server"), tmp_path / "own")
    node.start()
    try:
        yield node
    finally:
        if node.proc is not None:
            node.proc.send_signal(signal.SIGCONT)  # a frozen server cannot stop
        node.stop()


def url_of(node: RedisProcess) -> str:
    return f"redis://127.0.0.1:{node.port}/0"


def new_uid(prefix: str = "") -> str:
    return f"{prefix}{uuid.uuid4()}"


async def wait_until(what: str, probe: Callable[[], bool], every: float = 0.002) -> None:
    """Poll `probe` (a counter of the store) every `every` seconds, for up to 10 s."""
    deadline = time.monotonic() + 10
    for _ in iter(probe, True):  # until it returns True
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(every)


# -- every caller gets its own reply ------------------------------------------------------------


async def test_concurrent_commits_on_many_runs_share_round_trips(
    target: Target, store: RedisStateStore
) -> None:
    workers, runs, walk = 40, 120, ("PENDING", "RUNNING", "COMPLETED")
    uids = [new_uid() for _ in range(runs)]
    todo = iter(uids)
    before, server0 = snapshot(store), target.counts()

    async def worker() -> None:
        for uid in todo:
            version = 0
            for step, type_ in enumerate(walk):
                mine = record(f"{uid} step {step}", type_)
                got = await store.acommit(
                    uid, mine, expected_version=version, history=[entry(f"{type_}/X", uid)]
                )
                # The reply is this caller's own: its record, its run's next version.
                assert got == replace(mine, version=version + 1)
                version = got.version

    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(workers))), BOUND)
    commits = runs * len(walk)
    sent, server = delta(store, before), target.counts() - server0
    for uid in uids:
        state = await store.aget_state(uid)
        assert state == replace(record(f"{uid} step 2", "COMPLETED"), version=3)
        history = await store.aread_history(uid)
        assert [(h.to_state, h.message) for h in history] == [(f"{t}/X", uid) for t in walk]
    # Batching happened, and every commit was sent exactly once.
    assert sent.commits == commits
    assert sent.pipelines >= 1 and sent.round_trips <= commits // 4, sent
    # Only the first went alone: the drain waits one turn of the loop for the workers its
    # replies woke, so it never runs dry while they work.
    assert sent.alone == 1, sent
    assert server["evalsha"] == commits, server
    assert server["xadd"] == commits
    # The server saw it too: far fewer socket reads than commands.
    assert server["reads"] <= commits // 3, server


async def test_one_winner_per_version_on_the_same_run(
    target: Target, store: RedisStateStore
) -> None:
    uid, writers, last = new_uid(), 24, 30
    wins: list[tuple[int, str]] = []
    before = snapshot(store)

    async def writer(n: int) -> None:
        known = 0
        while known < last:
            message = f"writer {n} for v{known + 1}"
            try:
                got = await store.acommit(
                    uid,
                    record(message),
                    expected_version=known,
                    history=[entry(f"RUNNING/V{known + 1}", message)],
                )
            except VersionConflict as conflict:
                assert (conflict.run_uid, conflict.expected) == (uid, known)
                assert conflict.actual > known
                known = conflict.actual
            else:
                assert (got.version, got.message) == (known + 1, message)
                wins.append((got.version, message))
                known = got.version

    await asyncio.wait_for(asyncio.gather(*(writer(n) for n in range(writers))), BOUND)
    versions = Counter(version for version, _ in wins)
    assert sorted(versions) == list(range(1, last + 1))
    assert set(versions.values()) == {1}, "two writers won the same version"
    winners = [message for _, message in sorted(wins)]
    history = await store.aread_history(uid, 1000)
    assert [h.message for h in history] == winners
    assert [h.to_state for h in history] == [f"RUNNING/V{v}" for v in range(1, last + 1)]
    state = await store.aget_state(uid)
    assert state is not None and (state.version, state.message) == (last, winners[-1])
    sent = delta(store, before)
    assert sent.pipelines >= 1 and sent.pipelined > sent.pipelines, sent


async def test_a_batch_of_conflicts_and_successes(target: Target, store: RedisStateStore) -> None:
    uids = [new_uid() for _ in range(20)]
    for uid in uids:  # every run at version 1
        await store.acommit(uid, record("setup"), expected_version=0, history=[entry("A/1", "s")])
    lead, plain = new_uid(), new_uid()
    before = snapshot(store)
    outcomes = await asyncio.wait_for(
        asyncio.gather(
            # The first finds the store idle and goes alone; the rest queue behind it and
            # leave as one pipeline: half of them with a stale fence.
            store.acommit(lead, record("lead"), expected_version=0),
            *(
                store.acommit(
                    uid,
                    record(f"try {i}"),
                    expected_version=1 if i % 2 else 0,
                    history=[entry("B/2", f"try {i}")],
                )
                for i, uid in enumerate(uids)
            ),
            store.aset_state(plain, "DONE/Done", metadata={"message": "unconditional"}),
            return_exceptions=True,
        ),
        BOUND,
    )
    assert delta(store, before) == CommitBatching(alone=1, pipelines=1, pipelined=21)
    assert outcomes[0] == replace(record("lead"), version=1)
    for i, (uid, outcome) in enumerate(zip(uids, outcomes[1:-1], strict=True)):
        history = [h.message for h in await store.aread_history(uid)]
        if i % 2:
            assert outcome == replace(record(f"try {i}"), version=2)
            assert history == ["s", f"try {i}"]
        else:
            assert isinstance(outcome, VersionConflict)
            assert (outcome.run_uid, outcome.expected, outcome.actual) == (uid, 0, 1)
            assert history == ["s"]
            state = await store.aget_state(uid)
            assert state is not None and state.message == "setup"
    assert outcomes[-1] is None
    state = await store.aget_state(plain)
    assert state is not None and (state.type, state.message) == ("DONE", "unconditional")


async def test_noscript_in_a_batch_is_resent_as_eval(target: Target) -> None:
    # An ACL user that may not touch runs whose uid starts with "denied": its commit is
    # refused before Redis looks for the script, so the first commit (sent alone) fails
    # without loading it, and the batch behind it meets NOSCRIPT itself.
    user, password = f"batching-{uuid.uuid4().hex[:8]}", "user-pw"
    for node in target.nodes:
        with node.client() as client:
            client.acl_setuser(
                user,
                enabled=True,
                passwords=[f"+{password}"],
                commands=["+@all"],
                keys=["runstate:{ok-*"],
            )
    store = RedisStateStore.from_url(target.url_as(user, password))
    try:
        await store.aping()
        target.flush_scripts()
        ok = [new_uid("ok-") for _ in range(20)]
        denied = [new_uid("denied-") for _ in range(3)]
        before, server0 = snapshot(store), target.counts()
        calls = [store.acommit(denied[0], record("lead"), expected_version=0)]
        calls += [store.acommit(uid, record(uid), expected_version=0) for uid in ok[:10]]
        calls += [store.acommit(uid, record(uid), expected_version=0) for uid in denied[1:]]
        calls += [store.acommit(uid, record(uid), expected_version=0) for uid in ok[10:]]
        outcomes = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), BOUND)
        server = target.counts() - server0
        assert delta(store, before) == CommitBatching(alone=1, pipelines=1, pipelined=22)
        refused = [outcomes[0], *outcomes[11:13]]
        assert all("no permissions" in str(o) for o in refused), refused
        for uid, outcome in zip(ok, outcomes[1:11] + outcomes[13:], strict=True):
            assert outcome == replace(record(uid), version=1)
        # Only the batch's commits came back NOSCRIPT and went again, as EVAL.
        assert server["eval"] == len(ok), server
        assert server["xadd"] == 0 and server["hset"] == len(ok)
    finally:
        await store.aclose()
        for node in target.nodes:
            with node.client() as client:
                client.acl_deluser(user)


# -- batching is real, and a lone caller is not queued --------------------------------------------


async def test_a_lone_caller_goes_straight_out_and_a_burst_shares_reads(
    redis_server: SingleRedis,
) -> None:
    target = Target("redis", redis_server.url, [redis_server.node])
    target.load_commit_script()
    store = RedisStateStore.from_url(target.url)
    try:
        await store.aping()
        # Looking costs reads too (a connection, two INFO): measured, then allowed for.
        first = target.counts()
        looking = (target.counts() - first)["reads"]
        before, server0 = snapshot(store), target.counts()
        for _ in range(10):  # one after the other: nobody to share a round trip with
            await store.acommit(new_uid(), record("alone"), expected_version=0)
        assert delta(store, before) == CommitBatching(alone=10)
        # One read per commit on the server.
        assert (target.counts() - server0)["reads"] <= 10 + looking

        before, server0 = snapshot(store), target.counts()
        await asyncio.gather(
            *(store.acommit(new_uid(), record("burst"), expected_version=0) for _ in range(40))
        )
        assert delta(store, before) == CommitBatching(alone=1, pipelines=1, pipelined=39)
        server = target.counts() - server0
        # The lone first commit, then the pipeline of 39 in one read (two at most).
        assert server["evalsha"] == 40 and server["reads"] <= 1 + 2 + looking, server
    finally:
        await store.aclose()


async def test_max_batch_bounds_a_pipeline_and_one_turns_batching_off(
    redis_server: SingleRedis,
) -> None:
    for max_batch, sent in (
        (4, CommitBatching(alone=1, pipelines=5, pipelined=19)),  # 4+4+4+4+3 behind the first
        (1, CommitBatching(alone=20)),
    ):
        store = RedisStateStore.from_url(redis_server.url, max_batch=max_batch)
        try:
            await store.aping()
            await asyncio.gather(
                *(store.acommit(new_uid(), record("b"), expected_version=0) for _ in range(20))
            )
            assert store.batching == sent, max_batch
        finally:
            await store.aclose()
    with pytest.raises(ValueError, match="max_batch"):
        RedisStateStore.from_url(redis_server.url, max_batch=0)


# -- Redis killed, frozen, or losing replies --------------------------------------------------------


async def commit_until_it_fails(store: RedisStateStore, uid: str) -> tuple[int, Exception]:
    """Commit to `uid` again and again; (last version written, the error that stopped it)."""
    version = 0
    while True:
        try:
            got = await store.acommit(
                uid, record(f"v{version + 1}"), expected_version=version,
                history=[entry("RUNNING/Running", f"v{version + 1}")],
            )  # fmt: skip
        except Exception as exc:
            return version, exc
        version = got.version


async def test_redis_killed_during_a_burst(own_redis: RedisProcess) -> None:
    port = own_redis.port
    store = RedisStateStore.from_url(url_of(own_redis), socket_timeout=1.0, retries=1)
    uids = [new_uid() for _ in range(32)]
    try:
        await store.aping()
        tasks = [asyncio.create_task(commit_until_it_fails(store, uid)) for uid in uids]
        await wait_until("a few pipelines", lambda: store.batching.pipelines >= 3)
        own_redis.kill()
        started = time.monotonic()
        ended = await asyncio.wait_for(asyncio.gather(*tasks), BOUND)
        assert time.monotonic() - started < BOUND
        for uid, (_, error) in zip(uids, ended, strict=True):
            assert isinstance(error, StoreUnavailable), repr(error)
            assert f"127.0.0.1:{port}" in str(error) and uid in str(error)

        own_redis.start(port=port)  # back, empty (no persistence)
        before = snapshot(store)
        outcomes = await asyncio.wait_for(
            asyncio.gather(*(store.acommit(u, record("back"), expected_version=0) for u in uids)),
            BOUND,
        )
        assert all(o.version == 1 for o in outcomes)
        assert delta(store, before).pipelines >= 1
    finally:
        await store.aclose()


async def test_redis_frozen_during_a_burst_and_replays_never_write_twice(
    own_redis: RedisProcess,
) -> None:
    # SIGSTOP: the kernel still accepts connections and requests, nobody answers. Every
    # pipeline times out, is replayed once on a new connection and times out again; when the
    # server wakes up it runs both copies. The version fence must make the second a no-op.
    assert own_redis.proc is not None
    store = RedisStateStore.from_url(url_of(own_redis), socket_timeout=0.5, retries=1)
    uids = [new_uid() for _ in range(16)]
    try:
        await store.aping()
        tasks = [asyncio.create_task(commit_until_it_fails(store, uid)) for uid in uids]
        await wait_until("a few pipelines", lambda: store.batching.pipelines >= 3)
        own_redis.proc.send_signal(signal.SIGSTOP)
        started = time.monotonic()
        try:
            ended = await asyncio.wait_for(asyncio.gather(*tasks), BOUND)
            waited = time.monotonic() - started
        finally:
            own_redis.proc.send_signal(signal.SIGCONT)
        # Two attempts of 0.5 s, for the batch on the wire and at most one behind it.
        assert waited < 6, waited
        for uid, (_, error) in zip(uids, ended, strict=True):
            assert isinstance(error, StoreUnavailable) and uid in str(error), repr(error)

        # Let the server run what it had buffered (both copies of the last batch).
        await asyncio.sleep(0.5)
        for uid, (written, _) in zip(uids, ended, strict=True):
            state = await store.aget_state(uid)
            assert state is not None
            # The failed commit landed at most once: never two versions past the last reply.
            assert state.version in (written, written + 1), (state.version, written)
            assert state.message == f"v{state.version}"
            assert len(await store.aread_history(uid)) == state.version
            got = await store.acommit(uid, record("after"), expected_version=state.version)
            assert got.version == state.version + 1
    finally:
        await store.aclose()


class ReplyDropper:
    """A TCP proxy in front of Redis. Armed, it lets the next request that carries at least
    `n` EVALSHA commands through, and then cuts that connection instead of passing the reply
    on: the commits land, and their callers never hear so."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.armed: int | None = None
        self.dropped = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        doomed = False

        async def requests() -> None:
            nonlocal doomed
            while data := await reader.read(1 << 16):
                if self.armed is not None and data.count(b"\r\nEVALSHA\r\n") >= self.armed:
                    self.armed, doomed = None, True
                up_writer.write(data)
                await up_writer.drain()

        async def replies() -> None:
            while data := await up_reader.read(1 << 16):
                if doomed:
                    self.dropped += 1
                    return
                writer.write(data)
                await writer.drain()

        try:
            await asyncio.wait(
                [asyncio.create_task(requests()), asyncio.create_task(replies())],
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            writer.close()
            up_writer.close()
            self._tasks.discard(task)


@pytest.mark.parametrize("batched", [False, True], ids=["alone", "batched"])
async def test_a_commit_that_landed_before_its_reply_was_lost_is_a_conflict_on_replay(
    redis_server: SingleRedis, batched: bool
) -> None:
    # redis-py resends a command, or a whole pipeline, after a connection error. A commit that
    # had landed meets its own write: VersionConflict(expected, expected + 1), no second write,
    # whether it went alone or in a batch. Its caller re-reads and finds its own record.
    proxy = ReplyDropper(redis_server.node.port)
    port = await proxy.start()
    store = RedisStateStore.from_url(f"redis://127.0.0.1:{port}/0")
    uids = [new_uid() for _ in range(20 if batched else 1)]
    try:
        await store.aping()
        await store.acommit(new_uid(), record("warm"), expected_version=0)  # script cached
        before = snapshot(store)
        proxy.armed = 2 if batched else 1
        calls = [store.acommit(new_uid(), record("lead"), expected_version=0)] if batched else []
        calls += [
            store.acommit(uid, record(uid), expected_version=0, history=[entry("A/B", uid)])
            for uid in uids
        ]
        outcomes = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), BOUND)
        assert proxy.dropped == 1
        if batched:
            assert delta(store, before) == CommitBatching(alone=1, pipelines=1, pipelined=20)
            assert isinstance(outcomes.pop(0), StateRecord)
        conflicts = 0
        for uid, outcome in zip(uids, outcomes, strict=True):
            if isinstance(outcome, VersionConflict):
                assert (outcome.run_uid, outcome.expected, outcome.actual) == (uid, 0, 1)
                conflicts += 1
            else:  # not yet run when the connection broke: the replay wrote it
                assert outcome == replace(record(uid), version=1), outcome
            state = await store.aget_state(uid)
            assert state == replace(record(uid), version=1)  # the caller's own, once
            assert [h.message for h in await store.aread_history(uid)] == [uid]
        assert conflicts >= 1
    finally:
        await store.aclose()
        await proxy.stop()


# -- cancellation and closing ------------------------------------------------------------------------


async def test_cancelled_callers_do_not_disturb_the_others(
    own_redis: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="asyncio")
    assert own_redis.proc is not None
    store = RedisStateStore.from_url(url_of(own_redis))
    try:
        await store.aping()
        # 1. Cancelled while queued: never sent. The first caller, alone on the wire, is
        # cancelled too; the queue behind it still leaves. The server is frozen meanwhile, so
        # the first caller surely waits for its reply: cancelled while its command is being
        # written, Python 3.11's wait_for (inside redis-py) may swallow the cancellation.
        uids = [new_uid() for _ in range(30)]
        before = snapshot(store)
        own_redis.proc.send_signal(signal.SIGSTOP)
        try:
            tasks = [
                asyncio.create_task(store.acommit(uid, record(uid), expected_version=0))
                for uid in uids
            ]
            await asyncio.sleep(0.05)  # one waiting for its reply, 29 queued
            doomed = [0, 5, 6, 7, 8, 9]
            for i in doomed:
                tasks[i].cancel()
            await asyncio.sleep(0.05)
        finally:
            own_redis.proc.send_signal(signal.SIGCONT)
        outcomes = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), BOUND)
        assert delta(store, before) == CommitBatching(alone=1, pipelines=1, pipelined=24)
        for i, (uid, outcome) in enumerate(zip(uids, outcomes, strict=True)):
            if i in doomed:
                assert isinstance(outcome, asyncio.CancelledError)
                if i:  # queued, so never sent
                    assert await store.aget_state(uid) is None
            else:
                assert outcome == replace(record(uid), version=1)

        # 2. Cancelled while their pipeline is on the wire: the pipeline carries on, so
        # their commits land, and the others get their replies.
        uids = [new_uid() for _ in range(30)]
        pipelines = store.batching.pipelines
        tasks = [
            asyncio.create_task(store.acommit(uid, record(uid), expected_version=0)) for uid in uids
        ]
        # Every turn of the loop: the drain counts a pipeline before it sends it, and can
        # settle its callers only turns later, after the reply came in.
        await wait_until("the pipeline", lambda: store.batching.pipelines > pipelines, every=0)
        for i in doomed[1:]:
            tasks[i].cancel()
        outcomes = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), BOUND)
        for i, (uid, outcome) in enumerate(zip(uids, outcomes, strict=True)):
            if i in doomed[1:]:
                assert isinstance(outcome, asyncio.CancelledError)
            else:
                assert outcome == replace(record(uid), version=1)
            assert await store.aget_state(uid) == replace(record(uid), version=1)

        # 3. The store batches on as before.
        before = snapshot(store)
        await asyncio.gather(
            *(store.acommit(new_uid(), record("x"), expected_version=0) for _ in range(10))
        )
        assert delta(store, before) == CommitBatching(alone=1, pipelines=1, pipelined=9)
    finally:
        await store.aclose()
    gc.collect()
    assert not caplog.records, [r.getMessage() for r in caplog.records]


def drain_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name().endswith("commit batches")]


async def test_aclose_answers_every_commit_first(redis_server: SingleRedis) -> None:
    store = RedisStateStore.from_url(redis_server.url)
    await store.aping()
    uids = [new_uid() for _ in range(30)]
    tasks = [
        asyncio.create_task(store.acommit(uid, record(uid), expected_version=0)) for uid in uids
    ]
    await asyncio.sleep(0)  # one on the wire, the rest queued
    await asyncio.wait_for(store.aclose(), BOUND)
    assert not drain_tasks()
    outcomes = await asyncio.wait_for(asyncio.gather(*tasks), 1.0)
    assert [o.version for o in outcomes] == [1] * len(uids)
    # Like redis-py's clients, the store reconnects if used again.
    assert await store.aget_state(uids[0]) == replace(record(uids[0]), version=1)
    await store.aclose()


async def test_a_cancelled_aclose_fails_what_is_left_and_leaks_no_task(
    own_redis: RedisProcess,
) -> None:
    assert own_redis.proc is not None
    store = RedisStateStore.from_url(url_of(own_redis), socket_timeout=5.0)
    uids = [new_uid() for _ in range(16)]
    try:
        await store.aping()
        tasks = [asyncio.create_task(commit_until_it_fails(store, uid)) for uid in uids]
        await wait_until("a few pipelines", lambda: store.batching.pipelines >= 3)
        own_redis.proc.send_signal(signal.SIGSTOP)  # the batch on the wire never returns
        await asyncio.sleep(0.05)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(store.aclose(), 0.3)
        ended = await asyncio.wait_for(asyncio.gather(*tasks), 1.0)  # well within 5 s
        assert not drain_tasks()
        for uid, (_, error) in zip(uids, ended, strict=True):
            assert isinstance(error, StoreUnavailable), repr(error)
            assert "the store was closed" in str(error) and uid in str(error)
            assert f"127.0.0.1:{own_redis.port}" in str(error)
    finally:
        own_redis.proc.send_signal(signal.SIGCONT)
        await store.aclose()
