"""Kubernetes client helpers for the benchmarks: kubectl, an async API client, checked raw
calls, namespaces ready for pods, a bare pod, and waiting for an Event.

Owns talking to the API server the same way in every bench (raw responses, no model
decoding, so the client's own cost stays small). Must not create any benchmark's objects
beyond namespaces and CRDs.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Awaitable
from typing import Any

from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config

from harness.waiting import wait_until
from harness.workdir import ROOT


def kubectl(kubeconfig: str, *args: str, input: str | None = None) -> str:
    return subprocess.run(
        ["kubectl", "--kubeconfig", kubeconfig, *args],
        input=input,
        text=True,
        capture_output=True,
        check=True,
    ).stdout


async def kubectl_retrying(kubeconfig: str, *args: str, input: str | None = None) -> None:
    """kubectl, retried: a fresh API server can answer the first discovery calls with errors."""
    for attempt in range(5):
        try:
            await asyncio.to_thread(kubectl, kubeconfig, *args, input=input)
            return
        except subprocess.CalledProcessError as exc:
            if attempt == 4:
                raise RuntimeError(f"kubectl {' '.join(args)}: {exc.stderr}") from exc
            await asyncio.sleep(1)


def bare_pod(name: str, node: str | None = None) -> dict[str, Any]:
    """A pod that runs `sh -c true`; bound to `node` when given (no scheduler needed)."""
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "containers": [{"name": "c", "image": "none", "command": ["/bin/sh", "-c", "true"]}],
    }
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


async def checked(call: Awaitable[Any]) -> bytes:
    """The body of a raw (`_preload_content=False`) call; RuntimeError unless it is 2xx."""
    resp = await call
    try:
        body: bytes = await resp.read()
    finally:
        resp.release()
    if not 200 <= resp.status < 300:
        raise RuntimeError(f"API call failed: {resp.status} {body[:300]!r}")
    return body


async def items(call: Awaitable[Any]) -> list[dict[str, Any]]:
    """The items of a raw list call."""
    return list(json.loads(await checked(call))["items"])


async def api_client(kubeconfig: str, *, pool: int) -> k8s.ApiClient:
    """An API client with a connection pool of `pool`."""
    cfg = k8s.Configuration()
    await k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    cfg.connection_pool_maxsize = pool
    return k8s.ApiClient(cfg)


async def wait_default_sa(core: Any, namespace: str, limit: float = 30) -> None:
    """Until the namespace's default ServiceAccount has its token (pods need it)."""

    async def ready() -> bool:
        resp = await core.read_namespaced_service_account(
            "default", namespace, _preload_content=False
        )
        body = await resp.read()
        resp.release()
        return resp.status == 200 and bool(json.loads(body).get("secrets"))

    await wait_until(ready, f"the default ServiceAccount in {namespace}", limit=limit)


async def apply_crds(kubeconfig: str, *, extra: tuple[dict[str, Any], ...] = ()) -> None:
    """runstate's CRDs and `extra` ones applied, and Established."""
    await kubectl_retrying(kubeconfig, "apply", "-f", str(ROOT / "crds"))
    names = ["runs.runstate.dev"]
    for crd in extra:
        await kubectl_retrying(kubeconfig, "apply", "-f", "-", input=json.dumps(crd))
        names.append(str(crd["metadata"]["name"]))
    for name in names:
        await kubectl_retrying(kubeconfig, "wait", "--for=condition=Established", f"crd/{name}")


async def prepare_cluster(
    kubeconfig: str,
    *,
    pool: int,
    namespaces: tuple[str, ...],
    crds: tuple[dict[str, Any], ...] = (),
) -> k8s.ApiClient:
    """CRDs in, an API client, and `namespaces` created with their default ServiceAccount."""
    await apply_crds(kubeconfig, extra=crds)
    api = await api_client(kubeconfig, pool=pool)
    core: Any = k8s.CoreV1Api(api)
    for ns in namespaces:
        await checked(core.create_namespace({"metadata": {"name": ns}}, _preload_content=False))
        await wait_default_sa(core, ns)
    return api


async def wait_event(
    core: Any, namespace: str, *, involved: str, reason: str, limit: float = 30
) -> None:
    """Until an Event with `reason` about object `involved` exists in `namespace`."""

    async def posted() -> bool:
        events = await items(
            core.list_namespaced_event(
                namespace,
                field_selector=f"involvedObject.name={involved},reason={reason}",
                _preload_content=False,
            )
        )
        return bool(events)

    await wait_until(posted, f"a {reason} Event for {involved}", limit=limit, every=0.2)
