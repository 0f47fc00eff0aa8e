"""The Redis store without I/O: key layout, Lua scripts, and every operation as a `Call`.

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
work on a single Redis, behind Sentinel and on a Redis Cluster alike.

Each store operation is built here as a `Call`: the command to send, what to send instead when
the server does not know a script yet, how to turn the reply into the result (or an error such
as `VersionConflict`), and whether it may share a pipeline with other Calls. `RedisStateStore`
only sends a Call's command, through redis.asyncio for the async methods or the blocking client
for the others, so the two faces cannot drift apart. This module must not do I/O and must not
import a Redis client.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ._common import (
    check_key_part,
    check_slot_args,
    commit_context,
    dump_json,
    load_object,
    split_state,
)
from .base import HISTORY_CAP, HistoryEntry, StateRecord, VersionConflict

__all__ = ["Call", "RedisCalls"]

T = TypeVar("T")

_STORE = "redis"

# Compare-and-set of a run's state, plus its history, in one atomic step.
# KEYS: state hash, history stream.
# ARGV: expected version (-1 = unconditional write), history cap, number of field pairs n,
#       n field/value pairs, then 5 values per history entry: from, to, at, message, attempt.
# Returns {1, new version} or {0, actual version}.
COMMIT_LUA = """
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
ACQUIRE_LUA = (
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
HOLDERS_LUA = (
    _NOW_MS_LUA
    + """
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. string.format('%d', now_ms), '+inf')
"""
)

# KEYS: a run's keys. ARGV: ttl in seconds. A script, so all keys get their TTL or none does.
EXPIRE_LUA = """
for i = 1, #KEYS do
  redis.call('EXPIRE', KEYS[i], ARGV[1])
end
return 1
"""

Arg = str | int | float


@dataclass(frozen=True)
class Call(Generic[T]):
    """One store operation, ready to send.

    `command` is what to send (empty: nothing, the result is `parse(None)`); `on_noscript`, for
    a script, is the EVAL to send when the server answers EVALSHA with NOSCRIPT (a fresh server,
    a promoted replica, a cluster node that never ran it). `parse` turns the reply into the
    result and may raise. `what` names the operation for error messages. `ping`: every error,
    not only a connection failure, means "unavailable".

    `batch`: the async store may send this Call in one pipeline with other batch Calls. Only
    for one script whose outcome depends on nothing else in the pipeline (a commit: its own
    run's version fence decides it), so sharing a round trip changes nothing but the cost.
    """

    what: str
    command: tuple[Arg, ...]
    parse: Callable[[Any], T]
    on_noscript: tuple[Arg, ...] | None = None
    ping: bool = False
    batch: bool = False


@functools.cache
def _sha1(lua: str) -> str:
    # Once per script, not per call: a commit is built thousands of times a second.
    return hashlib.sha1(lua.encode()).hexdigest()


def _script(
    what: str,
    lua: str,
    keys: Sequence[str],
    args: Sequence[Arg],
    parse: Callable[[Any], T],
    *,
    batch: bool = False,
) -> Call[T]:
    """EVALSHA first (no script text on the wire); EVAL, which also caches it, on NOSCRIPT."""
    sha = _sha1(lua)
    tail = (len(keys), *keys, *args)
    return Call(what, ("EVALSHA", sha, *tail), parse, on_noscript=("EVAL", lua, *tail), batch=batch)


def _nothing(_: Any) -> None:
    return None


def _granted(reply: Any) -> bool:
    return int(reply) == 1


def _members(reply: Any) -> list[str]:
    return [text(member) for member in reply or []]


def text(value: object) -> str:
    """A reply value as str: clients we did not build may have decode_responses=False."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return str(value)


def _fields(reply: Any) -> dict[str, str]:
    """A hash reply as {str: str}, whether the client already made it a dict or not."""
    if not reply:
        return {}
    if isinstance(reply, Mapping):
        return {text(k): text(v) for k, v in reply.items()}
    items = list(reply)
    return {text(k): text(v) for k, v in zip(items[::2], items[1::2], strict=True)}


class RedisCalls:
    """Builds the `Call` of each store operation for one key prefix and history cap.

    `where` names the store (host:port, never credentials) in the errors parsing may raise.
    """

    def __init__(self, *, key_prefix: str, history_cap: int, where: str) -> None:
        check_key_part(_STORE, "key prefix", key_prefix)
        if history_cap < 1:
            raise ValueError(f"redis store: history_cap must be >= 1, got {history_cap}")
        self.prefix = key_prefix
        self.history_cap = history_cap
        self.where = where

    # -- keys --------------------------------------------------------------------------------

    def run_keys(self, run_uid: str) -> tuple[str, str, str]:
        """The state, results and history keys of a run."""
        check_key_part(_STORE, "run uid", run_uid)
        base = f"{self.prefix}:{{{run_uid}}}"
        return f"{base}:state", f"{base}:results", f"{base}:history"

    def slots_key(self, scope: str) -> str:
        check_key_part(_STORE, "slot scope", scope)
        return f"{self.prefix}:slots:{{{scope}}}"

    # -- state -------------------------------------------------------------------------------

    def get_state(self, run_uid: str) -> Call[StateRecord | None]:
        state_key, _, _ = self.run_keys(run_uid)

        def parse(reply: Any) -> StateRecord | None:
            fields = _fields(reply)
            if not fields:
                return None
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
                raise ValueError(f"{self.where}: run {run_uid}: corrupt state hash: {exc}") from exc

        return Call(f"reading the state of run {run_uid}", ("HGETALL", state_key), parse)

    def commit(
        self,
        run_uid: str,
        record: StateRecord,
        *,
        expected_version: int,
        history: Sequence[HistoryEntry] = (),
    ) -> Call[StateRecord]:
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

        def parse(reply: Any) -> StateRecord:
            ok, version = int(reply[0]) == 1, int(reply[1])
            if not ok:
                raise VersionConflict(run_uid, expected_version, version)
            context = load_object(_STORE, "context", run_uid, context_json)
            return dataclasses.replace(record, version=version, context=context)

        return self._commit(run_uid, expected_version, fields, history, parse)

    def _commit(
        self,
        run_uid: str,
        expected_version: int,
        fields: Mapping[str, str],
        history: Iterable[HistoryEntry],
        parse: Callable[[Any], T],
    ) -> Call[T]:
        state_key, _, history_key = self.run_keys(run_uid)
        args: list[Arg] = [expected_version, self.history_cap, len(fields)]
        for key, value in fields.items():
            args += [key, value]
        for entry in history:
            args += [entry.from_state, entry.to_state, entry.at, entry.message, entry.attempt]
        what = f"committing the state of run {run_uid}"
        # Batchable: a commit reads and writes only its own run's keys, so whatever shares its
        # pipeline cannot change its outcome (and the fence still decides a conditional one).
        return _script(what, COMMIT_LUA, [state_key, history_key], args, parse, batch=True)

    def set_state(
        self, run_uid: str, state: str, *, metadata: Mapping[str, Any] | None = None
    ) -> Call[None]:
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
        # Expected version -1: unconditional, yet it bumps the version like any commit.
        return self._commit(run_uid, -1, fields, (), _nothing)

    def get_context(self, run_uid: str) -> Call[dict[str, Any]]:
        state_key, _, _ = self.run_keys(run_uid)

        def parse(reply: Any) -> dict[str, Any]:
            if reply is None:
                return {}
            return load_object(_STORE, "context", run_uid, text(reply))

        what = f"reading the context of run {run_uid}"
        return Call(what, ("HGET", state_key, "context"), parse)

    def read_history(self, run_uid: str, count: int = HISTORY_CAP) -> Call[list[HistoryEntry]]:
        _, _, history_key = self.run_keys(run_uid)
        # MAXLEN ~ trims whole stream nodes only, so the stream may briefly hold more than the
        # cap; reading at most `cap` keeps the visible history exactly capped, as in memory.
        count = min(count, self.history_cap)
        if count <= 0:
            return Call("reading no history", (), lambda _: [])

        def parse(reply: Any) -> list[HistoryEntry]:
            history: list[HistoryEntry] = []
            for _, raw in reversed(reply or []):
                f = _fields(raw)
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

        what = f"reading the history of run {run_uid}"
        return Call(what, ("XREVRANGE", history_key, "+", "-", "COUNT", count), parse)

    # -- results -----------------------------------------------------------------------------

    def set_results(self, run_uid: str, results: Mapping[str, Mapping[str, Any]]) -> Call[None]:
        _, results_key, _ = self.run_keys(run_uid)
        args: list[Arg] = []
        for key, value in results.items():
            args += [key, dump_json(f"result {key!r}", run_uid, dict(value))]
        if not args:
            return Call("writing no results", (), _nothing)
        what = f"writing the results of run {run_uid}"
        return Call(what, ("HSET", results_key, *args), _nothing)

    def get_results(self, run_uid: str) -> Call[dict[str, dict[str, Any]]]:
        _, results_key, _ = self.run_keys(run_uid)

        def parse(reply: Any) -> dict[str, dict[str, Any]]:
            return {
                k: load_object(_STORE, f"result {k!r}", run_uid, v)
                for k, v in _fields(reply).items()
            }

        what = f"reading the results of run {run_uid}"
        return Call(what, ("HGETALL", results_key), parse)

    # -- concurrency slots -------------------------------------------------------------------

    def acquire_slot(
        self, scope: str, holder: str, *, limit: int, ttl_seconds: float
    ) -> Call[bool]:
        check_slot_args(_STORE, scope, holder, limit, ttl_seconds)
        ttl_ms = max(1, math.ceil(ttl_seconds * 1000))
        what = f"acquiring a slot of {scope!r} for {holder!r}"
        key = self.slots_key(scope)
        return _script(what, ACQUIRE_LUA, [key], [holder, limit, ttl_ms], _granted)

    def release_slot(self, scope: str, holder: str) -> Call[None]:
        what = f"releasing the slot of {scope!r} held by {holder!r}"
        return Call(what, ("ZREM", self.slots_key(scope), holder), _nothing)

    def slot_holders(self, scope: str) -> Call[list[str]]:
        what = f"listing the slot holders of {scope!r}"
        return _script(what, HOLDERS_LUA, [self.slots_key(scope)], [], _members)

    # -- lifecycle ---------------------------------------------------------------------------

    def expire(self, run_uid: str, ttl_seconds: int) -> Call[None]:
        if ttl_seconds < 0:
            raise ValueError(f"run {run_uid}: ttl_seconds must be >= 0, got {ttl_seconds}")
        what = f"setting the TTL of run {run_uid}"
        return _script(what, EXPIRE_LUA, self.run_keys(run_uid), [int(ttl_seconds)], _nothing)

    def delete(self, run_uid: str) -> Call[None]:
        return Call(f"deleting run {run_uid}", ("DEL", *self.run_keys(run_uid)), _nothing)

    def ping(self) -> Call[None]:
        return Call("ping", ("PING",), _nothing, ping=True)
