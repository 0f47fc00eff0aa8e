"""The operator as a restricted namespace's ServiceAccount: its pods meet PodSecurityPolicy.

With the fixtures of tests/conftest.py (`restricted_namespace`, `restricted_operator`) the
operator runs with nothing but the chart's RBAC (rendered by helm for an operator watching
that namespace: tests/restricted.py), in a namespace whose pods must pass the
`runstate-restricted` PodSecurityPolicy (the Pod Security Standards "restricted" profile, as
far as 1.20 can say it: tests/devcluster/test_devcluster_pss.py). Runs of the `pod` and the
`ssh` connector complete there, every work pod admitted exactly as it was built.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from runstate.kube.connectors import RESTRICTED_CONTAINER, RESTRICTED_POD
from runstate_dev.hosts import HostFleet
from tests.conftest import Cluster, Operator
from tests.hosts import fleet_of
from tests.integration.test_runs import final_status
from tests.pss import restricted_violations
from tests.restricted import PSP_ANNOTATION, RESTRICTED_POLICY, RestrictedNamespace

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostFleet]:
    """One real SSH host for the `ssh` Runbook."""
    yield from fleet_of(tmp_path_factory, "restricted-hosts", 1)


def runbook(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "runstate.dev/v1alpha1",
        "kind": "Runbook",
        "metadata": {"name": name},
        "spec": {
            "inventory": {"hosts": [{"name": "web1.example.com"}]},
            "operations": [{"name": "hello", "check": "exit 1", "run": "echo hello"}],
            "config": {"podRetention": {"succeededSeconds": 3600}},
            **spec,
        },
    }


def ssh_runbook(name: str, fleet: HostFleet) -> dict[str, Any]:
    host = fleet.hosts[0]
    ref = {"name": "fleet-key"}
    return runbook(
        name,
        inventory={
            "hosts": [
                {"name": host.name, "data": {"ssh_hostname": host.address, "ssh_port": host.port}}
            ]
        },
        connector={
            "type": "ssh",
            "ssh": {
                "privateKey": {"secretRef": {**ref, "key": "id"}},
                "knownHosts": {"secretRef": {**ref, "key": "known_hosts"}},
            },
        },
    )


def run(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "runstate.dev/v1alpha1",
        "kind": "Run",
        "metadata": {"name": name},
        "spec": {"runbookRef": {"name": name}},
    }


def test_every_pod_and_ssh_work_pod_is_admitted_as_built_by_the_restricted_policy(
    kube_cluster: Cluster,
    restricted_namespace: RestrictedNamespace,
    restricted_operator: Operator,
    fleet: HostFleet,
) -> None:
    space = restricted_namespace
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "fleet-key"},
        "stringData": {
            "id": fleet.client_key.read_text(),
            "known_hosts": fleet.known_hosts.read_text(),
        },
    }
    kube_cluster.apply(json.dumps(secret), space.name)
    for body in (runbook("in-pod"), ssh_runbook("over-ssh", fleet)):
        kube_cluster.apply(json.dumps(body), space.name)
        name = body["metadata"]["name"]
        kube_cluster.kubectl("create", "-n", space.name, "-f", "-", input=json.dumps(run(name)))
    for name in ("in-pod", "over-ssh"):
        st = final_status(kube_cluster, space.name, name, timeout=120)
        assert st["state"]["type"] == "COMPLETED", (
            st["state"],
            st.get("failedHosts"),
            restricted_operator.log_tail(40),
        )
    pods = kube_cluster.items("pods", space.name)
    kinds = {
        (p["metadata"]["labels"]["runstate.dev/run"], p["metadata"]["labels"]["runstate.dev/kind"])
        for p in pods
    }
    assert kinds == {
        ("in-pod", "check"),
        ("in-pod", "run"),
        ("over-ssh", "connect"),
        ("over-ssh", "check"),
        ("over-ssh", "run"),
    }
    for pod in pods:
        name = pod["metadata"]["name"]
        # Judged by the restricted policy (admin's pods would carry the privileged one) ...
        assert pod["metadata"]["annotations"][PSP_ANNOTATION] == RESTRICTED_POLICY, name
        # ... and admitted as built: the policy had nothing to add or change.
        assert pod["spec"]["securityContext"] == RESTRICTED_POD, name
        assert pod["spec"]["containers"][0]["securityContext"] == RESTRICTED_CONTAINER, name
        assert restricted_violations(pod) == [], name
    # The chart's RBAC is enough for everything it did (kopf included): no call was refused.
    log = restricted_operator.log.read_text(errors="replace")
    refused = [
        line
        for line in log.splitlines()
        if "forbidden" in line.lower() or "Not enough permissions" in line
    ]
    assert not refused, "\n".join(refused[:20])
