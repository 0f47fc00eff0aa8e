"""The operator's view of the cluster, fed by watches: the `Cache` protocol and its live form.

`IndexCache` reads Runs and Runbooks from kopf's in-memory indexes (duck-typed: kopf is not
imported here) and pods from the pod informer. The reconcilers read only through `Cache`, so
the unit tests give them a cache over a fake API server instead.

It must not write anything or decide anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from runstate.controller.view import ObjectKey
from runstate.domain.work import Observed


class Cache(Protocol):
    def run(self, key: ObjectKey) -> Mapping[str, Any] | None: ...
    def runbook(self, key: ObjectKey) -> Mapping[str, Any] | None: ...
    def units(self, run_uid: str) -> Sequence[tuple[str, Observed]]:
        """(pod name, unit of work) of every pod of the run."""
        ...

    def run_keys(self) -> Sequence[ObjectKey]: ...
    def runs_of_runbook(self, key: ObjectKey) -> Sequence[ObjectKey]: ...


class PodUnits(Protocol):
    def units(self, run_uid: str) -> list[tuple[str, Observed]]: ...


class IndexCache:
    """`Cache` over kopf's live indexes (Runs, Runbooks, Runs by Runbook) and the pod
    informer. A kopf index maps a key to a store of values; ours hold one value per key."""

    def __init__(self, *, runs: Any, runbooks: Any, by_runbook: Any, pods: PodUnits) -> None:
        self._runs, self._runbooks, self._by_runbook, self._pods = runs, runbooks, by_runbook, pods

    @staticmethod
    def _one(index: Any, key: ObjectKey) -> Mapping[str, Any] | None:
        for value in index.get(key, ()):
            found: Mapping[str, Any] = value
            return found
        return None

    def run(self, key: ObjectKey) -> Mapping[str, Any] | None:
        return self._one(self._runs, key)

    def runbook(self, key: ObjectKey) -> Mapping[str, Any] | None:
        return self._one(self._runbooks, key)

    def units(self, run_uid: str) -> Sequence[tuple[str, Observed]]:
        return self._pods.units(run_uid)

    def runs_of_runbook(self, key: ObjectKey) -> Sequence[ObjectKey]:
        return list(self._by_runbook.get(key, ()))

    def run_keys(self) -> Sequence[ObjectKey]:
        return list(self._runs.keys())

    def run_state_counts(self) -> dict[tuple[str, str], int]:
        """Runs by (namespace, state type) for the `runstate_runs` gauge."""
        counts: dict[tuple[str, str], int] = {}
        for (namespace, _), store in list(self._runs.items()):
            for body in store:
                state_type = ((body.get("status") or {}).get("state") or {}).get("type") or "NONE"
                counts[(namespace, state_type)] = counts.get((namespace, state_type), 0) + 1
        return counts
