"""`kubectl runstate` (the console script `kubectl-runstate`), the real binary from the venv,
against the test cluster and the operator: what a user types and what they see.

The watch view runs in a real terminal: a tmux server of the test's own (`-L`), whose pane is
captured while the run goes and after it ends.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.availability import unavailable
from tests.conftest import KUBECTL, Cluster, Operator, wait_for
from tests.integration.test_runs import final_status, pods_running, runbook, state_name

pytestmark = pytest.mark.integration

PLUGIN = str(Path(sys.executable).parent / "kubectl-runstate")
HOSTS = ["web1.example.com", "web2.example.com", "web3.example.com"]


def plugin(
    cluster: Cluster, ns: str, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """The binary as a user runs it: kubectl's flags after the command, as kubectl allows."""
    return subprocess.run(
        [PLUGIN, *args, "--kubeconfig", cluster.kubeconfig, "-n", ns],
        capture_output=True,
        text=True,
        timeout=timeout,
        # kubectl's only config is the flags; HOME keeps its discovery cache where it belongs.
        env={"KUBECTL": KUBECTL, "PATH": "/usr/bin:/bin", "HOME": str(Path.home())},
        check=False,
    )


def started(cluster: Cluster, ns: str, *args: str) -> str:
    result = plugin(cluster, ns, "start", *args)
    assert result.returncode == 0, result.stderr
    name = result.stdout.strip()
    assert name and "\n" not in name
    return name


def test_start_then_wait_completes(kube_cluster: Cluster, operator: Operator) -> None:
    ns = kube_cluster.namespace()
    ops = [{"name": "hello", "run": 'echo "hello $RUNSTATE_PARAM_WHO from $RUNSTATE_HOST"'}]
    kube_cluster.apply(runbook("greet", ops=ops), ns)
    name = started(
        kube_cluster, ns, "greet", "--param", "who=world", "--limit", HOSTS[0], "--limit", HOSTS[2]
    )
    assert name.startswith("greet-")
    spec = kube_cluster.get("run", name, ns)["spec"]
    assert spec["runbookRef"] == {"name": "greet"} and spec["parameters"] == {"who": "world"}
    assert spec["limit"] == [HOSTS[0], HOSTS[2]]

    waited = plugin(kube_cluster, ns, "wait", name, "--timeout", "90")
    assert waited.returncode == 0, waited.stderr
    assert waited.stdout.startswith("Completed: ")

    none = plugin(kube_cluster, ns, "logs", name, "--host", HOSTS[1])
    assert none.returncode == 3 and f"no pods for host {HOSTS[1]}" in none.stderr


def test_a_failed_run_waits_to_1_with_its_message_and_retries_its_failed_hosts(
    kube_cluster: Cluster, operator: Operator, tmp_path: Path
) -> None:
    ns = kube_cluster.namespace()
    marker = tmp_path / "failed-once"
    # web2 fails the first time only: the retry of the failed hosts completes.
    fail_once = (
        f'if [ "$RUNSTATE_HOST" = {HOSTS[1]} ] && [ ! -e {marker} ]; then '
        f'touch {marker}; echo "disk full on $RUNSTATE_HOST" >&2; exit 4; fi'
    )
    kube_cluster.apply(runbook("flaky", ops=[{"name": "update", "run": fail_once}]), ns)
    name = started(kube_cluster, ns, "flaky", "--param", "version=2")

    waited = plugin(kube_cluster, ns, "wait", name, "--timeout", "90")
    st = kube_cluster.get("run", name, ns)["status"]
    assert st["state"]["type"] == "FAILED", st
    assert waited.returncode == 1
    assert waited.stderr == f"Failed: {st['state']['message']}\n"
    assert st["state"]["message"]

    # The failed pod's output through `kubectl logs` itself (the process kubelet serves the
    # kubelet API), not the termination message the plugin falls back to on a cluster whose
    # kubelet lost the logs.
    logs = plugin(kube_cluster, ns, "logs", name, "--host", HOSTS[1], "--operation", "update")
    assert logs.returncode == 0, logs.stderr
    assert logs.stdout.endswith(f"disk full on {HOSTS[1]}\n"), logs.stdout
    assert "the termination message follows" not in logs.stderr
    assert logs.stderr == ""

    retried = plugin(kube_cluster, ns, "retry", name, "--failed-hosts-only")
    assert retried.returncode == 0, retried.stderr
    again = retried.stdout.strip()
    assert again.startswith("flaky-") and again != name
    spec = kube_cluster.get("run", again, ns)["spec"]
    assert spec == {
        "runbookRef": {"name": "flaky"},
        "parameters": {"version": "2"},
        "limit": [HOSTS[1]],
        **{k: v for k, v in spec.items() if k not in ("runbookRef", "parameters", "limit")},
    }
    assert not spec.get("cancel") and not spec.get("dryRun")
    assert plugin(kube_cluster, ns, "wait", again, "--timeout", "90").returncode == 0
    hosts = kube_cluster.get("run", again, ns)["status"]["hosts"]
    assert hosts["limited"] == 2 and hosts["failed"] == 0


def test_retry_of_a_run_still_going_is_refused(kube_cluster: Cluster, operator: Operator) -> None:
    ns = kube_cluster.namespace()
    kube_cluster.apply(runbook("slow", ops=[{"name": "wait", "run": "sleep 30"}], hosts=1), ns)
    name = started(kube_cluster, ns, "slow")
    refused = plugin(kube_cluster, ns, "retry", name)
    assert refused.returncode == 3 and "has not finished" in refused.stderr
    timed_out = plugin(kube_cluster, ns, "wait", name, "--timeout", "1")
    assert timed_out.returncode == 2 and "timed out" in timed_out.stderr
    assert plugin(kube_cluster, ns, "cancel", name).returncode == 0


def test_cancel_ends_the_run_cancelled(kube_cluster: Cluster, operator: Operator) -> None:
    ns = kube_cluster.namespace()
    kube_cluster.apply(runbook("long", ops=[{"name": "wait", "run": "sleep 60"}], hosts=2), ns)
    name = started(kube_cluster, ns, "long")
    pods_running(kube_cluster, ns, 2)
    cancelled = plugin(kube_cluster, ns, "cancel", name)
    assert cancelled.returncode == 0 and cancelled.stdout == f"run {name}: cancel requested\n"
    waited = plugin(kube_cluster, ns, "wait", name, "--timeout", "60")
    assert waited.returncode == 1 and waited.stderr.startswith("Cancelled")
    assert final_status(kube_cluster, ns, name)["state"]["type"] == "CANCELLED"


def test_pause_then_resume(kube_cluster: Cluster, operator: Operator) -> None:
    ns = kube_cluster.namespace()
    ops = [{"name": "first", "run": "sleep 3"}, {"name": "second", "run": "true"}]
    kube_cluster.apply(runbook("pausable", ops=ops, hosts=1), ns)
    name = started(kube_cluster, ns, "pausable")
    pods_running(kube_cluster, ns, 1)
    assert plugin(kube_cluster, ns, "pause", name).returncode == 0
    wait_for("Paused", lambda: state_name(kube_cluster, ns, name) == "Paused", timeout=30)
    assert kube_cluster.get("run", name, ns)["spec"]["paused"] is True
    assert plugin(kube_cluster, ns, "resume", name).returncode == 0
    assert plugin(kube_cluster, ns, "wait", name, "--timeout", "90").returncode == 0
    history = [h["to"] for h in final_status(kube_cluster, ns, name)["history"]]
    assert "PAUSED/Paused" in history


def test_watch_without_a_terminal_prints_each_change_and_exits_with_the_run(
    kube_cluster: Cluster, operator: Operator
) -> None:
    ns = kube_cluster.namespace()
    ops = [{"name": "update", "run": "sleep 2"}, {"name": "install", "run": "true"}]
    kube_cluster.apply(runbook("watched", ops=ops, hosts=2), ns)
    name = started(kube_cluster, ns, "watched")
    watched = plugin(kube_cluster, ns, "watch", name)
    assert watched.returncode == 0, watched.stderr
    lines = watched.stdout.splitlines()
    assert lines[0].startswith(f"{name}: ")
    assert any(line.startswith(f"{name}: Completed (COMPLETED)") for line in lines)
    assert "  op update: 2/2 done, 2 changed, 0 failed" in lines
    transitions = [line for line in lines if line.startswith("  transition ")]
    assert [t.split(" -> ")[1].split()[0] for t in transitions] == [
        "PENDING/Pending",
        "RUNNING/Running",
        "COMPLETED/Completed",
    ]


@pytest.fixture
def tmux() -> Iterator[list[str]]:
    """A tmux server of this test's own; killed (only it) after."""
    if not Path("/usr/bin/tmux").exists():
        unavailable("tmux is missing: `python -m runstate_dev build` installs it")
    command = ["/usr/bin/tmux", "-L", f"runstate-{uuid.uuid4().hex[:8]}"]
    try:
        yield command
    finally:
        subprocess.run([*command, "kill-server"], capture_output=True, check=False)


def test_watch_in_a_terminal_draws_the_live_view_and_exits_with_the_run(
    kube_cluster: Cluster, operator: Operator, tmux: list[str]
) -> None:
    ns = kube_cluster.namespace()
    failing = f'[ "$RUNSTATE_HOST" != {HOSTS[2]} ] || {{ echo "no space left"; exit 3; }}'
    ops = [
        {"name": "update", "run": "sleep 4"},
        {"name": "install", "run": failing},
    ]
    kube_cluster.apply(runbook("live", ops=ops, hosts=3, config={"failPercent": 50}), ns)
    name = started(kube_cluster, ns, "live")
    flags = ["--kubeconfig", kube_cluster.kubeconfig, "-n", ns]
    watch = shlex.join(["env", f"KUBECTL={KUBECTL}", PLUGIN, "watch", name, *flags])
    session = ["new-session", "-d", "-s", "w", "-x", "110", "-y", "40"]
    subprocess.run([*tmux, *session, f"{watch}; echo EXIT=$?; sleep 600"], check=True)

    def screen() -> str:
        return subprocess.run(
            [*tmux, "capture-pane", "-p", "-t", "w"], capture_output=True, text=True, check=True
        ).stdout

    def showing(*needles: str) -> str | None:
        text = screen()
        return text if all(n in text for n in needles) else None

    running = wait_for(
        "a frame of the running run", lambda: showing("Running (RUNNING)", "update"), 60
    )
    assert f"Run {name}" in running and "stage " in running
    assert "━" in running  # the progress bars
    assert "Transitions" in running and "PENDING/Pending -> RUNNING/Running" in running

    end = wait_for("the watch to exit", lambda: showing("EXIT="), 90)
    status = kube_cluster.get("run", name, ns)["status"]
    assert status["state"]["type"] == "COMPLETED", json.dumps(status)
    assert "EXIT=0" in end
    assert "Completed (COMPLETED)" in end and "hosts 2/3" in end
    rows = {line.split()[0]: line.split() for line in end.splitlines() if line.strip()}
    assert rows["update"][-3:] == ["3/3", "3", "0"]
    assert rows["install"][-3:] == ["3/3", "3", "1"]
    assert f"{HOSTS[2]} failed in Execute/install" in end and "no space left" in end
    assert "RUNNING/Running -> COMPLETED/Completed" in end
