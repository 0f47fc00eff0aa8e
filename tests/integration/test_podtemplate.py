"""podTemplate end to end: volumes, mounts and env of a Runbook's defaults and an operation's
template reach the work pods, whose commands (run by the process kubelet as the restricted
non-root user, in the pod's own mount namespace) read and write them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import Cluster, Operator
from tests.integration.test_runs import final_status, run, runbook

pytestmark = pytest.mark.integration

CONFIG = "greeting=hello from the template"

DEFAULTS_TEMPLATE = {
    "volumes": [{"name": "conf", "configMap": {"name": "app-conf"}}],
    "volumeMounts": [{"name": "conf", "mountPath": "/etc/app", "readOnly": True}],
    "env": [{"name": "APP_CONF", "value": "/etc/app/app.conf"}],
    "labels": {"team": "infra"},
}
OP_TEMPLATE = {
    "volumes": [{"name": "scratch", "emptyDir": {}}],
    "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
    "containerSecurityContext": {"readOnlyRootFilesystem": False},
}
# Fails unless the configMap's file is mounted where the env says, with the right content,
# and the operation's emptyDir is writable by the pod's (non-root) user.
COMMAND = (
    f'test "$(cat "$APP_CONF")" = "{CONFIG}" '
    '&& cp "$APP_CONF" /scratch/copy && test "$(cat /scratch/copy)" = "$(cat "$APP_CONF")" '
    "&& echo ok as $(id -u)"
)


def config_map(ns: str) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "app-conf", "namespace": ns},
            "data": {"app.conf": CONFIG},
        }
    )


def test_templates_add_volumes_mounts_and_env_to_the_work_pods(
    kube_cluster: Cluster, operator: Operator
) -> None:
    ns = kube_cluster.namespace()
    kube_cluster.apply(config_map(ns), ns)
    ops = [{"name": "read-conf", "run": COMMAND, "podTemplate": OP_TEMPLATE}]
    kube_cluster.apply(
        runbook("templated", ops=ops, hosts=2, defaults={"podTemplate": DEFAULTS_TEMPLATE}), ns
    )
    kube_cluster.apply(run("templated-1", "templated"), ns)

    st = final_status(kube_cluster, ns, "templated-1")
    assert st["state"]["type"] == "COMPLETED", st

    pods = kube_cluster.items("pods", ns, "-l", "runstate.dev/run=templated-1")
    assert len(pods) == 2
    for pod in pods:
        _assert_templated(pod)


def _assert_templated(pod: dict[str, Any]) -> None:
    spec = pod["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["conf"]["configMap"]["name"] == "app-conf"
    assert "emptyDir" in volumes["scratch"]
    work = spec["containers"][0]
    mounts = {m["mountPath"]: m["name"] for m in work["volumeMounts"]}
    assert mounts["/etc/app"] == "conf" and mounts["/scratch"] == "scratch"
    env = {e["name"]: e.get("value") for e in work["env"]}
    assert env["APP_CONF"] == "/etc/app/app.conf"
    assert env["RUNSTATE_OPERATION"] == "read-conf"  # runstate's own env is still there
    # runstate's restricted defaults stay under the template's container securityContext.
    assert spec["securityContext"]["runAsUser"] == 65532
    assert work["securityContext"]["allowPrivilegeEscalation"] is False
    assert work["securityContext"]["readOnlyRootFilesystem"] is False
    labels = pod["metadata"]["labels"]
    assert labels["team"] == "infra" and labels["app.kubernetes.io/managed-by"] == "runstate"
    assert pod["status"]["phase"] == "Succeeded"


def test_a_mount_of_no_volume_fails_the_run_naming_the_field(
    kube_cluster: Cluster, operator: Operator
) -> None:
    ns = kube_cluster.namespace()
    template = {"volumeMounts": [{"name": "missing", "mountPath": "/m"}]}
    ops = [{"name": "a", "run": "true", "podTemplate": template}]
    kube_cluster.apply(runbook("broken", ops=ops, hosts=1), ns)
    kube_cluster.apply(run("broken-1", "broken"), ns)

    st = final_status(kube_cluster, ns, "broken-1")
    assert st["state"]["type"] == "FAILED", st
    assert "spec.operations[0].podTemplate.volumeMounts[0].name" in st["state"]["message"]
    assert kube_cluster.items("pods", ns, "-l", "runstate.dev/run=broken-1") == []


def test_the_schema_of_kubernetes_rejects_a_bad_volume_at_apply_time(kube_cluster: Cluster) -> None:
    ns = kube_cluster.namespace()
    template = {"volumes": [{"name": "v", "emptyDir": {"sizeLimit": "lots"}}]}
    body = runbook("bad", ops=[{"name": "a", "run": "true", "podTemplate": template}], hosts=1)
    proc = kube_cluster.kubectl("apply", "-n", ns, "-f", "-", input=body, check=False)
    assert proc.returncode != 0
    assert "sizeLimit" in proc.stderr, proc.stderr
