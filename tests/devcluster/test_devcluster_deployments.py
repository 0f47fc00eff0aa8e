"""Deployments in the dev cluster: the deployment and replicaset controllers make ReplicaSets
and pods, the process kubelet runs them, and readiness and liveness probes decide readiness
and restarts, as `kubectl rollout status` and a chart's Deployment rely on."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from typing import Any

from kubernetes_asyncio import client

from runstate_dev._proc import free_port
from runstate_dev.cluster import ControlPlane
from runstate_dev.imagestore import ImageConfig, ImageStore
from tests.devcluster import testimage
from tests.devcluster.devcluster_helpers import body, wait_for, wait_gone


def _deployment(name: str, container: dict[str, Any], **template_spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 3,
                    "containers": [{"name": "main", **container}],
                    **template_spec,
                },
            },
        },
    }


async def _pods(core: client.CoreV1Api, name: str) -> list[Any]:
    listed = await core.list_namespaced_pod("default", label_selector=f"app={name}")
    return [p for p in listed.items if not p.metadata.deletion_timestamp]


def _ready(pod: Any) -> bool:
    conditions = pod.status.conditions or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


async def _available(apps: client.AppsV1Api, name: str, generation: int = 1) -> Any:
    async def probe() -> Any:
        deployment = await apps.read_namespaced_deployment(name, "default")
        status = deployment.status
        done = (
            status.observed_generation == generation
            and status.available_replicas == 1
            and status.updated_replicas == 1
            and (status.replicas or 0) == 1
        )
        return deployment if done else None

    return await wait_for(probe, f"Deployment {name} generation {generation} available", 60)


def _rollout_status(
    kubectl: str, plane: ControlPlane, name: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            kubectl,
            "--kubeconfig",
            str(plane.kubeconfig),
            "rollout",
            "status",
            f"deployment/{name}",
            "--timeout=60s",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=90,
    )


async def test_a_deployment_runs_and_rolls_out(
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
    control_plane: ControlPlane,
    kubectl: str,
    name: str,
) -> None:
    manifest = _deployment(name, {"image": "busybox", "command": ["sleep", "3600"]})
    await apps.create_namespaced_deployment("default", body(client.V1Deployment, manifest))
    await _available(apps, name)
    sets = (await apps.list_namespaced_replica_set("default", label_selector=f"app={name}")).items
    assert [rs.metadata.owner_references[0].name for rs in sets] == [name]
    (first,) = await _pods(core, name)
    assert first.status.phase == "Running" and _ready(first)
    assert first.metadata.owner_references[0].name == sets[0].metadata.name
    result = await asyncio.to_thread(_rollout_status, kubectl, control_plane, name)
    assert result.returncode == 0, result.stderr
    assert "successfully rolled out" in result.stdout

    # A new template: a new ReplicaSet, its pod replaces the old one.
    patch = {"spec": {"template": {"metadata": {"annotations": {"rev": "2"}}}}}
    await apps.patch_namespaced_deployment(name, "default", patch)
    result = await asyncio.to_thread(_rollout_status, kubectl, control_plane, name)
    assert result.returncode == 0, result.stderr
    await _available(apps, name, generation=2)

    async def replaced() -> Any:
        pods = await _pods(core, name)
        fresh = [p for p in pods if p.metadata.name != first.metadata.name]
        return fresh if len(pods) == 1 and fresh and _ready(fresh[0]) else None

    (second,) = await wait_for(replaced, f"the new pod of {name} alone and ready")
    assert second.metadata.annotations["rev"] == "2"
    await wait_gone(
        lambda: core.read_namespaced_pod(first.metadata.name, "default"), "the old pod", 30
    )
    sets = (await apps.list_namespaced_replica_set("default", label_selector=f"app={name}")).items
    assert len(sets) == 2

    # Deleting the Deployment takes its ReplicaSets and pods along (garbage collector).
    await apps.delete_namespaced_deployment(name, "default", propagation_policy="Foreground")

    async def all_gone() -> bool:
        return not await _pods(core, name)

    await wait_for(all_gone, f"pods of {name} gone", 60)


def _server(port: int, delay: float) -> list[str]:
    """A web server that starts answering /ready only after ``delay`` seconds."""
    return [
        "/bin/sh",
        "-c",
        f"mkdir -p www && cd www && python3 -m http.server {port} --bind 127.0.0.1 & "
        f"sleep {delay}; echo ok > www/ready; wait",
    ]


async def test_readiness_probe_gates_availability(
    core: client.CoreV1Api, apps: client.AppsV1Api, name: str
) -> None:
    port = free_port()
    container = {
        "image": "busybox",
        "command": _server(port, 3),
        "ports": [{"name": "http", "containerPort": port}],
        "readinessProbe": {
            "httpGet": {"path": "/ready", "port": "http"},
            "periodSeconds": 1,
            "failureThreshold": 1,
        },
    }
    await apps.create_namespaced_deployment(
        "default", body(client.V1Deployment, _deployment(name, container))
    )

    async def running_unready() -> Any:
        pods = await _pods(core, name)
        return pods[0] if pods and pods[0].status.phase == "Running" else None

    pod = await wait_for(running_unready, f"pod of {name} running")
    assert not _ready(pod) and pod.status.container_statuses[0].ready is False
    deployment = await apps.read_namespaced_deployment(name, "default")
    assert not deployment.status.available_replicas
    await _available(apps, name)
    (pod,) = await _pods(core, name)
    assert _ready(pod) and pod.status.container_statuses[0].ready is True
    events = await core.list_namespaced_event(
        "default", field_selector=f"involvedObject.name={pod.metadata.name}"
    )
    assert any(
        e.reason == "Unhealthy" and e.message.startswith("Readiness probe failed: HTTP probe")
        for e in events.items
    )
    await apps.delete_namespaced_deployment(name, "default")


async def test_liveness_probe_failure_kills_the_container(
    core: client.CoreV1Api, control_plane: ControlPlane, name: str
) -> None:
    port = free_port()  # nothing listens there
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 2,
            "containers": [
                {
                    "name": "main",
                    "image": "busybox",
                    "command": ["sleep", "3600"],
                    "livenessProbe": {
                        "tcpSocket": {"port": port},
                        "periodSeconds": 1,
                        "failureThreshold": 2,
                    },
                }
            ],
        },
    }
    await core.create_namespaced_pod("default", body(client.V1Pod, pod))

    async def failed() -> Any:
        found = await core.read_namespaced_pod(name, "default")
        return found if found.status.phase == "Failed" else None

    found = await wait_for(failed, f"pod {name} killed by its liveness probe")
    assert found.status.container_statuses[0].state.terminated.exit_code == 143  # SIGTERM
    events = await core.list_namespaced_event(
        "default", field_selector=f"involvedObject.name={name}"
    )
    reasons = [e.reason for e in events.items]
    assert reasons.count("Unhealthy") >= 2 and "Killing" in reasons


async def test_exec_probe_runs_inside_the_image(
    core: client.CoreV1Api, image_store: ImageStore, name: str
) -> None:
    """The exec probe reads a file only the image has: it runs in the container's root."""
    reference = f"runstate.test/probe-{uuid.uuid4().hex[:8]}:1"
    await asyncio.to_thread(testimage.publish, image_store, ImageConfig(reference=reference))
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "main",
                    "image": reference,
                    "command": ["sleep", "3600"],
                    "readinessProbe": {
                        "exec": {"command": ["cat", testimage.MARKER]},
                        "periodSeconds": 1,
                    },
                }
            ],
        },
    }
    await core.create_namespaced_pod("default", body(client.V1Pod, pod))

    async def ready() -> bool:
        return _ready(await core.read_namespaced_pod(name, "default"))

    await wait_for(ready, f"pod {name} ready by its exec probe")
    await core.delete_namespaced_pod(name, "default")


async def test_restart_policy_always_restarts_in_place_with_back_off(
    core: client.CoreV1Api, control_plane: ControlPlane, name: str
) -> None:
    """A crashing container stays one pod: restarted at once, then in CrashLoopBackOff."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Always",
            "containers": [
                {
                    "name": "main",
                    "image": "busybox",
                    "command": ["/bin/sh", "-c", "echo run; exit 3"],
                }
            ],
        },
    }
    await core.create_namespaced_pod("default", body(client.V1Pod, pod))

    async def backing_off() -> Any:
        found = await core.read_namespaced_pod(name, "default")
        waiting = [s.state.waiting for s in found.status.container_statuses or []]
        return found if waiting and waiting[0] and waiting[0].reason == "CrashLoopBackOff" else None

    found = await wait_for(backing_off, f"pod {name} in CrashLoopBackOff")
    (status,) = found.status.container_statuses
    assert found.status.phase == "Running"
    assert status.restart_count == 1  # restarted once at once, now waiting 10 s
    assert status.last_state.terminated.exit_code == 3
    assert status.state.waiting.message.startswith("back-off 10s restarting failed container=main")
    log = control_plane.pod_log_dir / f"default_{name}_{found.metadata.uid}.log"
    assert (await asyncio.to_thread(log.read_text)).splitlines() == ["run", "run"]
    await core.delete_namespaced_pod(name, "default")
    await wait_gone(lambda: core.read_namespaced_pod(name, "default"), f"pod {name}", 30)


async def test_restart_policy_on_failure_runs_until_success(
    core: client.CoreV1Api, tmp_path: Any, name: str
) -> None:
    marker = tmp_path / "ran-once"
    script = f"test -e {marker} && exit 0; touch {marker}; exit 1"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "OnFailure",
            "containers": [
                {"name": "main", "image": "busybox", "command": ["/bin/sh", "-c", script]}
            ],
        },
    }
    await core.create_namespaced_pod("default", body(client.V1Pod, pod))

    async def over() -> Any:
        found = await core.read_namespaced_pod(name, "default")
        return found if found.status.phase in ("Succeeded", "Failed") else None

    found = await wait_for(over, f"pod {name} over")
    (status,) = found.status.container_statuses
    assert found.status.phase == "Succeeded"
    assert status.restart_count == 1
    assert status.last_state.terminated.exit_code == 1
    assert status.state.terminated.exit_code == 0
