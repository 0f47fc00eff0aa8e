"""The real `KubeApi` (runstate.kube.api): the calls the controller makes, over kubernetes_asyncio.

Created once at startup and closed at cleanup. It sends what the pure builders made and turns
the answers the controller acts on into the protocol's exceptions (already exists, gone,
conflict, refused). Every request says who sends it: User-Agent `runstate/<version>` and, on
writes, field manager `runstate` (managedFields, audit logs). Responses are not deserialised
into models: skipping that keeps the event loop free. Every write is counted by resource for
`runstate_api_writes_total`, which the throughput benchmark reads. No decisions here.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.client.exceptions import ApiException

from runstate.api.v1alpha1 import GROUP, VERSION
from runstate.kube.api import FIELD_MANAGER, USER_AGENT, Conflict, Gone, Plural, Refused

MERGE_PATCH = "application/merge-patch+json"
REFUSALS = frozenset({400, 403, 422})  # invalid, forbidden (RBAC, quota, admission), unprocessable


def _message(exc: ApiException) -> str:
    """The API server's own words from a Status answer (its `message`), else the body."""
    text = str(exc.reason or "")
    try:
        message = json.loads(text).get("message")
    except (ValueError, AttributeError):
        return text
    return str(message or text)


async def _watch_events(response: Any) -> AsyncIterator[dict[str, Any]]:
    """The events of a watch response (one JSON object per line), until the server ends it."""
    try:
        if not 200 <= response.status <= 299:
            raise ApiException(status=response.status, reason=await response.text())
        async for line in response.content:
            if line.strip():
                yield json.loads(line)
    finally:
        response.release()


class KubeClient:
    """`runstate.kube.api.KubeApi` over kubernetes_asyncio."""

    def __init__(self, api: k8s.ApiClient, on_write: Callable[[str], None] | None = None) -> None:
        api.user_agent = USER_AGENT
        self._api = api
        # Typed as Any on purpose: we send raw dicts built by the pure builders (the generated
        # stubs insist on model objects) and read raw JSON back.
        self._core: Any = k8s.CoreV1Api(api)
        self._custom: Any = k8s.CustomObjectsApi(api)
        self._on_write = on_write or (lambda resource: None)

    @classmethod
    async def connect(
        cls, kubeconfig: str | None = None, on_write: Callable[[str], None] | None = None
    ) -> KubeClient:
        """In-cluster config when running in a pod, else the kubeconfig (KUBECONFIG)."""
        configuration = k8s.Configuration()
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except k8s_config.ConfigException:
            await k8s_config.load_kube_config(
                config_file=kubeconfig, client_configuration=configuration
            )
        configuration.connection_pool_maxsize = 64
        return cls(k8s.ApiClient(configuration), on_write)

    async def close(self) -> None:
        await self._api.close()

    async def _call(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        """Call an API method without model deserialisation and return the JSON body.

        With `_preload_content=False` kubernetes_asyncio hands back the raw response and does
        *not* raise on HTTP errors, so the status is checked here, as the library would.
        """
        response = await method(*args, _preload_content=False, **kwargs)
        try:
            data = await response.read()
            if not 200 <= response.status <= 299:
                raise ApiException(status=response.status, reason=data.decode(errors="replace"))
        finally:
            response.release()
        return json.loads(data) if data else None

    async def create_pod(self, namespace: str, pod: Mapping[str, Any]) -> bool:
        """Create a pod; False when a pod of that name exists already (idempotent create)."""
        self._on_write("pods")
        try:
            await self._call(
                self._core.create_namespaced_pod, namespace, dict(pod), field_manager=FIELD_MANAGER
            )
        except ApiException as exc:
            if exc.status == 409:
                return False
            if exc.status in REFUSALS:
                raise Refused(exc.status, _message(exc)) from None
            raise
        return True

    async def delete_pod(self, namespace: str, name: str) -> None:
        self._on_write("pods")
        try:
            await self._call(self._core.delete_namespaced_pod, name, namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise

    async def delete_pods(self, namespace: str, label_selector: str) -> None:
        """Delete every pod of `namespace` matching the selector, in one API call."""
        self._on_write("pods")
        await self._call(
            self._core.delete_collection_namespaced_pod, namespace, label_selector=label_selector
        )

    async def list_pods(
        self, namespace: str | None, label_selector: str
    ) -> tuple[list[dict[str, Any]], str]:
        """Pods matching the selector (in one namespace, or all), and the list's resourceVersion."""
        if namespace is None:
            body = await self._call(
                self._core.list_pod_for_all_namespaces, label_selector=label_selector
            )
        else:
            body = await self._call(
                self._core.list_namespaced_pod, namespace, label_selector=label_selector
            )
        return list(body.get("items") or []), str(body["metadata"].get("resourceVersion", ""))

    async def watch_pods(
        self,
        namespace: str | None,
        label_selector: str,
        resource_version: str,
        timeout_seconds: int = 240,
    ) -> AsyncIterator[dict[str, Any]]:
        """Watch events ({type, object}) from `resource_version`; ends when the server ends the
        watch. Raw JSON lines: no model deserialisation on the hot path."""
        kwargs: dict[str, Any] = {
            "label_selector": label_selector,
            "watch": True,
            "resource_version": resource_version,
            "timeout_seconds": timeout_seconds,
            "allow_watch_bookmarks": True,
            "_preload_content": False,
        }
        if namespace is None:
            response = await self._core.list_pod_for_all_namespaces(**kwargs)
        else:
            response = await self._core.list_namespaced_pod(namespace, **kwargs)
        async for event in _watch_events(response):
            yield event

    async def _merge_patch(
        self, plural: Plural, namespace: str, name: str, body: Mapping[str, Any], *, status: bool
    ) -> dict[str, Any]:
        """Merge-patch a runstate resource (its status subresource if `status`); raises `Gone`
        for a deleted object."""
        self._on_write(f"{plural}/status" if status else plural)
        method = (
            self._custom.patch_namespaced_custom_object_status
            if status
            else self._custom.patch_namespaced_custom_object
        )
        try:
            result: dict[str, Any] = await self._call(
                method,
                GROUP,
                VERSION,
                namespace,
                plural,
                name,
                dict(body),
                _content_type=MERGE_PATCH,
                field_manager=FIELD_MANAGER,
            )
        except ApiException as exc:
            if exc.status == 404:
                raise Gone(f"{plural} {namespace}/{name}") from None
            if exc.status == 409:
                raise Conflict(f"{plural} {namespace}/{name}: {exc.reason}") from None
            raise
        return result

    async def patch_status(
        self,
        plural: Plural,
        namespace: str,
        name: str,
        status: Mapping[str, Any],
        *,
        resource_version: str | None = None,
    ) -> dict[str, Any]:
        """Merge-patch `status` of a runstate resource and return the object as written.

        With `resource_version` the patch applies only to that version of the object and
        raises `Conflict` otherwise; raises `Gone` for a deleted object."""
        body: dict[str, Any] = {"status": dict(status)}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        return await self._merge_patch(plural, namespace, name, body, status=True)

    async def delete_run(self, namespace: str, name: str) -> None:
        """Delete a Run (its finalizer then has the operator clean up); gone already is fine."""
        self._on_write("runs")
        try:
            await self._call(
                self._custom.delete_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                "runs",
                name,
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

    async def get_object(self, plural: Plural, namespace: str, name: str) -> dict[str, Any]:
        """A runstate resource as the API server has it now (not a cache); raises `Gone`."""
        try:
            body: dict[str, Any] = await self._call(
                self._custom.get_namespaced_custom_object, GROUP, VERSION, namespace, plural, name
            )
        except ApiException as exc:
            if exc.status == 404:
                raise Gone(f"{plural} {namespace}/{name}") from None
            raise
        return body

    async def patch_spec(
        self, plural: Plural, namespace: str, name: str, spec: Mapping[str, Any]
    ) -> None:
        """Merge-patch `spec` of a runstate resource (e.g. cancel a Run); a gone object is fine."""
        with contextlib.suppress(Gone):
            await self._merge_patch(plural, namespace, name, {"spec": dict(spec)}, status=False)

    async def set_finalizers(
        self,
        plural: Plural,
        namespace: str,
        name: str,
        finalizers: Sequence[str],
        resource_version: str,
    ) -> str | None:
        """Replace `metadata.finalizers`, only if the object is still at `resource_version`
        (a merge patch carrying it is a compare-and-set). The object's new resourceVersion, or
        None on a conflict; raises `Gone`."""
        body = {"metadata": {"finalizers": list(finalizers), "resourceVersion": resource_version}}
        try:
            written = await self._merge_patch(plural, namespace, name, body, status=False)
        except Conflict:
            return None
        return str((written.get("metadata") or {}).get("resourceVersion") or "") or None

    async def list_nodes(self, label_selector: str) -> list[dict[str, Any]]:
        """Every Node matching `label_selector`, page by page."""
        nodes: list[dict[str, Any]] = []
        cont: str | None = None
        while True:
            kwargs: dict[str, Any] = {"label_selector": label_selector, "limit": 500}
            if cont:
                kwargs["_continue"] = cont
            page = await self._call(self._core.list_node, **kwargs)
            nodes.extend(page.get("items") or [])
            cont = (page.get("metadata") or {}).get("continue")
            if not cont:
                return nodes

    async def create_run(self, namespace: str, run: Mapping[str, Any]) -> bool:
        """Create a Run; False when one of that name exists already (idempotent create)."""
        self._on_write("runs")
        try:
            await self._call(
                self._custom.create_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                "runs",
                dict(run),
                field_manager=FIELD_MANAGER,
            )
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True

    def _peerings(self, namespace: str | None, **kwargs: Any) -> Any:
        """List (or with watch=True, watch) kopf's peering objects: `ClusterKopfPeering`s, or
        the `KopfPeering`s of `namespace`."""
        if namespace is None:
            return self._custom.list_cluster_custom_object(
                "kopf.dev", "v1", "clusterkopfpeerings", _preload_content=False, **kwargs
            )
        return self._custom.list_namespaced_custom_object(
            "kopf.dev", "v1", namespace, "kopfpeerings", _preload_content=False, **kwargs
        )

    async def list_peering(
        self, name: str, namespace: str | None
    ) -> tuple[dict[str, Any] | None, str | None]:
        """kopf's peering object `name` (None when absent) and the list's resourceVersion to
        watch from (None when the peering CRD is not installed)."""
        response = await self._peerings(namespace, field_selector=f"metadata.name={name}")
        try:
            data = await response.read()
            if response.status == 404:
                return None, None
            if not 200 <= response.status <= 299:
                raise ApiException(status=response.status, reason=data.decode(errors="replace"))
        finally:
            response.release()
        body = json.loads(data)
        items = body.get("items") or []
        return (items[0] if items else None), str(body["metadata"].get("resourceVersion", ""))

    async def watch_peering(
        self, name: str, namespace: str | None, resource_version: str, timeout_seconds: int = 240
    ) -> AsyncIterator[dict[str, Any]]:
        """Watch events ({type, object}) of peering object `name` from `resource_version`;
        ends when the server ends the watch."""
        response = await self._peerings(
            namespace,
            field_selector=f"metadata.name={name}",
            watch=True,
            resource_version=resource_version,
            timeout_seconds=timeout_seconds,
        )
        async for event in _watch_events(response):
            yield event

    async def post_event(self, namespace: str, event: Mapping[str, Any]) -> None:
        self._on_write("events")
        await self._call(
            self._core.create_namespaced_event, namespace, dict(event), field_manager=FIELD_MANAGER
        )
