"""The pods of all runs, kept current by list + watch (an informer, as client-go has).

Pods are the bulk of the watch traffic (several events per pod), so they bypass kopf's
per-event machinery: one server-side label-selected watch per namespace scope, each event
parsed once into the unit of work it shows, and the owning Run put on the work queue. After a
list (at start, and again whenever the watch cannot resume: 410 Gone, errors), the cache is
*replaced*, so pods deleted while the watch was down disappear too. `synced` is set after the
first full list: no run may be reconciled before, or its pods would look missing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from runstate.domain.work import Observed
from runstate.kube.api import KubeApi
from runstate.kube.pods import LABEL_RUN_UID, observe

log = logging.getLogger(__name__)

RunRef = tuple[str, str]  # (namespace, run name)


def _owner(pod: Mapping[str, Any]) -> RunRef | None:
    meta = pod.get("metadata") or {}
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == "Run" and str(ref.get("apiVersion", "")).startswith("runstate.dev/"):
            return (str(meta.get("namespace", "")), str(ref["name"]))
    return None


def _matters(before: Observed | None, after: Observed) -> bool:
    """Whether a pod change can change a decision: the engine reads only whether a unit
    exists, whether someone is deleting it, and how it ended. A pod being bound or starting changes neither, and a pod that is
    new and unfinished is one the operator just created (counted through its expectations) or
    found in the first list (before any reconcile), so none of these needs a reconcile."""
    if after.deleting and (before is None or not before.deleting):
        return True  # someone is deleting one of the run's pods
    if not after.finished:
        return before is not None and before.finished  # a finished pod cannot un-finish
    if before is None or not before.finished:
        return True
    return (before.phase, before.exit_code, before.reason, before.message) != (
        after.phase,
        after.exit_code,
        after.reason,
        after.message,
    )


class PodInformer:
    def __init__(
        self,
        kube: KubeApi,
        on_change: Callable[[RunRef], None],
        namespaces: Sequence[str] = (),
    ) -> None:
        self._kube = kube
        self._on_change = on_change
        self._scopes: list[str | None] = list(namespaces) or [None]
        self._synced_scopes: set[str | None] = set()
        # run uid → pod name → unit; pod key (namespace/name) → run uid, for deletions
        self._units: dict[str, dict[str, Observed]] = {}
        self._owner_of: dict[str, tuple[str, RunRef | None]] = {}
        self.synced = asyncio.Event()

    def units(self, run_uid: str) -> list[tuple[str, Observed]]:
        return list(self._units.get(run_uid, {}).items())

    async def run(self) -> None:
        await asyncio.gather(*(self._run_scope(scope) for scope in self._scopes))

    async def _run_scope(self, namespace: str | None) -> None:
        backoff = 0.5
        while True:
            try:
                rv = await self._relist(namespace)
                backoff = 0.5
                while rv:
                    rv = await self._watch(namespace, rv)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("pod watch (%s) failed, listing again: %r", namespace or "all", exc)
                await asyncio.sleep(backoff)
                backoff = min(30.0, backoff * 2)

    async def _relist(self, namespace: str | None) -> str:
        items, rv = await self._kube.list_pods(namespace, LABEL_RUN_UID)
        seen = {f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in items}
        for key, (uid, owner) in list(self._owner_of.items()):
            if (namespace is None or key.startswith(namespace + "/")) and key not in seen:
                self._forget(key, uid, owner)
        for pod in items:
            self._apply(pod)
        self._synced_scopes.add(namespace)
        if len(self._synced_scopes) == len(self._scopes):
            self.synced.set()
        return rv

    async def _watch(self, namespace: str | None, rv: str) -> str:
        """Follow the watch until the server ends it; the resourceVersion to resume from, or ""
        when the watch cannot resume and a new list is needed."""
        async for event in self._kube.watch_pods(namespace, LABEL_RUN_UID, rv):
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                log.info(
                    "pod watch (%s) expired (%s); listing again",
                    namespace or "all",
                    obj.get("message"),
                )
                return ""
            rv = str((obj.get("metadata") or {}).get("resourceVersion") or rv)
            if kind == "BOOKMARK":
                continue
            if kind == "DELETED":
                key = f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"
                uid, owner = self._owner_of.get(key, ("", None))
                self._forget(key, uid, owner)
            else:
                self._apply(obj)
        return rv

    def _apply(self, pod: Mapping[str, Any]) -> None:
        meta = pod.get("metadata") or {}
        uid = (meta.get("labels") or {}).get(LABEL_RUN_UID)
        unit = observe(pod)
        if not uid or unit is None:
            return
        key = f"{meta.get('namespace')}/{meta.get('name')}"
        owner = _owner(pod)
        pods = self._units.setdefault(uid, {})
        before = pods.get(str(meta.get("name")))
        pods[str(meta.get("name"))] = unit
        self._owner_of[key] = (uid, owner)
        if owner is not None and _matters(before, unit):
            self._on_change(owner)

    def _forget(self, key: str, uid: str, owner: RunRef | None) -> None:
        self._owner_of.pop(key, None)
        pods = self._units.get(uid)
        if pods is not None:
            pods.pop(key.split("/", 1)[1], None)
            if not pods:
                del self._units[uid]
        if owner is not None:
            self._on_change(owner)
