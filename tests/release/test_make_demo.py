"""`make demo` and `make down`, the README's first commands, run as a newcomer runs them.

`make demo` starts a control plane of its own, the operator from the working tree, three SSH
test hosts, and runs both examples (tools/demo.py exits non-zero unless they behave). Here it
runs in directories of this test (`DEV_DIR`, `HOSTS_DIR`) with a free metrics port, so it
neither finds nor disturbs a developer's own demo. A fresh cluster is where `make demo` once
failed at once (a CRD read before the API server had written its first condition), and no
other test starts the demo from nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from runstate_dev._proc import free_port
from tests.devcluster.devcluster_helpers import require_binaries
from tests.examples import clear_foreign_demo_scratch

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "runstate-demo"  # tools/demo.py's


def _make(
    target: str, variables: list[str], env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", target, *variables],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (not gone, not a zombie left for its reaper)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def _stopped(pid: int, within: float = 20) -> bool:
    deadline = time.monotonic() + within
    while _running(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def test_make_demo_runs_both_examples_on_a_fresh_cluster_and_make_down_stops_it(
    tmp_path: Path,
) -> None:
    require_binaries()
    clear_foreign_demo_scratch()
    dev, hosts = tmp_path / "cluster", tmp_path / "hosts"
    variables = [f"DEV_DIR={dev}", f"HOSTS_DIR={hosts}"]
    env = {**os.environ, "RUNSTATE_METRICS_PORT": str(free_port())}
    env.pop("KUBECONFIG", None)
    pid = None
    try:
        demo = _make("demo", variables, env)
        said = demo.stdout + demo.stderr
        assert demo.returncode == 0, said[-6000:]
        assert "  pod example: OK" in demo.stdout and "  ssh example: OK" in demo.stdout, said
        pid = int((dev / "operator.pid").read_text())
        assert _running(pid)
        # "The cluster is still up": its Runs are there to look at, as the summary says.
        runs = subprocess.run(
            ["kubectl", "get", "runs", "-n", NAMESPACE, "-o", "json"],
            env={**env, "KUBECONFIG": str(dev / "kubeconfig")},
            capture_output=True,
            text=True,
            check=True,
        )
        states = [run["status"]["state"]["type"] for run in json.loads(runs.stdout)["items"]]
        assert len(states) == 3 and set(states) == {"COMPLETED"}, states  # pod, ssh twice
    finally:
        down = _make("down", variables, env)
    assert down.returncode == 0, down.stdout + down.stderr
    assert pid is not None and _stopped(pid), f"the operator (pid {pid}) outlived `make down`"
    assert not (dev / "operator.pid").exists()
    gone = subprocess.run(
        ["kubectl", "get", "namespaces", "--request-timeout=5s"],
        env={**env, "KUBECONFIG": str(dev / "kubeconfig")},
        capture_output=True,
        text=True,
        check=False,
    )
    assert gone.returncode != 0, "the control plane still answers after `make down`"
