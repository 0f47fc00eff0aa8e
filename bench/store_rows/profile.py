"""Where the client's CPU goes per transition (`bench/store.py --profile`): one pass without
and one under cProfile, batched and with max_batch=1, self time charged to categories.

Owns the categories and the attribution of time to them. Must not change what a pass does
(it runs the same child as the rows).
"""

from __future__ import annotations

import argparse
import json
import pstats
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.workdir import ROOT
from runstate_dev.redis import RedisServer
from runstate_stores.redis import MAX_BATCH
from store_rows.measure import Bench

# --- profile ------------------------------------------------------------------------------

Func = tuple[str, int, str]  # pstats' (file, line, function)
REDIS_PY = "site-packages/redis/"
BENCH_DIRS = ("store_rows", "harness")  # the harness that was all bench/store.py before
POOL_FUNCS = {"get_connection", "release", "ensure_connection", "can_read_destructive"}
POOL_FUNCS |= {"get_available_connection", "_maybe_pool_lock", "can_get_connection"}
CATEGORIES: list[tuple[str, Callable[[str, str], bool]]] = [
    (
        "redis-py: packing commands (pure Python)",
        lambda f, n: REDIS_PY in f and (n.startswith("pack_command") or "encoders.py" in f),
    ),
    (
        "redis-py: reading and parsing replies",
        lambda f, n: f"{REDIS_PY}_parsers/" in f or (REDIS_PY in f and n == "read_response"),
    ),
    (
        "redis-py: connection pool (get/release, its Condition and timeout)",
        lambda f, n: (
            (REDIS_PY in f and n in POOL_FUNCS)
            or "asyncio/locks.py" in f
            or "asyncio/timeouts.py" in f
        ),
    ),
    ("redis-py: client, retry, observability, pipeline", lambda f, n: REDIS_PY in f),
    (
        "socket I/O, epoll, asyncio streams",
        lambda f, n: "socket" in n or "epoll" in n or "selector" in f or "asyncio/streams.py" in f,
    ),
    ("asyncio event loop, tasks, futures", lambda f, n: "/asyncio/" in f),
    (
        "runstate store code (checks, JSON, Call objects, batching)",
        lambda f, n: "runstate_stores/" in f,
    ),
    (
        "bench harness (building records, timestamps)",
        lambda f, n: f.endswith("bench/store.py") or any(f"/bench/{d}/" in f for d in BENCH_DIRS),
    ),
]
OTHER = "unattributed"


def categorize(stats: dict[Func, Any]) -> dict[str, float]:
    """Self time per category. Time in a function of no category (builtins, json, dataclasses)
    goes to its callers, in proportion to the time each call site spent in it, up to the first
    caller that has one."""
    shares = dict.fromkeys([*(name for name, _ in CATEGORIES), OTHER], 0.0)

    def category(func: Func) -> str | None:
        filename, _line, name = func
        return next((c for c, match in CATEGORIES if match(filename, name)), None)

    def give(func: Func, amount: float, depth: int) -> None:
        found = category(func)
        if found is not None:
            shares[found] += amount
            return
        callers: dict[Func, tuple[int, int, float, float]] = stats[func][4] if func in stats else {}
        weight = sum(ct for _, _, _, ct in callers.values())
        if depth > 30 or weight <= 0:
            shares[OTHER] += amount
            return
        for caller, (_, _, _, ct) in callers.items():
            give(caller, amount * ct / weight, depth + 1)

    for func, (_cc, _nc, tottime, _ct, _callers) in stats.items():
        give(func, tottime, 0)
    return shares


def profile(args: argparse.Namespace, server: RedisServer, work: Path) -> None:
    """Where the client's CPU goes per transition: one pass without and one under cProfile."""
    bench = Bench(args, server, work)
    c = int(args.concurrency.split(",")[0])
    for key, label, max_batch in (
        ("runstate", "RedisStateStore.acommit (batched)", MAX_BATCH),
        ("unbatched", "RedisStateStore.acommit, max_batch=1", 1),
    ):
        results: list[dict[str, Any]] = []
        out = work / f"{key}.prof"
        for extra in ([], ["--profile", str(out)]):
            bench.fresh()
            argv = [*bench.store_argv(c, max_batch=max_batch), *extra]
            proc = subprocess.run(argv, capture_output=True, text=True, env=bench.env(False))
            if proc.returncode != 0:
                raise RuntimeError(proc.stderr[-3000:])
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        plain, profiled = results
        batch = f", mean batch {plain['mean_batch']:.1f}" if "mean_batch" in plain else ""
        ops = profiled["ops"]
        stats: dict[Func, Any] = pstats.Stats(str(out)).stats  # type: ignore[attr-defined]
        shares = categorize(stats)
        total = sum(shares.values())
        print(f"### Profile: {label}, concurrency {c}, {ops} transitions\n")
        print(
            f"Client CPU per transition: {1e6 * plain['cpu'] / ops:.0f} µs unprofiled "
            f"({ops / plain['seconds']:,.0f}/s{batch}); {1e6 * total / ops:.0f} µs under cProfile, "
            "which inflates pure-Python code most, so read the shares, not the µs.\n"
        )
        print("| where (self time; builtins and stdlib charged to their callers) | share |")
        print("|---|---:|")
        for category, t in sorted(shares.items(), key=lambda kv: -kv[1]):
            print(f"| {category} | {100 * t / total:.0f}% |")
        print()
        top = sorted(stats.items(), key=lambda kv: -kv[1][2])[:10]
        print("Top functions by self time (calls per transition):\n")
        for (filename, line, name), (_cc, ncalls, tottime, _ct, _c) in top:
            short = filename.split("site-packages/")[-1].split(str(ROOT) + "/")[-1]
            share = 100 * tottime / total
            print(f"- {short}:{line} {name}: {share:.0f}%, {ncalls / ops:.1f} calls")
        print()
