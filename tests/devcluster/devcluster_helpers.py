"""Helpers shared by the dev-cluster tests: pod manifests, polling waits, SSH test hosts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest
from kubernetes_asyncio import client, config

from runstate_dev import build
from runstate_dev._proc import ComponentError
from runstate_dev.cluster import ControlPlane
from runstate_dev.hosts import HostFleet
from tests.availability import built_where_required, unavailable

T = TypeVar("T")
M = TypeVar("M")

FileMark = tuple[int, int, int] | None


def machine_file(path: str) -> FileMark:
    """What the machine's own ``path`` is (inode, mtime, size), or None when it does not exist:
    taken before and after a pod runs, equal marks show the pod never wrote the machine's file
    (a stale one, say from running `runstate exec` by hand, is left as it was)."""
    try:
        found = Path(path).stat()
    except FileNotFoundError:
        return None
    return (found.st_ino, found.st_mtime_ns, found.st_size)


def require_binaries() -> Path:
    """The control-plane bin dir: cached, or built where tests.availability requires it."""
    if build.binaries_present():
        return build.kube_bin_dir()
    return built_where_required(
        build.ensure_binaries,
        f"kube-apiserver v{build.KUBE_VERSION} not cached in {build.kube_bin_dir()}: "
        "run `python -m runstate_dev build` (takes several minutes)",
    )


def start_fleet(state_dir: Path, count: int) -> HostFleet:
    """Real sshd hosts that die with the test process; unavailable() when they cannot start."""
    try:
        return HostFleet(state_dir, die_with_parent=True).up(count)
    except (ComponentError, build.BuildError) as exc:
        unavailable(f"SSH test hosts cannot start: {exc}")


def start_plane(
    state_dir: Path, *, kubelet: bool = True, images_dir: Path | None = None
) -> ControlPlane:
    bin_dir = require_binaries()
    try:
        return ControlPlane(
            state_dir,
            bin_dir=bin_dir,
            kubelet=kubelet,
            die_with_parent=True,
            images_dir=images_dir,
        ).start()
    except Exception as exc:
        pytest.fail(f"dev cluster did not start: {exc}")


def body(model: type[M], manifest: dict[str, Any]) -> M:
    """A JSON manifest as the request body that kubernetes_asyncio's stubs type as ``model``.

    The stubs type every body as its model class (``V1Pod``, ``V1Secret`` ...), but the client
    sends a dict as it is (``ApiClient.sanitize_for_serialization``), as the operator and the
    process kubelet send theirs; the tests keep writing the plain manifests the API server
    reads. Only the static type changes: the same dict goes over the wire."""
    return cast(M, manifest)


def pod_manifest(
    name: str,
    script: str,
    *,
    env: list[dict[str, Any]] | None = None,
    deadline: int | None = None,
    owner: dict[str, Any] | None = None,
    node_name: str | None = None,
    grace: int | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [
            {
                "name": "main",
                "image": "busybox",
                "command": ["/bin/sh", "-c", script],
                "terminationMessagePolicy": "FallbackToLogsOnError",
                "env": env or [],
            }
        ],
    }
    if deadline is not None:
        spec["activeDeadlineSeconds"] = deadline
    if node_name is not None:
        spec["nodeName"] = node_name
    if grace is not None:
        spec["terminationGracePeriodSeconds"] = grace
    metadata: dict[str, Any] = {"name": name}
    if owner is not None:
        metadata["ownerReferences"] = [owner]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


async def wait_for(probe: Callable[[], Awaitable[Any]], what: str, within: float = 30.0) -> Any:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` on timeout."""
    deadline = time.monotonic() + within
    last: Any = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(0.1)
    pytest.fail(f"timed out after {within:.0f}s waiting for {what} (last: {last!r})")


async def wait_phase(
    core: client.CoreV1Api,
    name: str,
    phases: set[str],
    namespace: str = "default",
    within: float = 30.0,
) -> Any:
    async def probe() -> Any:
        pod = await core.read_namespaced_pod(name, namespace)
        return pod if pod.status.phase in phases else None

    return await wait_for(probe, f"pod {namespace}/{name} in {sorted(phases)}", within)


async def wait_gone(
    probe_read: Callable[[], Awaitable[Any]], what: str, within: float = 30.0
) -> None:
    async def probe() -> bool:
        try:
            await probe_read()
        except client.ApiException as exc:
            if exc.status == 404:
                return True
            raise
        return False

    await wait_for(probe, f"{what} to disappear", within)


async def api_client_for(kubeconfig: Path) -> client.ApiClient:
    configuration = client.Configuration()
    await config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    return client.ApiClient(configuration)


def polled(check: Callable[[], T]) -> Callable[[], Awaitable[T]]:
    """A plain check as a probe for ``wait_for``."""

    async def probe() -> T:
        return check()

    return probe


def process_alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie has exited, only its parent has not reaped it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rfind(")") + 2 :].split()[0] != "Z"


def read_pid(path: Path) -> int | None:
    text = path.read_text().strip() if path.exists() else ""
    return int(text) if text else None
