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


async def test_the_informer_follows_list_and_watch_of_the_api() -> None:
    """Against FakeKube's list + watch: the run's units appear, finish and go, and each change
    that matters puts the owning Run on the queue."""
    import asyncio

    from runstate.controller.informer import PodInformer
    from runstate_stores import InMemoryStateStore
    from tests.fakekube import FakeKube
    from tests.unit.operator_harness import Operator
    from tests.unit.test_run_reconciler import make_run

    kube = FakeKube()
    name = make_run(kube)
    await Operator(kube, InMemoryStateStore()).runs.reconcile(("default", name))
    run = kube.get("runs", name)
    assert run is not None
    uid = run["metadata"]["uid"]
    woken: list[tuple[str, str]] = []
    informer = PodInformer(kube, woken.append)
    task = asyncio.create_task(informer.run())
    await asyncio.wait_for(informer.synced.wait(), 2)
    first = {u.key for _, u in informer.units(uid)}
    assert len(first) == 3 and all(not u.finished for _, u in informer.units(uid))
    pod = kube.runnable()[0]
    kube.finish_pod(pod)
    for _ in range(50):
        if woken:
            break
        await asyncio.sleep(0.01)
    assert woken == [("default", name)]
    assert sum(u.finished for _, u in informer.units(uid)) == 1
    await kube.delete_pod("default", pod)
    for _ in range(50):
        if len(informer.units(uid)) == 2:
            break
        await asyncio.sleep(0.01)
    assert len(informer.units(uid)) == 2 and len(woken) == 2
    task.cancel()
