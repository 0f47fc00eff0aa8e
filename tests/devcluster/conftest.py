"""Fixtures starting real dev clusters (etcd + kube-apiserver + controller-manager) and real
SSH test hosts.

Without the cached control-plane binaries the cluster tests skip locally (build
them with ``python -m runstate_dev build``); with ``CI=true`` a missing
component is built or installed, and anything still missing fails the tests.
The SSH hosts need root and Debian's openssh-server (installed on first use).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from kubernetes_asyncio import client

from runstate_dev import build
from runstate_dev.cluster import ControlPlane
from runstate_dev.hosts import HostFleet
from runstate_dev.imagestore import ImageStore
from tests.availability import unavailable
from tests.devcluster.devcluster_helpers import api_client_for, start_fleet, start_plane


@pytest.fixture(scope="session")
def image_store(tmp_path_factory: pytest.TempPathFactory) -> ImageStore:
    """The session cluster's image store: empty at first; tests publish the images they run
    (`tests.devcluster.testimage`). A pod whose image it lacks runs on the machine's root, as
    every pod of the other tests does."""
    return ImageStore(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="session")
def control_plane(
    tmp_path_factory: pytest.TempPathFactory, image_store: ImageStore
) -> Iterator[ControlPlane]:
    plane = start_plane(tmp_path_factory.mktemp("devcluster"), images_dir=image_store.directory)
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostFleet]:
    """Three real SSH hosts, started once per module."""
    hosts = start_fleet(tmp_path_factory.mktemp("hosts") / "fleet", 3)
    try:
        yield hosts
    finally:
        hosts.down()


@pytest.fixture(scope="session")
def kubectl() -> str:
    try:
        return build.ensure_kubectl()
    except build.BuildError as exc:
        unavailable(f"kubectl missing: {exc}")


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def kube_client(control_plane: ControlPlane) -> AsyncIterator[client.ApiClient]:
    api_client = await api_client_for(control_plane.kubeconfig)
    async with api_client:
        yield api_client


@pytest.fixture(scope="session")
def core(kube_client: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(kube_client)


@pytest.fixture(scope="session")
def apps(kube_client: client.ApiClient) -> client.AppsV1Api:
    return client.AppsV1Api(kube_client)


@pytest.fixture(scope="session")
def rbac(kube_client: client.ApiClient) -> client.RbacAuthorizationV1Api:
    return client.RbacAuthorizationV1Api(kube_client)


@pytest.fixture
def name() -> str:
    """A unique object name for one test."""
    return f"t-{uuid.uuid4().hex[:10]}"
