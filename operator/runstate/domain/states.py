"""Run states with Prefect semantics: the named states, their types, and which are terminal.

Owns the name → type table (`TYPE_OF_NAME`, keyed by the `StateName` enum so that mypy checks
every state name the domain uses), the one rule of what is final (`is_final`), and the
constructor of `RunState` values. The rules about which transitions are allowed live in
`policy`; this module only says what a state *is*. No I/O, no Kubernetes.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from types import MappingProxyType

from runstate.api.v1alpha1 import RunState, StateName, StateType

N = StateName

#: Every named state and its type (Prefect's full table, seed 004).
TYPE_OF_NAME: Mapping[StateName, StateType] = MappingProxyType(
    {
        N.SCHEDULED: StateType.SCHEDULED,
        N.LATE: StateType.SCHEDULED,
        N.AWAITING_RETRY: StateType.SCHEDULED,
        N.AWAITING_CONCURRENCY_SLOT: StateType.SCHEDULED,
        N.PENDING: StateType.PENDING,
        N.RUNNING: StateType.RUNNING,
        N.RETRYING: StateType.RUNNING,
        N.PAUSED: StateType.PAUSED,
        N.SUSPENDED: StateType.PAUSED,
        N.CANCELLING: StateType.CANCELLING,
        N.CANCELLED: StateType.CANCELLED,
        N.COMPLETED: StateType.COMPLETED,
        N.FAILED: StateType.FAILED,
        N.CRASHED: StateType.CRASHED,
    }
)

TERMINAL_TYPES: frozenset[StateType] = frozenset(
    {StateType.COMPLETED, StateType.FAILED, StateType.CANCELLED, StateType.CRASHED}
)


def is_final(state_type: StateType) -> bool:
    """Terminal types: no orchestrated transition leaves them. The one rule of "final": the
    engine, the policy, status and the controller all ask this function."""
    return state_type in TERMINAL_TYPES


def is_final_state(state: RunState | None) -> bool:
    """`is_final` of a state that may not exist yet (a new run has none)."""
    return state is not None and is_final(state.type)


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


def make_state(name: StateName, now: datetime, message: str = "", **details: object) -> RunState:
    """A state by its Prefect name; the type follows from the name."""
    try:
        known = StateName(name)
    except ValueError:
        raise ValueError(f"unknown state name {name!r}") from None
    return RunState.model_validate(
        {
            "type": TYPE_OF_NAME[known],
            "name": known,
            "message": message,
            "timestamp": rfc3339(now),
            **details,
        }
    )


def label(state: RunState | None) -> str:
    """ "TYPE/Name", the form used in history and logs ("" for no state)."""
    return "" if state is None else f"{state.type.value}/{state.name}"
