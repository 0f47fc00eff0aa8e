"""The process kubelet run in-process against a control plane that has none of its own.

Covers what a restarted kubelet finds: terminal pods (never re-run), pods left
Running by a previous kubelet (marked lost), and its own shutdown (pods killed).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from unittest import mock

import pytest
import pytest_asyncio
from kubernetes_asyncio import client

from runstate_dev.cluster import ControlPlane
from runstate_dev.kubelet import LOST_REASON, ProcessKubelet
from runstate_dev.kubelet.informer import _Expired
from tests.devcluster.devcluster_helpers import (
    api_client_for,
    body,
    pod_manifest,
    polled,
    process_alive,
    read_pid,
    start_plane,
    wait_for,
    wait_phase,
)

NODE = "runstate-local"


@pytest.fixture(scope="module")
def bare_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    plane = start_plane(tmp_path_factory.mktemp("bare"), kubelet=False)
    try:
        yield plane
    finally:
        plane.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def bare_api(bare_plane: ControlPlane) -> AsyncIterator[client.ApiClient]:
    api_client = await api_client_for(bare_plane.kubeconfig)
    async with api_client:
        yield api_client


async def test_restarted_kubelet(bare_api: client.ApiClient, tmp_path: Path) -> None:
    core = client.CoreV1Api(bare_api)
    ran = tmp_path / "finished-ran"
    pid_file = tmp_path / "pid"

    # Finished under a previous kubelet: must never run again.
    await core.create_namespaced_pod(
        "default", body(client.V1Pod, pod_manifest("finished", f"touch {ran}", node_name=NODE))
    )
    await core.patch_namespaced_pod_status(
        "finished", "default", {"status": {"phase": "Succeeded"}}
    )
    # Running under a previous kubelet, whose process died with it.
    await core.create_namespaced_pod(
        "default", body(client.V1Pod, pod_manifest("lost", "sleep 300", node_name=NODE))
    )
    await core.patch_namespaced_pod_status(
        "lost",
        "default",
        {
            "status": {
                "phase": "Running",
                "containerStatuses": [
                    {
                        "name": "main",
                        "image": "busybox",
                        "imageID": "",
                        "ready": True,
                        "restartCount": 0,
                        "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
                    }
                ],
            }
        },
    )
    # Bound but never started, and not bound at all: both run.
    await core.create_namespaced_pod(
        "default",
        body(
            client.V1Pod,
            pod_manifest("fresh", f"echo $$$$ > {pid_file}; exec sleep 300", node_name=NODE),
        ),
    )
    await core.create_namespaced_pod(
        "default", body(client.V1Pod, pod_manifest("unbound", "exit 0"))
    )

    ready = tmp_path / "ready"
    kubelet = ProcessKubelet(bare_api, NODE, ready_file=ready)
    watch = asyncio.create_task(kubelet.run())
    try:
        lost = await wait_phase(core, "lost", {"Failed"})
        terminated = lost.status.container_statuses[0].state.terminated
        assert (terminated.exit_code, terminated.reason) == (137, LOST_REASON)
        assert ready.exists()

        unbound = await wait_phase(core, "unbound", {"Succeeded"})
        assert unbound.spec.node_name == NODE

        await wait_phase(core, "fresh", {"Running"})
        pid: int = await wait_for(polled(lambda: read_pid(pid_file)), "pid of fresh")

        finished = await core.read_namespaced_pod("finished", "default")
        assert finished.status.phase == "Succeeded"
        assert not ran.exists()
    finally:
        watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch
        await kubelet.shutdown()
    await wait_for(polled(lambda: not process_alive(pid)), f"pid {pid} killed at shutdown")


def test_watch_errors_and_bookmarks() -> None:
    kubelet = ProcessKubelet(mock.MagicMock(), NODE)
    with pytest.raises(_Expired):
        kubelet._on_event({"type": "ERROR", "object": {"code": 410}}, "5")
    bookmark = {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "9"}}}
    assert kubelet._on_event(bookmark, "5") == "9"
