"""The chart installed with helm runs the operator **from its image** and completes runs; the
commands the release's NOTES print work as printed; upgrade and uninstall behave as
docs/operations.md says.

The release (tests/release/conftest.py) runs on a dev cluster whose process kubelet runs a
pod of an image in its store chrooted into an overlay of that image's root. The tests run in
the order written: the last one uninstalls.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from runstate_dev._proc import free_port
from runstate_dev.hosts import HostFleet
from tests.conftest import wait_for
from tests.examples import DEMO_SCRATCH, clear_foreign_demo_scratch
from tests.hosts import fleet_of
from tests.packaging.test_doc_commands import (
    MARKDOWN,
    RELEASE_METRICS,
    RELEASE_ONLY,
    markdown_blocks,
    substituted,
)
from tests.release.conftest import NAMESPACE, RELEASE, REPO, RUNS_NAMESPACE, Release

OPERATOR_USER = 65532  # the image's USER and the chart's runAsUser


def kubectl_json(release: Release, args: str) -> Any:
    return json.loads(release.ok(f"kubectl {args} -o json"))


def operator_pod(release: Release) -> dict[str, Any]:
    pods = kubectl_json(release, f"get pods -n {NAMESPACE} -l app.kubernetes.io/name=runstate")[
        "items"
    ]
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    assert len(live) == 1, [p["metadata"]["name"] for p in pods]
    pod: dict[str, Any] = live[0]
    return pod


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        kids = children(todo.pop())
        out += kids
        todo += kids
    return out


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().split("\0")[:-1]
    except OSError:
        return []


def uid_of(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    (line,) = [line for line in status.splitlines() if line.startswith("Uid:")]
    return int(line.split()[1])


def operator_process(pod: dict[str, Any]) -> int:
    """The pid of the container's `runstate operator` process: the kubelet records the pid it
    started in the containerID (`process://<pid>`); the image's program runs under it."""
    container_id = pod["status"]["containerStatuses"][0]["containerID"]
    started = int(container_id.removeprefix("process://"))
    ours = [
        pid
        for pid in [started, *descendants(started)]
        if any(arg.endswith("runstate") for arg in cmdline(pid)[:2]) and "operator" in cmdline(pid)
    ]
    assert ours, f"no runstate operator process under pid {started}"
    return ours[-1]


def test_the_operator_runs_from_the_image(release: Release) -> None:
    pod = operator_pod(release)
    (status,) = pod["status"]["containerStatuses"]
    assert status["ready"] is True
    assert status["image"] == release.image.config.reference == "ghcr.io/runstate/runstate:0.1.0"
    assert status["imageID"] == release.image.config.digest
    pid = operator_process(pod)
    root = Path(f"/proc/{pid}/root")
    venv = "opt/runstate/pyvenv.cfg"
    assert (root / venv).read_text() == (release.image.rootfs / venv).read_text()
    assert (root / "opt/runstate/bin/runstate").is_file()
    assert uid_of(pid) == OPERATOR_USER
    log = release.plane.pod_log_dir / (
        f"{NAMESPACE}_{pod['metadata']['name']}_{pod['metadata']['uid']}.log"
    )
    assert f"runstate starting: store={release.redis.url}" in log.read_text()
    url = f"http://127.0.0.1:{release.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        metrics = response.read().decode()
    assert re.search(r'^runstate_build_info\{.*version="0\.1\.0".*\} 1\.0$', metrics, re.M), [
        line for line in metrics.splitlines() if "build_info" in line
    ]


def notes_commands(printed: str) -> list[str]:
    """The commands of the NOTES section helm prints: the lines indented by two spaces."""
    notes = printed.split("\nNOTES:\n", 1)[1]
    return [line.strip() for line in notes.splitlines() if re.match(r"^  \S", line)]


# The NOTES' metrics commands, by their start: a port-forward runs until stopped, so
# test_the_notes_metrics_commands_work_as_printed runs them, the port-forward in the background.
PORT_FORWARD = f"kubectl -n {NAMESPACE} port-forward service/{RELEASE}-metrics "
METRICS_CURL = "curl -s localhost:"
RUN_APART = (PORT_FORWARD, METRICS_CURL)
EXAMPLE_HOSTS = ("web1.example.com", "web2.example.com", "db1.example.com")
WEB_HOSTS = EXAMPLE_HOSTS[:2]  # the group `web` of examples/runbook.yaml
# Where install-nginx leaves its mark (examples/runbook.yaml). The example's image, alpine:3.20,
# is not in the store: its pods run on the machine's root, the process kubelet's documented
# fallback, so the mark lands in the machine's /tmp.
MARK = f"{DEMO_SCRATCH}/{{host}}/nginx"


def clear_marks() -> None:
    """No mark of an earlier run on this machine (the first run must change both web hosts),
    nor their directories: another run as root leaves them where uid 65532 cannot write."""
    clear_foreign_demo_scratch()
    for host in WEB_HOSTS:
        shutil.rmtree(Path(MARK.format(host=host)).parent, ignore_errors=True)


def operation_counts(run: dict[str, Any]) -> dict[str, tuple[int, int, int]]:
    """operation → (hosts, changed, noChange)."""
    return {
        op["name"]: (op["hosts"], op["changed"], op["noChange"])
        for op in run["status"]["operations"]
    }


def test_the_notes_commands_work_as_printed(release: Release) -> None:
    """`helm status` prints the installed release's NOTES (as the install did); its commands
    run as printed, and the example Run they create ends Completed with all its hosts."""
    printed = release.ok(f"helm status {RELEASE} -n {NAMESPACE}")
    commands = notes_commands(printed)
    assert commands == notes_commands(release.install_output)
    assert f"kubectl apply -n {RUNS_NAMESPACE} -f examples/runbook.yaml" in commands
    runnable = [c for c in commands if not c.startswith(RUN_APART)]
    assert len(runnable) == len(commands) - len(RUN_APART), commands
    clear_marks()
    release.ok("\n".join(runnable))
    (run,) = kubectl_json(release, f"get runs -n {RUNS_NAMESPACE}")["items"]
    assert run["status"]["state"]["type"] == "COMPLETED", run["status"]
    hosts = run["status"]["hosts"]
    assert (hosts["total"], hosts["failed"]) == (3, 0), hosts
    assert operation_counts(run) == {
        "update": (3, 3, 0),
        "install-nginx": (2, 2, 0),
        "configure": (2, 2, 0),
    }
    for host in WEB_HOSTS:
        # Written by the work pod, as the restricted user the operator gives work pods.
        assert Path(MARK.format(host=host)).stat().st_uid == OPERATOR_USER


def test_the_notes_metrics_commands_work_as_printed(release: Release, tmp_path: Path) -> None:
    """The NOTES' `kubectl port-forward service/runstate-metrics PORT` runs in the background
    until it forwards; the NOTES' curl, as printed, reads the operator's metrics.

    Pods share the machine's network here: the operator's pod itself holds PORT on IPv4, so
    kubectl can listen only on [::1]:PORT, and `localhost` resolves to 127.0.0.1 first, the
    pod's own socket. So the printed curl alone proves nothing about the forward: the same
    curl to [::1] must read the metrics too, and kubectl must report that it handled that
    connection."""
    commands = notes_commands(release.ok(f"helm status {RELEASE} -n {NAMESPACE}"))
    (forward,) = [c for c in commands if c.startswith(PORT_FORWARD)]
    (curl,) = [c for c in commands if c.startswith(METRICS_CURL)]
    port = release.metrics_port
    assert forward == f"{PORT_FORWARD}{port}"
    assert curl.startswith(f"{METRICS_CURL}{port}/metrics")
    output = tmp_path / "port-forward.out"
    with output.open("w") as out:
        process = subprocess.Popen(
            ["bash", "-c", f"exec {forward}"],
            cwd=REPO,
            env=release.env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        wait_for(
            "the port-forward to listen",
            lambda: "Forwarding from" in output.read_text() or process.poll() is not None,
            timeout=30,
        )
        assert process.poll() is None, output.read_text()
        assert f"Forwarding from [::1]:{port} -> {port}" in output.read_text()
        build_info = re.compile(r"^runstate_build_info\{.*\} 1\.0$", re.M)
        printed = release.ok(curl, timeout=30)
        assert build_info.search(printed), printed[:2000]
        forwarded = release.ok(curl.replace("localhost:", "[::1]:", 1), timeout=30)
        assert build_info.search(forwarded), forwarded[:2000]
        wait_for(
            "kubectl to report the forwarded connection",
            lambda: f"Handling connection for {port}" in output.read_text(),
            timeout=10,
        )
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_helm_upgrade_recreates_the_operator(release: Release) -> None:
    """A changed value rolls the Deployment (Recreate: the old pod goes before the new one
    starts); the new pod becomes Ready, from the image, with the new value."""
    old = operator_pod(release)
    deployment = kubectl_json(release, f"get deployment {RELEASE} -n {NAMESPACE}")
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    release.ok(
        f"helm upgrade {RELEASE} charts/runstate --namespace {NAMESPACE} --reuse-values"
        " --set operator.logLevel=debug",
        timeout=180,
    )
    release.ok(f"kubectl -n {NAMESPACE} rollout status deployment/{RELEASE} --timeout=180s")
    new = operator_pod(release)
    assert new["metadata"]["uid"] != old["metadata"]["uid"]
    (status,) = new["status"]["containerStatuses"]
    assert status["ready"] is True and status["imageID"] == release.image.config.digest
    assert new["spec"]["containers"][0]["args"][-2:] == ["--log-level", "debug"]
    assert uid_of(operator_process(new)) == OPERATOR_USER
    gone = release.sh(f"kubectl get pod -n {NAMESPACE} {old['metadata']['name']}")
    assert gone.returncode != 0 and "NotFound" in gone.stderr


def documented(start: str) -> list[list[str]]:
    """The blocks of README.md and docs/*.md holding a command that starts with `start`, each
    with its <namespace> placeholder set to where the example runs."""
    blocks = [b for path in MARKDOWN for b in markdown_blocks(path)]
    found = [b for b in blocks if any(c.startswith(start) for c in b.commands)]
    names = {"<namespace>": RUNS_NAMESPACE}
    return [[substituted(c, names) for c in b.commands] for b in found]


def assert_operator_log(release: Release, printed: str) -> None:
    """`kubectl logs` of the operator's Deployment printed the operator pod's own output: each
    line is one its process wrote (the kubelet's file of the pod's output holds it)."""
    pod = operator_pod(release)
    log = release.plane.pod_log_dir / (
        f"{NAMESPACE}_{pod['metadata']['name']}_{pod['metadata']['uid']}.log"
    )
    written = set(log.read_text().splitlines())
    lines = printed.splitlines()
    assert lines, "kubectl logs printed nothing"
    assert all(line in written for line in lines), lines[:5]
    assert any("runstate" in line for line in lines), lines[:5]


def test_the_documented_release_commands_run(release: Release) -> None:
    """The docs' commands that need a release (tests/packaging/test_doc_commands.py,
    RELEASE_ONLY) work against this one; `helm uninstall` is the last test's."""
    (install,) = [c for b in documented(RELEASE_ONLY[0]) for c in b if c.startswith("helm install")]
    assert release.install_command.startswith(install + " --set ")
    assert documented("helm uninstall runstate")  # for the next test
    revision = kubectl_json(release, f"get deployment {RELEASE} -n {NAMESPACE}")["metadata"]
    ran = []
    for start in RELEASE_ONLY[1:]:
        if start.startswith("helm uninstall") or start in RELEASE_METRICS:
            continue  # the next test's; the NOTES' metrics commands' test above
        commands = [c for b in documented(start) for c in b if c.startswith(start)]
        assert commands, f"no documented command starts with {start!r}"
        for command in commands:
            printed = release.ok(command, timeout=200)
            ran.append(command)
            if " logs " in command:
                assert_operator_log(release, printed)
    assert "helm upgrade runstate charts/runstate --namespace runstate-system --reuse-values" in ran
    history = release.ok(f"helm history {RELEASE} -n {NAMESPACE} -o json")
    assert json.loads(history)[-1]["status"] == "deployed"
    # --reuse-values with the same chart changes nothing the Deployment runs.
    after = kubectl_json(release, f"get deployment {RELEASE} -n {NAMESPACE}")["metadata"]
    assert after["generation"] == revision["generation"]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostFleet]:
    yield from fleet_of(tmp_path_factory, "release-hosts", 3)


def fleet_runbook(fleet: HostFleet, port: int) -> dict[str, Any]:
    """examples/runbook-ssh.yaml with the fleet as inventory, as `make demo` applies it: the
    example's addresses are placeholders (192.0.2.0/24, for documentation)."""
    runbook: dict[str, Any] = yaml.safe_load((REPO / "examples" / "runbook-ssh.yaml").read_text())
    runbook["spec"]["inventory"]["hosts"] = [
        {
            "name": h.name,
            "groups": ["web"],
            "data": {
                "ssh_hostname": h.address,
                "ssh_port": h.port,
                "listen": f"{h.address}:{port}",
            },
        }
        for h in fleet.hosts
    ]
    runbook["spec"]["connector"]["ssh"]["user"] = fleet.user
    return runbook


def test_an_ssh_run_executes_from_the_image_on_the_hosts(
    release: Release, fleet: HostFleet
) -> None:
    """examples/runbook-ssh.yaml on three SSH test hosts: its work pods run the operator's image
    (`runstate exec` from its root) and change each host's own filesystem."""
    release.ok(
        f"kubectl create secret generic fleet-ssh -n {RUNS_NAMESPACE}"
        f" --from-file=id={fleet.client_key} --from-file=known_hosts={fleet.known_hosts}"
    )
    manifest = json.dumps(fleet_runbook(fleet, free_port()))
    release.ok(f"kubectl apply -n {RUNS_NAMESPACE} -f - <<'EOF'\n{manifest}\nEOF")
    name = release.ok(f"kubectl create -n {RUNS_NAMESPACE} -f examples/run-ssh.yaml -o name")
    release.ok(
        f"kubectl wait -n {RUNS_NAMESPACE} --for=condition=Ready {name.strip()} --timeout=4m",
        timeout=260,
    )
    run = kubectl_json(release, f"get -n {RUNS_NAMESPACE} {name.strip()}")
    assert run["status"]["state"]["type"] == "COMPLETED", run["status"]
    assert operation_counts(run) == {"nginx-config": (3, 3, 0), "web-service": (3, 3, 0)}
    pods = kubectl_json(
        release, f"get pods -n {RUNS_NAMESPACE} -l runstate.dev/run-uid={run['metadata']['uid']}"
    )["items"]
    assert pods, "the run's pods are kept an hour (podRetention)"
    for pod in pods:
        (status,) = pod["status"]["containerStatuses"]
        assert status["image"] == release.image.config.reference
        assert status["imageID"] == release.image.config.digest
        assert "terminated" in status["state"]  # checks exit non-zero when a host needs the run
    for host in fleet.hosts:
        config = (host.upper / "etc" / "demo-web" / "nginx.conf").read_text()
        assert f"server_name {host.name};" in config
        assert 'add_header X-Release "2026.1";' in config


def test_the_documented_uninstall_order(release: Release) -> None:
    """docs/operations.md: Runs and Runbooks deleted while the operator runs (their finalizers
    cleared by it), then `helm uninstall`, which removes the Deployment and leaves the CRDs."""
    (step1,) = documented("kubectl delete runbooks,runs --all")
    runs = kubectl_json(release, f"get runs -n {RUNS_NAMESPACE}")["items"]
    assert len(runs) == 2  # the NOTES' example and the ssh example
    assert all("runstate.dev/cleanup" in r["metadata"]["finalizers"] for r in runs)
    out = release.ok("\n".join(step1), timeout=330)
    assert (
        "No resources found" in release.sh(f"kubectl get runbooks,runs -n {RUNS_NAMESPACE}").stderr
    ), out
    (step2,) = documented("helm uninstall runstate")
    release.ok("\n".join(step2), timeout=180)
    gone = release.sh(f"kubectl get deployment {RELEASE} -n {NAMESPACE}")
    assert gone.returncode != 0 and "NotFound" in gone.stderr
    crds = release.ok("kubectl get crd -o name")
    assert "runs.runstate.dev" in crds and "runbooks.runstate.dev" in crds
    wait_for(
        "the operator's pod to be gone",
        lambda: not kubectl_json(release, f"get pods -n {NAMESPACE}")["items"],
        timeout=60,
    )
