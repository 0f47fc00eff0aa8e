"""The control plane itself: API, kubeconfig, node, controllers."""

from __future__ import annotations

import json
import subprocess

from kubernetes_asyncio import client

from runstate_dev.cluster import ControlPlane
from tests.devcluster.devcluster_helpers import body, wait_for, wait_gone


def test_kubectl_lists_namespaces(control_plane: ControlPlane, kubectl: str) -> None:
    result = subprocess.run(
        [kubectl, "--kubeconfig", str(control_plane.kubeconfig), "get", "namespaces", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    names = {item["metadata"]["name"] for item in json.loads(result.stdout)["items"]}
    assert {"default", "kube-system", "kube-public"} <= names


def test_attributes_and_attach(control_plane: ControlPlane) -> None:
    assert control_plane.server.startswith("https://127.0.0.1:")
    assert control_plane.ca_file.is_file()
    assert control_plane.kubeconfig.is_file()
    assert control_plane.token
    attached = ControlPlane.attach(control_plane.state_dir)
    assert attached is not None
    assert (attached.server, attached.token) == (control_plane.server, control_plane.token)
    version = control_plane.api("GET", "/version")
    assert version["gitVersion"].startswith("v1.20.2")


async def test_node_is_ready(core: client.CoreV1Api, control_plane: ControlPlane) -> None:
    node = await core.read_node(control_plane.node_name)
    ready = [c for c in node.status.conditions if c.type == "Ready"]
    assert ready and ready[0].status == "True"


async def test_new_namespace_gets_default_service_account_and_can_be_deleted(
    core: client.CoreV1Api, name: str
) -> None:
    await core.create_namespace(body(client.V1Namespace, {"metadata": {"name": name}}))

    async def default_sa() -> object:
        accounts = await core.list_namespaced_service_account(name)
        # Pod admission in 1.20 also needs the account's token Secret.
        return [sa for sa in accounts.items if sa.metadata.name == "default" and sa.secrets]

    await wait_for(default_sa, f"ServiceAccount {name}/default", within=30)
    await core.create_namespaced_pod(
        name,
        body(
            client.V1Pod,
            {
                "metadata": {"name": "sleeper"},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "x", "command": ["sleep", "300"]}],
                },
            },
        ),
    )
    await core.delete_namespace(name)
    # The namespace controller deletes the pod; the kubelet finishes that delete.
    await wait_gone(lambda: core.read_namespace(name), f"namespace {name}", within=60)
