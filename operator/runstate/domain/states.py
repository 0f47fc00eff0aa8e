"""Run states with Prefect semantics: the named states, their types, and which are terminal.

Owns the name → type table and constructors of `RunState` values. The rules about which
transitions are allowed live in `policy`; this module only says what a state *is*.
"""

from __future__ import annotations

from datetime import UTC, datetime

from runstate.api.v1alpha1 import RunState, StateType

#: Every named state and its type (Prefect's full table, seed 004).
TYPE_OF_NAME: dict[str, StateType] = {
    "Scheduled": StateType.SCHEDULED,
    "Late": StateType.SCHEDULED,
    "AwaitingRetry": StateType.SCHEDULED,
    "AwaitingConcurrencySlot": StateType.SCHEDULED,
    "Pending": StateType.PENDING,
    "Running": StateType.RUNNING,
    "Retrying": StateType.RUNNING,
    "Paused": StateType.PAUSED,
    "Suspended": StateType.PAUSED,
    "Cancelling": StateType.CANCELLING,
    "Cancelled": StateType.CANCELLED,
    "Completed": StateType.COMPLETED,
    "Failed": StateType.FAILED,
    "Crashed": StateType.CRASHED,
}

TERMINAL_TYPES: frozenset[StateType] = frozenset(
    {StateType.COMPLETED, StateType.FAILED, StateType.CANCELLED, StateType.CRASHED}
)


def is_final(state_type: StateType) -> bool:
    """Terminal types: no orchestrated transition leaves them."""
    return state_type in TERMINAL_TYPES


def rfc3339(moment: datetime) -> str:
    """UTC, microseconds, `Z`: the one timestamp format of status, store and Events."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: object) -> datetime | None:
    """An RFC 3339 time as Kubernetes writes it ("...Z"); None for none."""
    if not text:
        return None
    return datetime.fromisoformat(str(text).replace("Z", "+00:00"))


def seconds_between(start: object, end: object) -> float | None:
    a, b = parse_time(start), parse_time(end)
    return None if a is None or b is None else (b - a).total_seconds()


def make_state(name: str, now: datetime, message: str = "", **details: object) -> RunState:
    """A state by its Prefect name; the type follows from the name."""
    if name not in TYPE_OF_NAME:
        raise ValueError(f"unknown state name {name!r}")
    return RunState.model_validate(
        {
            "type": TYPE_OF_NAME[name],
            "name": name,
            "message": message,
            "timestamp": rfc3339(now),
            **details,
        }
    )


def label(state: RunState | None) -> str:
    """ "TYPE/Name", the form used in history and logs ("" for no state)."""
    return "" if state is None else f"{state.type.value}/{state.name}"
