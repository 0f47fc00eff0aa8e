"""A Helm release of the chart running the real operator image in a dev cluster of its own.

`release` (module scope) does what docs/operations.md tells a user to do, against a
`ControlPlane` whose process kubelet runs pods of the image store's images from their root:

1. builds the operator image (`runstate_dev.image.ensure_image`; cached, built again only when
   the sources changed) and unpacks it into a store of this module;
2. starts the control plane with that store and a Redis;
3. lets the ServiceAccounts of `default` (where the NOTES' example Runs go) use the dev
   cluster's restricted pod security policy: the PSP analogue of labelling that namespace
   `pod-security.kubernetes.io/enforce=restricted` (without a usable policy, admission refuses
   every work pod);
4. runs `helm install runstate charts/runstate --namespace runstate-system --create-namespace`
   (Helm installs the CRDs of `crds/` itself) with the image reference of the chart's default,
   then `kubectl -n runstate-system rollout status deployment/runstate`.

Where the image, the cluster, Redis or helm cannot be had, `tests.availability` decides.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from runstate_dev._proc import free_port
from runstate_dev.cluster import ControlPlane
from runstate_dev.imagestore import Image, ImageStore
from runstate_dev.redis import RedisServer
from tests.components import helm_binary, operator_image, start_redis
from tests.conftest import KUBECTL
from tests.devcluster.devcluster_helpers import start_plane

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "runstate-system"  # the release's, as docs/operations.md installs it
RUNS_NAMESPACE = "default"  # where the NOTES' example goes (the chart watches all namespaces)
RELEASE = "runstate"


@dataclass(frozen=True)
class Release:
    """The installed release and what it runs on."""

    plane: ControlPlane
    image: Image
    redis: RedisServer
    helm: str
    metrics_port: int
    install_command: str
    install_output: str

    def env(self) -> dict[str, str]:
        """The environment of a user's shell: this cluster's kubeconfig, kubectl and helm on
        PATH, none of the test process's RUNSTATE_* settings."""
        path = [
            str(Path(KUBECTL).parent),
            str(Path(self.helm).parent),
            str(Path(sys.executable).parent),
        ]
        return {
            **{k: v for k, v in os.environ.items() if not k.startswith("RUNSTATE_")},
            "KUBECONFIG": str(self.plane.kubeconfig),
            "PATH": os.pathsep.join([*path, os.environ["PATH"]]),
        }

    def sh(self, script: str, *, timeout: float = 360) -> subprocess.CompletedProcess[str]:
        """`script` run by `bash -euo pipefail -x` from the repository's root, as a user would."""
        return subprocess.run(
            ["bash", "-euo", "pipefail", "-x", "-c", script],
            cwd=REPO,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def ok(self, script: str, *, timeout: float = 360) -> str:
        """The stdout of `script`, which must succeed."""
        done = self.sh(script, timeout=timeout)
        assert done.returncode == 0, f"{script}\nexit {done.returncode}:\n{done.stderr[-4000:]}"
        return done.stdout


def allow_restricted_pods(release: Release, namespace: str) -> None:
    """The ServiceAccounts of `namespace` may use the restricted policy (work pods run as
    `default` there); the operator's own account gets nothing from this."""
    release.ok(
        f"kubectl create rolebinding runstate-restricted-pods -n {namespace} "
        "--clusterrole=runstate-dev-psp-restricted "
        f"--group=system:serviceaccounts:{namespace}"
    )


def install(plane: ControlPlane, built: Image, redis: RedisServer, helm: str) -> Release:
    metrics_port = free_port()
    command = (
        # docs/operations.md's command (tests/release/test_release.py checks it is that);
        # the image is the chart's default, the reference the store holds.
        f"helm install {RELEASE} charts/runstate --namespace {NAMESPACE} --create-namespace"
        # Run state in the module's Redis (pods share the machine's network).
        f" --set redis.url={redis.url}"
        # Pods share the machine's network namespace here, so the chart's 8080 may be taken
        # by something else on the machine: a free port (the NOTES print it).
        f" --set metrics.port={metrics_port}"
    )
    draft = Release(plane, built, redis, helm, metrics_port, command, install_output="")
    allow_restricted_pods(draft, RUNS_NAMESPACE)
    output = draft.ok(command, timeout=180)
    release = Release(plane, built, redis, helm, metrics_port, command, install_output=output)
    release.ok(
        f"kubectl -n {NAMESPACE} rollout status deployment/{RELEASE} --timeout=180s", timeout=200
    )
    return release


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    helm = helm_binary()
    started = time.monotonic()
    built = operator_image(ImageStore(tmp_path_factory.mktemp("images")))
    print(f"operator image ready in {time.monotonic() - started:.1f}s", file=sys.stderr)
    plane = start_plane(tmp_path_factory.mktemp("cluster"), images_dir=built.root.parent)
    redis = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        installed = install(plane, built, redis, helm)
        print(f"release ready in {time.monotonic() - started:.1f}s", file=sys.stderr)
        yield installed
    finally:
        redis.stop()
        plane.stop()
        shutil.rmtree(built.root.parent, ignore_errors=True)
