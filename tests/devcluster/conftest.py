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
from tests.availability import unavailable
from tests.devcluster.devcluster_helpers import api_client_for, start_fleet, start_plane


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    plane = start_plane(tmp_path_factory.mktemp("devcluster"))
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
async def core(control_plane: ControlPlane) -> AsyncIterator[client.CoreV1Api]:
    api_client = await api_client_for(control_plane.kubeconfig)
    async with api_client:
        yield client.CoreV1Api(api_client)


@pytest.fixture
def name() -> str:
    """A unique object name for one test."""
    return f"t-{uuid.uuid4().hex[:10]}"
