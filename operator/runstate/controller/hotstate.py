"""The one codec of a run's hot state: typed records ⇄ what the state store holds.

A run's hot state is its state record (state, stage, attempt, times, and for an ended run the
final summary), its history, and a results hash with four kinds of entries: per operation ×
host results, the units the operator launched, the hosts that failed, and a Node inventory's
snapshot. Every key string and JSON shape of those lives here and nowhere else; the rest of
the controller handles `Progress`, `WorkKey`, `Host`, `HistoryItem` and `HotState`.

It also rebuilds progress from a Run's status when the store has lost it (Redis wiped).
It must not do I/O: the loader and the applier call the store with what this module encodes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from runstate.api.v1alpha1 import (
    FailedHost,
    HistoryItem,
    Host,
    HostCounts,
    OperationCounts,
    PlannedOperation,
    RunState,
    Stage,
    StageWarnings,
)
from runstate.domain.engine import Progress, Summary
from runstate.domain.states import is_final, label
from runstate.domain.work import Kind, WorkKey
from runstate_stores.base import HistoryEntry, StateRecord

LAUNCHED = "@launched|"  # + kind|attempt|try|operation|host: a unit the operator started
FAILED = "@failed|"  # + host: a host that failed (its FailedHost)
INVENTORY = "@inventory"  # a Node inventory's hosts, as the run started with them
PLANNED = "@plan|"  # + operation|host: the commands a pyinfra operation's dry mode reported

Payload = dict[str, Mapping[str, Any]]  # results-hash entries to write


@dataclass
class HotState:
    """What the store holds of a run besides its state record, loaded once per process."""

    result_keys: set[str] = field(default_factory=set)  # entries already written
    launched: set[WorkKey] = field(default_factory=set)
    nodes: tuple[Host, ...] | None = None


# ---- the results hash ---------------------------------------------------------------------


def result_key(operation: str, host: str) -> str:
    return f"{operation}|{host}"


def operation_of(key: str) -> str:
    """The operation of a per operation × host result key."""
    return key.split("|", 1)[0]


def decode_results(stored: Mapping[str, Mapping[str, Any]]) -> HotState:
    launched = {k for k in (_launched_key(v) for n, v in stored.items() if _is_launched(n)) if k}
    nodes = None
    snapshot = stored.get(INVENTORY)
    if snapshot is not None:
        nodes = tuple(Host.model_validate(h) for h in snapshot.get("hosts") or [])
    return HotState(result_keys=set(stored), launched=launched, nodes=nodes)


def _is_launched(name: str) -> bool:
    return name.startswith(LAUNCHED)


def _launched_key(value: Mapping[str, Any]) -> WorkKey | None:
    try:
        return WorkKey(
            Kind(value["kind"]),
            str(value["operation"]),
            str(value["host"]),
            int(value["attempt"]),
            int(value["try"]),
        )
    except (KeyError, ValueError, TypeError):
        return None


def encode_launched(keys: Iterable[WorkKey]) -> Payload:
    return {
        f"{LAUNCHED}{k.kind.value}|{k.attempt}|{k.try_}|{k.operation}|{k.host}": {
            "kind": k.kind.value,
            "operation": k.operation,
            "host": k.host,
            "attempt": k.attempt,
            "try": k.try_,
        }
        for k in keys
    }


def encode_inventory(hosts: Sequence[Host]) -> Payload:
    return {INVENTORY: {"hosts": [h.model_dump(by_alias=True, mode="json") for h in hosts]}}


@dataclass(frozen=True)
class NewResults:
    """A summary's entries the store does not hold yet, and what they count in metrics."""

    payload: Payload
    operation_results: tuple[tuple[str, str], ...]  # (operation, result) per new result
    host_failures: tuple[Stage, ...]  # the stage of each newly failed host


def new_results(summary: Summary, known: set[str]) -> NewResults:
    payload: Payload = {}
    results: list[tuple[str, str]] = []
    for key, value in summary.results.items():
        if key not in known:
            payload[key] = value
            results.append((operation_of(key), str(value["result"])))
    for key, commands in summary.commands.items():
        if f"{PLANNED}{key}" not in known:
            payload[f"{PLANNED}{key}"] = {"commands": list(commands)}
    failures: list[Stage] = []
    for host in summary.failed_hosts:
        key = f"{FAILED}{host.host}"
        if key not in known:
            payload[key] = host.model_dump(by_alias=True, mode="json", exclude_none=True)
            failures.append(host.stage)
    return NewResults(payload, tuple(results), tuple(failures))


# ---- the state record ---------------------------------------------------------------------


def encode_summary(summary: Summary) -> dict[str, Any]:
    """What the status shows of a summary (the per-host results stay in the results hash)."""
    out: dict[str, Any] = {
        "hosts": summary.hosts.model_dump(by_alias=True),
        "hostsOk": summary.hosts_ok,
        "stageWarnings": summary.stage_warnings.model_dump(by_alias=True),
        "operations": [o.model_dump(by_alias=True) for o in summary.operations],
        "failedHosts": [
            f.model_dump(by_alias=True, mode="json", exclude_none=True)
            for f in summary.failed_hosts
        ],
    }
    if summary.plan is not None:
        out["plan"] = [p.model_dump(by_alias=True, exclude_none=True) for p in summary.plan]
    return out


def decode_summary(data: Mapping[str, Any]) -> Summary:
    plan = data.get("plan")
    return Summary(
        hosts=HostCounts.model_validate(data.get("hosts") or {}),
        hosts_ok=int(data.get("hostsOk") or 0),
        stage_warnings=StageWarnings.model_validate(data.get("stageWarnings") or {}),
        operations=tuple(OperationCounts.model_validate(o) for o in data.get("operations") or []),
        failed_hosts=tuple(FailedHost.model_validate(f) for f in data.get("failedHosts") or []),
        results={},
        plan=None if plan is None else tuple(PlannedOperation.model_validate(p) for p in plan),
    )


def encode_record(progress: Progress) -> StateRecord:
    s = progress.state
    details = s.model_dump(
        by_alias=True, exclude_none=True, exclude={"type", "name", "message", "timestamp"}
    )
    context = {
        k: v
        for k, v in {
            "startTime": progress.start_time,
            "endTime": progress.end_time,
            "attemptStart": progress.attempt_start,
            "stateDetails": details or None,
            "summary": encode_summary(progress.summary) if progress.summary else None,
        }.items()
        if v is not None
    }
    return StateRecord(
        type=s.type.value,
        name=str(s.name),
        stage=progress.stage.value,
        attempt=progress.attempt,
        message=s.message,
        timestamp=s.timestamp,
        context=context,
    )


def decode_record(record: StateRecord) -> Progress:
    ctx = record.context
    state = RunState.model_validate(
        {
            **(ctx.get("stateDetails") or {}),
            "type": record.type,
            "name": record.name,
            "message": record.message,
            "timestamp": record.timestamp,
        }
    )
    summary = ctx.get("summary")
    return Progress(
        state=state,
        stage=Stage(record.stage),
        attempt=record.attempt,
        start_time=ctx.get("startTime"),
        end_time=ctx.get("endTime"),
        attempt_start=ctx.get("attemptStart"),
        summary=decode_summary(summary) if summary else None,
    )


def progress_from_status(status: Mapping[str, Any]) -> Progress | None:
    """Progress rebuilt from a Run's status when the store has lost it (e.g. Redis wiped).
    An ended run's status shows its final summary: it is written before any pod goes."""
    try:
        state = RunState.model_validate(status["state"])
        summary = None
        if is_final(state.type) and "operations" in status:
            summary = _summary_from_status(status)
        return Progress(
            state=state,
            stage=Stage(status.get("stage") or "Setup"),
            attempt=int(status.get("attempt") or 1),
            start_time=status.get("startTime"),
            end_time=status.get("endTime"),
            summary=summary,
        )
    except (KeyError, ValueError, ValidationError):
        return None


def _summary_from_status(status: Mapping[str, Any]) -> Summary:
    ok = str(status.get("hostsSummary") or "0/0").split("/", 1)[0]
    data = {**status, "hostsOk": int(ok) if ok.isdigit() else 0}
    return decode_summary(data)


# ---- history ------------------------------------------------------------------------------


def history_entries(
    transitions: Sequence[tuple[RunState | None, RunState]], attempt: int
) -> list[HistoryEntry]:
    """The store's history entries of a decision's transitions."""
    return [
        HistoryEntry(
            from_state=label(frm),
            to_state=label(to),
            at=to.timestamp,
            message=to.message,
            attempt=attempt,
        )
        for frm, to in transitions
    ]


def history_items(entries: Iterable[HistoryEntry]) -> list[HistoryItem]:
    """`status.history` items of store history entries."""
    return [
        HistoryItem(from_=e.from_state, to=e.to_state, at=e.at, message=e.message) for e in entries
    ]


def transition_items(transitions: Sequence[tuple[RunState | None, RunState]]) -> list[HistoryItem]:
    return history_items(history_entries(transitions, 0))


def status_history(status: Mapping[str, Any]) -> list[HistoryItem]:
    return [HistoryItem.model_validate(h) for h in status.get("history") or []]
