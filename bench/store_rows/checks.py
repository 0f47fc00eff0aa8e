"""After a timed pass: every run the pass wrote, checked in Redis, and a sample read back through
the store's own API.

Owns what a correct pass left behind. Must not time anything.
"""

from __future__ import annotations

import random
from typing import Any

from redis.asyncio import Redis

from store_rows.walk import FINAL, LABELS, WALK

PREFIX = "runstate"  # RedisStateStore's default key prefix

SAMPLE = 50  # runs read back through the store's own API, per row


async def check_sample(reader: Any, uids: list[str]) -> list[str]:
    """Read a sample of runs back through the store's own API: state, version, history."""
    problems: list[str] = []
    for uid in random.Random(7).sample(uids, min(SAMPLE, len(uids))):
        record = await reader.aget_state(uid)
        got = None if record is None else (f"{record.type}/{record.name}", record.version)
        if got != (FINAL, len(WALK)):
            problems.append(f"run {uid}: state {got}, want {(FINAL, len(WALK))}")
        history = await reader.aread_history(uid)
        chain = [(h.from_state, h.to_state) for h in history]
        if chain != list(zip(["", *LABELS[:-1]], LABELS, strict=True)):
            problems.append(f"run {uid}: history {chain}")
    return problems


async def check_all(url: str, uids: list[str]) -> list[str]:
    """Every run in Redis: final type and version in the state hash, history length."""
    client: Redis = Redis.from_url(url, decode_responses=True)
    try:
        pipe = client.pipeline(transaction=False)
        for uid in uids:
            base = f"{PREFIX}:{{{uid}}}"
            pipe.hmget(f"{base}:state", ["type", "version"])
            pipe.xlen(f"{base}:history")
        replies = await pipe.execute()
    finally:
        await client.aclose()
    bad = [
        f"run {uid}: {state} / {length} history entries"
        for uid, state, length in zip(uids, replies[::2], replies[1::2], strict=True)
        if state != [WALK[-1][0], str(len(WALK))] or length != len(WALK)
    ]
    return bad[:5] + ([f"... {len(bad)} runs wrong in all"] if len(bad) > 5 else [])
