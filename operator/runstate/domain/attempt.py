"""One attempt of a run, as its units show it: the index every stage planner reads.

`AttemptView.build()` makes one pass over a run's observed units (100,000s in a 10,000-host
run) and keeps what the planners ask for: this attempt's units by key, the latest try of each
operation × host and of each host's Connect probe, the pods still in flight (of any attempt:
`parallel` is per run), the pods their node ended, those being deleted, and the per-kind counts
of retries and slow starts that become stage warnings. Nothing after it walks the units again.

It owns indexing only: it decides nothing, starts nothing, and does no I/O.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from runstate.domain.work import Kind, Observed, Phase, WorkKey


@dataclass(frozen=True)
class AttemptView:
    attempt: int
    units: Mapping[WorkKey, Observed]  # this attempt's units by key
    latest: Mapping[tuple[str, str], Observed]  # (operation, host) → its latest run try
    probes: Mapping[str, Observed]  # host → its latest Connect probe
    in_flight: int  # pods not finished, of any attempt (`parallel` counts them all)
    started: bool  # some operation of this attempt ran (a pause now is Paused, not Suspended)
    evicted: tuple[Observed, ...]  # this attempt's units their node ended, by key
    deleting: tuple[WorkKey, ...]  # this attempt's units (hooks aside) whose pod is being deleted
    retries: Mapping[Kind, int]  # units that are a retry (try > 0), per kind
    slow_starts: Mapping[Kind, int]  # units that took longer than `slow_start` to start
    tool_warnings: Mapping[Kind, int]  # warnings pyinfra logged in this attempt's units
    # "operation|host" → the commands a pyinfra check (dry mode) reported, this attempt's
    planned_commands: Mapping[str, tuple[str, ...]]

    @classmethod
    def build(cls, units: Iterable[Observed], attempt: int, slow_start: float) -> AttemptView:
        """Index `units` for `attempt`, in one pass."""
        mine: dict[WorkKey, Observed] = {}
        latest: dict[tuple[str, str], Observed] = {}
        probes: dict[str, Observed] = {}
        evicted: list[Observed] = []
        deleting: list[WorkKey] = []
        retries: Counter[Kind] = Counter()
        slow: Counter[Kind] = Counter()
        logged: Counter[Kind] = Counter()
        planned: dict[str, tuple[str, ...]] = {}
        in_flight = 0
        started = False
        for u in units:
            key = u.key
            if u.phase is not Phase.SUCCEEDED and u.phase is not Phase.FAILED:
                in_flight += 1
            if key.attempt != attempt:
                continue
            seen = mine.get(key)
            if seen is None:
                retries[key.kind] += key.try_ > 0
            elif seen.start_delay is not None and seen.start_delay > slow_start:
                slow[key.kind] -= 1  # the same pod seen twice: the later sighting counts
            if seen is not None:
                logged[key.kind] -= seen.warnings  # the same pod seen twice: the later counts
            mine[key] = u
            logged[key.kind] += u.warnings
            if key.kind is Kind.CHECK and u.commands:
                planned[f"{key.operation}|{key.host}"] = u.commands
            if u.start_delay is not None and u.start_delay > slow_start:
                slow[key.kind] += 1
            if u.deleting and key.kind is not Kind.HOOK:
                deleting.append(key)
            if u.phase is Phase.FAILED and u.infrastructure:
                evicted.append(u)
            if key.kind is Kind.RUN:
                started = True
                op = (key.operation, key.host)
                run = latest.get(op)
                if run is None or key.try_ > run.key.try_:
                    latest[op] = u
            elif key.kind is Kind.CONNECT:
                probe = probes.get(key.host)
                if probe is None or key.try_ > probe.key.try_:
                    probes[key.host] = u
        return cls(
            attempt=attempt,
            units=mine,
            latest=latest,
            probes=probes,
            in_flight=in_flight,
            started=started,
            evicted=tuple(sorted(evicted, key=lambda u: u.key)),
            deleting=tuple(deleting),
            retries=retries,
            slow_starts=slow,
            tool_warnings=logged,
            planned_commands=planned,
        )

    def in_flight_keys(self) -> tuple[WorkKey, ...]:
        """This attempt's units still running (what a run-level timeout stops)."""
        return tuple(k for k, u in self.units.items() if not u.finished)

    def vanished(self, launched: Iterable[WorkKey]) -> list[WorkKey]:
        """This attempt's units (hooks aside) the operator started whose pod is gone or is
        being deleted: the operator deletes pods only when a run is cancelled or ends, so
        someone else deleted them."""
        gone = set(self.deleting)
        for k in launched:
            if k.attempt == self.attempt and k.kind is not Kind.HOOK:
                unit = self.units.get(k)
                if unit is None or unit.deleting:
                    gone.add(k)
        return sorted(gone)
