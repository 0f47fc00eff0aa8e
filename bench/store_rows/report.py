"""The store report: per concurrency, each row's median (min–max) over rounds, its CPU per
operation and its ratio to runstate in the same round; the checks; the 10,000/s target.

Owns the wording and layout. Must not measure.
"""

from __future__ import annotations

import argparse
import statistics

from harness.cpu import CORES
from store_rows.rows import Row
from store_rows.walk import WALK


def fmt_range(values: list[float], digits: int = 0) -> str:
    med = statistics.median(values)
    if len(values) == 1:
        return f"{med:,.{digits}f}"
    return f"{med:,.{digits}f} ({min(values):,.{digits}f}–{max(values):,.{digits}f})"


def report(args: argparse.Namespace, table: list[Row], levels: list[int]) -> None:
    print(
        f"## State store: {args.runs} runs × {len(WALK)} transitions per row, "
        f"{args.rounds} round(s), median (min–max)\n"
    )
    for c in levels:
        report_level(table, c)
    print("Checks, per row (every round):")
    for row in table:
        print(f"- {row.key}: {row.checked}")
    print()
    report_targets(table, levels)


def report_level(table: list[Row], c: int) -> None:
    """One concurrency's table, each row against runstate's sample of the same round."""
    main = next(r for r in table if r.key == "runstate")
    print(f"### Concurrency {c}\n")
    print("| what | ops/s | client CPU µs/op | Redis CPU µs/op | × runstate, same round |")
    print("|---|---:|---:|---:|---:|")
    base = [s.rate for s in main.samples[c]]
    first_diagnostic = True
    for row in table:
        if c not in row.samples:
            continue
        if row.diagnostic and first_diagnostic:
            print("| *diagnostics* | | | | |")
            first_diagnostic = False
        ss = row.samples[c]
        rate = fmt_range([s.rate for s in ss])
        note = f" ({ss[-1].note})" if ss[-1].note else ""
        rel = [s.rate / b for s, b in zip(ss, base, strict=True)]
        print(
            f"| {row.label}{note} | {rate} | {fmt_range([s.client_us for s in ss])} | "
            f"{fmt_range([s.server_us for s in ss])} | {fmt_range(rel, 2)} |"
        )
    others = [s.others for row in table for s in row.samples.get(c, [])]
    busy = [s.busy for row in table for s in row.samples.get(c, [])]
    print(
        f"\nOther processes' CPU during these rows: {min(others):.2f}–{max(others):.2f} s "
        f"per row; machine busy {100 * min(busy):.0f}–{100 * max(busy):.0f}% of "
        f"{CORES} cores.\n"
    )


def report_targets(table: list[Row], levels: list[int]) -> None:
    """The target of ≥ 10,000 transitions/s, for the rows of runstate's store."""
    for row in table:
        if row.key not in ("runstate", "hiredis", "unbatched"):
            continue
        for c in levels:
            rates = [s.rate for s in row.samples[c]]
            verdict = "met" if statistics.median(rates) >= 10_000 else "NOT met"
            print(
                f"Target ≥ 10,000 transitions/s, {row.key}, concurrency {c}: {verdict} "
                f"(median {fmt_range(rates)})"
            )
