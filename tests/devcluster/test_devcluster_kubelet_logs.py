"""`kubectl logs` on the dev cluster: the process kubelet's API, reached through the API server.

The API server finds the kubelet at the port its Node reports and calls it with its client
certificate; the kubelet answers from each container instance's log file. Everything here goes
through the real `kubectl`, but for the kubelet's own refusals, which a client sees only when it
calls the kubelet's port directly.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client

from runstate_dev import pki
from runstate_dev.cluster import ControlPlane
from tests.devcluster.devcluster_helpers import body, pod_manifest, wait_for, wait_phase


def kubectl_logs(kubectl: str, plane: ControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [kubectl, "--kubeconfig", str(plane.kubeconfig), "logs", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def logs_of(kubectl: str, plane: ControlPlane, *args: str) -> str:
    """What `kubectl logs ARGS` prints; fails the test with kubectl's error when it fails."""
    done = await asyncio.to_thread(kubectl_logs, kubectl, plane, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


async def create(core: client.CoreV1Api, manifest: dict[str, Any]) -> None:
    await core.create_namespaced_pod("default", body(client.V1Pod, manifest))


async def test_logs_show_a_containers_output_with_the_options_kubectl_sends(
    core: client.CoreV1Api, control_plane: ControlPlane, kubectl: str, name: str
) -> None:
    await create(core, pod_manifest(name, "echo one; echo two >&2; echo three; printf four"))
    await wait_phase(core, name, {"Succeeded"})

    assert await logs_of(kubectl, control_plane, name) == "one\ntwo\nthree\nfour\n"
    assert await logs_of(kubectl, control_plane, name, "-c", "main") == "one\ntwo\nthree\nfour\n"
    assert await logs_of(kubectl, control_plane, name, "--tail=2") == "three\nfour\n"
    assert await logs_of(kubectl, control_plane, name, "--limit-bytes=6") == "one\ntw"
    stamped = (await logs_of(kubectl, control_plane, name, "--timestamps")).splitlines()
    assert [line.split(" ", 1)[1] for line in stamped] == ["one", "two", "three", "four"]
    assert all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z ", line) for line in stamped)
    assert await logs_of(kubectl, control_plane, name, "--since=1h") == "one\ntwo\nthree\nfour\n"
    await asyncio.sleep(2)
    assert await logs_of(kubectl, control_plane, name, "--since=1s") == ""


async def test_follow_streams_lines_as_they_are_printed_until_the_container_ends(
    core: client.CoreV1Api, control_plane: ControlPlane, kubectl: str, name: str
) -> None:
    await create(core, pod_manifest(name, "for i in 1 2 3; do echo line-$i; sleep 1; done"))
    await wait_phase(core, name, {"Running"})
    follower = await asyncio.create_subprocess_exec(
        kubectl,
        "--kubeconfig",
        str(control_plane.kubeconfig),
        "logs",
        "-f",
        name,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert follower.stdout is not None
    first = await asyncio.wait_for(follower.stdout.readline(), 10)
    assert first == b"line-1\n"
    pod = await core.read_namespaced_pod(name, "default")
    assert pod.status.phase == "Running", "the first line came only after the container ended"
    rest, errors = await asyncio.wait_for(follower.communicate(), 20)
    assert follower.returncode == 0, errors
    assert rest == b"line-2\nline-3\n"
    pod = await core.read_namespaced_pod(name, "default")
    assert pod.status.phase == "Succeeded"


async def test_previous_shows_the_instance_before_a_restart(
    core: client.CoreV1Api, control_plane: ControlPlane, kubectl: str, name: str, tmp_path: Path
) -> None:
    counter = tmp_path / "count"
    script = (
        f"n=$(( $(cat {counter} 2>/dev/null || echo 0) + 1 )); echo $n > {counter}; "
        "echo instance-$n; if [ $n -ge 2 ]; then exec sleep 300; fi; exit 3"
    )
    manifest = pod_manifest(name, script)
    manifest["spec"]["restartPolicy"] = "OnFailure"
    manifest["spec"]["terminationGracePeriodSeconds"] = 0
    await create(core, manifest)

    async def restarted_and_running() -> bool:
        pod = await core.read_namespaced_pod(name, "default")
        statuses = pod.status.container_statuses or []
        return bool(statuses) and statuses[0].restart_count == 1 and bool(statuses[0].state.running)

    await wait_for(restarted_and_running, f"pod {name} running again after one restart")
    try:
        assert await logs_of(kubectl, control_plane, name) == "instance-2\n"
        assert await logs_of(kubectl, control_plane, name, "--previous") == "instance-1\n"
    finally:
        await core.delete_namespaced_pod(name, "default", grace_period_seconds=0)


async def test_previous_without_a_restart_and_unknown_names_get_kubectls_errors(
    core: client.CoreV1Api, control_plane: ControlPlane, kubectl: str, name: str
) -> None:
    await create(core, pod_manifest(name, "echo once"))
    await wait_phase(core, name, {"Succeeded"})

    previous = await asyncio.to_thread(kubectl_logs, kubectl, control_plane, name, "--previous")
    assert previous.returncode != 0
    assert f'previous terminated container "main" in pod "{name}" not found' in previous.stderr
    unknown = await asyncio.to_thread(kubectl_logs, kubectl, control_plane, name, "-c", "nope")
    assert unknown.returncode != 0
    assert f"container nope is not valid for pod {name}" in unknown.stderr
    missing = await asyncio.to_thread(kubectl_logs, kubectl, control_plane, f"{name}-missing")
    assert missing.returncode != 0
    assert f'pods "{name}-missing" not found' in missing.stderr


async def test_containers_the_kubelet_does_not_run_have_no_logs(
    core: client.CoreV1Api, control_plane: ControlPlane, kubectl: str, name: str
) -> None:
    """The process kubelet runs a pod's first container only: `-c` picks it out of two, and
    the other one and an init container answer as a real kubelet's containers without a
    status do."""
    manifest = pod_manifest(name, "echo from-main")
    spec = manifest["spec"]
    spec["containers"].append({**spec["containers"][0], "name": "second"})
    spec["initContainers"] = [{**spec["containers"][0], "name": "setup"}]
    await create(core, manifest)
    await wait_phase(core, name, {"Succeeded"})

    assert await logs_of(kubectl, control_plane, name, "-c", "main") == "from-main\n"
    for other in ("second", "setup"):
        done = await asyncio.to_thread(kubectl_logs, kubectl, control_plane, name, "-c", other)
        assert done.returncode != 0
        assert f'container "{other}" in pod "{name}" is not available' in done.stderr


def kubelet_url(plane: ControlPlane, path: str) -> str:
    node = plane.api("GET", f"/api/v1/nodes/{plane.node_name}")
    port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
    addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
    return f"https://{addresses['InternalIP']}:{port}{path}"


def kubelet_answer(url: str, context: ssl.SSLContext) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10, context=context) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def client_context(plane: ControlPlane, cert: str | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(plane.ca_file))
    if cert is not None:
        directory = plane.state_dir / "pki"
        context.load_cert_chain(str(directory / f"{cert}.crt"), str(directory / f"{cert}.key"))
    return context


@pytest.mark.timeout(120)
async def test_the_kubelet_serves_only_the_api_servers_client_certificate(
    core: client.CoreV1Api, control_plane: ControlPlane, name: str
) -> None:
    await create(core, pod_manifest(name, "echo secret-output"))
    await wait_phase(core, name, {"Succeeded"})
    url = kubelet_url(control_plane, f"/containerLogs/default/{name}/main")
    stranger = f"stranger-{int(time.time() * 1000)}"
    await asyncio.to_thread(
        pki.issue, control_plane.state_dir / "pki", stranger, subject=f"/CN={stranger}"
    )

    anonymous = await asyncio.to_thread(kubelet_answer, url, client_context(control_plane))
    assert anonymous[0] == 401
    other = await asyncio.to_thread(kubelet_answer, url, client_context(control_plane, stranger))
    assert other[0] == 403
    assert "secret-output" not in anonymous[1] + other[1]

    apiserver = client_context(control_plane, "apiserver-kubelet-client")
    assert await asyncio.to_thread(kubelet_answer, url, apiserver) == (200, "secret-output\n")
    gone_pod = kubelet_url(control_plane, f"/containerLogs/default/{name}-x/main")
    assert await asyncio.to_thread(kubelet_answer, gone_pod, apiserver) == (
        404,
        f'pod "{name}-x" does not exist',
    )
    gone_container = kubelet_url(control_plane, f"/containerLogs/default/{name}/nope")
    assert await asyncio.to_thread(kubelet_answer, gone_container, apiserver) == (
        404,
        f'container "nope" not found in pod "{name}"',
    )
