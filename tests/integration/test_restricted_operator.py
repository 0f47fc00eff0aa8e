"""The operator as a restricted namespace's ServiceAccount: its pods meet PodSecurityPolicy.

Exercises the fixtures of tests/conftest.py (`restricted_namespace`, `restricted_operator`):
the operator runs with nothing but the chart's RBAC and the `runstate-restricted` policy, and
every work pod it asks for is judged by that policy, not admitted as admin's would be.
Whether the pods are *admitted* is for the pod builders to earn (issue 11).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import Cluster, Operator, wait_for
from tests.restricted import PSP_ANNOTATION, RESTRICTED_POLICY, RestrictedNamespace

pytestmark = pytest.mark.integration


def runbook(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "runstate.dev/v1alpha1",
        "kind": "Runbook",
        "metadata": {"name": name},
        "spec": {
            "inventory": {"hosts": [{"name": "web1.example.com"}]},
            "operations": [{"name": "hello", "run": "echo hello"}],
        },
    }


def run(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "runstate.dev/v1alpha1",
        "kind": "Run",
        "metadata": {"name": name},
        "spec": {"runbookRef": {"name": name}},
    }


def judged(cluster: Cluster, space: RestrictedNamespace, operator: Operator) -> bool:
    """A pod exists, or the operator was told PodSecurityPolicy refused one."""
    return bool(cluster.items("pods", space.name)) or "PodSecurityPolicy" in operator.log_tail(400)


def test_work_pods_meet_the_restricted_policy(
    kube_cluster: Cluster, restricted_namespace: RestrictedNamespace, restricted_operator: Operator
) -> None:
    space = restricted_namespace
    kube_cluster.apply(json.dumps(runbook("hello")), space.name)
    kube_cluster.kubectl("create", "-n", space.name, "-f", "-", input=json.dumps(run("hello")))
    wait_for(
        "a work pod, or its refusal by PodSecurityPolicy",
        lambda: judged(kube_cluster, space, restricted_operator),
        timeout=60,
    )
    # admin's pods would carry the privileged policy: these came from the restricted account.
    policies = {
        pod["metadata"].get("annotations", {}).get(PSP_ANNOTATION)
        for pod in kube_cluster.items("pods", space.name)
    }
    assert policies <= {RESTRICTED_POLICY}, policies
    assert "cannot create resource" not in restricted_operator.log_tail(400)
