"""The rounds of bench/store.py: every round runs every row at every concurrency, interleaved
on the same server, and says each sample on stderr as it comes.

Owns the order of the measurements. Must not measure a row itself nor format the report.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from runstate_dev.redis import RedisServer
from store_rows.measure import Bench
from store_rows.report import report
from store_rows.rows import rows


def run_bench(args: argparse.Namespace, server: RedisServer, work: Path) -> None:
    bench = Bench(args, server, work)
    levels = [int(c) for c in args.concurrency.split(",")]
    table = rows(args.diagnose)
    if args.rows:
        keep = set(args.rows.split(",")) | {"runstate"}
        table = [row for row in table if row.key in keep]
    for rnd in range(args.rounds):
        for c in levels:
            for row in table:
                if not row.applies(c):
                    continue
                sample = bench.measure(row, c)
                row.samples.setdefault(c, []).append(sample)
                print(
                    f"round {rnd + 1} c={c:<3} {row.key:<16} {sample.rate:>9,.0f}/s  "
                    f"client {sample.client_us:6.1f} µs  redis {sample.server_us:5.1f} µs  "
                    f"others {sample.others:4.1f} s {sample.note}",
                    file=sys.stderr,
                    flush=True,
                )
    report(args, table, levels)
