"""The rows of bench/store.py: which exist, and the samples each gathers per concurrency.

Owns the row list and the figures of one sample. Must not measure.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Sample:
    rate: float  # operations (transitions, SETs) per second
    client_us: float  # client CPU per operation
    server_us: float  # Redis CPU per operation
    others: float  # CPU seconds of every other process on the machine meanwhile
    busy: float  # machine busy fraction (of all cores)
    note: str = ""


@dataclass
class Row:
    key: str
    label: str
    diagnostic: bool = False
    applies: Callable[[int], bool] = lambda c: True
    samples: dict[int, list[Sample]] = field(default_factory=dict)
    checked: str = ""


def rows(diagnose: bool) -> list[Row]:
    out = [
        Row("set", "redis-benchmark SET (-P 1, C connections)"),
        Row("runstate", "**runstate RedisStateStore.acommit (CAS + history)**"),
        Row("pystator", "PyStator 0.0.47 RedisStateStore.set_state (sync, C threads)"),
    ]
    if diagnose:
        out += [
            Row("evalsha", "redis-benchmark EVALSHA of the commit script", True),
            Row("memory", "InMemoryStateStore.acommit (no Redis)", True),
            Row("hiredis", "runstate + hiredis", True),
            Row("unbatched", "runstate, batching off (max_batch=1)", True),
            Row("sync", "runstate blocking commit (sync, C threads)", True),
        ]
    return out
