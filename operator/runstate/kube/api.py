"""The Kubernetes API as the controller sees it: one narrow protocol, as httpx has a transport.

`KubeApi` lists every call the operator makes, typed: pods, our custom objects, status patches
fenced by a resourceVersion, finalizers, Events, Nodes and kopf's peering objects. The real
client (`runstate.kube.client.KubeClient`) implements it over kubernetes_asyncio; the unit tests
drive the reconcilers through an in-memory fake with the API server's semantics that matter
here (tests/fakekube.py). Answers the controller acts on are typed exceptions, never HTTP codes.

This module owns the protocol and its exceptions. It must not do I/O or import a client library.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Protocol

from runstate import __version__

Json = dict[str, Any]  # a Kubernetes object or answer, as the API server sends it
Body = Mapping[str, Any]  # a Kubernetes object to send, as a pure builder made it

FIELD_MANAGER = "runstate"  # managedFields and audit logs name the operator by this
USER_AGENT = f"runstate/{__version__}"


class Plural(enum.StrEnum):
    """runstate's own resources (group runstate.dev)."""

    RUNS = "runs"
    RUNBOOKS = "runbooks"


class Gone(Exception):
    """The object no longer exists (404)."""


class Conflict(Exception):
    """A write carrying a resourceVersion lost: the object changed since (409)."""


class Refused(Exception):
    """The API server refused an object (400 invalid, 403 forbidden by RBAC, quota or
    admission, 422 unprocessable): sending it again unchanged will not help."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class KubeApi(Protocol):
    """Every call the controller makes to the API server."""

    # ---- pods of runs
    async def create_pod(self, namespace: str, pod: Body) -> bool:
        """Create a pod; False when one of that name exists (idempotent create); `Refused`
        when the API server will not take it."""
        ...

    async def delete_pod(self, namespace: str, name: str) -> None:
        """Delete a pod; gone already is fine."""
        ...

    async def delete_pods(self, namespace: str, label_selector: str) -> None:
        """Delete every pod of `namespace` matching the selector, in one call."""
        ...

    async def list_pods(self, namespace: str | None, label_selector: str) -> tuple[list[Json], str]:
        """Pods matching the selector (one namespace, or all) and the list's resourceVersion."""
        ...

    def watch_pods(
        self,
        namespace: str | None,
        label_selector: str,
        resource_version: str,
        timeout_seconds: int = 240,
    ) -> AsyncIterator[Json]:
        """Watch events ({type, object}) from `resource_version` until the server ends it."""
        ...

    # ---- runstate objects
    async def get_object(self, plural: Plural, namespace: str, name: str) -> Json:
        """The object as the API server has it now (not a cache); raises `Gone`."""
        ...

    async def create_run(self, namespace: str, run: Body) -> bool:
        """Create a Run; False when one of that name exists."""
        ...

    async def delete_run(self, namespace: str, name: str) -> None:
        """Delete a Run (its finalizer then has the operator clean up); gone is fine."""
        ...

    async def patch_status(
        self,
        plural: Plural,
        namespace: str,
        name: str,
        status: Body,
        *,
        resource_version: str | None = None,
    ) -> Json:
        """Merge-patch the status subresource; with `resource_version` only onto that version
        (`Conflict` otherwise). Returns the object as written; raises `Gone`."""
        ...

    async def patch_spec(self, plural: Plural, namespace: str, name: str, spec: Body) -> None:
        """Merge-patch `spec` (e.g. cancel a Run); a gone object is fine."""
        ...

    async def set_finalizers(
        self,
        plural: Plural,
        namespace: str,
        name: str,
        finalizers: Sequence[str],
        resource_version: str,
    ) -> str | None:
        """Replace `metadata.finalizers` only at `resource_version`: the new resourceVersion,
        or None on a conflict; raises `Gone`."""
        ...

    # ---- the rest of the cluster
    async def post_event(self, namespace: str, event: Body) -> None: ...

    async def list_nodes(self, label_selector: str) -> list[Json]:
        """Every Node matching the selector."""
        ...

    async def list_peering(
        self, name: str, namespace: str | None
    ) -> tuple[Json | None, str | None]:
        """kopf's peering object (None when absent) and the resourceVersion to watch from
        (None when the peering CRD is not installed)."""
        ...

    def watch_peering(
        self, name: str, namespace: str | None, resource_version: str, timeout_seconds: int = 240
    ) -> AsyncIterator[Json]: ...

    async def close(self) -> None: ...
