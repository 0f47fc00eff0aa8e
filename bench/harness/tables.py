"""Markdown output: rows of a table, and the CPU-per-component table the fan-out rows share.

Owns the layout of printed tables. Must not compute what goes in them beyond sums of the CPU
figures it is handed, nor read anything from the system.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from harness.cpu import CORES, MACHINE


class Measured(Protocol):
    """One measured row: its name, how many units it did, in how long, at what CPU."""

    name: str
    n: int
    seconds: float
    cpu: dict[str, float]


def table(header: Sequence[str], rows: Iterable[Sequence[str]], *, numeric: int = 0) -> str:
    """A markdown table; the last `numeric` columns right-aligned."""
    align = ["---"] * (len(header) - numeric) + ["---:"] * numeric
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def ours(result: Measured) -> float:
    """CPU seconds of all our components in a row (everything but the machine's total)."""
    return sum(v for k, v in result.cpu.items() if k != MACHINE)


def cpu_table(results: Sequence[Measured]) -> str:
    """CPU seconds per component in each row (ordered by the last row's), then ours in all,
    other processes' and the machine's busy time against 2 × wall."""
    last = results[-1]
    names = sorted(
        {k for r in results for k in r.cpu} - {MACHINE}, key=lambda k: -last.cpu.get(k, 0)
    )
    rows = [
        [name, *(f"{r.cpu[name]:.1f}" if name in r.cpu else "–" for r in results)] for name in names
    ]
    rows.append(["**all of the above**", *(f"{ours(r):.1f}" for r in results)])
    rows.append(
        [
            "other processes on the machine",
            *(f"{max(0.0, r.cpu[MACHINE] - ours(r)):.1f}" for r in results),
        ]
    )
    rows.append(
        ["**machine busy**", *(f"{r.cpu[MACHINE]:.1f} of {CORES * r.seconds:.1f}" for r in results)]
    )
    return table(["component", *(r.name for r in results)], rows, numeric=len(results))
