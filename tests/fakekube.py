"""An in-memory API server behind `runstate.kube.api.KubeApi`, for unit tests of the reconcilers.

It keeps the semantics the controller depends on: resourceVersions that move on every write,
404 (`Gone`), 409 on a stale resourceVersion (`Conflict`) or an existing name (`create_*`
answers False), `generateName`, merge patches (RFC 7386) of spec and status, deletion that
waits for finalizers (a deletionTimestamp first, the object goes when the last finalizer does),
label selectors (`k=v`, `k in (a,b)`, comma = and), a refusal hook for pod creates (422/403
like an admission webhook or a quota), and watch events. Pods move only when a test says so
(`finish_pod`): there is no kubelet.

`FakeCache` is the reconcilers' `Cache` over it; `lag()` freezes what the cache shows of the
Runs, as a watch that has not caught up with the operator's own writes.

The integration tests run the same reconcilers against a real API server.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import re
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from runstate.controller.view import ObjectKey
from runstate.domain.work import Observed
from runstate.kube.api import Body, Conflict, Gone, Json, Plural, Refused
from runstate.kube.pods import CONTAINER, LABEL_RUN_UID, observe

Key = tuple[str, str, str]  # (resource, namespace, name)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge key by key, null deletes, anything else replaces."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, Mapping) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


_REQUIREMENT = re.compile(r"^\s*([^\s!=]+)\s*(?:(==?|!=)\s*(\S*)|\s+(in|notin)\s*\(([^)]*)\))?\s*$")


def _split(selector: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    return parts


def matches(selector: str, labels: Mapping[str, str]) -> bool:
    """A Kubernetes label selector: equality, inequality, in, notin, existence."""
    for part in _split(selector):
        m = _REQUIREMENT.match(part)
        if m is None:
            raise ValueError(f"unparsable selector {selector!r}")
        key, op, value, setop, values = m.groups()
        if op in ("=", "=="):
            ok = labels.get(key) == value
        elif op == "!=":
            ok = labels.get(key) != value
        elif setop == "in":
            ok = labels.get(key) in {v.strip() for v in values.split(",")}
        elif setop == "notin":
            ok = labels.get(key) not in {v.strip() for v in values.split(",")}
        else:
            ok = key in labels
        if not ok:
            return False
    return True


@dataclass
class FakeKube:
    objects: dict[Key, Json] = field(default_factory=dict)
    events: list[Json] = field(default_factory=list)
    writes: Counter[str] = field(default_factory=Counter)
    created_pods: Counter[str] = field(default_factory=Counter)  # successful creates by name
    refuse: Callable[[Body], Refused | None] = lambda pod: None
    conflicts_on_status: int = 0  # the next N status patches meet a concurrent writer (409)
    _rv: itertools.count[int] = field(default_factory=lambda: itertools.count(100))
    _watchers: list[tuple[str, asyncio.Queue[Json]]] = field(default_factory=list)
    _log: list[tuple[int, Json]] = field(default_factory=list)

    # ---- bookkeeping ----------------------------------------------------------------------

    def _bump(self, obj: Json) -> None:
        obj["metadata"]["resourceVersion"] = str(next(self._rv))

    def _notify(self, kind: str, resource: str, obj: Json) -> None:
        event = {"type": kind, "object": copy.deepcopy(obj)}
        self._log.append((int(obj["metadata"]["resourceVersion"]), event | {"resource": resource}))
        for res, queue in self._watchers:
            if res == resource:
                queue.put_nowait(event)

    def _new(self, resource: str, namespace: str, body: Body) -> Json | None:
        obj: Json = copy.deepcopy(dict(body))
        meta = obj.setdefault("metadata", {})
        if not meta.get("name"):
            meta["name"] = f"{meta['generateName']}{uuid.uuid4().hex[:5]}"
        key = (resource, namespace, meta["name"])
        if key in self.objects:
            return None
        meta.update(
            namespace=namespace,
            uid=meta.get("uid") or str(uuid.uuid4()),
            generation=1,
            creationTimestamp=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        self._bump(obj)
        self.objects[key] = obj
        self._notify("ADDED", resource, obj)
        return obj

    def _get(self, resource: str, namespace: str, name: str) -> Json:
        obj = self.objects.get((resource, namespace, name))
        if obj is None:
            raise Gone(f"{resource} {namespace}/{name}")
        return obj

    def _delete(self, resource: str, namespace: str, name: str) -> None:
        obj = self.objects.get((resource, namespace, name))
        if obj is None:
            return
        meta = obj["metadata"]
        if meta.get("finalizers"):
            if not meta.get("deletionTimestamp"):
                meta["deletionTimestamp"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                self._bump(obj)
                self._notify("MODIFIED", resource, obj)
            return
        del self.objects[(resource, namespace, name)]
        self._bump(obj)
        self._notify("DELETED", resource, obj)
        if resource == "runs":
            # The garbage collector: a Run's pods go with it.
            for key, pod in list(self.objects.items()):
                owners = pod["metadata"].get("ownerReferences") or []
                if key[0] == "pods" and any(o.get("uid") == meta["uid"] for o in owners):
                    self._delete(*key)

    # ---- KubeApi: pods ----------------------------------------------------------------------

    async def create_pod(self, namespace: str, pod: Body) -> bool:
        self.writes["pods"] += 1
        refusal = self.refuse(pod)
        if refusal is not None:
            raise refusal
        made = self._new("pods", namespace, pod)
        if made is None:
            return False
        made.setdefault("status", {"phase": "Pending"})
        self.created_pods[made["metadata"]["name"]] += 1
        return True

    async def delete_pod(self, namespace: str, name: str) -> None:
        self.writes["pods"] += 1
        self._delete("pods", namespace, name)

    async def delete_pods(self, namespace: str, label_selector: str) -> None:
        self.writes["pods"] += 1
        for _, ns, name in [k for k in self.objects if k[0] == "pods" and k[1] == namespace]:
            labels = self.objects[("pods", ns, name)]["metadata"].get("labels") or {}
            if matches(label_selector, labels):
                self._delete("pods", ns, name)

    async def list_pods(self, namespace: str | None, label_selector: str) -> tuple[list[Json], str]:
        items = [
            copy.deepcopy(o)
            for (res, ns, _), o in self.objects.items()
            if res == "pods"
            and (namespace is None or ns == namespace)
            and matches(label_selector, o["metadata"].get("labels") or {})
        ]
        return items, str(next(self._rv))

    async def watch_pods(
        self,
        namespace: str | None,
        label_selector: str,
        resource_version: str,
        timeout_seconds: int = 240,
    ) -> AsyncIterator[Json]:
        queue: asyncio.Queue[Json] = asyncio.Queue()
        for rv, event in self._log:
            if event["resource"] == "pods" and rv > int(resource_version or 0):
                queue.put_nowait({"type": event["type"], "object": event["object"]})
        self._watchers.append(("pods", queue))
        try:
            while True:
                event = await queue.get()
                obj = event["object"]
                if namespace is not None and obj["metadata"]["namespace"] != namespace:
                    continue
                if matches(label_selector, obj["metadata"].get("labels") or {}):
                    yield event
        finally:
            self._watchers.remove(("pods", queue))

    # ---- KubeApi: runstate objects --------------------------------------------------------

    async def get_object(self, plural: Plural, namespace: str, name: str) -> Json:
        return copy.deepcopy(self._get(plural.value, namespace, name))

    async def create_run(self, namespace: str, run: Body) -> bool:
        self.writes["runs"] += 1
        return self._new("runs", namespace, run) is not None

    async def delete_run(self, namespace: str, name: str) -> None:
        self.writes["runs"] += 1
        self._delete("runs", namespace, name)

    def _fenced(self, obj: Json, resource_version: str | None) -> None:
        if resource_version and obj["metadata"]["resourceVersion"] != resource_version:
            raise Conflict(f"{obj['metadata']['name']}: stale resourceVersion {resource_version}")

    async def patch_status(
        self,
        plural: Plural,
        namespace: str,
        name: str,
        status: Body,
        *,
        resource_version: str | None = None,
    ) -> Json:
        self.writes[f"{plural.value}/status"] += 1
        obj = self._get(plural.value, namespace, name)
        if self.conflicts_on_status > 0:
            self.conflicts_on_status -= 1
            obj.setdefault("metadata", {}).setdefault("annotations", {})["touched"] = "yes"
            self._bump(obj)
            self._notify("MODIFIED", plural.value, obj)
        self._fenced(obj, resource_version)
        obj["status"] = merge_patch(obj.get("status") or {}, dict(status))
        self._bump(obj)
        self._notify("MODIFIED", plural.value, obj)
        return copy.deepcopy(obj)

    async def patch_spec(self, plural: Plural, namespace: str, name: str, spec: Body) -> None:
        self.writes[plural.value] += 1
        try:
            obj = self._get(plural.value, namespace, name)
        except Gone:
            return
        obj["spec"] = merge_patch(obj.get("spec") or {}, dict(spec))
        obj["metadata"]["generation"] = int(obj["metadata"].get("generation") or 1) + 1
        self._bump(obj)
        self._notify("MODIFIED", plural.value, obj)

    async def set_finalizers(
        self,
        plural: Plural,
        namespace: str,
        name: str,
        finalizers: Sequence[str],
        resource_version: str,
    ) -> str | None:
        self.writes[plural.value] += 1
        obj = self._get(plural.value, namespace, name)
        try:
            self._fenced(obj, resource_version)
        except Conflict:
            return None
        meta = obj["metadata"]
        meta["finalizers"] = list(finalizers)
        self._bump(obj)
        version = str(meta["resourceVersion"])
        if not finalizers and meta.get("deletionTimestamp"):
            self._delete(plural.value, namespace, name)
        else:
            self._notify("MODIFIED", plural.value, obj)
        return version

    # ---- KubeApi: the rest ------------------------------------------------------------------

    async def post_event(self, namespace: str, event: Body) -> None:
        self.writes["events"] += 1
        self.events.append(copy.deepcopy(dict(event)))

    async def list_nodes(self, label_selector: str) -> list[Json]:
        return [
            copy.deepcopy(o)
            for (res, _, _), o in self.objects.items()
            if res == "nodes" and matches(label_selector, o["metadata"].get("labels") or {})
        ]

    async def list_peering(
        self, name: str, namespace: str | None
    ) -> tuple[Json | None, str | None]:
        return None, None

    async def watch_peering(
        self, name: str, namespace: str | None, resource_version: str, timeout_seconds: int = 240
    ) -> AsyncIterator[Json]:
        return
        yield {}

    async def close(self) -> None:
        return None

    # ---- for the tests ----------------------------------------------------------------------

    def apply(self, resource: str, body: Body, namespace: str = "default") -> Json:
        """`kubectl create`: a new object (generateName allowed)."""
        made = self._new(resource, namespace, body)
        assert made is not None, f"{resource} exists already"
        return made

    def user_delete(self, resource: str, name: str, namespace: str = "default") -> None:
        """`kubectl delete`."""
        self._delete(resource, namespace, name)

    def user_patch_spec(
        self, resource: str, name: str, spec: Body, namespace: str = "default"
    ) -> None:
        obj = self._get(resource, namespace, name)
        obj["spec"] = merge_patch(obj.get("spec") or {}, dict(spec))
        obj["metadata"]["generation"] = int(obj["metadata"]["generation"]) + 1
        self._bump(obj)
        self._notify("MODIFIED", resource, obj)

    def pods(self, namespace: str = "default") -> list[Json]:
        return [o for (res, ns, _), o in self.objects.items() if res == "pods" and ns == namespace]

    def get(self, resource: str, name: str, namespace: str = "default") -> Json | None:
        return self.objects.get((resource, namespace, name))

    def finish_pod(
        self, name: str, *, exit_code: int = 0, message: str = "", namespace: str = "default"
    ) -> None:
        """The kubelet's part: the pod's container ended with this exit code."""
        pod = self._get("pods", namespace, name)
        phase = "Succeeded" if exit_code == 0 else "Failed"
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        terminated = {
            "exitCode": exit_code,
            "reason": "Completed" if exit_code == 0 else "Error",
            "message": message,
            "startedAt": now,
            "finishedAt": now,
        }
        pod["status"] = {
            "phase": phase,
            "containerStatuses": [{"name": CONTAINER, "state": {"terminated": terminated}}],
        }
        self._bump(pod)
        self._notify("MODIFIED", "pods", pod)

    def runnable(self, namespace: str = "default") -> list[str]:
        """Pods that are pending (not finished, not being deleted)."""
        return sorted(
            p["metadata"]["name"]
            for p in self.pods(namespace)
            if (p.get("status") or {}).get("phase") in (None, "Pending", "Running")
            and not p["metadata"].get("deletionTimestamp")
        )

    def event_reasons(self, name: str | None = None) -> list[str]:
        return [
            e["reason"] for e in self.events if name is None or e["involvedObject"]["name"] == name
        ]


class FakeCache:
    """The reconcilers' `Cache` over a FakeKube: what a watch would show, optionally lagging."""

    def __init__(self, kube: FakeKube) -> None:
        self.kube = kube
        self._frozen: dict[Key, Json] | None = None

    def lag(self) -> None:
        """From now on, show the Runs as they are now (until `catch_up`)."""
        self._frozen = {k: copy.deepcopy(v) for k, v in self.kube.objects.items() if k[0] == "runs"}

    def catch_up(self) -> None:
        self._frozen = None

    def _runs(self) -> Mapping[Key, Json]:
        if self._frozen is not None:
            return self._frozen
        return {k: v for k, v in self.kube.objects.items() if k[0] == "runs"}

    def run(self, key: ObjectKey) -> Mapping[str, Any] | None:
        found = self._runs().get(("runs", *key))
        return copy.deepcopy(found) if found is not None else None

    def runbook(self, key: ObjectKey) -> Mapping[str, Any] | None:
        found = self.kube.objects.get(("runbooks", *key))
        return copy.deepcopy(found) if found is not None else None

    def units(self, run_uid: str) -> Sequence[tuple[str, Observed]]:
        out = []
        for (res, _, name), pod in self.kube.objects.items():
            if (
                res == "pods"
                and (pod["metadata"].get("labels") or {}).get(LABEL_RUN_UID) == run_uid
            ):
                unit = observe(pod)
                if unit is not None:
                    out.append((name, unit))
        return out

    def run_keys(self) -> Sequence[ObjectKey]:
        return [(ns, name) for (_, ns, name) in self._runs()]

    def runs_of_runbook(self, key: ObjectKey) -> Sequence[ObjectKey]:
        ns, runbook = key
        return [
            (k[1], k[2])
            for k, body in self._runs().items()
            if k[1] == ns
            and ((body.get("spec") or {}).get("runbookRef") or {}).get("name") == runbook
        ]
