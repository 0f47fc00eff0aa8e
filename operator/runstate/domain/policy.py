"""The orchestration policy: which state transitions are allowed (Prefect's core policy).

One readable table, `ALLOWED`, of state type → types it may move to, plus the rules every
proposal must pass. `check()` raises `TransitionRefused` with the rule's name; the engine only
proposes transitions and never bypasses this module. It must not create states (`states`
does) nor do I/O.
"""

from __future__ import annotations

from runstate.api.v1alpha1 import RunState, StateType
from runstate.domain.states import is_final

S = StateType

#: Allowed moves by type. Terminal types allow nothing (no orchestrated transition leaves them).
ALLOWED: dict[StateType | None, frozenset[StateType]] = {
    None: frozenset({S.SCHEDULED, S.PENDING}),  # a new run
    S.SCHEDULED: frozenset({S.SCHEDULED, S.PENDING, S.CANCELLING, S.CANCELLED, S.FAILED}),
    S.PENDING: frozenset(
        {S.SCHEDULED, S.RUNNING, S.PAUSED, S.CANCELLING, S.CANCELLED, S.FAILED, S.CRASHED}
    ),
    S.RUNNING: frozenset({S.SCHEDULED, S.PAUSED, S.CANCELLING, S.COMPLETED, S.FAILED, S.CRASHED}),
    S.PAUSED: frozenset({S.RUNNING, S.PENDING, S.CANCELLING, S.FAILED, S.CRASHED}),
    S.CANCELLING: frozenset({S.CANCELLED, S.CRASHED}),
    S.CANCELLED: frozenset(),
    S.COMPLETED: frozenset(),
    S.FAILED: frozenset(),
    S.CRASHED: frozenset(),
}


class TransitionRefused(RuntimeError):
    def __init__(self, rule: str, current: RunState | None, proposed: RunState) -> None:
        frm = "none" if current is None else f"{current.type.value}/{current.name}"
        super().__init__(f"{rule}: {frm} → {proposed.type.value}/{proposed.name} refused")
        self.rule = rule


def check(current: RunState | None, proposed: RunState) -> None:
    """Raise `TransitionRefused` unless `current → proposed` is allowed."""
    if current is not None and is_final(current.type):
        raise TransitionRefused("terminal-state", current, proposed)
    if current is not None and (current.type, current.name) == (proposed.type, proposed.name):
        raise TransitionRefused("duplicate-transition", current, proposed)
    if proposed.type not in ALLOWED[None if current is None else current.type]:
        raise TransitionRefused("not-in-table", current, proposed)
