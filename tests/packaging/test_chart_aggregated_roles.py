"""The chart's aggregated ClusterRoles on a real API server: a ServiceAccount bound to the
built-in `view` or `edit` ClusterRole in a namespace gains exactly the matching rights on Runs
and Runbooks there (the dev cluster's kube-controller-manager runs the clusterrole-aggregation
controller, as every cluster does), and `edit` is enough for `kubectl runstate start` and `cancel`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import KUBECTL, Cluster, wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
RELEASE = "aggregate-check"


@pytest.fixture(scope="module")
def aggregated_roles(kube_cluster: Cluster, helm_template: Callable[..., str]) -> Iterator[str]:
    """The chart's two aggregated ClusterRoles applied (as `helm install` would create them);
    a namespace with accounts `viewer` (bound to view) and `editor` (bound to edit)."""
    rendered = [
        m
        for m in yaml.safe_load_all(helm_template({"fullnameOverride": RELEASE}))
        if m and m["kind"] == "ClusterRole" and m["metadata"]["name"] != RELEASE
    ]
    assert {m["metadata"]["name"] for m in rendered} == {f"{RELEASE}-view", f"{RELEASE}-edit"}
    listing = {"apiVersion": "v1", "kind": "List", "items": rendered}
    kube_cluster.kubectl("apply", "-f", "-", input=json.dumps(listing))
    namespace = kube_cluster.namespace()
    for account, role in (("viewer", "view"), ("editor", "edit")):
        kube_cluster.kubectl("create", "serviceaccount", account, "-n", namespace)
        kube_cluster.kubectl(
            *("create", "rolebinding", account, "-n", namespace, f"--clusterrole={role}"),
            f"--serviceaccount={namespace}:{account}",
        )
    try:
        yield namespace
    finally:
        kube_cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        kube_cluster.kubectl(
            *("delete", "clusterrole", f"{RELEASE}-view", f"{RELEASE}-edit"), check=False
        )


def can(
    cluster: Cluster, namespace: str, account: str, verb: str, resource: str, *more: str
) -> bool:
    user = f"system:serviceaccount:{namespace}:{account}"
    result = cluster.kubectl(
        *("auth", "can-i", verb, resource, "-n", namespace, f"--as={user}", *more), check=False
    )
    return result.stdout.strip() == "yes"


READ = ("get", "list", "watch")
WRITE = ("create", "update", "patch", "delete", "deletecollection")
KINDS = ("runs.runstate.dev", "runbooks.runstate.dev")


def test_view_reads_and_edit_writes_runs_and_runbooks(
    kube_cluster: Cluster, aggregated_roles: str
) -> None:
    ns = aggregated_roles
    # Aggregation is asynchronous: wait until edit has gained the chart's rules.
    wait_for(
        "the built-in edit role to aggregate the chart's rules",
        lambda: can(kube_cluster, ns, "editor", "create", "runs.runstate.dev"),
        timeout=60,
    )
    wait_for(
        "the built-in view role to aggregate the chart's rules",
        lambda: can(kube_cluster, ns, "viewer", "list", "runs.runstate.dev"),
        timeout=60,
    )
    for kind in KINDS:
        for verb in READ:
            assert can(kube_cluster, ns, "viewer", verb, kind), (verb, kind)
            assert can(kube_cluster, ns, "editor", verb, kind), (verb, kind)
        for verb in WRITE:
            assert not can(kube_cluster, ns, "viewer", verb, kind), (verb, kind)
            assert can(kube_cluster, ns, "editor", verb, kind), (verb, kind)
        # The status is the operator's to write, nobody else's.
        assert can(kube_cluster, ns, "viewer", "get", kind, "--subresource=status")
        assert not can(kube_cluster, ns, "editor", "patch", kind, "--subresource=status")


def test_edit_is_enough_for_the_kubectl_plugin(
    kube_cluster: Cluster, aggregated_roles: str, tmp_path: Path
) -> None:
    """`kubectl runstate start` and `cancel` as an account bound to edit only."""
    ns = aggregated_roles
    wait_for(
        "edit to aggregate",
        lambda: can(kube_cluster, ns, "editor", "create", "runs.runstate.dev"),
        timeout=60,
    )
    runbook = {
        "apiVersion": "runstate.dev/v1alpha1",
        "kind": "Runbook",
        "metadata": {"name": "plugin-rights"},
        # An inventory without hosts: whatever the operator does with it is beside the point.
        "spec": {
            "inventory": {"hosts": [{"name": "h1"}]},
            "operations": [{"name": "a", "run": "true"}],
        },
    }
    kube_cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(runbook))
    plugin = shutil.which("kubectl-runstate", path=str(Path(sys.executable).parent))
    assert plugin, "kubectl-runstate is installed with the runstate package"
    env: dict[str, Any] = {**os.environ, "KUBECTL": KUBECTL}
    user = ["--kubeconfig", kube_cluster.kubeconfig, "-n", ns]
    impersonate = f"system:serviceaccount:{ns}:editor"
    # The plugin passes --kubeconfig/-n on; impersonation goes through a kubeconfig copy.
    config = yaml.safe_load(Path(kube_cluster.kubeconfig).read_text())
    for entry in config["users"]:
        entry["user"]["as"] = impersonate
    as_editor = tmp_path / "editor.kubeconfig"
    as_editor.write_text(yaml.safe_dump(config))
    user[1] = str(as_editor)
    started = subprocess.run(
        [plugin, *user, "start", "plugin-rights"], capture_output=True, text=True, env=env
    )
    assert started.returncode == 0, started.stderr
    run = started.stdout.strip()
    cancelled = subprocess.run(
        [plugin, *user, "cancel", run], capture_output=True, text=True, env=env
    )
    assert cancelled.returncode == 0, cancelled.stderr
    spec = kube_cluster.get("runs.runstate.dev", run, ns)["spec"]
    assert spec["cancel"] is True
