"""One timed pass of a Python store, in a fresh child process (`bench/store.py --child KIND`):
warm-up, the timed walk (optionally under cProfile), then the checks; the figures as a dict
the parent reads as JSON.

Owns the child's side of a row. Must not print (the entry point prints the JSON), nor compare
or report rows.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import redis

from harness.cpu import machine_busy_seconds
from runstate_stores import AsyncStateStore, InMemoryStateStore, RedisStateStore
from store_rows.checks import SAMPLE, check_all, check_sample
from store_rows.redisside import server_cpu
from store_rows.walk import FINAL, WALK, run_uid, walk_runs, walk_runs_sync


@dataclass
class Timed:
    """CPU seconds of this process, the machine and Redis over the timed walk, its wall
    seconds and the store's round trips."""

    seconds: float
    cpu: float
    busy: float
    server: float
    trips: int


def open_store(args: argparse.Namespace) -> Any:
    if args.child == "memory":
        return InMemoryStateStore()
    return RedisStateStore.from_url(
        args.url, max_connections=args.max_connections, max_batch=args.max_batch
    )


def walker(args: argparse.Namespace, store: Any) -> Callable[[list[str]], Awaitable[None]]:
    """The walk this child times: async tasks, or threads on the blocking face."""
    concurrency = int(args.concurrency)
    committer: AsyncStateStore = store

    async def walk(ids: list[str]) -> None:
        if args.child == "sync":
            await asyncio.to_thread(walk_runs_sync, store, ids, concurrency)
        else:
            await walk_runs(committer, ids, concurrency)

    return walk


async def timed_walk(
    args: argparse.Namespace,
    store: Any,
    admin: redis.Redis,
    *,
    uids: list[str],
) -> Timed:
    """The walk of `uids`, timed (and profiled with --profile)."""
    walk = walker(args, store)
    batched = args.child == "redis"
    trips0 = store.batching.round_trips if batched else 0
    profiler = cProfile.Profile() if args.profile else None
    cpu0, busy0, srv0 = time.process_time(), machine_busy_seconds(), server_cpu(admin)
    t0 = time.perf_counter()
    if profiler:
        profiler.enable()
    await walk(uids)
    if profiler:
        profiler.disable()
    seconds = time.perf_counter() - t0
    cpu, busy = time.process_time() - cpu0, machine_busy_seconds() - busy0
    srv = server_cpu(admin) - srv0
    # How the timed commits left: commits per round trip (1.0 when nothing shared one).
    trips = store.batching.round_trips - trips0 if batched else 0
    if profiler:
        profiler.dump_stats(args.profile)
    return Timed(seconds, cpu, busy, srv, trips)


async def close_store(store: Any) -> None:
    if hasattr(store, "close"):
        store.close()  # the blocking client, if any
    if hasattr(store, "aclose"):
        await store.aclose()


async def child_store(args: argparse.Namespace) -> dict[str, Any]:
    """One timed pass of a store in this (fresh) process; prints nothing itself."""
    uids = [run_uid(i) for i in range(args.runs)]
    warm = [f"warm-{i}" for i in range(int(args.concurrency))]
    admin = redis.Redis.from_url(args.url)
    store = open_store(args)
    # Warm-up, not timed: the script cache and one pooled connection per worker.
    await walker(args, store)(warm)
    timed = await timed_walk(args, store, admin, uids=uids)
    problems = await check_sample(store, uids)
    if args.child != "memory":
        problems += await check_all(args.url, uids)
        for uid in warm:
            await store.adelete(uid)
    await close_store(store)
    admin.close()
    ops = len(uids) * len(WALK)
    return {
        "ops": ops,
        "seconds": timed.seconds,
        "cpu": timed.cpu,
        "server_cpu": timed.server,
        "busy": timed.busy,
        "server_calls": 0 if args.child == "memory" else (len(uids) + len(warm)) * len(WALK),
        "hiredis": redis.utils.HIREDIS_AVAILABLE,
        "checked": f"all {len(uids)} runs {FINAL} v{len(WALK)} with {len(WALK)} history "
        f"entries; {min(SAMPLE, len(uids))} read back through the store",
        "problems": problems,
        **({"mean_batch": ops / max(1, timed.trips)} if timed.trips else {}),
    }
