"""Execute: operations in DAG order, side by side once their dependencies are done.

Owns, per operation × host, what its latest try means (`RunResult`), the retries to start, the
hosts an operation fails (failed hosts of the Execute stage, which leave the active set), and
pyinfra's FAIL_PERCENT rule checked after each operation: once it trips, no new operation
starts and started ones finish their hosts. It must not move the run's state: the verdict does
that from this plan.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from runstate.api.v1alpha1 import FailedHost, Operation, Stage
from runstate.domain.aggregate import fail_percent_stop
from runstate.domain.attempt import AttemptView
from runstate.domain.intents import Starter
from runstate.domain.planners.prepare import ChangeMap
from runstate.domain.work import (
    Kind,
    Observed,
    Phase,
    RunResult,
    UnitResult,
    WorkKey,
    failed_host,
    trim_message,
)


@dataclass(frozen=True)
class OpProgress:
    """One ready operation advanced over its hosts."""

    finished: bool  # finished on every host it changes (or stopped before it started)
    results: Mapping[str, UnitResult]  # "operation|host" → result
    counts: Mapping[RunResult, int]
    failed: Mapping[str, FailedHost]  # hosts this operation failed
    ignored: int  # errors under ignoreErrors: each is an Execute stage warning


@dataclass(frozen=True)
class ExecutePlan:
    finished: frozenset[str] = frozenset()  # operations finished on all their hosts
    stop: str | None = None  # FAIL_PERCENT (or no host left) stopped the run
    failed: Mapping[str, FailedHost] = field(default_factory=dict)  # every failed host so far
    results: Mapping[str, UnitResult] = field(default_factory=dict)
    counts: Mapping[str, Mapping[RunResult, int]] = field(default_factory=dict)  # per operation
    ignored: int = 0


def plan_execute(
    view: AttemptView,
    ops: Sequence[Operation],
    *,
    deps: Mapping[str, frozenset[str]],
    targets: Mapping[str, Sequence[str]],
    change: ChangeMap,
    failed: Mapping[str, FailedHost],
    hosts: int,
    fail_percent: int | None,
    starter: Starter,
) -> ExecutePlan:
    """Advance every ready operation of `ops` (in DAG order) over the `hosts` activated.
    One pass is enough: an operation that finishes here is seen as finished by its dependents
    later in the same pass."""
    failing = dict(failed)
    results: dict[str, UnitResult] = {}
    counts: dict[str, Mapping[RunResult, int]] = {}
    finished: set[str] = set()
    ignored = 0
    stop = fail_percent_stop(hosts, hosts - len(failing), fail_percent)
    for op in ops:
        if not deps[op.name] <= finished:
            continue
        done = advance(
            view,
            op,
            targets[op.name],
            change=change[op.name],
            failed=failing,
            stop=stop,
            starter=starter,
        )
        failing.update(done.failed)
        results.update(done.results)
        counts[op.name] = done.counts
        ignored += done.ignored
        if done.finished:
            finished.add(op.name)
            # pyinfra checks FAIL_PERCENT after each operation.
            stop = stop or fail_percent_stop(hosts, hosts - len(failing), fail_percent)
    return ExecutePlan(frozenset(finished), stop, failing, results, counts, ignored)


def advance(
    view: AttemptView,
    op: Operation,
    targets: Sequence[str],
    *,
    change: Mapping[str, bool],
    failed: Mapping[str, FailedHost],
    stop: str | None,
    starter: Starter,
) -> OpProgress:
    """Advance one ready operation over its hosts: record what finished, start what is next."""
    results: dict[str, UnitResult] = {}
    counts: Counter[RunResult] = Counter()
    failing: dict[str, FailedHost] = {}
    pending: list[tuple[str, Observed | None]] = []  # hosts to start next, with their last try
    ignored = 0
    started = False
    finished = True
    for host in targets:
        if not change.get(host):
            continue  # no change needed, or the host failed before Prepare finished with it
        latest = view.latest.get((op.name, host))
        if latest is None:
            if host not in failed:  # else it left the active set before this op reached it
                pending.append((host, None))
                finished = False
            continue
        started = True
        if not latest.finished:
            finished = False
            continue
        outcome = outcome_of(latest, op, active=host not in failed)
        if outcome is None:  # per op × host retries: the next try is a new unit (a new pod)
            pending.append((host, latest))
            finished = False
            continue
        if outcome.failed and host not in failed:
            failing[host] = failed_host(latest, Stage.Execute, op.name)
        ignored += outcome is RunResult.IGNORED
        counts[outcome] += 1
        results[f"{op.name}|{host}"] = result_of(latest, outcome)
    # Once FAIL_PERCENT is exceeded, no new operation starts; started ones finish their hosts.
    if stop is not None and not started:
        return OpProgress(True, results, counts, failing, ignored)
    for host, last in pending:
        try_ = 0 if last is None else last.key.try_ + 1
        starter.want(WorkKey(Kind.RUN, op.name, host, view.attempt, try_), op.run or "", op=op)
    return OpProgress(finished, results, counts, failing, ignored)


def outcome_of(latest: Observed, op: Operation, *, active: bool) -> RunResult | None:
    """What the latest finished try of `op` on a host means; None: try again (retries left,
    and the host is still active)."""
    if latest.phase is Phase.SUCCEEDED:
        return RunResult.SUCCESS
    if latest.key.try_ < op.retries and active:
        return None
    if op.ignore_errors:
        return RunResult.IGNORED
    if latest.timed_out:
        return RunResult.PARTIAL
    return RunResult.ERROR


def result_of(latest: Observed, outcome: RunResult) -> UnitResult:
    """The per-host result the store keeps ("operation|host")."""
    return {
        "result": outcome.value,
        "exitCode": latest.exit_code,
        "reason": latest.reason,
        "try": latest.key.try_,
        "message": trim_message(latest.message) if outcome is not RunResult.SUCCESS else "",
    }
