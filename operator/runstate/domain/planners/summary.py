"""The summary status shows: counts per operation, failed hosts, stage warnings, a dry run's plan.

Owns the tally of a decision's change map and results (also while the run is still working) and
the `Summary` record built from the stage plans. It must not decide anything about the run's
state, nor start or stop units.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from runstate.api.v1alpha1 import (
    FailedHost,
    HostCounts,
    OperationCounts,
    PlannedOperation,
    Stage,
    StageWarnings,
)
from runstate.domain.attempt import AttemptView
from runstate.domain.inventory import ResolvedInventory
from runstate.domain.planners.execute import ExecutePlan
from runstate.domain.planners.prepare import ChangeMap
from runstate.domain.work import Kind, RunResult, UnitResult, WorkKey
from runstate.runner.result import ErrorClass

MAX_FAILED_HOSTS = 20  # status.failedHosts is capped: status must stay far below 1 MiB
MAX_PLAN_HOSTS = 50  # per operation and list in status.plan
# pyinfra operations in status.plan: the commands of at most this many changing hosts per
# operation, at most this many commands each, each cut to this many characters. The runner's
# result holds what it could keep of the rest.
MAX_PLAN_COMMAND_HOSTS, MAX_PLAN_COMMANDS, MAX_COMMAND_CHARS = 10, 20, 200
# The stage a unit's pod works for: a slow start is a warning of that stage.
STAGE_OF_KIND: Mapping[Kind, Stage] = {
    Kind.CONNECT: Stage.Connect,
    Kind.CHECK: Stage.Prepare,
    Kind.RUN: Stage.Execute,
}
# A retried unit is a warning of its stage, once per retry.
RETRIED_KINDS: Mapping[Kind, Stage] = {Kind.CONNECT: Stage.Connect, Kind.RUN: Stage.Execute}


@dataclass(frozen=True)
class Summary:
    hosts: HostCounts
    hosts_ok: int
    stage_warnings: StageWarnings
    operations: tuple[OperationCounts, ...]
    failed_hosts: tuple[FailedHost, ...]
    results: Mapping[str, UnitResult]  # "operation|host" → result (for the store)
    plan: tuple[PlannedOperation, ...] | None = None
    # "operation|host" → the commands a pyinfra operation's dry mode reported (for the store:
    # the whole per-host plan, of which status.plan shows a bounded part).
    commands: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Tally:
    change: ChangeMap  # as Prepare said, less failed hosts an operation never reached
    results: Mapping[str, UnitResult]  # Execute's, and `no_change` where nothing was needed
    changed: int  # changes over all operations and hosts

    def planned(self, order: Sequence[str], view: AttemptView) -> tuple[PlannedOperation, ...]:
        """A dry run's plan: per operation, the hosts it would change and those it would not,
        and for pyinfra operations the commands pyinfra would run on the first of them."""
        return tuple(_planned(name, self.change[name], view) for name in order)


def tally(
    view: AttemptView,
    order: Sequence[str],
    *,
    change: ChangeMap,
    execute: ExecutePlan,
    executing: bool,
) -> Tally:
    """Counts for status, also while the run is still working."""
    failed = execute.failed
    if executing and failed:
        # A host that failed before an operation reached it will not be changed by it: it
        # counts as a change only where the operation ran (as when its Connect failed).
        change = {name: _reached(name, change[name], failed, view.latest) for name in order}
    results = dict(execute.results)
    changed = 0
    for name in order:
        for host, needed in change[name].items():
            if needed:
                changed += 1
            else:
                results.setdefault(f"{name}|{host}", {"result": RunResult.NO_CHANGE.value})
    return Tally(change=change, results=results, changed=changed)


def _reached(
    name: str,
    change: Mapping[str, bool],
    failed: Mapping[str, FailedHost],
    latest: Mapping[tuple[str, str], object],
) -> Mapping[str, bool]:
    if not any(v and h in failed for h, v in change.items()):
        return change
    return {h: v for h, v in change.items() if not (v and h in failed and (name, h) not in latest)}


def summarize(
    view: AttemptView,
    inv: ResolvedInventory,
    order: Sequence[str],
    *,
    tally: Tally,
    execute: ExecutePlan,
    executing: bool,
    plan: tuple[PlannedOperation, ...] | None,
) -> Summary:
    """The `Summary` of this decision."""
    hosts = inv.names
    failed = execute.failed
    operations = tuple(_counts(name, inv, tally.change[name], execute) for name in order)
    return Summary(
        hosts=HostCounts(
            total=len(hosts),
            active=len(hosts) - len(failed),
            failed=len(failed),
            unreachable=sum(1 for f in failed.values() if _unreachable(f)),
            limited=len(inv.limited),
        ),
        hosts_ok=_hosts_ok(inv, order, tally, failed) if executing else 0,
        stage_warnings=_warnings(view, inv, execute),
        operations=operations,
        failed_hosts=tuple(sorted(failed.values(), key=lambda f: f.host))[:MAX_FAILED_HOSTS],
        results=tally.results,
        plan=plan,
        commands=view.planned_commands,
    )


def _unreachable(failed: FailedHost) -> bool:
    """A host that failed because it could not be reached at Connect (AWX's dark hosts)."""
    return failed.stage is Stage.Connect and failed.reason == ErrorClass.UNREACHABLE.value


def _counts(
    name: str, inv: ResolvedInventory, change: Mapping[str, bool], execute: ExecutePlan
) -> OperationCounts:
    counts = execute.counts.get(name, {})
    changed = sum(1 for v in change.values() if v)
    return OperationCounts(
        name=name,
        hosts=len(inv.targets[name]),
        changed=changed,
        no_change=len(change) - changed,
        success=counts.get(RunResult.SUCCESS, 0),
        error=counts.get(RunResult.ERROR, 0),
        ignored=counts.get(RunResult.IGNORED, 0),
        partial=counts.get(RunResult.PARTIAL, 0),
    )


def _hosts_ok(
    inv: ResolvedInventory, order: Sequence[str], tally: Tally, failed: Mapping[str, FailedHost]
) -> int:
    """Active hosts on which every operation targeting them is done (or needed no change)."""
    change, results = tally.change, tally.results
    return sum(
        1
        for h in inv.names
        if h not in failed
        and all(
            not change[n].get(h) or f"{n}|{h}" in results for n in order if h in inv.target_sets[n]
        )
    )


def _warnings(view: AttemptView, inv: ResolvedInventory, execute: ExecutePlan) -> StageWarnings:
    warnings = dict.fromkeys(Stage, 0)
    warnings[Stage.Setup] += len(inv.limited)  # pyinfra: a host skipped is worth a warning
    warnings[Stage.Execute] += execute.ignored
    # A host connected to without checking its key (insecureSkipHostKeyCheck) is a warning.
    warnings[Stage.Connect] += sum(1 for u in view.probes.values() if u.host_key_check_skipped)
    for kind, stage in RETRIED_KINDS.items():
        warnings[stage] += view.retries.get(kind, 0)
    for kind, stage in STAGE_OF_KIND.items():
        warnings[stage] += view.slow_starts.get(kind, 0)
        warnings[stage] += view.tool_warnings.get(kind, 0)  # pyinfra's own warnings
    return StageWarnings(**{s.value: n for s, n in warnings.items()})


def _planned(name: str, change: Mapping[str, bool], view: AttemptView) -> PlannedOperation:
    yes = [h for h, v in change.items() if v]
    no = [h for h, v in change.items() if not v]
    return PlannedOperation(
        name=name,
        change=yes[:MAX_PLAN_HOSTS],
        no_change=no[:MAX_PLAN_HOSTS],
        commands=_commands(name, yes, view) or None,
        truncated=len(yes) > MAX_PLAN_HOSTS or len(no) > MAX_PLAN_HOSTS,
    )


def _commands(name: str, hosts: Sequence[str], view: AttemptView) -> dict[str, list[str]]:
    """The commands a pyinfra operation's dry mode reported, per changing host (bounded)."""
    out: dict[str, list[str]] = {}
    for host in hosts:
        unit = view.units.get(WorkKey(Kind.CHECK, name, host, view.attempt))
        if unit is None or not unit.commands:
            continue
        if len(out) == MAX_PLAN_COMMAND_HOSTS:
            break
        out[host] = [c[:MAX_COMMAND_CHARS] for c in unit.commands[:MAX_PLAN_COMMANDS]]
    return out
