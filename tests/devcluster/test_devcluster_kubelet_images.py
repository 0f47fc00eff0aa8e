"""Pods whose image is in the kubelet's image store run in that image's root, as a runtime runs
them: its files, Entrypoint/Cmd, Env, User and WorkingDir; the pod's volumes, the service
account token and the kubelet's /etc files in it; in-cluster access to the API server.

The images are small ones built from the machine's files (`tests.devcluster.testimage`); what
the tests assert is what a user sees: phase, output, container status and the store untouched.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kubernetes_asyncio import client

from runstate_dev.cluster import ControlPlane
from runstate_dev.imagestore import Image, ImageConfig, ImageStore
from tests.devcluster import testimage
from tests.devcluster.devcluster_helpers import body, machine_file, wait_for, wait_phase

IMAGE_PATH = "/usr/local/bin:/usr/bin:/bin"


def _image(store: ImageStore, **config: Any) -> Image:
    """A fresh test image (its own reference) with this config."""
    reference = f"runstate.test/mini-{uuid.uuid4().hex[:8]}:1"
    digest = f"sha256:{uuid.uuid4().hex}{uuid.uuid4().hex}"
    return testimage.publish(store, ImageConfig(reference=reference, digest=digest, **config))


def _pod(name: str, image: Image, **container: Any) -> dict[str, Any]:
    spec_extra = container.pop("spec", {})
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": image.config.reference, **container}],
            **spec_extra,
        },
    }


def _sh(script: str) -> dict[str, Any]:
    return {"command": ["/bin/sh", "-c", script]}


async def _run(
    core: client.CoreV1Api, plane: ControlPlane, manifest: dict[str, Any], phase: str = "Succeeded"
) -> tuple[str, Any]:
    """Create the pod, wait for its end; its output and the final pod."""
    name = manifest["metadata"]["name"]
    await core.create_namespaced_pod("default", body(client.V1Pod, manifest))
    pod = await wait_phase(core, name, {"Succeeded", "Failed"})
    text = (plane.pod_log_dir / f"default_{name}_{pod.metadata.uid}.log").read_text()
    assert pod.status.phase == phase, (text, pod.status.container_statuses)
    return text, pod


async def test_the_container_sees_the_image_and_never_writes_it(
    core: client.CoreV1Api, control_plane: ControlPlane, image_store: ImageStore, name: str
) -> None:
    image = _image(image_store, env=(f"PATH={IMAGE_PATH}",), working_dir="/srv")
    script = (
        f"cat {testimage.MARKER}; echo root-entries=$(ls -A /root | wc -l); "
        "test -e /usr/lib/python3/dist-packages && echo machine-lib || echo image-only; "
        "echo cwd=$(pwd); cat from-image.txt; echo hostname=$(cat /etc/hostname); "
        'echo written > /srv/new.txt && echo changed >> /image-marker.txt && echo "$(cat new.txt)"; '
        "stat -c tmp=%a /tmp; ls /proc/self/fd > /dev/null && echo proc-ok; "
        "head -c 4 /dev/urandom | wc -c; cat /etc/hosts | grep -c $(cat /etc/hostname); "
        "echo all done > /dev/termination-log"
    )
    before = machine_file("/dev/termination-log")
    out, pod = await _run(core, control_plane, _pod(name, image, **_sh(script)))
    lines = out.splitlines()
    assert lines[0] == testimage.MARKER_TEXT
    assert "root-entries=0" in lines  # the machine's /root (with its caches) is not there
    assert "image-only" in lines
    assert "cwd=/srv" in lines and "workdir of the image" in lines
    assert f"hostname={name}" in lines
    assert "written" in lines and "tmp=1777" in lines and "proc-ok" in lines
    assert lines[-2:] == ["4", "1"]
    # The store's rootfs is the read-only lower layer: the writes went to the container's own.
    assert not (image.rootfs / "srv" / "new.txt").exists()
    assert (image.rootfs / "image-marker.txt").read_text() == testimage.MARKER_TEXT + "\n"
    # and the marker is the image's, not the machine's
    assert not await asyncio.to_thread(Path(testimage.MARKER).exists)
    status = pod.status.container_statuses[0]
    assert status.state.terminated.message == "all done\n"
    # The image's /dev is the container's own: the machine's /dev got no termination-log.
    assert machine_file("/dev/termination-log") == before
    assert status.image_id == image.config.digest
    assert status.image == image.config.reference


async def test_command_and_args_against_entrypoint_and_cmd(
    core: client.CoreV1Api, control_plane: ControlPlane, image_store: ImageStore, name: str
) -> None:
    image = _image(
        image_store,
        entrypoint=("/bin/sh", "-c", 'echo "$0" "$@"', "entrypoint"),
        cmd=("from-cmd",),
    )
    cases = {
        "image": ({}, "entrypoint from-cmd"),
        "args": ({"args": ["from-args", "$(GREETING)"]}, "entrypoint from-args hello"),
        "command": ({"command": ["/bin/sh", "-c", "echo from-command"]}, "from-command"),
        "both": (
            {"command": ["/bin/sh", "-c", 'echo "$@"', "cmd0"], "args": ["a", "b"]},
            "a b",
        ),
    }
    env = [{"name": "GREETING", "value": "hello"}]
    for case, (container, _) in cases.items():
        manifest = _pod(f"{name}-{case}", image, env=env, **container)
        await core.create_namespaced_pod("default", body(client.V1Pod, manifest))
    for case, (_, expected) in cases.items():
        pod = await wait_phase(core, f"{name}-{case}", {"Succeeded", "Failed"})
        log = control_plane.pod_log_dir / f"default_{name}-{case}_{pod.metadata.uid}.log"
        assert (case, log.read_text().strip()) == (case, expected)


async def test_env_is_the_images_then_the_containers(
    core: client.CoreV1Api, control_plane: ControlPlane, image_store: ImageStore, name: str
) -> None:
    image = _image(
        image_store,
        env=(f"PATH={IMAGE_PATH}", "IMAGE_ONLY=image", "OVERRIDE_ME=image"),
    )
    env = [
        {"name": "OVERRIDE_ME", "value": "container"},
        {"name": "API", "value": "$(KUBERNETES_SERVICE_HOST):$(KUBERNETES_SERVICE_PORT)"},
    ]
    out, _ = await _run(core, control_plane, _pod(name, image, env=env, **_sh("env")))
    seen = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    api = urlsplit(control_plane.server)
    assert seen["PATH"] == IMAGE_PATH  # the image's, not the kubelet's or the runner root's
    assert seen["IMAGE_ONLY"] == "image"
    assert seen["OVERRIDE_ME"] == "container"
    assert seen["HOME"] == "/root" and seen["HOSTNAME"] == name
    assert seen["KUBERNETES_SERVICE_HOST"] == api.hostname
    assert seen["KUBERNETES_SERVICE_PORT"] == str(api.port)
    assert seen["API"] == f"{api.hostname}:{api.port}"


async def test_an_image_without_path_gets_the_runtimes_default(
    core: client.CoreV1Api, control_plane: ControlPlane, image_store: ImageStore, name: str
) -> None:
    image = _image(image_store)
    out, _ = await _run(core, control_plane, _pod(name, image, **_sh('echo "$PATH"')))
    assert out.strip() == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


async def test_user_from_the_image_unless_run_as_user(
    core: client.CoreV1Api, control_plane: ControlPlane, image_store: ImageStore, name: str
) -> None:
    named = _image(image_store, user="app")
    numeric = _image(image_store, user="1234:staff")
    show = _sh('echo "$(id -u) $(id -g) $HOME"; touch /srv/mine && echo may-write-srv')
    pods = {
        "named": (_pod(f"{name}-named", named, **show), "1234 2345 /home/app"),
        "numeric": (_pod(f"{name}-numeric", numeric, **show), "1234 50 /home/app"),
        "run-as": (
            _pod(
                f"{name}-run-as",
                named,
                securityContext={"runAsUser": 4000, "runAsGroup": 4001},
                **show,
            ),
            "4000 4001 /",
        ),
    }
    for manifest, _ in pods.values():
        await core.create_namespaced_pod("default", body(client.V1Pod, manifest))
    for case, (manifest, expected) in pods.items():
        pod = await wait_phase(core, manifest["metadata"]["name"], {"Succeeded", "Failed"})
        log = control_plane.pod_log_dir / (
            f"default_{manifest['metadata']['name']}_{pod.metadata.uid}.log"
        )
        lines = log.read_text().splitlines()
        assert (case, lines[0]) == (case, expected)
        assert "may-write-srv" not in lines  # /srv is root's in the image


async def test_run_as_non_root_against_the_images_user(
    core: client.CoreV1Api, control_plane: ControlPlane, image_store: ImageStore, name: str
) -> None:
    root = _image(image_store)
    named = _image(image_store, user="app")
    numeric = _image(image_store, user="1234")
    non_root = {"securityContext": {"runAsNonRoot": True}}
    refused = {
        "root": (root, "container has runAsNonRoot and image will run as root"),
        "named": (
            named,
            "container has runAsNonRoot and image has non-numeric user (app), "
            "cannot verify user is non-root",
        ),
    }
    for case, (image, _) in refused.items():
        manifest = _pod(f"{name}-{case}", image, **non_root, **_sh("id -u"))
        await core.create_namespaced_pod("default", body(client.V1Pod, manifest))
    for case, (_, message) in refused.items():

        async def waiting(pod_name: str = f"{name}-{case}") -> Any:
            pod = await core.read_namespaced_pod(pod_name, "default")
            statuses = pod.status.container_statuses or []
            return statuses[0].state.waiting if statuses and statuses[0].state.waiting else None

        state = await wait_for(waiting, f"{case}: CreateContainerConfigError")
        assert state.reason == "CreateContainerConfigError"
        assert state.message.startswith(message), state.message
        pod = await core.read_namespaced_pod(f"{name}-{case}", "default")
        assert pod.status.phase == "Pending"
    out, _ = await _run(
        core, control_plane, _pod(f"{name}-ok", numeric, **non_root, **_sh("id -u"))
    )
    assert out.strip() == "1234"


async def test_volumes_and_the_service_account_token_in_the_image_root(
    core: client.CoreV1Api, control_plane: ControlPlane, image_store: ImageStore, name: str
) -> None:
    image = _image(image_store)
    await core.create_namespaced_config_map(
        "default",
        body(client.V1ConfigMap, {"metadata": {"name": name}, "data": {"app.conf": "level=1"}}),
    )
    script = (
        "cat /etc/app/app.conf; echo; echo data > /data/x && cat /data/x; "
        "ls /var/run/secrets/kubernetes.io/serviceaccount"
    )
    manifest = _pod(
        name,
        image,
        volumeMounts=[
            {"name": "conf", "mountPath": "/etc/app"},
            {"name": "scratch", "mountPath": "/data"},
        ],
        spec={
            "volumes": [
                {"name": "conf", "configMap": {"name": name}},
                {"name": "scratch", "emptyDir": {}},
            ]
        },
        **_sh(script),
    )
    out, _ = await _run(core, control_plane, manifest)
    assert out.splitlines() == ["level=1", "data", "ca.crt", "namespace", "token"]
    assert not (image.rootfs / "etc" / "app").exists()
    assert not (image.rootfs / "data").exists()


_IN_CLUSTER = """
import json, os, ssl, urllib.request
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
context = ssl.create_default_context(cafile=f"{sa}/ca.crt")
token = open(f"{sa}/token").read()
request = urllib.request.Request(
    f"https://{host}:{port}/api/v1/namespaces/default",
    headers={"Authorization": f"Bearer {token}"},
)
with urllib.request.urlopen(request, context=context, timeout=10) as response:
    print(json.load(response)["metadata"]["name"])
"""


async def test_in_cluster_access_with_the_service_account(
    core: client.CoreV1Api,
    rbac: client.RbacAuthorizationV1Api,
    control_plane: ControlPlane,
    image_store: ImageStore,
    name: str,
) -> None:
    """Only the stdlib, only what a pod gets: the env and the mounted ca.crt and token."""
    image = _image(image_store, env=(f"PATH={IMAGE_PATH}",))
    await _grant_namespace_get(core, rbac, name)
    manifest = _pod(
        name, image, command=["python3", "-c", _IN_CLUSTER], spec={"serviceAccountName": name}
    )
    try:
        out, _ = await _run(core, control_plane, manifest)
    finally:
        await rbac.delete_cluster_role_binding(name)
        await rbac.delete_cluster_role(name)
    assert out.strip() == "default"
    # The CA in the token Secret is the one that signed the API server's certificate.
    secret_name = (await core.read_namespaced_service_account(name, "default")).secrets[0].name
    secret = await core.read_namespaced_secret(secret_name, "default")
    assert base64.b64decode(secret.data["ca.crt"]) == control_plane.ca_file.read_bytes()


async def test_read_only_root_filesystem(
    core: client.CoreV1Api, control_plane: ControlPlane, image_store: ImageStore, name: str
) -> None:
    """The image's root read-only, its volumes (and the kubelet's /etc files) as they are."""
    image = _image(image_store)
    script = (
        "touch /srv/x 2>/dev/null && echo root-writable || echo root-read-only; "
        "touch /tmp/x 2>/dev/null && echo tmp-writable || echo tmp-read-only; "
        "echo data > /data/x && cat /data/x; cat /etc/hostname"
    )
    manifest = _pod(
        name,
        image,
        securityContext={"readOnlyRootFilesystem": True},
        volumeMounts=[{"name": "scratch", "mountPath": "/data"}],
        spec={"volumes": [{"name": "scratch", "emptyDir": {}}]},
        **_sh(script),
    )
    out, _ = await _run(core, control_plane, manifest)
    assert out.splitlines() == ["root-read-only", "tmp-read-only", "data", name]


_KOPF_LOGIN = """
import asyncio
import kopf
from kopf._cogs.clients.auth import APIContext

info = kopf.login_with_service_account(settings=kopf.OperatorSettings())
print(info.server)


async def main():
    context = APIContext(info)  # the aiohttp session kopf makes from the ConnectionInfo
    try:
        async with context.session.get(f"{context.server}/api/v1/namespaces/default") as got:
            got.raise_for_status()
            print((await got.json())["metadata"]["name"])
    finally:
        await context.session.close()


asyncio.run(main())
"""


async def test_kopf_logs_in_with_the_service_account(
    core: client.CoreV1Api,
    rbac: client.RbacAuthorizationV1Api,
    control_plane: ControlPlane,
    image_store: ImageStore,
    name: str,
) -> None:
    """kopf's own in-cluster login (the operator's login handler) connects to
    https://kubernetes.default.svc: the Service's names in /etc/hosts, its port 443 forwarded
    to the API server, whose certificate names it. kopf and its dependencies come from this
    venv, mounted into the image (the image holds only the standard library)."""
    site_packages = await asyncio.to_thread(_site_packages)
    image = _image(image_store, env=(f"PATH={IMAGE_PATH}",))
    await _grant_namespace_get(core, rbac, name)
    manifest = _pod(
        name,
        image,
        command=["python3", "-c", _KOPF_LOGIN],
        env=[{"name": "PYTHONPATH", "value": "/kopf-libs"}],
        volumeMounts=[{"name": "libs", "mountPath": "/kopf-libs", "readOnly": True}],
        spec={
            "serviceAccountName": name,
            "volumes": [{"name": "libs", "hostPath": {"path": site_packages, "type": "Directory"}}],
        },
    )
    try:
        out, _ = await _run(core, control_plane, manifest)
    finally:
        await rbac.delete_cluster_role_binding(name)
        await rbac.delete_cluster_role(name)
    assert out.splitlines()[-2:] == ["https://kubernetes.default.svc", "default"]


def _site_packages() -> str:
    import kopf

    return str(Path(kopf.__file__).parent.parent)


async def _grant_namespace_get(
    core: client.CoreV1Api, rbac: client.RbacAuthorizationV1Api, name: str
) -> None:
    """A ServiceAccount ``name`` that may get namespaces, with its token Secret made."""
    account = {"metadata": {"name": name}}
    await core.create_namespaced_service_account("default", body(client.V1ServiceAccount, account))
    role = {
        "metadata": {"name": name},
        "rules": [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"]}],
    }
    await rbac.create_cluster_role(body(client.V1ClusterRole, role))
    binding = {
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": "default"}],
    }
    await rbac.create_cluster_role_binding(body(client.V1ClusterRoleBinding, binding))

    async def token_ready() -> bool:
        sa = await core.read_namespaced_service_account(name, "default")
        return bool(sa.secrets)

    await wait_for(token_ready, f"token Secret of ServiceAccount {name}")
