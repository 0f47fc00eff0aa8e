"""The rendered chart against a real API server: the CRDs are applied for real, then every
manifest of each values variant passes a server-side dry run (schema, admission, RBAC).

Uses the `kube_cluster` fixture (the dev control plane: `.kubeconfig` and `.kubectl(...)`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "runstate-system"

pytestmark = pytest.mark.integration

VARIANTS = {
    "default": {},
    # Two replicas: peered through a ClusterKopfPeering (kopf's CRDs come with the chart).
    "redis-url": {"redis": {"url": "redis://:secret@redis:6379/0"}, "replicaCount": 2},
    "existing-secret": {"redis": {"existingSecret": "redis", "existingSecretKey": "url"}},
    "watched-namespace": {"watchNamespaces": [NAMESPACE]},
    # ...and through a KopfPeering in each watched namespace.
    "ha-watched-namespaces": {
        "redis": {"existingSecret": "redis"},
        "replicaCount": 3,
        "watchNamespaces": [NAMESPACE, "default"],
    },
}
KOPF_CRDS = ("clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev")


@pytest.fixture(scope="module")
def cluster_with_crds(kube_cluster: Any) -> Iterator[Any]:
    # The chart's crds/ as `helm install` installs them, applied for real. The runstate CRDs
    # are left in place (deleting a CRD deletes every object of its kind, which other tests on
    # the same cluster may own); applying them again is a no-op. kopf's peering CRDs are
    # removed again if this module brought them: the rest of the session expects a cluster
    # without them (the peering test installs and deletes its own, and an operator that is
    # not standalone would find them and look for a peering object).
    had_kopf = {
        crd
        for crd in KOPF_CRDS
        if kube_cluster.kubectl("get", "crd", crd, check=False).returncode == 0
    }
    kube_cluster.kubectl("apply", "-f", str(REPO / "charts" / "runstate" / "crds"))
    for crd in ("runs.runstate.dev", "runbooks.runstate.dev", *KOPF_CRDS):
        kube_cluster.wait_established(crd)
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
    kube_cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(namespace))
    try:
        yield kube_cluster
    finally:
        brought = [crd for crd in KOPF_CRDS if crd not in had_kopf]
        if brought:
            kube_cluster.kubectl("delete", "crd", *brought, "--ignore-not-found", check=False)


@pytest.mark.parametrize("variant", VARIANTS)
def test_server_side_dry_run(
    cluster_with_crds: Any, helm_template: Callable[..., str], variant: str
) -> None:
    # Rendered for the dev API server's version, as `helm install` would for that cluster.
    version = cluster_with_crds.kubectl("version", "-o", "json").stdout
    rendered = helm_template(VARIANTS[variant], json.loads(version)["serverVersion"]["gitVersion"])
    manifests = [m for m in yaml.safe_load_all(rendered) if m]
    proc = cluster_with_crds.kubectl("apply", "--dry-run=server", "-f", "-", input=rendered)
    accepted = [line for line in proc.stdout.splitlines() if line.endswith("(server dry run)")]
    assert len(accepted) == len(manifests), proc.stdout


def test_rbac_names_served_resources(
    cluster_with_crds: Any, render: Callable[..., list[dict[str, Any]]]
) -> None:
    """Every resource the roles name exists on the server (catches a misspelt plural), kopf's
    peering resources included: the chart installs their CRDs."""
    served = set(cluster_with_crds.kubectl("api-resources", "-o", "name").stdout.split())
    roles = [m for m in render() if m["kind"] == "ClusterRole"]
    roles += [m for m in render(VARIANTS["watched-namespace"]) if m["kind"] == "Role"]
    named = set()
    for role in roles:
        for rule in role["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    plural = resource.split("/")[0]  # subresources are not listed on their own
                    named.add(f"{plural}.{group}" if group else plural)
    assert {"clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"} <= named
    assert named <= served, named - served


def test_kopf_crds_serve_what_kopf_writes(cluster_with_crds: Any) -> None:
    """A peer record as kopf 1.45 writes it (a patch of status through the object itself)
    is kept as written: the shipped CRDs neither prune it nor route status elsewhere."""
    peer = {"priority": 1234567, "lastseen": "2024-01-01T00:00:00.000000", "lifetime": 60}
    body = {
        "apiVersion": "kopf.dev/v1",
        "kind": "KopfPeering",
        "metadata": {"name": "dry-run-check", "namespace": NAMESPACE},
        "status": {"runstate-0": peer},
    }
    proc = cluster_with_crds.kubectl(
        "create", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(body)
    )
    assert json.loads(proc.stdout)["status"] == {"runstate-0": peer}
