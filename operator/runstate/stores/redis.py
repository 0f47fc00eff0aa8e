"""The production state store: `RedisStateStore`, blocking and async, on one server, Sentinel
or Redis Cluster.

Owns the I/O of the Redis store and nothing else: sending the command of each `Call` that
`_redis_calls.RedisCalls` builds (key layout, Lua scripts and reply parsing live there), through
redis.asyncio for the async methods and the blocking redis-py client for the others, and mapping
"Redis cannot serve us now" to `StoreUnavailable`. Each public method is one line that hands a
Call to one of two small runners, so the two faces share all logic.

It must not know about Kubernetes or what the states mean, must not block the event loop (the
async methods only use the async client), and must never put the connection URL or password into
`repr()`, log lines or exception messages: errors name the store by host:port only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
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

__all__ = ["AsyncClient", "RedisStateStore", "SyncClient"]

_log = logging.getLogger(__name__)

T = TypeVar("T")

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
    ) -> None:
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
    ) -> RedisStateStore:
        """A store with its own connections for `url` (see `_urls` for the syntax): one server
        (redis://, rediss://, unix://), Sentinel (redis+sentinel://) or Cluster
        (redis+cluster://).

        Connection errors and timeouts are retried `retries` times with jittered exponential
        backoff; retrying a commit is safe thanks to the version fence. Raises `ValueError`
        naming the faulty part of the URL, never the URL.
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
        with self._guard(call):
            if not self._async_ready:
                await self._first_contact(client)
            try:
                reply = await client.execute_command(*call.command)
            except NoScriptError:
                if call.on_noscript is None:
                    raise
                reply = await client.execute_command(*call.on_noscript)
        return call.parse(reply)

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
        needs no round trip, the blocking client's too."""
        if self._owns_client and self._client is not None:
            await aclose_client(self._client)
        self.close()


def _redact(text: str, secrets: set[str] | tuple[str, ...]) -> str:
    # Longest first, so a secret that contains another is not left half-visible.
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text
