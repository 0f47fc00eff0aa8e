"""The ssh rows (issue 11): plain OpenSSH `ssh host true` over the SSH test hosts, one at a
time and `parallel` at once, and the runstate Run with the ssh connector (key and known hosts
from a Secret) over the same fleet, with its verification.

Owns the ssh loop, the fleet's Secret and the ssh Run's body (the pyinfra row reuses both).
Must not start or down the fleet (bench/fanout.py does).
"""

from __future__ import annotations

import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fanout_rows.result import Result
from fanout_rows.runs import Observed, common_problems, fail_on, run_body, succeeded_problems
from harness.cpu import Cpu
from runstate_dev.hosts import HostFleet

SSH_SECRET = "fleet-key"
SSH_OPERATIONS = [{"name": "first", "run": "true"}, {"name": "second", "run": "echo second"}]


def ssh_secret(fleet: HostFleet) -> dict[str, Any]:
    """The fleet's client key and known hosts, as the ssh connector reads them."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SSH_SECRET},
        "stringData": {
            "id": fleet.client_key.read_text(),
            "known_hosts": fleet.known_hosts.read_text(),
        },
    }


def ssh_connector(fleet: HostFleet) -> dict[str, Any]:
    return {
        "type": "ssh",
        "ssh": {
            "user": fleet.user,
            "privateKey": {"secretRef": {"name": SSH_SECRET, "key": "id"}},
            "knownHosts": {"secretRef": {"name": SSH_SECRET, "key": "known_hosts"}},
            "connectTimeoutSeconds": 10,
        },
    }


def ssh_run_obj(
    fleet: HostFleet, parallel: int, operations: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The fan-out Run over the fleet: by default operations `true` and `echo`, each on the
    host."""
    inventory = [
        {"name": h.name, "data": {"ssh_hostname": h.address, "ssh_port": h.port}}
        for h in fleet.hosts
    ]
    runbook = {
        "inventory": {"hosts": inventory},
        "connector": ssh_connector(fleet),
        "operations": operations or SSH_OPERATIONS,
    }
    return run_body(runbook, parallel=parallel)


def ssh_true(fleet: HostFleet, index: int) -> None:
    """One plain OpenSSH `ssh host true`: a full connection, key exchange and session."""
    done = subprocess.run(
        fleet.ssh_argv(index, "true"), stdin=subprocess.DEVNULL, capture_output=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"ssh to host {index}: exit {done.returncode}: {done.stderr[-300:]!r}")


def measure_ssh_loop(fleet: HostFleet, *, workers: int, cpu: Cpu, name: str) -> Result:
    """`ssh host true` for each host × 2 operations (all hosts' first, then all second), at
    most `workers` at once (a thread pool); 1 is a plain sequential loop."""
    hosts = len(fleet.hosts)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _operation in range(2):  # the second waits for the first on every host, as a Run
            list(pool.map(lambda i: ssh_true(fleet, i), range(hosts)))
    t1 = time.perf_counter()
    return Result(name, 2 * hosts, seconds=t1 - t0, cpu=cpu.used())


def verify(observed: Observed, pods: list[dict[str, Any]], *, hosts: int, parallel: int) -> None:
    """All hosts reached, both operations succeeded everywhere, Connect's pods included."""
    n = 2 * hosts
    succeeded = sum(1 for p in pods if p["status"].get("phase") == "Succeeded")
    problems = common_problems(observed, hosts=hosts, parallel=parallel)
    problems += succeeded_problems(observed, hosts=hosts, operations=2)
    if len(pods) != hosts + n or succeeded != hosts + n:
        problems.append(f"{len(pods)} pods, {succeeded} Succeeded (want {hosts} + {n})")
    fail_on(problems)
