"""State-store transitions per second: RedisStateStore against two baselines, in one run.

On one fresh local redis-server (runstate_dev), for each concurrency level C and in every
round, interleaved, on the same server and key space (RUNS runs or keys, N = 3 × RUNS writes):
  set              `redis-benchmark -t set -P 1 -c C -n N -r RUNS`: one SET per round trip on C
                   connections, from Redis's own C client: what server + loopback can do
  runstate         RedisStateStore.acommit (Lua compare-and-set + XADD of the history entry),
                   RUNS runs each walked PENDING/Pending -> RUNNING/Running -> COMPLETED/Completed
                   by C asyncio tasks (the operator's workers) in one Python process; concurrent
                   commits share pipelines (the store's batching, as the operator runs it)
  pystator         PyStator 0.0.47's RedisStateStore.set_state (sync, with the metadata its
                   Orchestrator writes), the same walk by C threads, in its own venv
                   (~/.cache/runstate/bench-pystator, created here when missing)
and, unless --no-diagnose, rows that explain the runstate number:
  evalsha          redis-benchmark sending the store's own commit script (EVALSHA): Redis's cost
  memory           InMemoryStateStore.acommit, no Redis: the floor of the Python side
  hiredis          runstate with hiredis importable (redis-py then parses replies in C); hiredis
                   lives in ~/.cache/runstate/bench-pystator/hiredis-site, never the main venv
  unbatched        runstate with max_batch=1: every commit its own round trip (the store before
                   batching), to show what batching buys in the same round
  sync             the store's blocking commit, C threads (it never batches)
Each Python row runs in a fresh child process, which times only its transitions and then checks
every run it wrote (final state, version, history length) plus a sample through the store's own
read API; the parent checks Redis's command counters (INFO commandstats). A row that fails a
check fails the benchmark. CPU: the client process's own (time.process_time, or rusage of
redis-benchmark), Redis's (INFO cpu), and the whole machine's (/proc/stat) for the noise.

    python bench/store.py [--runs 3000] [--concurrency 1,16,64] [--rounds 3] [--no-diagnose]
                          [--rows set,pystator,...]   # only these rows (and runstate)
    python bench/store.py --profile [--concurrency 16]  # where the client's CPU goes (cProfile)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from harness.workdir import scratch
from runstate_dev.redis import RedisServer
from runstate_stores.redis import MAX_BATCH
from store_rows.child import child_store
from store_rows.profile import profile
from store_rows.redisside import REDIS_BENCHMARK
from store_rows.rounds import run_bench


@contextlib.contextmanager
def redis_server(work: Path) -> Iterator[RedisServer]:
    server = RedisServer(work / "redis", die_with_parent=True).start()
    try:
        yield server
    finally:
        server.stop()


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--runs", type=int, default=3000, help="runs (entities, keys) per row")
    parser.add_argument("--concurrency", default="1,16,64", help="comma-separated levels")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-diagnose", dest="diagnose", action="store_false")
    parser.add_argument("--rows", default="", help="only these rows (keys, comma-separated)")
    parser.add_argument("--profile", nargs="?", const="", default=None, help=argparse.SUPPRESS)
    # A child process: one timed pass of a Python store, JSON on stdout.
    parser.add_argument("--child", choices=("redis", "memory", "sync"), help=argparse.SUPPRESS)
    parser.add_argument("--url", default="", help=argparse.SUPPRESS)
    parser.add_argument("--max-connections", type=int, default=50, help=argparse.SUPPRESS)
    parser.add_argument("--max-batch", type=int, default=MAX_BATCH, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.child:
        print(json.dumps(asyncio.run(child_store(args))))
        return
    if not os.access(REDIS_BENCHMARK, os.X_OK):
        sys.exit(f"{REDIS_BENCHMARK} is missing (Debian package redis-tools)")
    with scratch("runstate-store-") as work, redis_server(work) as server:
        if args.profile is not None:
            if args.concurrency == "1,16,64":
                args.concurrency = "16"
            profile(args, server, work)
        else:
            run_bench(args, server, work)


if __name__ == "__main__":
    main()
