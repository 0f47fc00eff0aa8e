"""The reconcilers wired as the operator wires them, over FakeKube and an in-memory store.

`Operator` is one operator process: its memory dies with it (`crash` = build a new one over
the same API server and store, as a restarted operator would find them). `Kubelet` finishes
the pods the operator started, by a script per kind of unit. `drive` alternates the two until
the run is over.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from runstate.api.v1alpha1 import StateType
from runstate.controller.apply import Applier, Checkpoint
from runstate.controller.metered import Metered
from runstate.controller.runbooks import RunbookReconciler
from runstate.controller.runs import RunReconciler
from runstate.controller.slots import Slots
from runstate.controller.view import ObjectKey
from runstate.domain.states import is_final
from runstate.kube.pods import ANNOTATION_OPERATION, LABEL_KIND
from runstate.settings import OperationsSettings, ReconcileSettings
from runstate_stores import InMemoryStateStore
from tests.fakekube import FakeCache, FakeKube


class Crash(Exception):
    """The operator process died here."""


@dataclass
class CrashAt:
    """A checkpoint that kills the operator before its `at`-th effect (counted from 1)."""

    at: int
    seen: int = 0
    effects: list[str] = field(default_factory=list)
    applied: list[object] = field(default_factory=list)

    def __call__(self, effect: object) -> None:
        self.seen += 1
        self.effects.append(type(effect).__name__)
        self.applied.append(effect)
        if self.seen == self.at:
            raise Crash(type(effect).__name__)


class Operator:
    def __init__(
        self,
        kube: FakeKube,
        store: InMemoryStateStore,
        *,
        checkpoint: Checkpoint | None = None,
        cache: FakeCache | None = None,
        settings: ReconcileSettings | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        operations: OperationsSettings | None = None,
    ) -> None:
        self.kube = kube
        self.cache = cache or FakeCache(kube)
        self.settings = settings or ReconcileSettings(status_coalesce_seconds=0.0)
        self.woken: list[ObjectKey] = []
        metered = Metered(store)
        slots = Slots(
            store=metered,
            cache=self.cache,
            ttl_seconds=self.settings.slot_ttl_seconds,
            wake=self.woken.append,
        )
        applier = Applier(
            kube=kube,
            store=metered,
            slots=slots,
            clock=clock,
            create_concurrency=4,
            checkpoint=checkpoint,
        )
        self.runs = RunReconciler(
            kube=kube,
            store=metered,
            cache=self.cache,
            slots=slots,
            applier=applier,
            settings=self.settings,
            operations=operations or OperationsSettings(),
            clock=clock,
        )
        self.runbooks = RunbookReconciler(
            cache=self.cache,
            applier=applier,
            clock=clock,
            resync_seconds=60.0,
            privileged_allowed=(operations or OperationsSettings()).allow_privileged,
        )


# exit code of a unit's pod by kind: checks say "change needed" unless told otherwise
DEFAULT_EXITS: Mapping[str, int] = {"connect": 0, "check": 1, "run": 0, "hook": 0}


@dataclass
class Kubelet:
    kube: FakeKube
    exits: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_EXITS))
    by_operation: Mapping[str, int] = field(default_factory=dict)  # run pods of an operation

    def step(self, namespace: str = "default") -> int:
        """Finish every pod that is waiting; how many."""
        names = self.kube.runnable(namespace)
        for name in names:
            pod = self.kube.get("pods", name, namespace)
            assert pod is not None
            kind = pod["metadata"]["labels"][LABEL_KIND]
            op = pod["metadata"]["annotations"][ANNOTATION_OPERATION]
            code = (
                self.by_operation.get(op, self.exits[kind]) if kind == "run" else self.exits[kind]
            )
            self.kube.finish_pod(name, exit_code=code, message=f"{kind} {op} exit {code}")
        return len(names)


def run_status(kube: FakeKube, name: str) -> dict[str, Any]:
    run = kube.get("runs", name)
    return dict((run or {}).get("status") or {})


def ended(kube: FakeKube, name: str) -> bool:
    state = run_status(kube, name).get("state") or {}
    return bool(state.get("type")) and is_final(StateType(state["type"]))


async def drive(
    op: Operator,
    kubelet: Kubelet,
    name: str,
    *,
    rounds: int = 60,
    namespace: str = "default",
) -> int:
    """Reconcile and run pods until the run is over and nothing more happens; the rounds."""
    quiet = 0
    for n in range(rounds):
        await op.runs.reconcile((namespace, name))
        moved = kubelet.step(namespace)
        if ended(op.kube, name) and not moved and not op.kube.runnable(namespace):
            quiet += 1
            if quiet >= 2:
                return n
        else:
            quiet = 0
    raise AssertionError(f"run {name} did not end in {rounds} rounds: {run_status(op.kube, name)}")
