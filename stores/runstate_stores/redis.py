"""The production state store: `RedisStateStore`, blocking and async, on one server, Sentinel
or Redis Cluster.

Owns the I/O of the Redis store and nothing else: sending the command of each `Call` that
`_redis_calls.RedisCalls` builds (key layout, Lua scripts and reply parsing live there), through
redis.asyncio for the async methods and the blocking redis-py client for the others, batching
concurrent async commits into pipelines, and mapping "Redis cannot serve us now" to
`StoreUnavailable`. Each public method is one line that hands a Call to one of two small
runners, so the two faces share all logic.

It must not know about Kubernetes or what the states mean, must not block the event loop (the
async methods only use the async client), must not merge commits (each stays its own fenced
script, batching only shares round trips), and must never put the connection URL or password
into `repr()`, log lines or exception messages: errors name the store by host:port only.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import redis.asyncio
from redis.exceptions import (
    ClusterDownError,
    NoScriptError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ._redis_calls import Call, RedisCalls
from ._redis_connect import (
    AsyncClient,
    ConnectOptions,
    SyncClient,
    aclose_client,
    async_client,
    client_secrets,
    close_client,
    describe,
    sync_client,
)
from ._urls import parse_redis_url
from .base import HISTORY_CAP, HistoryEntry, StateRecord, StoreUnavailable

__all__ = ["AsyncClient", "CommitBatching", "RedisStateStore", "SyncClient"]

_log = logging.getLogger(__name__)

T = TypeVar("T")

#: Most commits one pipeline carries. Large enough for any realistic number of workers (the
#: operator runs 16); a bound all the same, so one round trip's reply stays a few hundred kB.
MAX_BATCH = 256

_Pending = tuple[Call[Any], "asyncio.Future[Any]"]

# Errors that mean "Redis cannot serve us right now" rather than "the request was wrong":
# unreachable (Sentinel's MasterNotFoundError is a ConnectionError), timed out, loading, a
# failover in progress (a replica that became read-only, a cluster master that is down, slots
# migrating or not covered).
_UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ReadOnlyError,
    ClusterDownError,
    TryAgainError,
    SlotNotCoveredError,
)


def _is_unavailable(exc: BaseException, *, ping: bool) -> bool:
    if isinstance(exc, _UNAVAILABLE_ERRORS):
        return True
    if isinstance(exc, RedisClusterException):
        # "Redis Cluster cannot be connected": redis-py wraps the connection error that
        # made every startup node unreachable.
        return ping or isinstance(exc.__cause__, _UNAVAILABLE_ERRORS)
    # For a ping, anything (a wrong password, a server still loading) means "not usable".
    return ping and isinstance(exc, RedisError)


@dataclass
class CommitBatching:
    """How the async commits of a store left, counted since it was made: the observable side
    of batching (tests and the benchmark read it). A commit is counted when it is sent.

    `alone`: round trips that carried one commit (the store was idle, or one was queued);
    `pipelines`: round trips that carried several; `pipelined`: the commits they carried.
    Resending commits as EVAL after NOSCRIPT is not counted.
    """

    alone: int = 0
    pipelines: int = 0
    pipelined: int = 0

    @property
    def round_trips(self) -> int:
        return self.alone + self.pipelines

    @property
    def commits(self) -> int:
        return self.alone + self.pipelined


class RedisStateStore:
    """`StateStore` and `AsyncStateStore` on Redis. Build it with `from_url`, or wrap clients.

    `client` (redis.asyncio `Redis` or `RedisCluster`, or a Sentinel `master_for` client) serves
    the async methods; `sync_client` (the blocking counterparts) serves the blocking ones, or a
    zero-argument callable that makes it on first blocking use. A store given only one flavour
    raises `RuntimeError` from the methods of the other: deriving a second connection setup
    from a client (TLS files, credential providers, Sentinel settings) behind the caller's back
    would be guesswork. `from_url` has the URL, so it sets up both, the blocking one lazily.

    A store built by `from_url` owns its clients and closes them; a store given clients leaves
    them to their owner unless `owns_client=True`.

    Async commits (`acommit`, `aset_state`) are batched: one that finds the store idle is sent
    at once, as any command; those that arrive while commits are on the wire wait for that
    round trip and then leave together, up to `max_batch` in one pipeline. `max_batch=1` sends
    every commit by itself. `batching` counts how they left. The blocking face never batches.
    """

    name: str = "redis"

    def __init__(
        self,
        client: AsyncClient | None = None,
        *,
        sync_client: SyncClient | Callable[[], SyncClient] | None = None,
        key_prefix: str = "runstate",
        history_cap: int = HISTORY_CAP,
        owns_client: bool = False,
        max_batch: int = MAX_BATCH,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"redis store: max_batch must be >= 1, got {max_batch}")
        known = client if client is not None else sync_client
        if known is None or (callable(known) and not isinstance(known, SyncClient)):
            raise ValueError(
                "redis store: needs a client (redis.asyncio) or a sync_client instance; "
                "use RedisStateStore.from_url to build both from a URL"
            )
        self._where = describe(known)
        self._calls = RedisCalls(key_prefix=key_prefix, history_cap=history_cap, where=self._where)
        self._client = client
        self._sync_client: SyncClient | None = None
        self._make_sync_client: Callable[[], SyncClient] | None = None
        if isinstance(sync_client, SyncClient):
            self._sync_client = sync_client
        else:
            self._make_sync_client = sync_client
        self._sync_lock = threading.Lock()  # one lazily made blocking client, whatever threads
        self._async_ready = False  # see _first_contact
        self._first_contact_lock = asyncio.Lock()
        self._owns_client = owns_client
        # Commit batching (async face only; see _acommit_reply). At most one round trip of
        # commits is on the wire at a time: a direct send, or the drain task's pipeline.
        self._max_batch = max_batch
        self._queue: deque[_Pending] = deque()
        self._direct = False  # a commit sent directly by its caller is on the wire
        self._drain_task: asyncio.Task[None] | None = None
        self._closing = False
        self._idle = asyncio.Event()  # set when no commit is queued or on the wire
        self._idle.set()
        self.batching = CommitBatching()
        self._secrets: set[str] = set()
        for given in (client, self._sync_client):
            if given is not None:
                self._secrets |= client_secrets(given)
        _log.debug("%s: state store ready (prefix %r)", self._where, key_prefix)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        key_prefix: str = "runstate",
        history_cap: int = HISTORY_CAP,
        socket_timeout: float = 5.0,
        max_connections: int = 50,
        retries: int = 3,
        max_batch: int = MAX_BATCH,
    ) -> RedisStateStore:
        """A store with its own connections for `url` (see `_urls` for the syntax): one server
        (redis://, rediss://, unix://), Sentinel (redis+sentinel://) or Cluster
        (redis+cluster://).

        Connection errors and timeouts are retried `retries` times with jittered exponential
        backoff; retrying a commit (or a pipeline of commits) is safe thanks to the version
        fence. `max_batch`: see the class. Raises `ValueError` naming the faulty part of the
        URL, never the URL.
        """
        target = parse_redis_url(url)
        options = ConnectOptions(
            socket_timeout=socket_timeout, max_connections=max_connections, retries=retries
        )
        try:
            client = async_client(target, options)
        except ValueError as exc:  # redis-py's own URL checks (query options of redis://)
            raise ValueError(f"redis URL: {_redact(str(exc), target.secrets())}") from None
        store = cls(
            client,
            sync_client=lambda: sync_client(target, options),
            key_prefix=key_prefix,
            history_cap=history_cap,
            owns_client=True,
            max_batch=max_batch,
        )
        store._secrets.update(target.secrets())
        return store

    def __repr__(self) -> str:
        return f"RedisStateStore({self._where}, prefix={self._calls.prefix!r})"

    # -- the two runners: the only places that talk to Redis --------------------------------

    async def _arun(self, call: Call[T]) -> T:
        if not call.command:
            return call.parse(None)
        client = self._client
        if client is None:
            raise self._missing(call, "an async", "client=")
        if call.batch and self._max_batch > 1:
            reply = await self._acommit_reply(client, call)
        else:
            if call.batch:  # batching is off (max_batch=1): every commit leaves alone
                self.batching.alone += 1
            reply = await self._asend(client, call)
        # Parsed in the caller's own task, so a VersionConflict is raised where it belongs.
        return call.parse(reply)

    async def _asend(self, client: AsyncClient, call: Call[Any]) -> Any:
        """One Call, one command (two on NOSCRIPT): its raw reply, or StoreUnavailable."""
        with self._guard(call):
            if not self._async_ready:
                await self._first_contact(client)
            try:
                return await client.execute_command(*call.command)
            except NoScriptError:
                if call.on_noscript is None:
                    raise
                return await client.execute_command(*call.on_noscript)

    async def _first_contact(self, client: AsyncClient) -> None:
        # redis-py's async RedisCluster (seen with 8.1) drops connections in use when a burst
        # of first commands races its slot-map initialisation: a background task disconnects
        # them, and a command fails with AttributeError or ConnectionError. One PING, alone,
        # before anything else lets the initialisation settle.
        if isinstance(client, redis.asyncio.RedisCluster):
            async with self._first_contact_lock:
                if not self._async_ready:
                    await client.execute_command("PING")
        self._async_ready = True

    # -- batching of async commits -----------------------------------------------------------
    #
    # Measured (docs/performance.md): one commit costs ~150 µs of client CPU, almost all of it
    # redis-py's fixed work per command (packing, the pool, retry and observability wrappers,
    # one write and one wake-up per reply). Commits that share a pipeline share most of that.
    #
    # Each commit stays its own EVALSHA, so the compare-and-set of each run is unchanged and a
    # VersionConflict (or any error reply) reaches only its caller. A pipeline is sent with
    # pipeline(transaction=False): no MULTI, nothing ties the commits together. On Redis
    # Cluster, redis-py splits it per master (tested against a real three-master cluster).
    #
    # Retries: redis-py resends the whole pipeline after a connection error, as it resends a
    # single command. A commit that had landed before the connection dropped then meets its
    # own write: the version fence turns the replay into VersionConflict(expected, expected +
    # 1), never a second write, exactly as for a single command (stores/tests prove both).
    # The caller handles it as any conflict: re-read, and find its own record. (On a cluster,
    # replies lost when a node's connection breaks mid-read come back per command as
    # connection errors, which become StoreUnavailable for those callers only.)

    async def _acommit_reply(self, client: AsyncClient, call: Call[Any]) -> Any:
        if self._closing:
            # aclose() is waiting for the queue to empty: nothing new joins it.
            self.batching.alone += 1
            return await self._asend(client, call)
        if not self._direct and self._drain_task is None and not self._queue:
            # Idle: straight out, in the caller's own task, so a lone caller waits for
            # nothing and pays no extra task switch.
            self._direct = True
            self._idle.clear()
            self.batching.alone += 1
            try:
                return await self._asend(client, call)
            finally:
                self._direct = False
                self._start_drain(client)  # whatever queued meanwhile leaves now
                self._note_idle()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((call, future))
        self._idle.clear()
        self._start_drain(client)
        return await future

    def _start_drain(self, client: AsyncClient) -> None:
        if self._queue and self._drain_task is None and not self._direct:
            self._drain_task = asyncio.get_running_loop().create_task(
                self._drain(client), name=f"{self._where}: commit batches"
            )

    def _note_idle(self) -> None:
        if not self._direct and self._drain_task is None and not self._queue:
            self._idle.set()

    async def _drain(self, client: AsyncClient) -> None:
        """Send the queued commits, a pipeline at a time, until none is left."""
        batch: list[_Pending] = []
        try:
            while True:
                # One turn of the event loop first: the workers that the last replies woke
                # queue their next commits now, and leave with this batch, not the next.
                await asyncio.sleep(0)
                batch = self._take()
                if not batch:
                    return
                await self._send_batch(client, batch)
                batch = []
        except asyncio.CancelledError:
            # aclose() gave up waiting, or the loop is shutting down: nobody may hang.
            self._fail_all(batch, "while the commit was on the wire (it may have been applied)")
            self._fail_all(self._take_all(), "before the commit was sent")
            raise
        finally:
            self._drain_task = None
            self._note_idle()

    def _take(self) -> list[_Pending]:
        batch: list[_Pending] = []
        while self._queue and len(batch) < self._max_batch:
            call, future = self._queue.popleft()
            if not future.done():  # its caller was cancelled while queued: never sent
                batch.append((call, future))
        return batch

    def _take_all(self) -> list[_Pending]:
        pending = list(self._queue)
        self._queue.clear()
        return pending

    def _fail_all(self, pending: list[_Pending], when: str) -> None:
        for call, future in pending:
            _fail(
                future,
                StoreUnavailable(f"{self._where}: {call.what} failed: the store was closed {when}"),
            )

    async def _send_batch(self, client: AsyncClient, batch: list[_Pending]) -> None:
        """Send one batch and settle every future in it. Raises nothing but CancelledError."""
        if len(batch) == 1:  # a pipeline of one would cost more than the command
            call, future = batch[0]
            self.batching.alone += 1
            try:
                _resolve(future, await self._asend(client, call))
            except Exception as exc:  # handed to the caller, not lost
                _fail(future, exc)
            return
        self.batching.pipelines += 1
        self.batching.pipelined += len(batch)
        calls = [call for call, _ in batch]
        try:
            if not self._async_ready:
                await self._first_contact(client)
            replies = await _pipeline(client, [call.command for call in calls])
            # NOSCRIPT (a fresh server, a promoted replica, a cluster node that never ran the
            # script): nothing ran, so resending those as EVAL, which also caches it, is safe.
            missing = [
                i
                for i, reply in enumerate(replies)
                if isinstance(reply, NoScriptError) and calls[i].on_noscript is not None
            ]
            if missing:
                again = await _pipeline(client, [calls[i].on_noscript or () for i in missing])
                for i, reply in zip(missing, again, strict=True):
                    replies[i] = reply
        except Exception as exc:  # the whole round trip failed: every caller
            for call, future in batch:
                _fail(future, self._mapped(call, exc, shared=True))
            return
        for (call, future), reply in zip(batch, replies, strict=True):
            if isinstance(reply, Exception):
                _fail(future, self._mapped(call, reply, shared=False))
            else:
                _resolve(future, reply)

    def _mapped(self, call: Call[Any], exc: Exception, *, shared: bool) -> Exception:
        """What the caller of `call` gets for `exc`: StoreUnavailable naming its own run and
        the store if Redis cannot serve us, else the error itself (its own copy when `exc`
        is shared by a batch, so tracebacks of different callers do not pile up on one)."""
        if isinstance(exc, RedisError | RedisClusterException) and _is_unavailable(
            exc, ping=call.ping
        ):
            error = self._unavailable(call.what, exc)
            error.__cause__ = exc
            return error
        if shared:
            with contextlib.suppress(Exception):
                return copy.copy(exc)
        return exc

    async def _settle_commits(self) -> None:
        """Wait until no commit is queued or on the wire; if cancelled meanwhile, fail every
        queued commit with StoreUnavailable instead, so that no caller hangs."""
        if self._idle.is_set():
            return
        self._closing = True
        try:
            await self._idle.wait()
        except asyncio.CancelledError:
            if self._drain_task is not None:
                self._drain_task.cancel()  # fails its batch and the queue (see _drain)
            else:  # a direct send is on the wire; what queued behind it was never sent
                self._fail_all(self._take_all(), "before the commit was sent")
            raise
        finally:
            self._closing = False

    def _run(self, call: Call[T]) -> T:
        if not call.command:
            return call.parse(None)
        with self._guard(call):
            client = self._blocking_client(call)  # a cluster client connects when made
            # The blocking execute_command is untyped in redis-py.
            try:
                reply = client.execute_command(*call.command)  # type: ignore[no-untyped-call]
            except NoScriptError:
                if call.on_noscript is None:
                    raise
                reply = client.execute_command(*call.on_noscript)  # type: ignore[no-untyped-call]
        return call.parse(reply)

    def _blocking_client(self, call: Call[Any]) -> SyncClient:
        with self._sync_lock:
            if self._sync_client is None:
                if self._make_sync_client is None:
                    raise self._missing(call, "a blocking", "sync_client=")
                self._sync_client = self._make_sync_client()
                self._secrets |= client_secrets(self._sync_client)
            return self._sync_client

    def _missing(self, call: Call[Any], flavour: str, parameter: str) -> RuntimeError:
        return RuntimeError(
            f"{self._where}: {call.what} needs {flavour} Redis client, and this store was "
            f"given none; pass {parameter} too, or build the store with RedisStateStore.from_url"
        )

    def _unavailable(self, what: str, exc: BaseException) -> StoreUnavailable:
        detail = _redact(f"{type(exc).__name__}: {exc}", self._secrets)
        _log.debug("%s: %s failed: %s", self._where, what, detail)
        return StoreUnavailable(f"{self._where}: {what} failed: {detail}")

    @contextlib.contextmanager
    def _guard(self, call: Call[Any]) -> Iterator[None]:
        """Turn an unreachable Redis into `StoreUnavailable` naming the store and the call."""
        try:
            yield
        except (RedisError, RedisClusterException) as exc:
            if _is_unavailable(exc, ping=call.ping):
                raise self._unavailable(call.what, exc) from exc
            raise

    # -- blocking face -----------------------------------------------------------------------

    def get_state(self, run_uid: str) -> StateRecord | None:
        return self._run(self._calls.get_state(run_uid))

    def commit(
        self,
        run_uid: str,
        record: StateRecord,
        *,
        expected_version: int,
        history: Sequence[HistoryEntry] = (),
    ) -> StateRecord:
        call = self._calls.commit(
            run_uid, record, expected_version=expected_version, history=history
        )
        return self._run(call)

    def set_state(
        self, run_uid: str, state: str, *, metadata: Mapping[str, Any] | None = None
    ) -> None:
        self._run(self._calls.set_state(run_uid, state, metadata=metadata))

    def get_context(self, run_uid: str) -> dict[str, Any]:
        return self._run(self._calls.get_context(run_uid))

    def read_history(self, run_uid: str, count: int = HISTORY_CAP) -> list[HistoryEntry]:
        return self._run(self._calls.read_history(run_uid, count))

    def set_results(self, run_uid: str, results: Mapping[str, Mapping[str, Any]]) -> None:
        self._run(self._calls.set_results(run_uid, results))

    def get_results(self, run_uid: str) -> dict[str, dict[str, Any]]:
        return self._run(self._calls.get_results(run_uid))

    def acquire_slot(self, scope: str, holder: str, *, limit: int, ttl_seconds: float) -> bool:
        return self._run(
            self._calls.acquire_slot(scope, holder, limit=limit, ttl_seconds=ttl_seconds)
        )

    def release_slot(self, scope: str, holder: str) -> None:
        self._run(self._calls.release_slot(scope, holder))

    def slot_holders(self, scope: str) -> list[str]:
        return self._run(self._calls.slot_holders(scope))

    def expire(self, run_uid: str, ttl_seconds: int) -> None:
        self._run(self._calls.expire(run_uid, ttl_seconds))

    def delete(self, run_uid: str) -> None:
        self._run(self._calls.delete(run_uid))

    def ping(self) -> None:
        self._run(self._calls.ping())

    def close(self) -> None:
        """Release the blocking client's connections if the store owns it. Like redis-py's
        own clients, the store reconnects if it is used again."""
        with self._sync_lock:
            client = self._sync_client
        if client is not None and self._owns_client:
            close_client(client)

    # -- async face --------------------------------------------------------------------------

    async def aget_state(self, run_uid: str) -> StateRecord | None:
        return await self._arun(self._calls.get_state(run_uid))

    async def acommit(
        self,
        run_uid: str,
        record: StateRecord,
        *,
        expected_version: int,
        history: Sequence[HistoryEntry] = (),
    ) -> StateRecord:
        call = self._calls.commit(
            run_uid, record, expected_version=expected_version, history=history
        )
        return await self._arun(call)

    async def aset_state(
        self, run_uid: str, state: str, *, metadata: Mapping[str, Any] | None = None
    ) -> None:
        await self._arun(self._calls.set_state(run_uid, state, metadata=metadata))

    async def aget_context(self, run_uid: str) -> dict[str, Any]:
        return await self._arun(self._calls.get_context(run_uid))

    async def aread_history(self, run_uid: str, count: int = HISTORY_CAP) -> list[HistoryEntry]:
        return await self._arun(self._calls.read_history(run_uid, count))

    async def aset_results(self, run_uid: str, results: Mapping[str, Mapping[str, Any]]) -> None:
        await self._arun(self._calls.set_results(run_uid, results))

    async def aget_results(self, run_uid: str) -> dict[str, dict[str, Any]]:
        return await self._arun(self._calls.get_results(run_uid))

    async def aacquire_slot(
        self, scope: str, holder: str, *, limit: int, ttl_seconds: float
    ) -> bool:
        return await self._arun(
            self._calls.acquire_slot(scope, holder, limit=limit, ttl_seconds=ttl_seconds)
        )

    async def arelease_slot(self, scope: str, holder: str) -> None:
        await self._arun(self._calls.release_slot(scope, holder))

    async def aslot_holders(self, scope: str) -> list[str]:
        return await self._arun(self._calls.slot_holders(scope))

    async def aexpire(self, run_uid: str, ttl_seconds: int) -> None:
        await self._arun(self._calls.expire(run_uid, ttl_seconds))

    async def adelete(self, run_uid: str) -> None:
        await self._arun(self._calls.delete(run_uid))

    async def aping(self) -> None:
        await self._arun(self._calls.ping())

    async def aclose(self) -> None:
        """Release every connection the store owns: the async client's and, as closing it
        needs no round trip, the blocking client's too.

        Commits already queued or on the wire are sent and answered first (commits made while
        it waits go out alone). If `aclose` is cancelled while it waits, those still waiting
        fail with `StoreUnavailable` ("the store was closed ..."), and no task is left behind.
        """
        try:
            await self._settle_commits()
        finally:
            if self._owns_client and self._client is not None:
                await aclose_client(self._client)
            self.close()


async def _pipeline(client: AsyncClient, commands: list[tuple[Any, ...]]) -> list[Any]:
    """Replies in order, an error reply as its exception; raises if the round trip failed."""
    pipe = client.pipeline(transaction=False)
    for command in commands:
        pipe.execute_command(*command)
    return list(await pipe.execute(raise_on_error=False))


def _resolve(future: asyncio.Future[Any], reply: Any) -> None:
    if not future.done():  # done: its caller was cancelled
        future.set_result(reply)


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
        # Marked as retrieved: if the caller is cancelled before it wakes up, nobody reads
        # it, and asyncio would log "exception was never retrieved" for a settled matter.
        future.exception()


def _redact(text: str, secrets: set[str] | tuple[str, ...]) -> str:
    # Longest first, so a secret that contains another is not left half-visible.
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text
