"""`make demo`: the examples on the dev cluster, a `pod` Runbook and an `ssh` one on real hosts.

Expects the dev control plane, the operator and a fleet of three SSH test hosts to be running
(the Makefile starts them: `runstate_dev up`, the operator, `runstate_dev hosts up --count 3`).

1. The `pod` example (examples/runbook.yaml, examples/run.yaml): one Run followed to its end.
2. The `ssh` example (examples/runbook-ssh.yaml, examples/run-ssh.yaml) on the test hosts: the
   Secret `fleet-ssh` made from the fleet's client key and known_hosts, the Runbook applied with
   its placeholder inventory replaced by the fleet's hosts (addresses and port come from the
   fleet's hosts.json: they are chosen when the hosts start), then two Runs of one new release:
   the first changes all three hosts (config written, service restarted), the second finds
   every host in state (noChange, no Execute pod). Then each host's config is read back over
   ssh and its service is asked for its page.

Exits 0 when both examples behave so, 1 otherwise. Needs the venv (PyYAML) and kubectl.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
KUBECTL = os.environ.get("KUBECTL", "kubectl")
NAMESPACE = os.environ.get("DEMO_NAMESPACE", "runstate-demo")
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}
SECRET = "fleet-ssh"  # the Secret examples/runbook-ssh.yaml names
CONF = "/etc/demo-web/nginx.conf"  # what its operations write on each host
WEB_PORTS = range(8080, 8180)  # the service's port: the first one free on every host address

Json = dict[str, Any]


def kubectl(*args: str, input: str | None = None) -> str:
    result = subprocess.run(
        [KUBECTL, *args], input=input, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        sys.exit(f"kubectl {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


def heading(text: str) -> None:
    print(f"\n=== {text} " + "=" * max(0, 90 - len(text)))


def load(name: str) -> Json:
    doc = yaml.safe_load((EXAMPLES / name).read_text())
    assert isinstance(doc, dict), name
    return doc


# ---- the cluster side ------------------------------------------------------------------


def established(crd: Json) -> bool:
    """Whether the API server serves this CRD: its Established condition is True. Right after
    the apply a CRD may have no conditions at all (kubectl's jsonpath filter then fails)."""
    conditions = (crd.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)


def apply_crds() -> None:
    """Apply the CRDs and wait until they are served. The Makefile does this before it starts
    the operator: a CRD created while kopf starts up may never be watched (runs stay new).
    Polled, not `kubectl wait`, which fails on a CRD that has no conditions yet."""
    kubectl("apply", "-f", str(ROOT / "crds"))
    for crd in ("runs.runstate.dev", "runbooks.runstate.dev"):
        deadline = time.monotonic() + 60
        while not established(json.loads(kubectl("get", "crd", crd, "-o", "json"))):
            if time.monotonic() > deadline:
                sys.exit(f"crd/{crd} is not Established after 60 s")
            time.sleep(0.2)


def prepare_namespace() -> None:
    apply_crds()
    namespaces = kubectl("get", "namespaces", "-o", "name").split()
    if f"namespace/{NAMESPACE}" not in namespaces:
        kubectl("create", "namespace", NAMESPACE)
    for _ in range(100):  # pods need the namespace's default ServiceAccount
        if "serviceaccount/default" in kubectl("get", "sa", "-n", NAMESPACE, "-o", "name"):
            break
        time.sleep(0.2)


def create_run(doc: Json) -> str:
    name = kubectl(
        "create",
        "-n",
        NAMESPACE,
        "-f",
        "-",
        "-o",
        "jsonpath={.metadata.name}",
        input=json.dumps(doc),
    ).strip()
    print(f"run.runstate.dev/{name} created; following it:")
    return name


def follow(name: str, timeout: float = 180) -> Json:
    """Print every state / stage change of Run `name` until it ends; its final status."""
    seen = None
    deadline = time.monotonic() + timeout
    status: Json = {}
    while time.monotonic() < deadline:
        run = json.loads(kubectl("get", "run", name, "-n", NAMESPACE, "-o", "json"))
        status = run.get("status") or {}
        state = status.get("state") or {}
        now = (
            state.get("type"),
            state.get("name"),
            status.get("stage"),
            status.get("hostsSummary"),
        )
        if now != seen and state:
            print(
                f"  {state['type']:<10} {state['name']:<10} stage={status.get('stage') or '':<10} "
                f"hosts ok={status.get('hostsSummary')}  {state.get('message', '')}"
            )
            seen = now
        if state.get("type") in FINAL:
            return status
        time.sleep(0.2)
    print(
        f"  the run did not finish in {timeout:.0f} s; is the operator running? (make demo starts it)"
    )
    return status


def print_operations(status: Json) -> None:
    for op in status.get("operations") or []:
        print(
            f"  operation {op['name']:<14} hosts={op['hosts']} changed={op['changed']} "
            f"noChange={op['noChange']} success={op['success']} error={op['error']}"
        )
    for failed in status.get("failedHosts") or []:
        print(f"  failed host {failed}")


def pods(run: str, kind: str) -> list[str]:
    selector = f"runstate.dev/run={run},runstate.dev/kind={kind}"
    return kubectl("get", "pods", "-n", NAMESPACE, "-l", selector, "-o", "name").split()


def print_outputs(run: str) -> None:
    """What each Execute pod's command printed on its host (the runner's termination message)."""
    selector = f"runstate.dev/run={run},runstate.dev/kind=run"
    items = json.loads(kubectl("get", "pods", "-n", NAMESPACE, "-l", selector, "-o", "json"))
    for pod in sorted(items["items"], key=lambda p: p["metadata"]["name"]):
        annotations = pod["metadata"].get("annotations") or {}
        where = (
            f"{annotations.get('runstate.dev/host')} {annotations.get('runstate.dev/operation')}"
        )
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            message = ((status.get("state") or {}).get("terminated") or {}).get("message") or "{}"
            try:
                tail = str(json.loads(message).get("outputTail") or "")
            except ValueError:
                tail = message
            print(f"  {where:<26} {' | '.join(tail.strip().splitlines()[-3:])}")


def completed(status: Json) -> bool:
    return (status.get("state") or {}).get("type") == "COMPLETED"


# ---- 1. the pod example ----------------------------------------------------------------


def pod_demo() -> bool:
    heading("1. connector pod: examples/runbook.yaml (commands run in the work pods)")
    print(kubectl("apply", "-n", NAMESPACE, "-f", str(EXAMPLES / "runbook.yaml")).strip())
    name = create_run(load("run.yaml"))
    status = follow(name)
    print("history:")
    for item in status.get("history") or []:
        print(f"  {item.get('from') or '(new)':<20} -> {item['to']:<22} {item.get('message', '')}")
    print_operations(status)
    events = kubectl(
        "get",
        "events",
        "-n",
        NAMESPACE,
        "--field-selector",
        f"involvedObject.name={name}",
        "--sort-by=.lastTimestamp",
    )
    print(events.rstrip())
    ok = completed(status)
    print(f"{'OK' if ok else 'NOT OK'}: {name} is {(status.get('state') or {}).get('type')}")
    return ok


# ---- 2. the ssh example on the test hosts ------------------------------------------------


def bindable(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError:
            return False
    return True


def configured_port(host: Json) -> int | None:
    """The port a host's service was configured with by an earlier demo (its upper dir)."""
    try:
        text = (Path(host["upper"]) / CONF.lstrip("/")).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        words = line.split()
        if words[:1] == ["listen"] and ":" in words[1]:
            return int(words[1].rstrip(";").rsplit(":", 1)[1])
    return None


def web_port(fleet: Json) -> int:
    """The service's port: the one an earlier demo left running, else one free on every host."""
    earlier = {configured_port(h) for h in fleet["hosts"]}
    if len(earlier) == 1 and (port := earlier.pop()) is not None:
        return port
    for port in WEB_PORTS:
        if all(bindable(h["address"], port) for h in fleet["hosts"]):
            return port
    sys.exit(f"no port of {WEB_PORTS} is free on every test host")


def fleet_runbook(example: Json, fleet: Json, port: int) -> Json:
    """examples/runbook-ssh.yaml with the fleet's hosts (from its hosts.json) as inventory."""
    runbook: Json = json.loads(json.dumps(example))
    runbook["spec"]["inventory"]["hosts"] = [
        {
            "name": h["name"],
            "groups": ["web"],
            "data": {
                "ssh_hostname": h["address"],
                "ssh_port": h["port"],
                "listen": f"{h['address']}:{port}",
            },
        }
        for h in fleet["hosts"]
    ]
    runbook["spec"]["connector"]["ssh"]["user"] = fleet["user"]
    return runbook


def apply_secret(fleet: Json) -> None:
    secret = kubectl(
        "create",
        "secret",
        "generic",
        SECRET,
        "-n",
        NAMESPACE,
        f"--from-file=id={fleet['client_key']}",
        f"--from-file=known_hosts={fleet['known_hosts']}",
        "--dry-run=client",
        "-o",
        "json",
    )
    print(kubectl("apply", "-n", NAMESPACE, "-f", "-", input=secret).strip())


def ssh(fleet: Json, host: str, command: str) -> str:
    result = subprocess.run(
        ["ssh", "-F", fleet["ssh_config"], host, command],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    if result.returncode != 0:
        return f"(ssh {host} failed: {result.stderr.strip()})"
    return result.stdout


def fetch(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            body: bytes = response.read()
            return body.decode()
    except OSError as exc:
        return f"(no answer: {exc})"


def counts(status: Json) -> dict[str, tuple[int, int, int]]:
    """operation → (hosts, changed, noChange)."""
    return {
        op["name"]: (op["hosts"], op["changed"], op["noChange"])
        for op in status.get("operations") or []
    }


def ssh_demo(hosts_dir: Path) -> bool:
    heading("2. connector ssh: examples/runbook-ssh.yaml on three SSH test hosts")
    try:
        fleet: Json = json.loads((hosts_dir / "hosts.json").read_text())
    except OSError as exc:
        print(f"no test hosts in {hosts_dir} ({exc}); `make demo` starts them")
        return False
    hosts = fleet["hosts"]
    port = web_port(fleet)
    for h in hosts:
        print(
            f"  {h['name']}  ssh {fleet['user']}@{h['address']} -p {h['port']}  (files: {h['upper']})"
        )
    apply_secret(fleet)
    runbook = fleet_runbook(load("runbook-ssh.yaml"), fleet, port)
    print(kubectl("apply", "-n", NAMESPACE, "-f", "-", input=json.dumps(runbook)).strip())
    release = time.strftime("%Y%m%d-%H%M%S")  # new each demo: its first run has work to do
    run_doc = load("run-ssh.yaml")
    run_doc["spec"]["parameters"]["release"] = release
    operations = [op["name"] for op in runbook["spec"]["operations"]]
    n = len(hosts)
    ok = True

    print(f"\nrun 1, release {release}: every host needs the change")
    first = create_run(run_doc)
    status = follow(first)
    print_operations(status)
    print("what the commands printed on the hosts:")
    print_outputs(first)
    want = {op: (n, n, 0) for op in operations}
    good = completed(status) and counts(status) == want
    ok &= good
    print(f"{'OK' if good else 'NOT OK'}: {first} changed {n} hosts in every operation")

    print(f"\nrun 2, release {release} again: every check finds its host in state")
    second = create_run(run_doc)
    status = follow(second)
    print_operations(status)
    executed = pods(second, "run")
    want = {op: (n, 0, n) for op in operations}
    good = completed(status) and counts(status) == want and not executed
    ok &= good
    print(
        f"{'OK' if good else 'NOT OK'}: {second} noChange on {n} hosts in every operation, "
        f"{len(executed)} Execute pods ({len(pods(second, 'connect'))} Connect, "
        f"{len(pods(second, 'check'))} check pods)"
    )

    print(f"\non the hosts (ssh -F {fleet['ssh_config']} <host> ...):")
    for h in hosts:
        name, listen = h["name"], f"{h['address']}:{port}"
        config = ssh(fleet, name, f"cat {CONF}")
        pid = ssh(fleet, name, "cat /run/demo-web/pid").strip()
        process = ssh(fleet, name, f"tr '\\0' ' ' < /proc/{pid}/cmdline").strip() if pid else ""
        page = fetch(f"http://{listen}/")
        print(f"--- {name}: {CONF}")
        print(config.rstrip())
        print(f"--- {name}: service pid {pid}: {process}")
        print(f"--- GET http://{listen}/ -> {page.strip()}")
        good = f"listen {listen};" in config and f'"{release}"' in config
        good &= page == f"{name} release {release}\n" and "http.server" in process
        ok &= good
        print(f"{'OK' if good else 'NOT OK'}: {name} has its config and its service answers")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--hosts-dir",
        type=Path,
        default=Path(os.environ.get("RUNSTATE_CACHE", Path.home() / ".cache/runstate")) / "hosts",
        help="the SSH test hosts' state dir (runstate_dev hosts up --dir)",
    )
    parser.add_argument(
        "--crds-only", action="store_true", help="apply the CRDs, wait until served, exit"
    )
    args = parser.parse_args()
    if args.crds_only:
        apply_crds()
        return 0
    prepare_namespace()
    pod_ok = pod_demo()
    ssh_ok = ssh_demo(args.hosts_dir)
    heading("summary")
    print(f"  pod example: {'OK' if pod_ok else 'NOT OK'}")
    print(f"  ssh example: {'OK' if ssh_ok else 'NOT OK'}")
    print(
        f"\nLook around: kubectl get runbooks,runs,pods -n {NAMESPACE}\n"
        f"  a new Run of the same release changes nothing:  kubectl create -n {NAMESPACE} "
        "-f examples/run-ssh.yaml  (release 2026.1: the first changes the hosts, then no more)\n"
        f"  a host:  ssh -F {args.hosts_dir / 'ssh_config'} host-0\n"
        "  make down   (stops the operator, the control plane, Redis and the test hosts)"
    )
    return 0 if pod_ok and ssh_ok else 1


if __name__ == "__main__":
    sys.exit(main())
