"""The pyinfra rows (issue 12): the `pyinfra` CLI applying `files.line` to the fleet (`--dry`,
then `-y`), and the runstate Run with ONE pyinfra operation over the same hosts, with the
verification of both (every host's file, every pod's kind, phase and exit code).

Owns the CLI's inventory and command line and what the Run must have done. Must not start the
fleet, nor change a host other than through the CLI or the Run.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from fanout_rows.result import Result
from fanout_rows.runs import Observed, common_problems, fail_on
from harness.cpu import Cpu
from runstate_dev.hosts import HostFleet

PYINFRA_OP = "files.line"
PYINFRA_PATH = "/etc/motd"


def operation(line: str) -> dict[str, Any]:
    """The Run's one operation: `files.line` adding `line`."""
    return {
        "name": "line",
        "pyinfra": {"op": PYINFRA_OP, "args": {"path": PYINFRA_PATH, "line": line}},
    }


def pyinfra_inventory(fleet: HostFleet, path: Path) -> Path:
    """A pyinfra inventory file (Python) of the fleet: each host's name, with its address and
    port as host data, as the Run's inventory has them (user, key and known hosts are given
    on the command line)."""
    hosts = [(h.name, {"ssh_hostname": h.address, "ssh_port": h.port}) for h in fleet.hosts]
    path.write_text(f"hosts = {hosts!r}\n")
    return path


def pyinfra_argv(
    fleet: HostFleet, inventory: Path, *, parallel: int, line: str, dry: bool
) -> list[str]:
    """The `pyinfra` command line (this venv's) applying `files.line` to the fleet; `--dry`
    only reports, `-y` applies without asking (and skips the separate change detection)."""
    return [
        str(Path(sys.executable).parent / "pyinfra"),
        "--dry" if dry else "-y",
        *("--parallel", str(parallel)),
        *("--ssh-user", fleet.user, "--ssh-key", str(fleet.client_key)),
        *("--data", f"ssh_known_hosts_file={fleet.known_hosts}"),
        *("--data", "ssh_strict_host_key_checking=yes"),
        str(inventory),
        PYINFRA_OP,
        f"path={PYINFRA_PATH}",
        f"line={line}",
    ]


def measure_pyinfra_cli(argv: list[str], work: Path, *, n: int, cpu: Cpu, name: str) -> Result:
    """One `pyinfra` process over the fleet, start to exit; its output goes to a log."""
    t0 = time.perf_counter()
    done = subprocess.run(
        argv, cwd=work, stdin=subprocess.DEVNULL, capture_output=True, check=False
    )
    t1 = time.perf_counter()
    result = Result(name, n, seconds=t1 - t0, cpu=cpu.used())
    log = work / f"{name.replace(' ', '_')}.log"
    log.write_bytes(done.stdout + done.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"{name}: exit {done.returncode}, see {log}: {done.stderr[-300:]!r}")
    return result


def hosts_without(fleet: HostFleet, line: str) -> list[str]:
    """The hosts whose file (read from the host's overlay upper dir) lacks `line`."""
    missing = []
    for host in fleet.hosts:
        path = host.upper / PYINFRA_PATH.lstrip("/")
        if not path.exists() or line not in path.read_text().splitlines():
            missing.append(host.name)
    return missing


def check_cli(fleet: HostFleet, line: str, *, dry: bool, name: str) -> None:
    """After `--dry` no host has the CLI's line; after `-y` every host has it."""
    missing = hosts_without(fleet, line)
    if len(missing) != (len(fleet.hosts) if dry else 0):
        raise RuntimeError(f"after {name}: {len(missing)} hosts without the line")


def pod_outcome(pod: dict[str, Any]) -> tuple[str, str, int | None]:
    """A pod's kind label, phase and exit code."""
    kind = (pod["metadata"].get("labels") or {}).get("runstate.dev/kind", "")
    statuses = pod["status"].get("containerStatuses") or [{}]
    code = ((statuses[0].get("state") or {}).get("terminated") or {}).get("exitCode")
    return kind, str(pod["status"].get("phase")), code


def verify(
    observed: Observed,
    pods: list[dict[str, Any]],
    fleet: HostFleet,
    *,
    parallel: int,
    lines: tuple[str, ...],
) -> None:
    """Every host changed; Connect pods Succeeded, Prepare pods exit 1 (a `check` that says
    "would change"), Execute pods Succeeded; every host's file has all `lines`."""
    hosts = len(fleet.hosts)
    outcomes = sorted(pod_outcome(p) for p in pods)
    want = sorted(
        [("connect", "Succeeded", 0)] * hosts
        + [("check", "Failed", 1)] * hosts
        + [("run", "Succeeded", 0)] * hosts
    )
    problems = common_problems(observed, hosts=hosts, parallel=parallel)
    ops = observed.status["operations"]
    if len(ops) != 1 or (ops[0]["changed"], ops[0]["error"]) != (hosts, 0):
        problems.append(f"operations in status: {ops}")
    if outcomes != want:
        got = {o: outcomes.count(o) for o in set(outcomes)}
        problems.append(f"pods (kind, phase, exit code): {got}, want {hosts} of each of 3")
    for line in lines:
        if missing := hosts_without(fleet, line):
            problems.append(f"{len(missing)} hosts without {line!r}, e.g. {missing[0]}")
    fail_on(problems)
