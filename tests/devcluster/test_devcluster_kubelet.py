"""The process kubelet inside a running dev cluster: pods become real local processes."""

from __future__ import annotations

import asyncio
import base64
import os
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client

from runstate_dev import runnerroot
from runstate_dev.cluster import ControlPlane
from runstate_dev.kubelet import DEADLINE_MESSAGE
from tests.devcluster.devcluster_helpers import (
    body,
    pod_manifest,
    polled,
    process_alive,
    read_pid,
    wait_for,
    wait_gone,
    wait_phase,
)

# Like a real kubelet, the process kubelet expands $(VAR) in command and args,
# where "$$" stands for "$": the shell's own "$$" is written "$$$$".


async def _running_pid(core: client.CoreV1Api, name: str, pid_file: Path) -> int:
    await wait_phase(core, name, {"Running"})

    found: int = await wait_for(polled(lambda: read_pid(pid_file)), f"pid file of {name}")
    return found


async def test_failed_pod_reports_exit_code_and_output(core: client.CoreV1Api, name: str) -> None:
    await core.create_namespaced_pod(
        "default", body(client.V1Pod, pod_manifest(name, "echo hi; exit 3"))
    )
    pod = await wait_phase(core, name, {"Failed", "Succeeded"})
    assert pod.status.phase == "Failed"
    assert pod.spec.node_name == "runstate-local"  # bound like a scheduler would
    terminated = pod.status.container_statuses[0].state.terminated
    assert terminated.exit_code == 3
    assert terminated.reason == "Error"
    assert "hi" in terminated.message
    assert terminated.started_at is not None and terminated.finished_at is not None
    assert pod.status.start_time is not None
    assert pod.status.host_ip == "127.0.0.1" and pod.status.pod_ip == "127.0.0.1"


async def test_successful_pod_completes(core: client.CoreV1Api, name: str) -> None:
    await core.create_namespaced_pod(
        "default", body(client.V1Pod, pod_manifest(name, "sleep 0.3; echo done"))
    )
    pod = await wait_phase(core, name, {"Running"})
    assert pod.status.container_statuses[0].state.running.started_at is not None
    assert {c.type for c in pod.status.conditions if c.status == "True"} >= {
        "PodScheduled",
        "Initialized",
        "ContainersReady",
        "Ready",
    }
    pod = await wait_phase(core, name, {"Failed", "Succeeded"})
    assert pod.status.phase == "Succeeded"
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (0, "Completed")
    assert not terminated.message  # output is only reported for failures


async def test_signal_death_is_128_plus_signal(core: client.CoreV1Api, name: str) -> None:
    await core.create_namespaced_pod(
        "default", body(client.V1Pod, pod_manifest(name, "kill -9 $$$$"))
    )
    pod = await wait_phase(core, name, {"Failed", "Succeeded"})
    assert pod.status.container_statuses[0].state.terminated.exit_code == 137


async def test_command_not_found_fails_with_start_error(core: client.CoreV1Api, name: str) -> None:
    manifest = pod_manifest(name, "")
    manifest["spec"]["containers"][0]["command"] = ["/nonexistent/runstate-binary"]
    await core.create_namespaced_pod("default", body(client.V1Pod, manifest))
    pod = await wait_phase(core, name, {"Failed", "Succeeded"})
    assert pod.status.phase == "Failed"
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (128, "StartError")
    assert "/nonexistent/runstate-binary" in terminated.message


async def test_active_deadline_kills_pod(core: client.CoreV1Api, name: str) -> None:
    await core.create_namespaced_pod(
        "default", body(client.V1Pod, pod_manifest(name, "sleep 30", deadline=2))
    )
    pod = await wait_phase(core, name, {"Failed", "Succeeded"}, within=20)
    assert pod.status.phase == "Failed"
    assert pod.status.reason == "DeadlineExceeded"
    assert pod.status.message == DEADLINE_MESSAGE
    assert pod.status.container_statuses[0].state.terminated.exit_code == 128 + 15


def _storage_limited(manifest: dict[str, Any], limit: str) -> dict[str, Any]:
    manifest["spec"]["containers"][0]["resources"] = {"limits": {"ephemeral-storage": limit}}
    return manifest


async def test_pod_over_its_ephemeral_storage_limit_is_evicted(
    core: client.CoreV1Api, name: str, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    # 4 MiB into the pod's working directory (its writable layer) against a 1Mi limit.
    script = f"sleep 60 & echo $! > {pid_file}; head -c 4194304 /dev/zero > big; wait"
    await core.create_namespaced_pod(
        "default", body(client.V1Pod, _storage_limited(pod_manifest(name, script), "1Mi"))
    )
    pod = await wait_phase(core, name, {"Failed", "Succeeded"}, within=5)
    assert pod.status.phase == "Failed"
    assert pod.status.reason == "Evicted"
    assert pod.status.message == (
        "Pod ephemeral local storage usage exceeds the total limit of containers 1Mi. "
    )
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (137, "Error")
    assert terminated.started_at is not None and terminated.finished_at is not None
    assert pod.status.container_statuses[0].container_id.startswith("process://")
    assert {c.type for c in pod.status.conditions if c.status == "False"} == {
        "Ready",
        "ContainersReady",
    }
    # The whole process group is gone, not just the shell.
    pid = read_pid(pid_file)
    assert pid is not None
    await wait_for(polled(lambda: not process_alive(pid)), f"pid {pid} of {name} to die", within=5)


async def test_evicted_pod_deletion_completes(core: client.CoreV1Api, name: str) -> None:
    script = "head -c 4194304 /dev/zero > big; sleep 60"
    await core.create_namespaced_pod(
        "default", body(client.V1Pod, _storage_limited(pod_manifest(name, script), "1Mi"))
    )
    pod = await wait_phase(core, name, {"Failed", "Succeeded"}, within=5)
    assert pod.status.reason == "Evicted"
    await core.delete_namespaced_pod(name, "default")
    await wait_gone(lambda: core.read_namespaced_pod(name, "default"), f"pod {name}", within=10)


async def test_pod_within_its_ephemeral_storage_limit_succeeds(
    core: client.CoreV1Api, name: str
) -> None:
    # Runs past a few storage checks with 10 KiB of its 1Mi.
    script = "head -c 10240 /dev/zero > small; sleep 1.5"
    await core.create_namespaced_pod(
        "default", body(client.V1Pod, _storage_limited(pod_manifest(name, script), "1Mi"))
    )
    pod = await wait_phase(core, name, {"Failed", "Succeeded"})
    assert pod.status.phase == "Succeeded"
    assert pod.status.reason is None
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (0, "Completed")


async def test_deleting_running_pod_kills_process(
    core: client.CoreV1Api, name: str, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    # SIGTERM goes to the whole process group: the background sleep dies too.
    script = f"echo $$$$ > {pid_file}; sleep 300 & wait"
    await core.create_namespaced_pod("default", body(client.V1Pod, pod_manifest(name, script)))
    pid = await _running_pid(core, name, pid_file)
    assert process_alive(pid)
    await core.delete_namespaced_pod(name, "default")
    await wait_gone(lambda: core.read_namespaced_pod(name, "default"), f"pod {name}")
    await wait_for(polled(lambda: not process_alive(pid)), f"pid {pid} of {name} to die", within=10)


async def test_force_deleted_pod_is_killed(
    core: client.CoreV1Api, name: str, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    script = f"trap '' TERM; echo $$$$ > {pid_file}; while true; do sleep 1; done"
    await core.create_namespaced_pod("default", body(client.V1Pod, pod_manifest(name, script)))
    pid = await _running_pid(core, name, pid_file)
    await core.delete_namespaced_pod(name, "default", grace_period_seconds=0)
    await wait_for(polled(lambda: not process_alive(pid)), f"pid {pid} of {name} to die", within=10)


async def test_graceful_delete_escalates_to_sigkill(
    core: client.CoreV1Api, name: str, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    script = f"trap '' TERM; echo $$$$ > {pid_file}; while true; do sleep 0.2; done"
    await core.create_namespaced_pod(
        "default", body(client.V1Pod, pod_manifest(name, script, grace=1))
    )
    pid = await _running_pid(core, name, pid_file)
    await core.delete_namespaced_pod(name, "default")
    await wait_gone(lambda: core.read_namespaced_pod(name, "default"), f"pod {name}", within=15)
    assert not process_alive(pid)


async def test_owner_deletion_garbage_collects_pod(core: client.CoreV1Api, name: str) -> None:
    owner = await core.create_namespaced_config_map(
        "default", body(client.V1ConfigMap, {"metadata": {"name": name}})
    )
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": name, "uid": owner.metadata.uid}
    await core.create_namespaced_pod(
        "default", body(client.V1Pod, pod_manifest(name, "sleep 300", owner=ref))
    )
    await wait_phase(core, name, {"Running"})
    await core.delete_namespaced_config_map(name, "default")
    await wait_gone(lambda: core.read_namespaced_pod(name, "default"), f"pod {name}", within=60)


async def test_env_vars_reach_the_process(
    core: client.CoreV1Api, name: str, tmp_path: Path
) -> None:
    await core.create_namespaced_config_map(
        "default",
        body(client.V1ConfigMap, {"metadata": {"name": name}, "data": {"colour": "green"}}),
    )
    await core.create_namespaced_secret(
        "default",
        body(
            client.V1Secret,
            {"metadata": {"name": name}, "data": {"token": base64.b64encode(b"s3cret").decode()}},
        ),
    )
    out = tmp_path / "env"
    env: list[dict[str, Any]] = [
        {"name": "PLAIN", "value": "hello world"},
        {"name": "EXPANDED", "value": "$(PLAIN)!"},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "POD_UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {
            "name": "COLOUR",
            "valueFrom": {"configMapKeyRef": {"name": name, "key": "colour"}},
        },
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": name, "key": "token"}}},
    ]
    pod = await core.create_namespaced_pod(
        "default", body(client.V1Pod, pod_manifest(name, f"env > {out}; pwd >> {out}", env=env))
    )
    await wait_phase(core, name, {"Succeeded", "Failed"})
    lines = out.read_text().splitlines()
    seen = dict(line.split("=", 1) for line in lines if "=" in line)
    assert seen["PLAIN"] == "hello world"
    assert seen["EXPANDED"] == "hello world!"
    assert seen["POD_NAME"] == name
    assert seen["POD_NS"] == "default"
    assert seen["POD_UID"] == pod.metadata.uid
    assert seen["NODE"] == "runstate-local"
    assert seen["POD_IP"] == "127.0.0.1"
    assert seen["COLOUR"] == "green"
    assert seen["TOKEN"] == "s3cret"
    # The runner root's bin first (what the operator image would put on PATH), then the
    # kubelet's own.
    assert seen["PATH"] == f"{runnerroot.bin_dir()}:{os.environ['PATH']}"
    assert "HOME" in seen
    assert lines[-1] != os.getcwd()  # a private working directory per pod


async def test_missing_config_map_waits_then_runs(core: client.CoreV1Api, name: str) -> None:
    env = [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": name, "key": "x"}}}]
    await core.create_namespaced_pod(
        "default", body(client.V1Pod, pod_manifest(name, 'test "$X" = late', env=env))
    )

    async def waiting() -> object:
        pod = await core.read_namespaced_pod(name, "default")
        statuses = pod.status.container_statuses or []
        return statuses and statuses[0].state.waiting

    state = await wait_for(waiting, f"{name} waiting for its ConfigMap")
    assert state.reason == "CreateContainerConfigError"
    await core.create_namespaced_config_map(
        "default", body(client.V1ConfigMap, {"metadata": {"name": name}, "data": {"x": "late"}})
    )
    pod = await wait_phase(core, name, {"Succeeded", "Failed"})
    assert pod.status.phase == "Succeeded"


async def test_pod_bound_to_another_node_runs(core: client.CoreV1Api, name: str) -> None:
    await core.create_node(body(client.V1Node, {"metadata": {"name": name}}))
    try:
        await core.create_namespaced_pod(
            "default", body(client.V1Pod, pod_manifest(name, "exit 0", node_name=name))
        )
        pod = await wait_phase(core, name, {"Succeeded", "Failed"})
        assert (pod.status.phase, pod.spec.node_name) == ("Succeeded", name)
    finally:
        await core.delete_node(name)


async def test_many_pods_all_complete(core: client.CoreV1Api, name: str) -> None:
    count = 100
    await asyncio.gather(
        *(
            core.create_namespaced_pod(
                "default", body(client.V1Pod, pod_manifest(f"{name}-{i}", f"exit {i % 2}"))
            )
            for i in range(count)
        )
    )

    async def finished() -> bool:
        pods = await core.list_namespaced_pod("default")
        mine = [p for p in pods.items if p.metadata.name.startswith(f"{name}-")]
        return len(mine) == count and all(p.status.phase in ("Succeeded", "Failed") for p in mine)

    await wait_for(finished, f"{count} pods to finish", within=60)
    pods = await core.list_namespaced_pod("default")
    for pod in pods.items:
        if pod.metadata.name.startswith(f"{name}-"):
            index = int(pod.metadata.name.rsplit("-", 1)[1])
            expected = "Succeeded" if index % 2 == 0 else "Failed"
            assert pod.status.phase == expected, pod.metadata.name


async def test_pod_output_is_kept_in_the_state_dir(
    core: client.CoreV1Api, control_plane: ControlPlane, name: str
) -> None:
    pod = await core.create_namespaced_pod(
        "default", body(client.V1Pod, pod_manifest(name, "echo to-the-log"))
    )
    await wait_phase(core, name, {"Succeeded", "Failed"})
    log = control_plane.pod_log_dir / f"default_{name}_{pod.metadata.uid}.log"
    assert log.read_text() == "to-the-log\n"
