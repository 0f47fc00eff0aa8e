"""The production state store: `RedisStateStore` on redis.asyncio.

Owns the Redis key layout of a run's hot state (SPEC §5) and the Lua scripts that make a state
transition and a slot acquisition atomic:

    <prefix>:{<run-uid>}:state     hash: type, name, stage, attempt, version, message,
                                         timestamp, context (JSON)
    <prefix>:{<run-uid>}:results   hash: "operation|host" -> JSON result
    <prefix>:{<run-uid>}:history   stream, capped (XADD MAXLEN ~ cap): from, to, at, message,
                                         attempt
    <prefix>:slots:{<scope>}       sorted set: member = holder, score = lease expiry in
                                         milliseconds of the Redis server's clock

The `{...}` hash tag keeps one run's keys in one Redis Cluster slot, so the multi-key scripts
work on a single Redis, behind Sentinel (pass the client from `Sentinel.master_for`) and on a
Redis Cluster (pass a `redis.asyncio.RedisCluster`).

It must not know about Kubernetes or what the states mean, must not block the event loop, and
must never put the connection URL or password into `repr()`, log lines or exception messages:
errors name the store by host:port only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.retry import Retry  # the async one: redis.retry.Retry never retries here
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ClusterDownError, ReadOnlyError, RedisError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT, FieldT

from ._common import (
    check_key_part,
    check_slot_args,
    commit_context,
    dump_json,
    load_object,
    split_state,
)
from .base import HISTORY_CAP, HistoryEntry, StateRecord, StoreUnavailable, VersionConflict

__all__ = ["RedisStateStore"]

_log = logging.getLogger(__name__)

_STORE = "redis"

# Errors that mean "Redis cannot serve us right now" rather than "the request was wrong":
# unreachable, timed out, loading, a failover in progress (a replica that became read-only,
# a cluster or Sentinel master that is down, slots migrating).
_UNAVAILABLE_ERRORS: tuple[type[RedisError], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ReadOnlyError,
    ClusterDownError,
    TryAgainError,
)

RedisClient = Redis | RedisCluster

# Compare-and-set of a run's state, plus its history, in one atomic step.
# KEYS: state hash, history stream.
# ARGV: expected version (-1 = unconditional write), history cap, number of field pairs n,
#       n field/value pairs, then 5 values per history entry: from, to, at, message, attempt.
# Returns {1, new version} or {0, actual version}.
_COMMIT_LUA = """
local current = redis.call('HGET', KEYS[1], 'version')
if current then current = tonumber(current) else current = 0 end
local expected = tonumber(ARGV[1])
if expected >= 0 and current ~= expected then
  return {0, current}
end
local new_version = current + 1
local n = tonumber(ARGV[3])
local fields = {'version', tostring(new_version)}
for i = 4, 3 + 2 * n do
  fields[#fields + 1] = ARGV[i]
end
redis.call('HSET', KEYS[1], unpack(fields))
local i = 4 + 2 * n
while i + 4 <= #ARGV do
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*',
    'from', ARGV[i], 'to', ARGV[i + 1], 'at', ARGV[i + 2],
    'message', ARGV[i + 3], 'attempt', ARGV[i + 4])
  i = i + 5
end
return {1, new_version}
"""

# Lease expiry uses the server's clock (TIME), so operator replicas with skewed clocks agree.
# Redis < 5 needs effect replication before a write that depends on TIME; newer ones ignore it.
_NOW_MS_LUA = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: slots zset. ARGV: holder, limit, ttl in ms. Returns 1 when held, 0 when full.
_ACQUIRE_LUA = (
    _NOW_MS_LUA
    + """
local ttl_ms = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
    return 0
  end
end
redis.call('ZADD', KEYS[1], now_ms + ttl_ms, ARGV[1])
-- The key outlives its longest lease and no longer, so abandoned scopes disappear.
if redis.call('PTTL', KEYS[1]) < ttl_ms then
  redis.call('PEXPIRE', KEYS[1], ttl_ms)
end
return 1
"""
)

# KEYS: slots zset. Returns the holders with a live lease, by expiry.
_HOLDERS_LUA = (
    _NOW_MS_LUA
    + """
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. string.format('%d', now_ms), '+inf')
"""
)

# KEYS: a run's keys. ARGV: ttl in seconds. A script, so all keys get their TTL or none does.
_EXPIRE_LUA = """
for i = 1, #KEYS do
  redis.call('EXPIRE', KEYS[i], ARGV[1])
end
return 1
"""


def _text(value: object) -> str:
    # Clients we did not build may have decode_responses=False.
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return str(value)


def _describe(client: RedisClient) -> str:
    """Where the store is, for messages: host:port, never credentials."""
    if isinstance(client, RedisCluster):
        nodes = getattr(client, "startup_nodes", None) or []
        first = next(iter(nodes), None)
        if first is not None:
            return f"redis store (cluster via {first.host}:{first.port})"
        return "redis store (cluster)"
    pool = client.connection_pool
    service = getattr(pool, "service_name", None)
    if service is not None:
        return f"redis store (sentinel service {service})"
    kwargs = pool.connection_kwargs
    db = kwargs.get("db", 0)
    if kwargs.get("path"):
        return f"redis store at unix:{kwargs['path']} db {db}"
    return f"redis store at {kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{db}"


def _secrets(client: RedisClient) -> tuple[str, ...]:
    if isinstance(client, RedisCluster):
        kwargs = client.connection_kwargs
    else:
        kwargs = client.connection_pool.connection_kwargs
    return tuple(str(v) for k in ("password", "ssl_password") if (v := kwargs.get(k)))


class RedisStateStore:
    """`AsyncStateStore` on Redis. Build it with `from_url`, or wrap an existing client.

    A store built by `from_url` owns its connection pool and closes it in `aclose`; a store
    given a client leaves the client to its owner unless `owns_client=True`.
    """

    name: str = "redis"

    def __init__(
        self,
        client: RedisClient,
        *,
        key_prefix: str = "runstate",
        history_cap: int = HISTORY_CAP,
        owns_client: bool = False,
    ) -> None:
        check_key_part(_STORE, "key prefix", key_prefix)
        if history_cap < 1:
            raise ValueError(f"redis store: history_cap must be >= 1, got {history_cap}")
        self._client = client
        self._prefix = key_prefix
        self._history_cap = history_cap
        self._owns_client = owns_client
        self._where = _describe(client)
        self._redact_values = _secrets(client)
        # register_script hashes once; each call is EVALSHA with a SCRIPT LOAD on NOSCRIPT
        # (e.g. after a failover to a replica that never saw the script).
        self._commit_script = client.register_script(_COMMIT_LUA)
        self._acquire_script = client.register_script(_ACQUIRE_LUA)
        self._holders_script = client.register_script(_HOLDERS_LUA)
        self._expire_script = client.register_script(_EXPIRE_LUA)
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
        """A store with its own connection pool for `redis://` or `rediss://` `url`.

        Connection errors and timeouts are retried `retries` times with jittered exponential
        backoff. Retrying a commit is safe: if the first attempt did land, the version fence
        turns the replay into a `VersionConflict` instead of a second write.
        """
        # A blocking pool makes a burst of callers wait for a connection instead of failing
        # with "Too many connections".
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=socket_timeout,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries),
            health_check_interval=30,
            decode_responses=True,
        )
        client = Redis.from_pool(pool)
        return cls(client, key_prefix=key_prefix, history_cap=history_cap, owns_client=True)

    def __repr__(self) -> str:
        return f"RedisStateStore({self._where}, prefix={self._prefix!r})"

    # -- keys and errors ---------------------------------------------------------------------

    def _run_keys(self, run_uid: str) -> tuple[str, str, str]:
        check_key_part(_STORE, "run uid", run_uid)
        base = f"{self._prefix}:{{{run_uid}}}"
        return f"{base}:state", f"{base}:results", f"{base}:history"

    def _slots_key(self, scope: str) -> str:
        check_key_part(_STORE, "slot scope", scope)
        return f"{self._prefix}:slots:{{{scope}}}"

    def _redact(self, text: str) -> str:
        for secret in self._redact_values:
            text = text.replace(secret, "***")
        return text

    def _unavailable(self, what: str, exc: BaseException) -> StoreUnavailable:
        detail = self._redact(f"{type(exc).__name__}: {exc}")
        _log.debug("%s: %s failed: %s", self._where, what, detail)
        return StoreUnavailable(f"{self._where}: {what} failed: {detail}")

    @contextlib.contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        """Turn an unreachable Redis into `StoreUnavailable` naming the store and the call."""
        try:
            yield
        except _UNAVAILABLE_ERRORS as exc:
            raise self._unavailable(what, exc) from exc

    # -- state -------------------------------------------------------------------------------

    async def aget_state(self, run_uid: str) -> StateRecord | None:
        state_key, _, _ = self._run_keys(run_uid)
        with self._guard(f"reading the state of run {run_uid}"):
            raw = await self._client.hgetall(state_key)
        if not raw:
            return None
        fields = {_text(k): _text(v) for k, v in raw.items()}
        try:
            return StateRecord(
                type=fields.get("type", ""),
                name=fields.get("name", ""),
                stage=fields.get("stage", ""),
                attempt=int(fields.get("attempt", "1")),
                version=int(fields.get("version", "0")),
                message=fields.get("message", ""),
                timestamp=fields.get("timestamp", ""),
                context=load_object(_STORE, "context", run_uid, fields.get("context", "{}")),
            )
        except ValueError as exc:
            raise ValueError(f"{self._where}: run {run_uid}: corrupt state hash: {exc}") from exc

    async def acommit(
        self,
        run_uid: str,
        record: StateRecord,
        *,
        expected_version: int,
        history: Sequence[HistoryEntry] = (),
    ) -> StateRecord:
        context_json = commit_context(run_uid, expected_version, record.context)
        fields = {
            "type": record.type,
            "name": record.name,
            "stage": record.stage,
            "attempt": str(record.attempt),
            "message": record.message,
            "timestamp": record.timestamp,
            "context": context_json,
        }
        ok, version = await self._run_commit(run_uid, expected_version, fields, history)
        if not ok:
            raise VersionConflict(run_uid, expected_version, version)
        context = load_object(_STORE, "context", run_uid, context_json)
        return dataclasses.replace(record, version=version, context=context)

    async def _run_commit(
        self,
        run_uid: str,
        expected_version: int,
        fields: Mapping[str, str],
        history: Sequence[HistoryEntry],
    ) -> tuple[bool, int]:
        state_key, _, history_key = self._run_keys(run_uid)
        args: list[str | int] = [expected_version, self._history_cap, len(fields)]
        for key, value in fields.items():
            args += [key, value]
        for entry in history:
            args += [entry.from_state, entry.to_state, entry.at, entry.message, entry.attempt]
        with self._guard(f"committing the state of run {run_uid}"):
            reply = await self._commit_script(keys=[state_key, history_key], args=args)
        return int(reply[0]) == 1, int(reply[1])

    async def aset_state(
        self, run_uid: str, state: str, *, metadata: Mapping[str, Any] | None = None
    ) -> None:
        type_, name = split_state(run_uid, state)
        meta = metadata or {}
        # Only the given fields are written; the others keep their stored values.
        fields = {"type": type_, "name": name}
        for key in ("stage", "message", "timestamp"):
            if key in meta:
                fields[key] = str(meta[key])
        if "attempt" in meta:
            fields["attempt"] = str(int(meta["attempt"]))
        if "context" in meta:
            fields["context"] = dump_json("context", run_uid, dict(meta["context"]))
        await self._run_commit(run_uid, -1, fields, ())

    async def aget_context(self, run_uid: str) -> dict[str, Any]:
        state_key, _, _ = self._run_keys(run_uid)
        with self._guard(f"reading the context of run {run_uid}"):
            text = await self._client.hget(state_key, "context")
        if text is None:
            return {}
        return load_object(_STORE, "context", run_uid, _text(text))

    async def aread_history(self, run_uid: str, count: int = HISTORY_CAP) -> list[HistoryEntry]:
        _, _, history_key = self._run_keys(run_uid)
        # MAXLEN ~ trims whole stream nodes only, so the stream may briefly hold more than the
        # cap; reading at most `cap` keeps the visible history exactly capped, as in memory.
        count = min(count, self._history_cap)
        if count <= 0:
            return []
        with self._guard(f"reading the history of run {run_uid}"):
            entries = await self._client.xrevrange(history_key, count=count)
        history: list[HistoryEntry] = []
        for _, raw in reversed(entries or []):
            f = {_text(k): _text(v) for k, v in (raw or {}).items()}
            history.append(
                HistoryEntry(
                    from_state=f.get("from", ""),
                    to_state=f.get("to", ""),
                    at=f.get("at", ""),
                    message=f.get("message", ""),
                    attempt=int(f.get("attempt", "1")),
                )
            )
        return history

    # -- results -----------------------------------------------------------------------------

    async def aset_results(self, run_uid: str, results: Mapping[str, Mapping[str, Any]]) -> None:
        _, results_key, _ = self._run_keys(run_uid)
        encoded: dict[FieldT, EncodableT] = {
            k: dump_json(f"result {k!r}", run_uid, dict(v)) for k, v in results.items()
        }
        if not encoded:
            return
        with self._guard(f"writing the results of run {run_uid}"):
            await self._client.hset(results_key, mapping=encoded)

    async def aget_results(self, run_uid: str) -> dict[str, dict[str, Any]]:
        _, results_key, _ = self._run_keys(run_uid)
        with self._guard(f"reading the results of run {run_uid}"):
            raw = await self._client.hgetall(results_key)
        return {
            _text(k): load_object(_STORE, f"result {_text(k)!r}", run_uid, _text(v))
            for k, v in (raw or {}).items()
        }

    # -- concurrency slots -------------------------------------------------------------------

    async def aacquire_slot(
        self, scope: str, holder: str, *, limit: int, ttl_seconds: float
    ) -> bool:
        check_slot_args(_STORE, scope, holder, limit, ttl_seconds)
        key = self._slots_key(scope)
        ttl_ms = max(1, math.ceil(ttl_seconds * 1000))
        with self._guard(f"acquiring a slot of {scope!r} for {holder!r}"):
            reply = await self._acquire_script(keys=[key], args=[holder, limit, ttl_ms])
        return int(reply) == 1

    async def arelease_slot(self, scope: str, holder: str) -> None:
        key = self._slots_key(scope)
        with self._guard(f"releasing the slot of {scope!r} held by {holder!r}"):
            await self._client.zrem(key, holder)

    async def aslot_holders(self, scope: str) -> list[str]:
        key = self._slots_key(scope)
        with self._guard(f"listing the slot holders of {scope!r}"):
            reply = await self._holders_script(keys=[key])
        return [_text(member) for member in reply]

    # -- lifecycle ---------------------------------------------------------------------------

    async def aexpire(self, run_uid: str, ttl_seconds: int) -> None:
        if ttl_seconds < 0:
            raise ValueError(f"run {run_uid}: ttl_seconds must be >= 0, got {ttl_seconds}")
        keys = list(self._run_keys(run_uid))
        with self._guard(f"setting the TTL of run {run_uid}"):
            await self._expire_script(keys=keys, args=[int(ttl_seconds)])

    async def adelete(self, run_uid: str) -> None:
        keys = self._run_keys(run_uid)
        with self._guard(f"deleting run {run_uid}"):
            await self._client.delete(*keys)

    async def aping(self) -> None:
        try:
            await self._client.ping()
        except RedisError as exc:
            # Any failure here (refused, timeout, wrong password, loading) means "not usable".
            raise self._unavailable("ping", exc) from exc

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()
