"""The chart installed with helm into the dev cluster: its Deployment becomes Available on the
process kubelet, from a local image.

The operator's own image is built elsewhere (buildah, `runstate_dev.image`); here the chart's
image reference is a stand-in from the test image (`tests.devcluster.testimage`) whose
Entrypoint serves /healthz and /readyz on the metrics port, and becomes ready only once it has
listed Runbooks in-cluster with the chart's ServiceAccount. So what is exercised is everything
of the chart and the kubelet but the operator's code: helm install (CRDs, RBAC, ServiceAccount,
Deployment), the deployment and replicaset controllers, the chart's securityContext (runAsNonRoot
with runAsUser 65532, readOnlyRootFilesystem, dropped capabilities, seccomp RuntimeDefault),
the args appended to the image's Entrypoint, the service account token and the API server
from inside the pod, and the chart's httpGet probes on the named port.
"""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from pathlib import Path

import pytest
from kubernetes_asyncio import client

from runstate_dev._proc import free_port
from runstate_dev.cluster import ControlPlane
from runstate_dev.imagestore import ImageConfig, ImageStore
from tests.components import helm_binary
from tests.devcluster import testimage
from tests.devcluster.devcluster_helpers import wait_for

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "runstate"

STAND_IN = """
import http.server, json, os, ssl, sys, urllib.request

sa = "/var/run/secrets/kubernetes.io/serviceaccount"
host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
request = urllib.request.Request(
    f"https://{host}:{port}/apis/runstate.dev/v1alpha1/runbooks",
    headers={"Authorization": "Bearer " + open(f"{sa}/token").read()},
)
context = ssl.create_default_context(cafile=f"{sa}/ca.crt")
with urllib.request.urlopen(request, context=context, timeout=10) as response:
    listed = json.load(response)["kind"]
print("args", sys.argv[1:], "uid", os.getuid(), "listed", listed, flush=True)


class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path in ("/healthz", "/readyz") else 404)
        self.end_headers()


http.server.HTTPServer(("127.0.0.1", int(os.environ["RUNSTATE_METRICS_PORT"])), Health).serve_forever()
"""


@pytest.fixture(scope="module")
def helm() -> str:
    return helm_binary()


def _stand_in(store: ImageStore, reference: str) -> None:
    base = testimage.base_rootfs()
    stage = store.staging(reference)
    rootfs = stage / "rootfs"
    rootfs.rmdir()
    subprocess.run(["cp", "-al", str(base), str(rootfs)], check=True)
    (rootfs / "stand-in.py").write_text(STAND_IN)
    config = ImageConfig(
        reference=reference,
        entrypoint=("python3", "/stand-in.py"),
        cmd=("operator",),
        user="65532:65532",
        env=("PATH=/usr/local/bin:/usr/bin:/bin",),
    )
    store.publish(stage, config)


def _helm(helm: str, plane: ControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [helm, "--kubeconfig", str(plane.kubeconfig), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=180,
    )


async def test_the_charts_deployment_becomes_available_from_a_local_image(
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
    control_plane: ControlPlane,
    image_store: ImageStore,
    helm: str,
) -> None:
    suffix = uuid.uuid4().hex[:8]
    namespace, release = f"chart-{suffix}", "runstate"
    repository, tag = f"runstate.test/operator-stand-in-{suffix}", "0.1.0"
    await asyncio.to_thread(_stand_in, image_store, f"{repository}:{tag}")
    port = free_port()
    install = [
        "install",
        release,
        str(CHART),
        "--namespace",
        namespace,
        "--create-namespace",
        "--set",
        f"image.repository={repository}",
        "--set",
        f"image.tag={tag}",
        "--set",
        f"metrics.port={port}",
        "--wait",
        "--timeout",
        "120s",
    ]
    installed = await asyncio.to_thread(_helm, helm, control_plane, *install)
    try:
        assert installed.returncode == 0, installed.stderr
        (deployment,) = (await apps.list_namespaced_deployment(namespace)).items
        assert deployment.status.available_replicas == 1
        conditions = {c.type: c.status for c in deployment.status.conditions}
        assert conditions["Available"] == "True"
        (pod,) = (await core.list_namespaced_pod(namespace)).items
        (status,) = pod.status.container_statuses
        assert status.ready and status.restart_count == 0
        assert status.image == f"{repository}:{tag}"
        assert status.image_id.startswith("runstate-store://")
        log = control_plane.pod_log_dir / (
            f"{namespace}_{pod.metadata.name}_{pod.metadata.uid}.log"
        )

        async def started() -> str:
            text = await asyncio.to_thread(log.read_text)
            return text if "listed" in text else ""

        text = await wait_for(started, "the stand-in's first line")
        assert "args ['operator', '--log-level', 'info'] uid 65532 listed RunbookList" in text
    finally:
        await asyncio.to_thread(_helm, helm, control_plane, "uninstall", release, "-n", namespace)
        await core.delete_namespace(namespace)
