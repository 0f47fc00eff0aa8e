"""Which pod changes wake a run up: only those that can change a decision."""

from runstate.controller.informer import _matters
from runstate.domain.work import Kind, Observed, Phase, WorkKey

KEY = WorkKey(Kind.RUN, "op", "h")


def unit(phase: Phase, code: int | None = None, reason: str = "", message: str = "") -> Observed:
    return Observed(KEY, phase, code, reason, message)


def test_binding_and_starting_do_not_wake_the_run() -> None:
    assert not _matters(None, unit(Phase.PENDING))  # our own new pod: counted as expected
    assert not _matters(unit(Phase.PENDING), unit(Phase.PENDING))  # bound to a node
    assert not _matters(unit(Phase.PENDING), unit(Phase.RUNNING))  # started


def test_finishing_wakes_the_run() -> None:
    assert _matters(unit(Phase.RUNNING), unit(Phase.SUCCEEDED, 0))
    assert _matters(None, unit(Phase.FAILED, 3))  # finished before we ever saw it run
    assert _matters(unit(Phase.FAILED, 137), unit(Phase.FAILED, 137, "DeadlineExceeded"))
    assert not _matters(unit(Phase.SUCCEEDED, 0), unit(Phase.SUCCEEDED, 0))


def test_a_pod_being_deleted_wakes_the_run() -> None:
    deleting = Observed(KEY, Phase.RUNNING, deleting=True)
    assert _matters(unit(Phase.RUNNING), deleting)
    assert not _matters(deleting, deleting)
