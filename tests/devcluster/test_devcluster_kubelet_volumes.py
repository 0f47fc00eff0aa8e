"""Volumes, users and Node roots of the process kubelet, as a pod in the dev cluster sees them.

Each pod's process runs in a private mount namespace with its volumes at their mountPath; what
the tests assert is what a user sees: the pod's phase, exit code, output and events.
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client

from runstate_dev.cluster import ControlPlane
from tests.devcluster.devcluster_helpers import (
    body,
    machine_file,
    pod_manifest,
    wait_for,
    wait_phase,
)


def _with_volumes(
    manifest: dict[str, Any],
    volumes: list[dict[str, Any]],
    mounts: list[dict[str, Any]],
) -> dict[str, Any]:
    manifest["spec"]["volumes"] = volumes
    manifest["spec"]["containers"][0]["volumeMounts"] = mounts
    return manifest


def _on_machine(path: str) -> bool:
    """Whether ``path`` exists in the machine's own filesystem (the test's view)."""
    return Path(path).exists()


def _secret(name: str, data: dict[str, str]) -> dict[str, Any]:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return {"metadata": {"name": name}, "data": encoded}


async def _output(
    core: client.CoreV1Api, plane: ControlPlane, name: str, phase: str = "Succeeded"
) -> str:
    pod = await wait_phase(core, name, {"Succeeded", "Failed"})
    text = (plane.pod_log_dir / f"default_{name}_{pod.metadata.uid}.log").read_text()
    assert pod.status.phase == phase, text
    return text


async def test_secret_and_config_map_item_at_a_sub_path(
    core: client.CoreV1Api, control_plane: ControlPlane, name: str
) -> None:
    await core.create_namespaced_secret(
        "default", body(client.V1Secret, _secret(name, {"id": "key-material"}))
    )
    await core.create_namespaced_config_map(
        "default",
        body(
            client.V1ConfigMap,
            {"metadata": {"name": name}, "data": {"app.conf": "level=debug", "x": "y"}},
        ),
    )
    script = (
        "cat /etc/creds/id; echo; stat -L -c %a /etc/creds/id; "
        "cat /etc/app/app.conf; echo; stat -c %a /etc/app/app.conf; ls /etc/app | wc -l; "
        "touch /etc/creds/new 2>/dev/null && echo writable || echo read-only"
    )
    manifest = _with_volumes(
        pod_manifest(name, script),
        [
            {"name": "creds", "secret": {"secretName": name, "defaultMode": 0o400}},
            {
                "name": "conf",
                "configMap": {"name": name, "items": [{"key": "app.conf", "path": "app.conf"}]},
            },
        ],
        [
            {"name": "creds", "mountPath": "/etc/creds"},
            {"name": "conf", "mountPath": "/etc/app/app.conf", "subPath": "app.conf"},
        ],
    )
    await core.create_namespaced_pod("default", body(client.V1Pod, manifest))
    lines = (await _output(core, control_plane, name)).split("\n")
    assert lines[:6] == ["key-material", "400", "level=debug", "644", "1", "read-only"]
    assert not _on_machine("/etc/creds") and not _on_machine("/etc/app")


async def test_empty_dir_is_fresh_and_a_read_only_mount_refuses_writes(
    core: client.CoreV1Api, control_plane: ControlPlane, name: str
) -> None:
    script = (
        "ls -A /scratch | wc -l; stat -c %a /scratch; echo kept > /scratch/f; cat /scratch/f; "
        "cat /ro/f; touch /ro/g 2>/dev/null && echo writable || echo refused"
    )
    manifest = _with_volumes(
        pod_manifest(name, script),
        [{"name": "scratch", "emptyDir": {}}],
        [
            {"name": "scratch", "mountPath": "/scratch"},
            {"name": "scratch", "mountPath": "/ro", "readOnly": True},
        ],
    )
    await core.create_namespaced_pod("default", body(client.V1Pod, manifest))
    assert (await _output(core, control_plane, name)).split("\n")[:5] == [
        "0",
        "777",
        "kept",
        "kept",
        "refused",
    ]
    assert not _on_machine("/scratch")


async def test_two_pods_see_their_own_secret_at_the_same_mount_path(
    core: client.CoreV1Api, control_plane: ControlPlane, name: str
) -> None:
    names = [f"{name}-a", f"{name}-b"]
    for pod_name in names:
        await core.create_namespaced_secret(
            "default", body(client.V1Secret, _secret(pod_name, {"token": pod_name}))
        )
    for pod_name in names:
        manifest = _with_volumes(
            # Both run at once: each sees its own secret while the other's is mounted.
            pod_manifest(pod_name, "sleep 1; cat /etc/creds/token"),
            [{"name": "creds", "secret": {"secretName": pod_name}}],
            [{"name": "creds", "mountPath": "/etc/creds"}],
        )
        await core.create_namespaced_pod("default", body(client.V1Pod, manifest))
    outputs = await asyncio.gather(*(_output(core, control_plane, n) for n in names))
    assert outputs == names
    assert not _on_machine("/etc/creds")


async def test_missing_secret_waits_in_container_creating_then_runs(
    core: client.CoreV1Api, control_plane: ControlPlane, name: str
) -> None:
    manifest = _with_volumes(
        pod_manifest(name, "cat /etc/creds/id"),
        [{"name": "creds", "secret": {"secretName": name}}],
        [{"name": "creds", "mountPath": "/etc/creds"}],
    )
    await core.create_namespaced_pod("default", body(client.V1Pod, manifest))

    async def failed_mount() -> Any:
        events = await core.list_namespaced_event(
            "default", field_selector=f"involvedObject.name={name}"
        )
        return [e for e in events.items if e.reason == "FailedMount"]

    events = await wait_for(failed_mount, f"a FailedMount event for {name}")
    assert events[0].message == (
        f'MountVolume.SetUp failed for volume "creds" : secret "{name}" not found'
    )
    assert events[0].type == "Warning" and events[0].source.component == "kubelet"
    pod = await core.read_namespaced_pod(name, "default")
    assert pod.status.phase == "Pending"
    assert pod.status.container_statuses[0].state.waiting.reason == "ContainerCreating"
    await core.create_namespaced_secret(
        "default", body(client.V1Secret, _secret(name, {"id": "late"}))
    )
    assert await _output(core, control_plane, name) == "late"


async def test_run_as_user_and_fs_group(
    core: client.CoreV1Api, control_plane: ControlPlane, name: str
) -> None:
    await core.create_namespaced_secret(
        "default", body(client.V1Secret, _secret(name, {"id": "for-the-group"}))
    )
    script = "id -u; id -g; id -G; stat -L -c '%a %u %g' /etc/creds/id; cat /etc/creds/id"
    manifest = _with_volumes(
        pod_manifest(name, script),
        [{"name": "creds", "secret": {"secretName": name, "defaultMode": 0o400}}],
        [{"name": "creds", "mountPath": "/etc/creds"}],
    )
    manifest["spec"]["securityContext"] = {"runAsUser": 1000, "fsGroup": 2000}
    manifest["spec"]["containers"][0]["securityContext"] = {"runAsGroup": 3000}
    await core.create_namespaced_pod("default", body(client.V1Pod, manifest))
    assert (await _output(core, control_plane, name)).split("\n")[:5] == [
        "1000",
        "3000",
        "3000 2000",
        "440 0 2000",
        "for-the-group",
    ]


async def test_run_as_non_root_without_a_user_is_refused(core: client.CoreV1Api, name: str) -> None:
    manifest = pod_manifest(name, "exit 0")
    manifest["spec"]["securityContext"] = {"runAsNonRoot": True}
    created = await core.create_namespaced_pod("default", body(client.V1Pod, manifest))

    async def waiting() -> Any:
        pod = await core.read_namespaced_pod(name, "default")
        statuses = pod.status.container_statuses or []
        return statuses and statuses[0].state.waiting

    state = await wait_for(waiting, f"{name} refused")
    assert state.reason == "CreateContainerConfigError"
    assert state.message == (
        "container has runAsNonRoot and image will run as root "
        f'(pod: "{name}_default({created.metadata.uid})", container: main)'
    )


async def test_host_root_is_per_node(
    core: client.CoreV1Api, control_plane: ControlPlane, name: str
) -> None:
    nodes = [f"{name}-x", f"{name}-y"]
    for node in nodes:
        await core.create_node(body(client.V1Node, {"metadata": {"name": node}}))
    try:

        async def run_on(node: str, suffix: str, script: str) -> str:
            manifest = _with_volumes(
                pod_manifest(f"{name}-{suffix}", script, node_name=node),
                [{"name": "host", "hostPath": {"path": "/", "type": "Directory"}}],
                [{"name": "host", "mountPath": "/host"}],
            )
            manifest["spec"]["containers"][0]["securityContext"] = {"privileged": True}
            await core.create_namespaced_pod("default", body(client.V1Pod, manifest))
            return await _output(core, control_plane, f"{name}-{suffix}")

        write = "chroot /host sh -c 'echo x > /etc/runstate-test && cat /etc/runstate-test'"
        assert await run_on(nodes[0], "write", write) == "x\n"
        upper = control_plane.kubelet_state_dir / "nodes" / nodes[0] / "upper"
        assert (upper / "etc" / "runstate-test").read_text() == "x\n"
        assert not _on_machine("/etc/runstate-test")
        look = "test -e /host/etc/runstate-test && echo seen || echo absent"
        assert await run_on(nodes[1], "other", look) == "absent\n"
        assert await run_on(nodes[0], "again", look) == "seen\n"
    finally:
        for node in nodes:
            await core.delete_node(node)


async def test_service_account_token_is_mounted_in_every_pod(
    core: client.CoreV1Api, control_plane: ControlPlane, name: str
) -> None:
    # The ServiceAccount admission plugin adds the account's token Secret as a volume.
    script = "cd /var/run/secrets/kubernetes.io/serviceaccount && cat namespace; echo; ls"
    await core.create_namespaced_pod("default", body(client.V1Pod, pod_manifest(name, script)))
    assert (await _output(core, control_plane, name)).split("\n")[:4] == [
        "default",
        "ca.crt",
        "namespace",
        "token",
    ]


async def test_termination_message_file_and_hostname(
    core: client.CoreV1Api, control_plane: ControlPlane, name: str
) -> None:
    script = "hostname; echo 'all done' > /dev/termination-log"
    before = machine_file("/dev/termination-log")
    await core.create_namespaced_pod("default", body(client.V1Pod, pod_manifest(name, script)))
    assert await _output(core, control_plane, name) == f"{name}\n"
    pod = await core.read_namespaced_pod(name, "default")
    assert pod.status.container_statuses[0].state.terminated.message == "all done\n"
    assert machine_file("/dev/termination-log") == before


async def test_host_path_type_check_fails_the_mount(core: client.CoreV1Api, name: str) -> None:
    missing = f"/{name}-missing"
    manifest = _with_volumes(
        pod_manifest(name, "exit 0"),
        [{"name": "data", "hostPath": {"path": missing, "type": "Directory"}}],
        [{"name": "data", "mountPath": "/data"}],
    )
    await core.create_namespaced_pod("default", body(client.V1Pod, manifest))

    async def failed_mount() -> Any:
        events = await core.list_namespaced_event(
            "default", field_selector=f"involvedObject.name={name}"
        )
        return [e.message for e in events.items if e.reason == "FailedMount"]

    assert await wait_for(failed_mount, f"a FailedMount event for {name}") == [
        f'MountVolume.SetUp failed for volume "data" : '
        f"hostPath type check failed: {missing} is not a directory"
    ]
    await core.delete_namespaced_pod(name, "default")
