"""Ending a run from outside its stages: cancelling (by `spec.cancel` or deletion of the Run)
and crashing (pods their node ended, or deleted outside runstate).

It owns these transitions and the pods they stop; it must not import the other lifecycle
modules or `engine`.
"""

from __future__ import annotations

from runstate.api.v1alpha1 import StateName, StateType
from runstate.domain.attempt import AttemptView
from runstate.domain.records import Decision, Progress
from runstate.domain.states import is_final
from runstate.domain.walk import Walk, finish
from runstate.domain.work import WorkKey, trim_message


def cancel(walk: Walk, deleted: bool = False) -> Decision:
    """Cancelling stops the run's pods; it is Cancelled once none of them runs any more."""
    in_flight = tuple(u.key for u in walk.obs.units if not u.finished)
    assert walk.state is not None
    why = "Run deleted" if deleted else "Cancel requested"
    if walk.state.type is not StateType.CANCELLING:
        walk.move(StateName.CANCELLING, f"{why}: stopping {len(in_flight)} pod(s)")
    if in_flight:
        return walk.decision(delete=in_flight, requeue_after=2.0)
    finish(
        walk,
        StateName.CANCELLED,
        "Cancelled: the Run was deleted" if deleted else "Cancelled by spec.cancel",
    )
    return walk.decision()


def lost(walk: Walk, view: AttemptView) -> Decision | None:
    """Pods of this attempt that something else ended: the run crashes (else None)."""
    # A pod its node ended (evicted, lost with the node, preempted): the operation neither
    # succeeded nor failed, and what it did on the host is unknown. That is a crash.
    if view.evicted:
        first = view.evicted[0]
        return crash(
            walk,
            f"{len(view.evicted)} pod(s) of this run ended by their node (first: "
            f"{describe(first.key)}: {first.reason}: {trim_message(first.message)})",
        )
    # The operator deletes pods only when a run is cancelled or ends: any other pod that is
    # being deleted, or is gone, was deleted by someone else.
    vanished = view.vanished(walk.obs.launched)
    if vanished:
        return crash(
            walk,
            f"{len(vanished)} pod(s) of this run were deleted outside runstate (first: "
            f"{describe(vanished[0])}); its progress cannot be trusted",
        )
    return None


def describe(key: WorkKey) -> str:
    return f"{key.kind.value} {key.operation} on {key.host}".replace("  ", " ")


def crash(walk: Walk, message: str) -> Decision:
    """An infrastructure fault: the run is Crashed and what still runs of it is stopped."""
    finish(walk, StateName.CRASHED, message, reason="infrastructure")
    return walk.decision(delete=tuple(u.key for u in walk.obs.units if not u.finished))


def needs_finalizer(progress: Progress | None, *, deleting: bool, has_finalizer: bool) -> bool:
    """Whether the cleanup finalizer must go on the Run now: before anything is written for a
    live run, so that its deletion cancels it first and leaves no pod or hot state behind. A
    Run already being deleted, already carrying it, or already over needs none."""
    if deleting or has_finalizer:
        return False
    return progress is None or not is_final(progress.state.type)
