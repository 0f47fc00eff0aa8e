"""pyinfra operations end to end, on real SSH hosts with their own filesystems.

pyinfra's dry mode is the check: a first run changes what differs, a second run finds every
host in state and starts no Execute pod; a dry run lists pyinfra's commands and changes
nothing; a bad argument fails at Setup naming the field; pyinfra's own failure fails its host
with pyinfra's message, and failPercent decides the run.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from runstate_dev.hosts import HostFleet
from tests.conftest import Cluster, Operator
from tests.hosts import fleet_of
from tests.integration.test_connectors import inventory, key_secret, pods_of_run
from tests.integration.test_runs import final_status, run

pytestmark = pytest.mark.integration

NGINX_CONF = "worker_processes 2;\nevents {}\n"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostFleet]:
    """Three real SSH hosts."""
    yield from fleet_of(tmp_path_factory, "pyinfra-hosts", 3)


def pyinfra_runbook(name: str, fleet: HostFleet, ops: list[dict[str, Any]], **spec: Any) -> str:
    ref = {"name": "fleet-key"}
    return json.dumps(
        {
            "apiVersion": "runstate.dev/v1alpha1",
            "kind": "Runbook",
            "metadata": {"name": name},
            "spec": {
                "inventory": {"hosts": inventory(fleet)},
                "connector": {
                    "type": "ssh",
                    "ssh": {
                        "user": fleet.user,
                        "privateKey": {"secretRef": {**ref, "key": "id"}},
                        "knownHosts": {"secretRef": {**ref, "key": "known_hosts"}},
                    },
                },
                "operations": ops,
                "config": {"podRetention": {"succeededSeconds": 3600}},
                **spec,
            },
        }
    )


def setup_namespace(cluster: Cluster, fleet: HostFleet) -> str:
    ns = cluster.namespace()
    cluster.apply(key_secret("fleet-key", fleet), ns)
    files = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "nginx-files"},
        "data": {"nginx.conf": NGINX_CONF},
    }
    cluster.apply(json.dumps(files), ns)
    return ns


LINE_AND_PUT = [
    {
        "name": "motd",
        "pyinfra": {
            "op": "files.line",
            "args": {"path": "/etc/motd", "line": "managed by runstate"},
        },
    },
    {
        "name": "nginx-config",
        "pyinfra": {
            "op": "files.put",
            "args": {"src": "nginx.conf", "dest": "/etc/nginx-demo.conf", "mode": "644"},
            "files": {"configMapRef": {"name": "nginx-files"}},
        },
    },
]


def counts(st: dict[str, Any]) -> dict[str, tuple[int, int, int]]:
    return {o["name"]: (o["changed"], o["noChange"], o["error"]) for o in st["operations"]}


def test_pyinfra_changes_each_host_once_and_then_finds_it_in_state(
    kube_cluster: Cluster, operator: Operator, fleet: HostFleet
) -> None:
    ns = setup_namespace(kube_cluster, fleet)
    kube_cluster.apply(pyinfra_runbook("web", fleet, LINE_AND_PUT), ns)

    # A dry run first: pyinfra's commands in the plan, nothing changed on any host.
    kube_cluster.apply(run("dry", "web", dryRun=True), ns)
    st = final_status(kube_cluster, ns, "dry", timeout=180)
    assert st["state"]["type"] == "COMPLETED", (st["state"], st.get("failedHosts"))
    plan = {p["name"]: p for p in st["plan"]}
    assert sorted(plan["nginx-config"]["change"]) == ["host-0", "host-1", "host-2"]
    assert plan["motd"]["commands"]["host-0"], plan["motd"]
    for host in fleet.hosts:
        assert not (host.upper / "etc/nginx-demo.conf").exists()

    kube_cluster.apply(run("first", "web"), ns)
    st = final_status(kube_cluster, ns, "first", timeout=180)
    assert st["state"]["type"] == "COMPLETED", (st["state"], st.get("failedHosts"))
    assert counts(st) == {"motd": (3, 0, 0), "nginx-config": (3, 0, 0)}
    for host in fleet.hosts:
        assert (host.upper / "etc/nginx-demo.conf").read_text() == NGINX_CONF
        assert "managed by runstate" in (host.upper / "etc/motd").read_text()

    kube_cluster.apply(run("second", "web"), ns)
    st = final_status(kube_cluster, ns, "second", timeout=180)
    assert st["state"]["type"] == "COMPLETED", (st["state"], st.get("failedHosts"))
    assert counts(st) == {"motd": (0, 3, 0), "nginx-config": (0, 3, 0)}
    assert pods_of_run(kube_cluster, ns, "second", "run") == []


def test_a_system_user_lands_on_the_hosts_it_targets_only(
    kube_cluster: Cluster, operator: Operator, fleet: HostFleet
) -> None:
    ns = setup_namespace(kube_cluster, fleet)
    op = {
        "name": "user",
        "pyinfra": {"op": "server.user", "args": {"user": "rsdeploy", "system": True}},
        "hosts": {"names": ["host-1"]},
    }
    kube_cluster.apply(pyinfra_runbook("users", fleet, [op]), ns)
    kube_cluster.apply(run("r1", "users"), ns)
    st = final_status(kube_cluster, ns, "r1", timeout=180)
    assert st["state"]["type"] == "COMPLETED", (st["state"], st.get("failedHosts"))
    passwd = {h.name: (h.upper / "etc/passwd") for h in fleet.hosts}
    assert "rsdeploy:" in passwd["host-1"].read_text()
    for name in ("host-0", "host-2"):
        assert not passwd[name].exists() or "rsdeploy:" not in passwd[name].read_text()


def test_a_bad_argument_fails_at_setup_naming_the_field(
    kube_cluster: Cluster, operator: Operator, fleet: HostFleet
) -> None:
    ns = setup_namespace(kube_cluster, fleet)
    op = {"name": "put", "pyinfra": {"op": "files.put", "args": {"src": "a", "dset": "/x"}}}
    kube_cluster.apply(pyinfra_runbook("bad", fleet, [op]), ns)
    kube_cluster.apply(run("r1", "bad"), ns)
    st = final_status(kube_cluster, ns, "r1")
    assert st["state"]["name"] == "Failed"
    assert "spec.operations[0].pyinfra.args.dset" in st["state"]["message"]
    assert kube_cluster.items("pods", ns) == []


def test_pyinfras_failure_fails_its_host_with_pyinfras_message(
    kube_cluster: Cluster, operator: Operator, fleet: HostFleet
) -> None:
    ns = setup_namespace(kube_cluster, fleet)
    # The directory the line goes into exists on host-0 and host-2 only.
    for index in (0, 2):
        mkdir = fleet.ssh_argv(index, "mkdir -p /etc/runstate-pyinfra-dir")
        subprocess.run(mkdir, check=True, capture_output=True, timeout=30)
    op = {
        "name": "line",
        "pyinfra": {
            "op": "server.shell",
            "args": {"commands": ["test -d /etc/runstate-pyinfra-dir"]},
        },
    }
    kube_cluster.apply(pyinfra_runbook("partly", fleet, [op], config={"failPercent": 50}), ns)
    kube_cluster.apply(run("r1", "partly"), ns)
    st = final_status(kube_cluster, ns, "r1", timeout=180)
    assert st["state"]["type"] == "COMPLETED", st["state"]
    (failed,) = st["failedHosts"]
    assert (failed["host"], failed["stage"], failed["operation"]) == ("host-1", "Execute", "line")
    assert "Traceback" not in failed["message"]
    assert counts(st)["line"][2] == 1
