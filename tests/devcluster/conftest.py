"""Fixtures starting real dev clusters (etcd + kube-apiserver + controller-manager).

Without the cached control-plane binaries the cluster tests skip locally (build
them with ``python -m runstate_dev build``); with ``CI=true`` a missing
component is built or installed, and anything still missing fails the tests.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from devcluster_helpers import api_client_for, start_plane
from kubernetes_asyncio import client

from runstate_dev import build
from runstate_dev.cluster import ControlPlane
from tests.availability import unavailable


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    plane = start_plane(tmp_path_factory.mktemp("devcluster"))
    try:
        yield plane
    finally:
        plane.stop()


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
