"""The kubelet's API calls: the few requests it makes, on plain JSON dicts.

Owns talking to the API server (list and watch pods, bind, write pod and Node status, delete, read
ConfigMaps and Secrets, record Events about a pod), turning every non-2xx answer or lost connection into `ApiCallError`,
and retrying transient failures with backoff (`with_retries`). Must not decide anything about
a pod: what to call and when is the caller's business.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Mapping
from typing import Any

import aiohttp
from kubernetes_asyncio import client

from .pod import Pod, log, now, pod_ref

WATCH_TIMEOUT_SECONDS = 290


class ApiCallError(Exception):
    """A non-2xx answer (status 0: no answer) from the API server, with what was tried."""

    def __init__(self, what: str, status: int, body: str) -> None:
        super().__init__(f"{what}: HTTP {status}: {body[:500]}")
        self.status = status


class PodApi:
    """The few calls the kubelet makes, on plain JSON dicts.

    ``_preload_content=False`` everywhere: the kubelet never needs models, and
    kubernetes_asyncio raises while deserializing some responses (Binding).
    """

    def __init__(self, api_client: client.ApiClient) -> None:
        # Typed as Any: with _preload_content=False the calls return raw aiohttp
        # responses and take plain dicts, which the generated stubs do not model.
        self.core: Any = client.CoreV1Api(api_client)

    async def _call(self, what: str, request: Awaitable[Any]) -> Pod:
        try:
            response = await request
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ApiCallError(what, 0, repr(exc)) from exc
        try:
            payload = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ApiCallError(what, 0, repr(exc)) from exc
        finally:
            response.release()
        if not 200 <= response.status < 300:
            raise ApiCallError(what, response.status, payload.decode(errors="replace"))
        result: Pod = json.loads(payload) if payload else {}
        return result

    async def list_pods(self, limit: int = 500, cont: str | None = None) -> Pod:
        kwargs: dict[str, Any] = {"limit": limit, "_preload_content": False}
        if cont:
            kwargs["_continue"] = cont
        return await self._call("list pods", self.core.list_pod_for_all_namespaces(**kwargs))

    async def watch_pods(self, resource_version: str) -> aiohttp.ClientResponse:
        response: aiohttp.ClientResponse = await self.core.list_pod_for_all_namespaces(
            watch=True,
            resource_version=resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=WATCH_TIMEOUT_SECONDS,
            _preload_content=False,
            _request_timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=10, sock_read=WATCH_TIMEOUT_SECONDS + 30
            ),
        )
        return response

    async def bind(self, pod: Pod, node: str) -> None:
        meta = pod["metadata"]
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        }
        await self._call(
            f"bind {pod_ref(pod)} to {node}",
            self.core.create_namespaced_pod_binding(
                meta["name"], meta["namespace"], body, _preload_content=False
            ),
        )

    async def patch_status(self, pod: Pod, status: Mapping[str, Any]) -> None:
        meta = pod["metadata"]
        # Merge patch replaces lists whole: each write carries the full status.
        await self._call(
            f"status of {pod_ref(pod)}",
            self.core.patch_namespaced_pod_status(
                meta["name"],
                meta["namespace"],
                {"status": dict(status)},
                _content_type="application/merge-patch+json",
                _preload_content=False,
            ),
        )

    async def patch_node_status(self, node: str, status: Mapping[str, Any]) -> None:
        """Merge ``status`` into the Node's (its addresses and kubelet endpoint)."""
        await self._call(
            f"status of node {node}",
            self.core.patch_node_status(
                node,
                {"status": dict(status)},
                _content_type="application/merge-patch+json",
                _preload_content=False,
            ),
        )

    async def delete_now(self, pod: Pod) -> None:
        meta = pod["metadata"]
        body = {"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}}
        await self._call(
            f"delete {pod_ref(pod)}",
            self.core.delete_namespaced_pod(
                meta["name"],
                meta["namespace"],
                body=body,
                grace_period_seconds=0,
                _preload_content=False,
            ),
        )

    async def config_map(self, namespace: str, name: str) -> Pod:
        return await self._call(
            f"configmap {namespace}/{name}",
            self.core.read_namespaced_config_map(name, namespace, _preload_content=False),
        )

    async def secret(self, namespace: str, name: str) -> Pod:
        return await self._call(
            f"secret {namespace}/{name}",
            self.core.read_namespaced_secret(name, namespace, _preload_content=False),
        )

    async def record_event(self, pod: Pod, kind: str, reason: str, message: str) -> None:
        """An Event about ``pod`` from the kubelet, as ``kubectl describe pod`` shows them."""
        meta = pod["metadata"]
        stamp = now()
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{meta['name']}.{uuid.uuid4().hex[:16]}",
                "namespace": meta["namespace"],
            },
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
                "resourceVersion": meta.get("resourceVersion"),
            },
            "reason": reason,
            "message": message,
            "type": kind,
            "source": {"component": "kubelet", "host": pod["spec"].get("nodeName")},
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
            "reportingComponent": "kubelet",
            "reportingInstance": pod["spec"].get("nodeName") or "",
        }
        await self._call(
            f"event {reason} for {pod_ref(pod)}",
            self.core.create_namespaced_event(meta["namespace"], body, _preload_content=False),
        )


def retryable(exc: ApiCallError) -> bool:
    return exc.status == 0 or exc.status == 429 or exc.status >= 500


async def with_retries(what: str, call: Any, attempts: int = 12) -> bool:
    """Run ``call()`` with backoff on transient errors; False when the object is gone (404/409).

    409 here means a delete precondition (uid) or a binding found the pod
    already changed: either way the object this call was about no longer exists.
    """
    delay = 0.2
    for attempt in range(attempts):
        try:
            await call()
            return True
        except ApiCallError as exc:
            if exc.status in (404, 409):
                return False
            if not retryable(exc) or attempt == attempts - 1:
                raise
            log.warning("%s: %s; retrying in %.1fs", what, exc, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 5.0)
    return False
