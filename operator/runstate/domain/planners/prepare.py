"""Prepare: each operation's check on each targeted host still active.

Owns the change map (operation → host → change needed?), the hosts whose check errs (failed
hosts of the Prepare stage) and which checks to start next. An operation without a check is a
change on every host it targets. It must not start operations, nor move the run's state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from runstate.api.v1alpha1 import FailedHost, Operation, Stage
from runstate.domain.attempt import AttemptView
from runstate.domain.intents import Starter
from runstate.domain.work import CheckResult, Kind, WorkKey, classify_check, failed_host

#: operation name → host → does the operation change that host?
ChangeMap = Mapping[str, Mapping[str, bool]]


@dataclass(frozen=True)
class PreparePlan:
    waiting: bool  # some check has not finished (or not started) yet
    change: ChangeMap
    failed: Mapping[str, FailedHost]  # every failed host so far (Connect's included)

    @classmethod
    def skipped(cls, order: Sequence[str], failed: Mapping[str, FailedHost]) -> PreparePlan:
        """Connect is still waiting: Prepare has not begun, nothing needs a change yet."""
        return cls(waiting=False, change={name: {} for name in order}, failed=failed)


def plan_prepare(
    view: AttemptView,
    ops: Sequence[Operation],
    targets: Mapping[str, Sequence[str]],
    *,
    failed: Mapping[str, FailedHost],
    starter: Starter,
) -> PreparePlan:
    """Walk `ops` (in DAG order) over their targets; a host whose check errs is failed and
    skipped by the operations after it."""
    failing = dict(failed)
    change: dict[str, dict[str, bool]] = {}
    waiting = False
    for op in ops:
        needed = change[op.name] = {}
        for host in targets[op.name]:
            if host in failing:
                continue
            if op.check is None and op.pyinfra is None:
                needed[host] = True
                continue
            key = WorkKey(Kind.CHECK, op.name, host, view.attempt)
            unit = view.units.get(key)
            if unit is None or not unit.finished:
                waiting = True
                starter.want(key, op.check or "", op=op)  # a pyinfra op: its dry mode
                continue
            verdict = classify_check(unit)
            if verdict is CheckResult.ERROR:
                failing[host] = failed_host(unit, Stage.Prepare, op.name)
            else:
                needed[host] = verdict is CheckResult.CHANGE
    return PreparePlan(waiting=waiting, change=change, failed=failing)
