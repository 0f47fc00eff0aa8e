"""Connectors end to end: operations that reach real SSH hosts, and Nodes' own roots.

The hosts are real sshd processes (`runstate_dev.hosts`), each with its own address, host key
and filesystem (an overlay whose upper directory shows what changed on that host alone). What
is asserted is what a user sees: files changed on each host, the Run's status (changed and
noChange counts, failed hosts with their reasons, `hosts.unreachable`), its pods, and that the
private key shows up nowhere (the Run, Events, the operator's log, Redis).
"""

from __future__ import annotations

import importlib.util
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import asyncssh
import pytest
import redis

from runstate_dev.hosts import HostFleet
from tests.conftest import Cluster, Operator, wait_for
from tests.hosts import fleet_of
from tests.integration.test_runs import events_of, final_status, run

pytestmark = pytest.mark.integration

CONF = "/etc/nginx-demo/nginx.conf"
CHECK = f"grep -qx 'worker_processes 2;' {CONF}"
WRITE = (
    f"mkdir -p /etc/nginx-demo && printf 'worker_processes 2;\\n' > {CONF} "
    '&& echo "$RUNSTATE_HOST $RUNSTATE_PARAM_RELEASE" > /etc/nginx-demo/written-by'
)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostFleet]:
    """Four real SSH hosts: host-0..2 are the inventory, host-3 is a jump host."""
    yield from fleet_of(tmp_path_factory, "connector-hosts", 4)


def inventory(fleet: HostFleet, count: int = 3) -> list[dict[str, Any]]:
    return [
        {
            "name": h.name,
            "groups": ["web"],
            "data": {"ssh_hostname": h.address, "ssh_port": h.port},
        }
        for h in fleet.hosts[:count]
    ]


def key_secret(
    name: str, fleet: HostFleet, *, key: str | None = None, known_hosts: str | None = None
) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name},
            "stringData": {
                "id": key if key is not None else fleet.client_key.read_text(),
                "known_hosts": (
                    known_hosts if known_hosts is not None else fleet.known_hosts.read_text()
                ),
            },
        }
    )


def ssh_runbook(
    name: str,
    fleet: HostFleet,
    *,
    secret: str = "fleet-key",
    hosts: list[dict[str, Any]] | None = None,
    ssh: dict[str, Any] | None = None,
    **spec: Any,
) -> str:
    connector = {
        "user": fleet.user,
        "privateKey": {"secretRef": {"name": secret, "key": "id"}},
        "knownHosts": {"secretRef": {"name": secret, "key": "known_hosts"}},
        "connectTimeoutSeconds": 5,
        **(ssh or {}),
    }
    body = {
        "apiVersion": "runstate.dev/v1alpha1",
        "kind": "Runbook",
        "metadata": {"name": name},
        "spec": {
            "inventory": {"hosts": hosts if hosts is not None else inventory(fleet)},
            "connector": {"type": "ssh", "ssh": connector},
            "operations": [{"name": "config", "check": CHECK, "run": WRITE}],
            "config": {"podRetention": {"succeededSeconds": 3600}},
            **spec,
        },
    }
    return json.dumps(body)


def pods_of_run(cluster: Cluster, ns: str, run_name: str, kind: str) -> list[dict[str, Any]]:
    return cluster.items("pods", ns, "-l", f"runstate.dev/run={run_name},runstate.dev/kind={kind}")


def failed_reasons(st: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {f["host"]: (f["stage"], f["reason"]) for f in st.get("failedHosts") or []}


def key_fragments(fleet: HostFleet) -> list[str]:
    """Lines of the private key's body: none may appear anywhere but in its Secret."""
    lines = fleet.client_key.read_text().splitlines()
    return [ln for ln in lines if ln and not ln.startswith("-----")]


def redis_dump(redis_url: str) -> str:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    out: list[str] = []
    for key in client.scan_iter("*"):
        kind = client.type(key)
        if kind == "hash":
            out.append(json.dumps(client.hgetall(key)))
        elif kind == "string":
            out.append(str(client.get(key)))
        elif kind == "stream":
            out.append(json.dumps(client.xrange(key)))
        elif kind == "set":
            out.append(json.dumps(sorted(client.smembers(key))))
        elif kind == "zset":
            out.append(json.dumps(client.zrange(key, 0, -1)))
        elif kind == "list":
            out.append(json.dumps(client.lrange(key, 0, -1)))
    return "\n".join(out)


def test_a_change_lands_on_each_host_and_a_second_run_finds_nothing_to_do(
    kube_cluster: Cluster, operator: Operator, redis_url: str, fleet: HostFleet
) -> None:
    ns = kube_cluster.namespace()
    kube_cluster.apply(key_secret("fleet-key", fleet), ns)
    kube_cluster.apply(ssh_runbook("web", fleet), ns)
    kube_cluster.apply(run("first", "web", parameters={"release": "r1"}), ns)
    st = final_status(kube_cluster, ns, "first", timeout=120)
    assert st["state"]["type"] == "COMPLETED", (st["state"], st.get("failedHosts"))
    assert st["operations"][0] | {"name": "config"} == {
        "name": "config",
        "hosts": 3,
        "changed": 3,
        "noChange": 0,
        "success": 3,
        "error": 0,
        "ignored": 0,
        "partial": 0,
    }
    assert st["hosts"]["unreachable"] == 0 and st["hostsSummary"] == "3/3"
    # Each host's own filesystem holds its change; the machine's root and the others do not.
    for host in fleet.hosts[:3]:
        assert (host.upper / CONF.lstrip("/")).read_text() == "worker_processes 2;\n"
        written = (host.upper / "etc/nginx-demo/written-by").read_text()
        assert written == f"{host.name} r1\n"  # the pod's env reached the host
    assert not Path(CONF).exists()
    assert not (fleet.hosts[3].upper / CONF.lstrip("/")).exists()

    # The pods: runstate's runner in a restricted pod, the key a 0400 file, never env.
    (pod, *_) = pods_of_run(kube_cluster, ns, "first", "run")
    spec = pod["spec"]
    container = spec["containers"][0]
    assert container["command"][:3] == ["runstate", "exec", "--connector=ssh"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert spec["automountServiceAccountToken"] is False
    (volume,) = [v for v in spec["volumes"] if v["name"] == "runstate-ssh"]
    assert volume["projected"]["defaultMode"] == 0o400
    assert pod["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "runstate"

    # Again: every check says the host is in state, and no Execute pod starts.
    kube_cluster.apply(run("second", "web", parameters={"release": "r2"}), ns)
    st = final_status(kube_cluster, ns, "second", timeout=120)
    assert st["state"]["type"] == "COMPLETED", (st["state"], st.get("failedHosts"))
    assert (st["operations"][0]["changed"], st["operations"][0]["noChange"]) == (0, 3)
    assert pods_of_run(kube_cluster, ns, "second", "run") == []
    assert len(pods_of_run(kube_cluster, ns, "second", "connect")) == 3

    # The private key is nowhere but in its Secret.
    fragments = key_fragments(fleet)
    places = {
        "the Run": kube_cluster.kubectl("get", "run", "first", "-n", ns, "-o", "yaml").stdout,
        "the pods": json.dumps(kube_cluster.items("pods", ns)),
        "Events": json.dumps(events_of(kube_cluster, ns, "first")),
        "the operator log": operator.log.read_text(errors="replace"),
        "Redis": redis_dump(redis_url),
    }
    for where, text in places.items():
        assert not [f for f in fragments if f in text], f"the private key is in {where}"


def known_target(name: str, port: int) -> str:
    """How known_hosts names a host: `name`, or `[name]:port` off port 22."""
    return name if port == 22 else f"[{name}]:{port}"


def mismatched_known_hosts(fleet: HostFleet, wrong: int, instead: int) -> str:
    """known_hosts whose line for host `wrong` carries the key of host `instead`."""
    lines = []
    for h in fleet.hosts:
        key = fleet.hosts[instead].host_key if h.index == wrong else h.host_key
        lines.append(f"{known_target(h.address, h.port)} {key}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("fail_percent", "state_type"), [(30, "FAILED"), (70, "COMPLETED")], ids=["over", "within"]
)
def test_unreachable_and_mismatched_hosts_fail_at_connect_with_their_reasons(
    kube_cluster: Cluster,
    operator: Operator,
    fleet: HostFleet,
    fail_percent: int,
    state_type: str,
) -> None:
    ns = kube_cluster.namespace()
    known = mismatched_known_hosts(fleet, wrong=2, instead=0)
    kube_cluster.apply(key_secret("fleet-key", fleet, known_hosts=known), ns)
    kube_cluster.apply(ssh_runbook("web", fleet, config={"failPercent": fail_percent}), ns)
    fleet.stop(1)
    try:
        kube_cluster.apply(run("r1", "web"), ns)
        st = final_status(kube_cluster, ns, "r1", timeout=120)
    finally:
        fleet.start(1)
    assert st["state"]["type"] == state_type, st["state"]
    assert failed_reasons(st) == {
        "host-1": ("Connect", "Unreachable"),
        "host-2": ("Connect", "HostKeyMismatch"),
    }
    assert st["hosts"] | {} == {
        "total": 3,
        "active": 1,
        "failed": 2,
        "unreachable": 1,
        "limited": 0,
    }
    if state_type == "COMPLETED":
        # host-0 went on (its config may be there from an earlier test: no change then).
        assert st["operations"][0]["success"] + st["operations"][0]["noChange"] == 1
    # No operation ever ran on the hosts that failed to connect.
    ran_on = {
        p["metadata"]["annotations"]["runstate.dev/host"]
        for p in pods_of_run(kube_cluster, ns, "r1", "run")
    }
    assert ran_on <= {"host-0"}


def test_a_key_the_hosts_do_not_know_fails_authentication(
    kube_cluster: Cluster, operator: Operator, fleet: HostFleet, tmp_path: Path
) -> None:
    ns = kube_cluster.namespace()
    stranger = asyncssh.generate_private_key("ssh-ed25519").export_private_key().decode()
    kube_cluster.apply(key_secret("fleet-key", fleet, key=stranger), ns)
    hosts = inventory(fleet, 1)
    kube_cluster.apply(ssh_runbook("web", fleet, hosts=hosts), ns)
    kube_cluster.apply(run("r1", "web"), ns)
    st = final_status(kube_cluster, ns, "r1", timeout=120)
    assert st["state"]["type"] == "FAILED"
    assert failed_reasons(st) == {"host-0": ("Connect", "AuthenticationFailed")}
    assert st["hosts"]["unreachable"] == 0


def test_an_unknown_host_key_fails_and_skipping_the_check_is_a_connect_warning(
    kube_cluster: Cluster, operator: Operator, fleet: HostFleet
) -> None:
    ns = kube_cluster.namespace()
    kube_cluster.apply(key_secret("fleet-key", fleet, known_hosts="\n"), ns)
    kube_cluster.apply(ssh_runbook("strict", fleet, hosts=inventory(fleet, 1)), ns)
    kube_cluster.apply(run("r1", "strict"), ns)
    st = final_status(kube_cluster, ns, "r1", timeout=120)
    assert failed_reasons(st) == {"host-0": ("Connect", "HostKeyUnknown")}

    insecure = {"knownHosts": None, "insecureSkipHostKeyCheck": True}
    body = json.loads(ssh_runbook("loose", fleet, hosts=inventory(fleet, 2), ssh=insecure))
    del body["spec"]["connector"]["ssh"]["knownHosts"]
    kube_cluster.apply(json.dumps(body), ns)
    kube_cluster.apply(run("r2", "loose"), ns)
    st = final_status(kube_cluster, ns, "r2", timeout=120)
    assert st["state"]["type"] == "COMPLETED", (st["state"], st.get("failedHosts"))
    assert st["stageWarnings"]["Connect"] == 2


def test_hosts_behind_a_jump_host_are_reached_through_it(
    kube_cluster: Cluster, operator: Operator, fleet: HostFleet
) -> None:
    ns = kube_cluster.namespace()
    jump = fleet.hosts[3]
    # Names only the jump host resolves (its own /etc/hosts): reached through it, or not at all.
    names = {h.name: f"{h.name}.behind-{ns}" for h in fleet.hosts[:2]}
    lines = "".join(f"{h.address} {names[h.name]}\\n" for h in fleet.hosts[:2])
    add = fleet.ssh_argv(jump.index, f"printf '{lines}' >> /etc/hosts")
    import subprocess

    subprocess.run(add, check=True, capture_output=True, timeout=30)
    known = "".join(
        f"{known_target(names[h.name], h.port)} {h.host_key}\n" for h in fleet.hosts[:2]
    )
    known += f"{jump.known_hosts_line}\n"
    kube_cluster.apply(key_secret("fleet-key", fleet, known_hosts=known), ns)
    hosts = [
        {"name": h.name, "data": {"ssh_hostname": names[h.name], "ssh_port": h.port}}
        for h in fleet.hosts[:2]
    ]
    via = {"jumpHost": {"host": jump.address, "port": jump.port}}
    kube_cluster.apply(ssh_runbook("behind", fleet, hosts=hosts, ssh=via), ns)
    kube_cluster.apply(run("r1", "behind"), ns)
    st = final_status(kube_cluster, ns, "r1", timeout=120)
    assert st["state"]["type"] == "COMPLETED", (st["state"], st.get("failedHosts"))
    assert st["operations"][0]["success"] + st["operations"][0]["noChange"] == 2
    # Without the jump host the names do not resolve: the hosts are unreachable.
    kube_cluster.apply(ssh_runbook("direct", fleet, hosts=hosts), ns)
    kube_cluster.apply(run("r2", "direct"), ns)
    st = final_status(kube_cluster, ns, "r2", timeout=120)
    assert failed_reasons(st) == {
        "host-0": ("Connect", "Unreachable"),
        "host-1": ("Connect", "Unreachable"),
    }
    assert st["hosts"]["unreachable"] == 2


# ---- The node connector: a privileged pod chrooted into its Node's root.


def node_runbook(name: str, role: str, *, allow: bool = True) -> str:
    return json.dumps(
        {
            "apiVersion": "runstate.dev/v1alpha1",
            "kind": "Runbook",
            "metadata": {"name": name},
            "spec": {
                "inventory": {"nodeSelector": {"matchLabels": {"role": role}}},
                "connector": {"type": "node", "node": {"allowPrivileged": allow}},
                "operations": [
                    {
                        "name": "mark",
                        "check": "test -f /etc/runstate-node-mark",
                        "run": 'echo "$RUNSTATE_HOST" > /etc/runstate-node-mark',
                    }
                ],
                "config": {"podRetention": {"succeededSeconds": 3600}},
            },
        }
    )


def test_the_node_connector_changes_its_nodes_root_and_no_other(
    kube_cluster: Cluster, operator: Operator
) -> None:
    ns = kube_cluster.namespace()
    role = f"edge-{ns}"
    nodes = [f"{ns}-a", f"{ns}-b", f"{ns}-c"]
    for name, node_role in zip(nodes, [role, role, "core"], strict=True):
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": {"role": node_role}},
        }
        kube_cluster.apply(json.dumps(body))
    try:
        kube_cluster.apply(node_runbook("nodes", role), ns)
        kube_cluster.apply(run("r1", "nodes"), ns)
        st = final_status(kube_cluster, ns, "r1", timeout=120)
        assert st["state"]["type"] == "COMPLETED", (st["state"], st.get("failedHosts"))
        assert st["operations"][0]["changed"] == 2
        roots = kube_cluster.state_dir / "kubelet" / "nodes"
        for node in nodes[:2]:
            mark = roots / node / "upper" / "etc" / "runstate-node-mark"
            assert mark.read_text() == f"{node}\n"
        assert not (roots / nodes[2] / "upper" / "etc" / "runstate-node-mark").exists()
        assert not Path("/etc/runstate-node-mark").exists()
        (pod, *_) = pods_of_run(kube_cluster, ns, "r1", "run")
        assert pod["spec"]["containers"][0]["securityContext"]["privileged"] is True
        assert pod["spec"]["volumes"][0]["hostPath"]["path"] == "/"

        # Again: each Node is in state.
        kube_cluster.apply(run("r2", "nodes"), ns)
        st = final_status(kube_cluster, ns, "r2", timeout=120)
        assert (st["operations"][0]["changed"], st["operations"][0]["noChange"]) == (0, 2)

        # Without the Runbook's opt-in the run fails at Setup, naming the field.
        kube_cluster.apply(node_runbook("unasked", role, allow=False), ns)
        kube_cluster.apply(run("r3", "unasked"), ns)
        st = final_status(kube_cluster, ns, "r3")
        assert st["state"]["name"] == "Failed"
        assert "spec.connector.node.allowPrivileged: must be true" in st["state"]["message"]
        wait_for(
            "a SetupFailed-like event naming the field",
            lambda: [
                e
                for e in events_of(kube_cluster, ns, "r3")
                if "spec.connector.node.allowPrivileged" in e.get("message", "")
            ],
            timeout=30,
        )
    finally:
        for name in nodes:
            kube_cluster.kubectl("delete", "node", name, "--wait=false", check=False)


def _demo() -> ModuleType:
    """tools/demo.py (a script): the ssh example as `make demo` applies it to its hosts."""
    path = Path(__file__).resolve().parents[2] / "tools" / "demo.py"
    spec = importlib.util.spec_from_file_location("runstate_demo", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_ssh_example_configures_and_starts_a_service_then_finds_it_in_state(
    kube_cluster: Cluster, operator: Operator, fleet: HostFleet
) -> None:
    """examples/runbook-ssh.yaml on three hosts, as `make demo` runs it: a release changes
    every host (config written, service restarted), the same release again changes nothing."""
    demo = _demo()
    ns = kube_cluster.namespace()
    description = json.loads(fleet.description.read_text())
    description["hosts"] = description["hosts"][:3]
    port = demo.web_port(description)
    runbook = demo.fleet_runbook(demo.load("runbook-ssh.yaml"), description, port)
    kube_cluster.apply(key_secret(demo.SECRET, fleet), ns)
    kube_cluster.apply(json.dumps(runbook), ns)
    for release in ("r1", "r2"):  # r2: a new config, so the running service must restart
        for attempt in ("first", "again"):
            name = f"{release}-{attempt}"
            kube_cluster.apply(run(name, "web-fleet", parameters={"release": release}), ns)
            st = final_status(kube_cluster, ns, name, timeout=120)
            assert st["state"]["type"] == "COMPLETED", (st["state"], st.get("failedHosts"))
            changed = 3 if attempt == "first" else 0
            assert {(o["name"], o["changed"], o["noChange"]) for o in st["operations"]} == {
                ("nginx-config", changed, 3 - changed),
                ("web-service", changed, 3 - changed),
            }
            if attempt == "again":
                assert pods_of_run(kube_cluster, ns, name, "run") == []
        for host in fleet.hosts[:3]:
            conf = (host.upper / "etc/demo-web/nginx.conf").read_text()
            assert f"listen {host.address}:{port};" in conf and f'"{release}"' in conf
            assert (host.upper / "run/demo-web/running.conf").read_text() == conf
            with urllib.request.urlopen(f"http://{host.address}:{port}/", timeout=5) as answer:
                assert answer.read().decode() == f"{host.name} release {release}\n"
