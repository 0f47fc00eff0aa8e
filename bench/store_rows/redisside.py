"""The Redis server's side of a row: its CPU and command counters (INFO), and the store's
commit script as redis-benchmark can send it.

Owns reading the server and building the EVALSHA command. Must not run a row.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.metadata
import json
from typing import Any

import redis

from runstate_stores import (
    HISTORY_CAP,
)

REDIS_BENCHMARK = "/usr/bin/redis-benchmark"
PREFIX = "runstate"  # RedisStateStore's default key prefix


def server_cpu(admin: redis.Redis) -> float:
    """CPU seconds the Redis server has used so far (all its threads)."""
    info: dict[str, Any] = admin.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def command_calls(admin: redis.Redis) -> dict[str, int]:
    """Calls per command since the server started, commands run by scripts included."""
    info: dict[str, Any] = admin.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in info.items()}


def commit_script() -> str:
    """The store's commit script (its module moved in the store refactor of issue 5)."""
    for module, name in (
        ("runstate_stores._redis_calls", "COMMIT_LUA"),
        ("runstate_stores.redis", "_COMMIT_LUA"),
    ):
        with contextlib.suppress(ImportError):
            script = getattr(importlib.import_module(module), name, None)
            if isinstance(script, str):
                return script
    raise RuntimeError("cannot find the store's commit script (COMMIT_LUA)")


def evalsha_command(script: str) -> list[str]:
    """The commit script as the store sends it for a Pending -> Running transition, with an
    unconditional fence (-1): redis-benchmark cannot carry a version from one call to the next.
    The CAS read still runs."""
    now = "2026-11-24T12:00:00.000000Z"
    context = json.dumps({"attemptStart": now, "startTime": now}, separators=(",", ":"))
    fields = ["type", "RUNNING", "name", "Running", "stage", "Execute", "attempt", "1"]
    fields += ["message", "1 host × 1 operation", "timestamp", now, "context", context]
    history = ["PENDING/Pending", "RUNNING/Running", now, "1 host × 1 operation", "1"]
    sha = hashlib.sha1(script.encode()).hexdigest()
    keys = [f"{PREFIX}:{{__rand_int__}}:state", f"{PREFIX}:{{__rand_int__}}:history"]
    return ["EVALSHA", sha, "2", *keys, "-1", str(HISTORY_CAP), "7", *fields, *history]
