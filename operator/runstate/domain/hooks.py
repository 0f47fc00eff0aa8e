"""State hooks (Prefect's on_completion / on_failure / on_cancellation) for a run that ended.

A Runbook's `spec.hooks` names operations under `spec.hookOperations`; when a run reaches a
final state, each hook for that state runs once: one pod per run, or one per selected host when
the hook operation sets `hosts`. Hooks never change the run's state: a hook that fails is a
Disconnect stage warning. Like the rest of the engine this is level-based: which hooks ran, and
how, is read from the hook pods; a hook pod that was started (recorded as launched) and is gone
is `Lost`, never started again. `is_failure` is the one rule of which hook outcomes are
failures, for status and the controller as well.

It must not do I/O or know about Kubernetes: it sees units of work and returns intents.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from runstate.api.v1alpha1 import (
    EnvVar,
    HookOutcome,
    HookResult,
    Host,
    Operation,
    RunbookSpec,
    RunState,
    StateType,
)
from runstate.domain.errors import SpecError
from runstate.domain.work import Intent, Kind, Observed, Phase, WorkKey, trim_message

MAX_HOOKS_IN_STATUS = 50

#: Hook outcomes that are failures: each is a Disconnect stage warning.
FAILED_OUTCOMES: frozenset[HookOutcome] = frozenset({HookOutcome.FAILED, HookOutcome.LOST})
#: Hook outcomes of hooks that are not over yet.
OPEN_OUTCOMES: frozenset[HookOutcome] = frozenset({HookOutcome.PENDING, HookOutcome.RUNNING})


def is_failure(result: object) -> bool:
    """Is this hook outcome (a `HookOutcome`, or the string of one read from a status) a
    failure? The one rule; status and the controller ask it too."""
    return result in FAILED_OUTCOMES


# Which list of `spec.hooks` a final state type runs (Crashed counts as a failure, as in Prefect).
TRIGGERS: Mapping[StateType, str] = {
    StateType.COMPLETED: "onCompletion",
    StateType.FAILED: "onFailure",
    StateType.CRASHED: "onFailure",
    StateType.CANCELLED: "onCancellation",
}


def names_for(spec: RunbookSpec, trigger: str) -> list[str]:
    hooks = spec.hooks
    return {
        "onCompletion": hooks.on_completion,
        "onFailure": hooks.on_failure,
        "onCancellation": hooks.on_cancellation,
    }[trigger]


def validate_hooks(spec: RunbookSpec) -> None:
    """Raise `SpecError` naming the field for hooks the operator cannot run."""
    known: dict[str, int] = {}
    # Node inventories: hosts and groups are only known when a run starts.
    static = spec.inventory.node_selector is None
    hosts = {h.name for h in spec.inventory.hosts}
    groups = {g for h in spec.inventory.hosts for g in h.groups}
    for i, op in enumerate(spec.hook_operations):
        where = f"spec.hookOperations[{i}]"
        if op.name in known:
            raise SpecError(f"{where}.name", f"duplicate hook operation {op.name!r}")
        known[op.name] = i
        if op.depends_on:
            raise SpecError(
                f"{where}.dependsOn", "hooks run side by side once a run ended; no dependsOn"
            )
        if op.check is not None:
            raise SpecError(f"{where}.check", "a hook always runs; it takes no check")
        if op.hosts is not None:
            for g in op.hosts.groups:
                if static and g not in groups:
                    raise SpecError(f"{where}.hosts.groups", f"unknown group {g!r}")
            for n in op.hosts.names:
                if static and n not in hosts:
                    raise SpecError(f"{where}.hosts.names", f"unknown host {n!r}")
    for trigger in TRIGGERS.values():
        for j, name in enumerate(names_for(spec, trigger)):
            if name not in known:
                raise SpecError(
                    f"spec.hooks.{trigger}[{j}]", f"no hook operation {name!r} in hookOperations"
                )


@dataclass(frozen=True)
class HookPlan:
    create: tuple[Intent, ...]
    results: tuple[HookResult, ...]
    failed: tuple[HookResult, ...]  # failed or lost: each is a Disconnect stage warning
    settled: bool  # every hook pod finished (or was lost): nothing more will happen


def _hosts(op: Operation, hosts: Sequence[Host]) -> list[Host | None]:
    if op.hosts is None or (not op.hosts.groups and not op.hosts.names):
        return [None]  # once per run
    g, n = set(op.hosts.groups), set(op.hosts.names)
    return [h for h in hosts if h.name in n or g & set(h.groups)]


def plan_hooks(
    spec: RunbookSpec,
    state: RunState,
    attempt: int,
    *,
    hosts: Sequence[Host],
    units: Mapping[WorkKey, Observed],
    launched: frozenset[WorkKey],
    budget: int,
    intent: Callable[[WorkKey, Operation, Host | None, tuple[EnvVar, ...]], Intent],
) -> HookPlan:
    """The hooks a run in final `state` runs, what their pods show, and which to start now
    (at most `budget`)."""
    trigger = TRIGGERS.get(state.type)
    if trigger is None:
        return HookPlan((), (), (), True)
    ops = {op.name: op for op in spec.hook_operations}
    env = (
        EnvVar(name="RUNSTATE_STATE", value=state.type.value),
        EnvVar(name="RUNSTATE_STATE_NAME", value=str(state.name)),
        EnvVar(name="RUNSTATE_STATE_MESSAGE", value=state.message[:1024]),
    )
    create: list[Intent] = []
    results: list[HookResult] = []
    failed: list[HookResult] = []
    settled = True
    for name in dict.fromkeys(names_for(spec, trigger)):  # a name listed twice runs once
        op = ops.get(name)
        if op is None:
            continue
        for host in _hosts(op, hosts):
            host_name = host.name if host is not None else ""
            latest: Observed | None = None
            for try_ in range(op.retries + 1):
                unit = units.get(WorkKey(Kind.HOOK, name, host_name, attempt, try_))
                if unit is None:
                    break
                latest = unit
            next_try = 0 if latest is None else latest.key.try_ + 1
            next_key = WorkKey(Kind.HOOK, name, host_name, attempt, next_try)
            result, message = _outcome(latest, op.retries)
            if result is HookOutcome.PENDING:
                if next_key in launched:
                    # Started once, and its pod is gone: running it again could notify twice.
                    result = HookOutcome.LOST
                    message = "the hook's pod was deleted before it finished"
                elif budget > 0:
                    create.append(intent(next_key, op, host, env))
                    budget -= 1
            item = HookResult(
                name=name, on=trigger, host=host_name or None, result=result, message=message
            )
            results.append(item)
            if is_failure(result):
                failed.append(item)
            elif result in OPEN_OUTCOMES:
                settled = False
    return HookPlan(tuple(create), tuple(results[:MAX_HOOKS_IN_STATUS]), tuple(failed), settled)


def _outcome(latest: Observed | None, retries: int) -> tuple[HookOutcome, str]:
    """What the latest try of a hook says, and the message of a failed one."""
    if latest is None:
        return HookOutcome.PENDING, ""
    if not latest.finished:
        return HookOutcome.RUNNING, ""
    if latest.phase is Phase.SUCCEEDED:
        return HookOutcome.SUCCEEDED, ""
    if latest.key.try_ + 1 <= retries:
        return HookOutcome.PENDING, ""  # failed with retries left: the next try starts
    message = latest.message or latest.reason or f"exit {latest.exit_code}"
    return HookOutcome.FAILED, trim_message(message)
