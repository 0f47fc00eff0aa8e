"""The kubectl plugin's pure parts: arguments, Run bodies, outcomes, pod choice, rendering,
and each command against a fake kubectl (the integration tests drive the real one)."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import pytest
from rich.console import Console

from runstate.kube import pods as kube_pods
from runstate.kubectl import cli, render, specs
from runstate.kubectl.kube import Kubectl, KubectlError

STATUS: dict[str, Any] = {
    "state": {"type": "RUNNING", "name": "Running", "message": ""},
    "stage": "Execute",
    "hostsSummary": "1/3",
    "hosts": {"total": 3, "active": 3, "failed": 1},
    "operations": [
        {"name": "update", "hosts": 3, "changed": 3, "success": 2, "error": 1},
        {"name": "install", "hosts": 2, "changed": 2, "noChange": 0, "success": 0},
    ],
    "failedHosts": [
        {
            "host": "web2",
            "stage": "Execute",
            "operation": "update",
            "reason": "Error",
            "message": "line\ndisk full\n",
        }
    ],
    "history": [
        {"from": "", "to": "PENDING/Pending", "at": "t1"},
        {"from": "PENDING/Pending", "to": "RUNNING/Running", "at": "t2"},
    ],
}


def finished(state: str, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "fleet-abcde", "uid": "u1"},
        "spec": {
            "runbookRef": {"name": "fleet"},
            "parameters": {"version": "1.27"},
            "cancel": True,
            "paused": False,
        },
        "status": {"state": {"type": state, "name": state.title(), "message": "m"}, **status},
    }


def test_global_flags_go_before_or_after_the_command() -> None:
    before = cli.parser().parse_args(["-n", "ns", "--context", "c", "wait", "r"])
    after = cli.parser().parse_args(["wait", "r", "-n", "ns", "--kubeconfig", "k"])
    assert (before.namespace, before.context, before.kubeconfig) == ("ns", "c", None)
    assert (after.namespace, after.context, after.kubeconfig) == ("ns", None, "k")


def test_start_arguments() -> None:
    args = cli.parser().parse_args(
        ["start", "fleet", "--param", "a=b", "--param", "c=", "--limit", "h1", "--dry-run"]
    )
    assert (args.runbook, args.param, args.limit, args.dry_run) == (
        "fleet",
        ["a=b", "c="],
        ["h1"],
        True,
    )


def test_logs_needs_a_host() -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.parser().parse_args(["logs", "r"])
    assert exit_.value.code == 2


def test_kubectl_gets_the_users_flags() -> None:
    kube = Kubectl(kubeconfig="kc", context="ctx", namespace="ns", binary="kubectl")
    assert kube.command("get", "runs") == [
        "kubectl",
        "--kubeconfig",
        "kc",
        "--context",
        "ctx",
        "--namespace",
        "ns",
        "get",
        "runs",
    ]
    assert Kubectl(binary="k").command("get") == ["k", "get"]


def test_params() -> None:
    assert specs.parse_params(["a=b", "c=", "d=e=f"]) == {"a": "b", "c": "", "d": "e=f"}
    for bad in ("novalue", "=x"):
        with pytest.raises(specs.SpecError, match="KEY=VALUE"):
            specs.parse_params([bad])


def test_start_body() -> None:
    assert specs.start_body("fleet", {"v": "1"}, ["h1"], True) == {
        "apiVersion": "runstate.dev/v1alpha1",
        "kind": "Run",
        "metadata": {"generateName": "fleet-"},
        "spec": {
            "runbookRef": {"name": "fleet"},
            "parameters": {"v": "1"},
            "limit": ["h1"],
            "dryRun": True,
        },
    }
    assert specs.start_body("fleet", {}, [], False)["spec"] == {"runbookRef": {"name": "fleet"}}


def test_retry_copies_the_spec_but_not_its_cancel_or_pause() -> None:
    body = specs.retry_body(finished("FAILED"), failed_hosts_only=False)
    assert body["metadata"] == {"generateName": "fleet-"}
    assert body["spec"] == {"runbookRef": {"name": "fleet"}, "parameters": {"version": "1.27"}}


def test_retry_of_an_inline_runbook_is_named_after_the_run() -> None:
    run = finished("FAILED")
    run["spec"] = {"runbook": {"operations": [{"name": "a", "run": "true"}]}}
    body = specs.retry_body(run, failed_hosts_only=False)
    assert body["metadata"] == {"generateName": "fleet-abcde-"}
    assert body["spec"] == run["spec"] and body["spec"] is not run["spec"]


def test_retry_failed_hosts_only_limits_to_them() -> None:
    run = finished(
        "COMPLETED",
        hosts={"failed": 2},
        failedHosts=[{"host": "web3", "stage": "Execute"}, {"host": "web1", "stage": "Connect"}],
    )
    assert specs.retry_body(run, failed_hosts_only=True)["spec"]["limit"] == ["web1", "web3"]


def test_retry_failed_hosts_only_refuses_a_capped_list_or_none() -> None:
    capped = finished(
        "FAILED",
        hosts={"failed": 25},
        failedHosts=[{"host": f"h{i}", "stage": "Execute"} for i in range(20)],
    )
    with pytest.raises(
        specs.SpecError, match=r"25 hosts failed but status\.failedHosts lists only 20"
    ):
        specs.retry_body(capped, failed_hosts_only=True)
    with pytest.raises(specs.SpecError, match="no host failed"):
        specs.retry_body(finished("COMPLETED", hosts={"failed": 0}), failed_hosts_only=True)


def test_retry_refuses_a_run_still_going() -> None:
    with pytest.raises(specs.SpecError, match="has not finished"):
        specs.retry_body(finished("RUNNING"), failed_hosts_only=False)


def test_outcome() -> None:
    assert specs.outcome(finished("COMPLETED")) == (0, "Completed: m")
    assert specs.outcome(finished("CRASHED")) == (1, "Crashed: m")
    assert specs.outcome(finished("CANCELLED")) == (1, "Cancelled: m")
    assert specs.outcome(finished("RUNNING")) is None
    assert specs.outcome({}) is None


def test_labels_match_the_operators() -> None:
    assert specs.LABEL_RUN_UID == kube_pods.LABEL_RUN_UID
    assert specs.ANNOTATION_HOST == kube_pods.ANNOTATION_HOST
    assert specs.ANNOTATION_OPERATION == kube_pods.ANNOTATION_OPERATION


def pod(name: str, host: str, op: str, created: str) -> dict[str, Any]:
    notes = {specs.ANNOTATION_HOST: host, specs.ANNOTATION_OPERATION: op}
    return {"metadata": {"name": name, "annotations": notes, "creationTimestamp": created}}


def test_pods_of_a_host_and_operation() -> None:
    pods = [pod("b", "h1", "y", "2"), pod("a", "h1", "x", "1"), pod("c", "h2", "x", "0")]
    assert [p["metadata"]["name"] for p in specs.pods_of(pods, "h1", None)] == ["a", "b"]
    assert [p["metadata"]["name"] for p in specs.pods_of(pods, "h1", "y")] == ["b"]
    assert specs.pods_of(pods, "h3", None) == []


def test_lines_of_a_status() -> None:
    assert render.lines("r1", STATUS) == [
        "r1: Running (RUNNING) stage=Execute hosts=1/3",
        "  op update: 3/3 done, 3 changed, 1 failed",
        "  op install: 0/2 done, 2 changed, 0 failed",
        "  web2 failed in Execute/update Error: disk full",
        "  transition t1 - -> PENDING/Pending",
        "  transition t2 PENDING/Pending -> RUNNING/Running",
    ]
    assert render.lines("r1", {}) == ["r1: - stage=- hosts=-"]


def test_changed_lines_print_only_what_is_new() -> None:
    after = {
        **STATUS,
        "state": {"type": "FAILED", "name": "Failed", "message": "too many"},
        "history": [
            *STATUS["history"],
            {"from": "RUNNING/Running", "to": "FAILED/Failed", "at": "t3"},
        ],
    }
    assert render.changed_lines("r1", STATUS, after) == [
        "r1: Failed (FAILED) stage=Execute hosts=1/3 - too many",
        "  transition t3 RUNNING/Running -> FAILED/Failed",
    ]
    assert render.changed_lines("r1", None, STATUS) == render.lines("r1", STATUS)


def test_view_shows_state_stage_bars_failed_hosts_and_transitions() -> None:
    console = Console(file=io.StringIO(), width=100, color_system=None)
    console.print(render.view("r1", STATUS))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "Run r1  Running (RUNNING)  stage Execute  hosts 1/3" in text
    assert "update" in text and "3/3" in text and "install" in text and "0/2" in text
    assert "━" in text  # the bars
    assert "web2 failed in Execute/update Error: disk full" in text
    assert "PENDING/Pending -> RUNNING/Running" in text


@dataclass
class FakeKube:
    """Stands in for Kubectl: a sequence of Run reads, and what was created or patched."""

    reads: list[dict[str, Any]] = field(default_factory=list)
    created: list[dict[str, Any]] = field(default_factory=list)
    patched: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def get_run(self, name: str) -> dict[str, Any]:
        return self.reads.pop(0) if len(self.reads) > 1 else self.reads[0]

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        self.created.append(body)
        return {"metadata": {"name": body["metadata"]["generateName"] + "xyz12"}}

    def patch_spec(self, name: str, spec: dict[str, Any]) -> None:
        self.patched.append((name, spec))


def call(kube: FakeKube, *argv: str) -> int:
    args = cli.parser().parse_args(argv)
    return cli.COMMANDS[args.verb](kube, args)  # type: ignore[arg-type]


def test_start_prints_the_name(capsys: pytest.CaptureFixture[str]) -> None:
    kube = FakeKube()
    assert call(kube, "start", "fleet", "--param", "v=1") == 0
    assert capsys.readouterr().out == "fleet-xyz12\n"
    assert kube.created[0]["spec"]["parameters"] == {"v": "1"}


def test_cancel_pause_resume_patch_the_spec() -> None:
    kube = FakeKube()
    for verb in ("cancel", "pause", "resume"):
        assert call(kube, verb, "r1") == 0
    assert kube.patched == [
        ("r1", {"cancel": True}),
        ("r1", {"paused": True}),
        ("r1", {"paused": False}),
    ]


def test_wait(capsys: pytest.CaptureFixture[str]) -> None:
    running = finished("RUNNING")
    assert call(FakeKube([running, finished("COMPLETED")]), "wait", "r", "--interval", "0") == 0
    assert capsys.readouterr().out == "Completed: m\n"
    assert call(FakeKube([running, finished("FAILED")]), "wait", "r", "--interval", "0") == 1
    assert capsys.readouterr().err == "Failed: m\n"
    assert call(FakeKube([running]), "wait", "r", "--timeout", "0", "--interval", "0") == 2
    assert "timed out; the run is Running (RUNNING)" in capsys.readouterr().err


def test_watch_without_a_terminal_prints_changes_and_exits_with_the_run(
    capsys: pytest.CaptureFixture[str],
) -> None:
    reads = [
        {"status": STATUS},
        {"status": STATUS},
        {"status": {**STATUS, **finished("CANCELLED")["status"]}},
    ]
    code = cli.watch_lines("r1", _seq(reads), 0, lambda _: None)
    assert code == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "r1: Running (RUNNING) stage=Execute hosts=1/3"
    assert out.count("r1: Running (RUNNING) stage=Execute hosts=1/3") == 1
    assert out[-1] == "r1: Cancelled (CANCELLED) stage=Execute hosts=1/3 - m"


def _seq(reads: list[dict[str, Any]]) -> cli.Fetch:
    return lambda: reads.pop(0) if len(reads) > 1 else reads[0]


def test_termination_message() -> None:
    terminated = {"state": {"terminated": {"exitCode": 4, "message": "disk full"}}}
    assert specs.termination_message({"status": {"containerStatuses": [terminated]}}) == (
        "disk full\n"
    )
    assert specs.termination_message({"status": {}}) == ""


class LostLogs:
    """A cluster whose kubelet no longer has a pod's logs: `kubectl logs` fails."""

    def logs(self, pod: str) -> str:
        raise KubectlError(f'container "work" in pod "{pod}" is not available')


def test_logs_fall_back_to_the_termination_message_and_say_so(
    capsys: pytest.CaptureFixture[str],
) -> None:
    terminated = {"state": {"terminated": {"exitCode": 4, "message": "disk full"}}}
    failed = {"metadata": {"name": "p1"}, "status": {"containerStatuses": [terminated]}}
    assert cli.pod_output(LostLogs(), failed) == "disk full\n"  # type: ignore[arg-type]
    err = capsys.readouterr().err
    assert "is not available" in err and "the termination message follows" in err
    # Nothing to fall back on (a pod that succeeded has no message): kubectl's error stands.
    with pytest.raises(KubectlError, match="is not available"):
        cli.pod_output(LostLogs(), {"metadata": {"name": "p2"}, "status": {}})  # type: ignore[arg-type]


def test_watch_in_a_terminal_redraws_and_leaves_the_last_frame() -> None:
    ended = {**STATUS, **finished("COMPLETED")["status"], "hostsSummary": "3/3"}
    reads = [{"status": STATUS}, {"status": ended}]
    out = io.StringIO()
    console = Console(file=out, width=100, force_terminal=True, color_system=None)
    assert cli.watch_live("r1", _seq(reads), 0, lambda _: None, console) == 0
    text = out.getvalue()
    assert "Running (RUNNING)" in text and "Completed (COMPLETED)" in text
    assert text.rstrip().endswith("Completed: m")
