"""The rendered chart against a real API server: the CRDs are applied for real, then every
manifest of each values variant passes a server-side dry run (schema, admission, RBAC).

Uses the `kube_cluster` fixture (the dev control plane: `.kubeconfig` and `.kubectl(...)`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "runstate-system"

pytestmark = pytest.mark.integration

VARIANTS = {
    "default": {},
    "redis-url": {"redis": {"url": "redis://:secret@redis:6379/0"}, "replicaCount": 2},
    "existing-secret": {"redis": {"existingSecret": "redis", "existingSecretKey": "url"}},
    "watched-namespace": {"watchNamespaces": [NAMESPACE]},
}


@pytest.fixture(scope="module")
def cluster_with_crds(kube_cluster: Any) -> Any:
    # Applied for real (and left in place: deleting a CRD deletes every object of its kind,
    # which other tests on the same cluster may own). Applying them again is a no-op.
    kube_cluster.kubectl("apply", "-f", str(REPO / "charts" / "runstate" / "crds"))
    kube_cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/runs.runstate.dev",
        "crd/runbooks.runstate.dev",
    )
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
    kube_cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(namespace))
    return kube_cluster


@pytest.mark.parametrize("variant", VARIANTS)
def test_server_side_dry_run(
    cluster_with_crds: Any, helm_template: Callable[..., str], variant: str
) -> None:
    rendered = helm_template(VARIANTS[variant])
    manifests = [m for m in yaml.safe_load_all(rendered) if m]
    proc = cluster_with_crds.kubectl("apply", "--dry-run=server", "-f", "-", input=rendered)
    accepted = [line for line in proc.stdout.splitlines() if line.endswith("(server dry run)")]
    assert len(accepted) == len(manifests), proc.stdout


def test_rbac_names_served_resources(
    cluster_with_crds: Any, render: Callable[..., list[dict[str, Any]]]
) -> None:
    """Every resource the ClusterRole names exists on the server (catches a misspelt plural);
    kopf.dev is left out: the chart does not install the peering CRDs."""
    served = set(cluster_with_crds.kubectl("api-resources", "-o", "name").stdout.split())
    (role,) = [m for m in render() if m["kind"] == "ClusterRole"]
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            if group == "kopf.dev":
                continue
            for resource in rule["resources"]:
                plural = resource.split("/")[0]  # subresources are not listed on their own
                assert (f"{plural}.{group}" if group else plural) in served, (group, resource)
