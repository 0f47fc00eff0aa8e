"""Connectors: the API's checks, per-host resolution, the pods each connector builds, the
runner's typed result read back, and the Connect stage of an ssh Runbook.

The pods are checked as a user (or an admission controller) would read them; the real hosts
behind them are in tests/integration/test_connectors.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from runstate.api.v1alpha1 import Host, RunbookSpec
from runstate.domain import connection
from runstate.domain.engine import decide
from runstate.domain.errors import SpecError
from runstate.domain.intents import build_intent
from runstate.domain.records import Observation
from runstate.domain.targets import NodeConnection, SshConnection
from runstate.domain.work import Kind, Observed, Phase, WorkKey
from runstate.kube.pods import build_pod, observe
from runstate.runner.result import ErrorClass, UnitOutcome
from runstate_stores import InMemoryStateStore
from tests.fakekube import FakeKube
from tests.pss import restricted_violations
from tests.unit.operator_harness import Kubelet, Operator, drive, run_status
from tests.unit.sim import T0, run_spec

RUNNER = "registry.example/runstate:1"
KEY = {"secretRef": {"name": "fleet-key", "key": "id"}}
KNOWN = {"secretRef": {"name": "fleet-key", "key": "known_hosts"}}
SSH_SETTINGS: dict[str, Any] = {"user": "deploy", "privateKey": KEY, "knownHosts": KNOWN}
SSH: dict[str, Any] = {"type": "ssh", "ssh": SSH_SETTINGS}


def spec(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "inventory": {
            "hosts": [
                {"name": "web1", "data": {"ssh_hostname": "10.0.0.1", "ssh_port": 2222}},
                {"name": "web2"},
            ]
        },
        "connector": SSH,
        "operations": [{"name": "conf", "check": "test -f /etc/x", "run": "touch /etc/x"}],
    }
    body.update(over)
    return body


# ---- The API: what one connector shows on its own.


@pytest.mark.parametrize(
    ("connector", "message"),
    [
        ({"type": "ssh"}, "type ssh needs ssh settings"),
        ({"type": "pod", "ssh": SSH["ssh"]}, "ssh settings are for type ssh, not pod"),
        ({"type": "ssh", "ssh": {"privateKey": KEY}}, "knownHosts is required"),
        (
            {
                "type": "ssh",
                "ssh": {"privateKey": KEY, "knownHosts": KNOWN, "insecureSkipHostKeyCheck": True},
            },
            "knownHosts and insecureSkipHostKeyCheck are alternatives",
        ),
        (
            {
                "type": "ssh",
                "ssh": {
                    "privateKey": KEY,
                    "knownHosts": {**KNOWN, "configMapRef": {"name": "k", "key": "k"}},
                },
            },
            "set exactly one of secretRef and configMapRef",
        ),
        ({"type": "pod", "node": {"allowPrivileged": True}}, "node settings are for type node"),
        ({"type": "ssh", "ssh": {**SSH["ssh"], "user": "a b"}}, "String should match pattern"),
    ],
)
def test_a_connector_that_cannot_work_is_refused_with_the_reason(
    connector: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        RunbookSpec.model_validate(spec(connector=connector))


# ---- The domain: rules that need more than the connector.


def node_spec(**node: Any) -> dict[str, Any]:
    return spec(
        inventory={"nodeSelector": {"matchLabels": {"role": "edge"}}},
        connector={"type": "node", "node": node},
    )


@pytest.mark.parametrize(
    ("body", "allowed", "field", "message"),
    [
        (
            spec(connector={"type": "node", "node": {"allowPrivileged": True}}),
            True,
            "spec.connector.type",
            "node needs a Node inventory",
        ),
        (node_spec(), True, "spec.connector.node.allowPrivileged", "must be true for type node"),
        (
            node_spec(allowPrivileged=True),
            False,
            "spec.connector.type",
            "not allowed by this operator: set operations.allowPrivileged",
        ),
        (
            spec(
                operations=[
                    {"name": "a", "run": "true"},
                    {"name": "b", "run": "true", "connector": {"type": "node"}},
                ]
            ),
            True,
            "spec.operations[1].connector.type",
            "node needs a Node inventory",
        ),
        (
            spec(
                hooks={"onFailure": ["page"]},
                hookOperations=[{"name": "page", "run": "true", "connector": SSH}],
            ),
            True,
            "spec.hookOperations[0].connector.type",
            "ssh needs hosts",
        ),
        (
            spec(inventory={"hosts": [{"name": "a", "data": {"ssh_port": 70000}}]}),
            True,
            "spec.inventory.hosts[0].data.ssh_port",
            "must be a port",
        ),
        (
            spec(inventory={"hosts": [{"name": "a", "data": {"ssh_user": ""}}]}),
            True,
            "spec.inventory.hosts[0].data.ssh_user",
            "non-empty string",
        ),
    ],
)
def test_connector_rules_name_the_field(
    body: dict[str, Any], allowed: bool, field: str, message: str
) -> None:
    rb = RunbookSpec.model_validate(body)
    with pytest.raises(SpecError) as raised:
        connection.validate(rb, privileged_allowed=allowed)
    assert raised.value.field == field
    assert message in raised.value.message


def test_a_node_connector_with_both_opt_ins_is_valid() -> None:
    connection.validate(
        RunbookSpec.model_validate(node_spec(allowPrivileged=True)), privileged_allowed=True
    )


def test_host_data_overrides_the_address_user_and_port_per_host() -> None:
    rb = RunbookSpec.model_validate(spec())
    web1, web2 = rb.inventory.hosts
    first = connection.resolve(rb.connector, web1)
    second = connection.resolve(rb.connector, web2)
    assert isinstance(first, SshConnection) and isinstance(second, SshConnection)
    assert (first.hostname, first.user, first.port) == ("10.0.0.1", "deploy", 2222)
    assert (second.hostname, second.user, second.port) == ("web2", "deploy", 22)
    # A hook on no host runs in its pod, whatever the Runbook's connector.
    assert connection.resolve(rb.connector, None) is None


# ---- The pods.


def first_intents(body: dict[str, Any]) -> dict[tuple[str, str], Any]:
    rb = RunbookSpec.model_validate(body)
    d = decide(Observation(run_spec(), rb, None, None, (), T0))
    return {(i.key.kind.value, i.key.host): i for i in d.create}


def pod_of(intent: Any, **params: str) -> dict[str, Any]:
    return build_pod(
        run_name="r1",
        run_uid="uid-1",
        namespace="ns",
        intent=intent,
        parameters=params,
        runner_image=RUNNER,
    )


def test_an_ssh_runbook_connects_to_every_host_first_with_the_runners_probe() -> None:
    intents = first_intents(spec())
    assert sorted(intents) == [("connect", "web1"), ("connect", "web2")]
    pod = pod_of(intents[("connect", "web1")])
    container = pod["spec"]["containers"][0]
    assert container["image"] == RUNNER
    assert container["command"] == [
        "runstate",
        "exec",
        "--connector=ssh",
        "--host=10.0.0.1",
        "--port=2222",
        "--user=deploy",
        "--key=/var/run/runstate/ssh/id",
        "--connect-timeout=10",
        "--known-hosts=/var/run/runstate/ssh/known_hosts",
        "--result=/dev/termination-log",
        "--connect-only",
    ]
    assert "RUNSTATE_COMMAND" not in {e["name"] for e in container["env"]}
    assert container["terminationMessagePolicy"] == "File"


def ssh_run_pod(**ssh: Any) -> dict[str, Any]:
    connector = {"type": "ssh", "ssh": {**SSH["ssh"], **ssh}}
    rb = RunbookSpec.model_validate(
        spec(
            connector=connector,
            operations=[
                {
                    "name": "conf",
                    "run": "touch /etc/x",
                    "timeoutSeconds": 30,
                    "env": [{"name": "TIER", "value": "web"}],
                }
            ],
        )
    )
    intent = build_intent(
        rb,
        WorkKey(Kind.RUN, "conf", "web2"),
        "touch /etc/x",
        host=rb.inventory.hosts[1],
        op=rb.operations[0],
    )
    return pod_of(intent, release="r7")


def test_an_ssh_operation_pod_runs_the_runner_with_the_key_as_a_0400_file() -> None:
    pod = ssh_run_pod(
        sudo=True,
        jumpHost={"host": "bastion.example", "port": 2200},
        connectTimeoutSeconds=5,
    )
    spec_ = pod["spec"]
    container = spec_["containers"][0]
    argv = container["command"]
    assert "--sudo" in argv and "--timeout=30" in argv and "--connect-timeout=5" in argv
    assert "--jump=deploy@bastion.example:2200" in argv
    forward = next(a for a in argv if a.startswith("--forward-env="))
    assert {"RUNSTATE_HOST", "RUNSTATE_PARAM_RELEASE", "TIER"} <= set(
        forward.partition("=")[2].split(",")
    )
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["RUNSTATE_COMMAND"] == "touch /etc/x"
    # The pod's deadline leaves the runner time to report its own Timeout first.
    assert spec_["activeDeadlineSeconds"] > 30 + 5
    (volume,) = spec_["volumes"]
    assert volume == {
        "name": "runstate-ssh",
        "projected": {
            "defaultMode": 0o400,
            "sources": [
                {"secret": {"name": "fleet-key", "items": [{"key": "id", "path": "id"}]}},
                {
                    "secret": {
                        "name": "fleet-key",
                        "items": [{"key": "known_hosts", "path": "known_hosts"}],
                    }
                },
            ],
        },
    }
    assert container["volumeMounts"] == [
        {"name": "runstate-ssh", "mountPath": "/var/run/runstate/ssh", "readOnly": True}
    ]
    # Restricted: not root, no escalation, no capabilities, the runtime's seccomp profile.
    assert spec_["securityContext"]["runAsNonRoot"] is True
    assert spec_["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    assert spec_["automountServiceAccountToken"] is False


def test_known_hosts_from_a_config_map_and_the_insecure_opt_in() -> None:
    pod = ssh_run_pod(knownHosts={"configMapRef": {"name": "hosts", "key": "kh"}})
    sources = pod["spec"]["volumes"][0]["projected"]["sources"]
    assert sources[1] == {
        "configMap": {"name": "hosts", "items": [{"key": "kh", "path": "known_hosts"}]}
    }
    insecure = {"type": "ssh", "ssh": {"privateKey": KEY, "insecureSkipHostKeyCheck": True}}
    intents = first_intents(spec(connector=insecure))
    argv = pod_of(intents[("connect", "web1")])["spec"]["containers"][0]["command"]
    assert "--insecure-skip-host-key-check" in argv
    assert not [a for a in argv if a.startswith("--known-hosts")]


def test_a_node_pod_is_privileged_chrooted_into_its_nodes_root() -> None:
    rb = RunbookSpec.model_validate(node_spec(allowPrivileged=True))
    nodes = (Host(name="edge-1", data={"labels": {"role": "edge"}}),)
    obs = Observation(run_spec(), rb, None, None, (), T0, nodes=nodes, privileged_allowed=True)
    (intent,) = [i for i in decide(obs).create if i.key.kind is Kind.CHECK]
    assert isinstance(intent.connection, NodeConnection)
    pod = pod_of(intent)
    spec_ = pod["spec"]
    container = spec_["containers"][0]
    assert container["command"] == [
        "runstate",
        "exec",
        "--connector=local",
        "--chroot=/host",
        "--result=/dev/termination-log",
    ]
    assert {"name": "RUNSTATE_COMMAND", "value": "test -f /etc/x"} in container["env"]
    assert container["securityContext"]["privileged"] is True
    assert spec_["nodeName"] == "edge-1"
    assert spec_["hostPID"] and spec_["hostNetwork"] and spec_["hostIPC"]
    assert spec_["volumes"] == [
        {"name": "runstate-host", "hostPath": {"path": "/", "type": "Directory"}}
    ]
    assert container["volumeMounts"] == [{"name": "runstate-host", "mountPath": "/host"}]
    # Without the operator's opt-in the same run fails at Setup and starts nothing.
    refused = decide(Observation(run_spec(), rb, None, None, (), T0, nodes=nodes))
    assert not refused.create
    assert refused.progress.state.name == "Failed"
    assert "spec.connector.type: node is not allowed" in refused.progress.state.message


def test_a_pod_connector_pod_is_restricted_and_runs_the_command_itself() -> None:
    intents = first_intents(spec(connector={"type": "pod"}))
    pod = pod_of(intents[("check", "web1")])
    container = pod["spec"]["containers"][0]
    assert container["command"] == ["/bin/sh", "-c", "test -f /etc/x"]
    assert container["image"] == "alpine:3.20"
    assert pod["spec"]["securityContext"]["runAsUser"] == 65532
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert "volumes" not in pod["spec"]


# ---- The runner's result, read back.


def finished(pod: dict[str, Any], code: int, message: str) -> dict[str, Any]:
    pod = json.loads(json.dumps(pod))
    pod["status"] = {
        "phase": "Succeeded" if code == 0 else "Failed",
        "containerStatuses": [
            {
                "name": "work",
                "state": {"terminated": {"exitCode": code, "reason": "Error", "message": message}},
            }
        ],
    }
    return pod


@pytest.mark.parametrize(
    ("outcome", "code", "reason", "message"),
    [
        (
            UnitOutcome(None, ErrorClass.UNREACHABLE, "10.0.0.1:2222: refused", 0.1),
            201,
            "Unreachable",
            "10.0.0.1:2222: refused",
        ),
        (
            UnitOutcome(None, ErrorClass.HOST_KEY_MISMATCH, "key changed", 0.1),
            203,
            "HostKeyMismatch",
            "key changed",
        ),
        (
            UnitOutcome(None, ErrorClass.TIMEOUT, "ran longer than 30s", 30, "still going"),
            205,
            "Timeout",
            "ran longer than 30s\nstill going",
        ),
        (
            UnitOutcome(3, None, "exited with code 3", 0.2, "no such file"),
            3,
            "Error",
            "no such file",
        ),
    ],
)
def test_the_runners_result_gives_the_reason_and_message(
    outcome: UnitOutcome, code: int, reason: str, message: str
) -> None:
    pod = ssh_run_pod()
    obs = observe(finished(pod, code, outcome.encode().decode()))
    assert obs is not None
    assert (obs.reason, obs.message, obs.exit_code) == (reason, message, code)
    assert obs.timed_out is (outcome.error is ErrorClass.TIMEOUT)


def test_a_runner_that_died_before_writing_its_result_keeps_the_pods_word() -> None:
    obs = observe(finished(ssh_run_pod(), 137, "OOMKilled"))
    assert obs is not None and (obs.reason, obs.message) == ("Error", "OOMKilled")
    # A pod connector's output that happens to be JSON is never read as a runner result.
    intents = first_intents(spec(connector={"type": "pod"}))
    fake = UnitOutcome(None, ErrorClass.UNREACHABLE, "x", 0).encode().decode()
    obs = observe(finished(pod_of(intents[("check", "web1")]), 1, fake))
    assert obs is not None and obs.reason == "Error" and obs.message == fake


# ---- The Connect stage: reasons, unreachable hosts and the insecure warning.


def connect_unit(host: str, *, ok: bool, reason: str = "", skipped: bool = False) -> Observed:
    return Observed(
        WorkKey(Kind.CONNECT, "", host),
        Phase.SUCCEEDED if ok else Phase.FAILED,
        0 if ok else 201,
        reason,
        "" if ok else f"{host}: connection refused",
        host_key_check_skipped=skipped,
    )


def test_unreachable_hosts_are_counted_apart_and_go_no_further() -> None:
    rb = RunbookSpec.model_validate(spec())
    first = decide(Observation(run_spec(), rb, None, None, (), T0))
    units = (
        connect_unit("web1", ok=False, reason="Unreachable"),
        connect_unit("web2", ok=True),
    )
    d = decide(Observation(run_spec(), rb, None, first.progress, units, T0))
    assert [(i.key.kind, i.key.host) for i in d.create] == [(Kind.CHECK, "web2")]
    summary = d.summary
    assert summary is not None
    assert summary.hosts.unreachable == 1 and summary.hosts.failed == 1
    assert [(f.host, f.reason) for f in summary.failed_hosts] == [("web1", "Unreachable")]


def test_each_host_connected_without_checking_its_key_is_a_connect_warning() -> None:
    insecure = {"type": "ssh", "ssh": {"privateKey": KEY, "insecureSkipHostKeyCheck": True}}
    rb = RunbookSpec.model_validate(spec(connector=insecure))
    first = decide(Observation(run_spec(), rb, None, None, (), T0))
    units = (
        connect_unit("web1", ok=True, skipped=True),
        connect_unit("web2", ok=True, skipped=True),
    )
    d = decide(Observation(run_spec(), rb, None, first.progress, units, T0))
    assert d.summary is not None and d.summary.stage_warnings.Connect == 2
    assert {(i.key.kind, i.key.host) for i in d.create} == {
        (Kind.CHECK, "web1"),
        (Kind.CHECK, "web2"),
    }


# ---- The operator's own opt-in, through the reconciler.


async def test_a_node_run_fails_at_setup_unless_the_operator_allows_privileged_pods() -> None:
    kube, store = FakeKube(), InMemoryStateStore()
    kube.apply("nodes", {"metadata": {"name": "edge-1", "labels": {"role": "edge"}}}, namespace="")
    body = {
        "apiVersion": "runstate.dev/v1alpha1",
        "kind": "Run",
        "metadata": {"name": "r1"},
        "spec": {"runbook": node_spec(allowPrivileged=True)},
    }
    kube.apply("runs", body)
    op = Operator(kube, store)
    await drive(op, Kubelet(kube), "r1")
    state = run_status(kube, "r1")["state"]
    assert (state["type"], state["name"]) == ("FAILED", "Failed")
    assert "spec.connector.type: node is not allowed by this operator" in state["message"]
    assert "operations.allowPrivileged" in state["message"]
    assert kube.pods() == []
    assert "Failed" in kube.event_reasons("r1")


# ---- Pod Security: every pod and ssh pod the builders make passes "restricted".


def every_pod(connector: dict[str, Any]) -> list[dict[str, Any]]:
    """Pods of every kind the builders make for `connector`: probes, checks, operations
    (timeouts, env, a service account, retries), a hook on no host and one per host."""
    body = spec(
        connector=connector,
        connect={"run": "true", "retries": 1, "timeoutSeconds": 5},
        defaults={"serviceAccountName": "deployer", "env": [{"name": "A", "value": "1"}]},
        operations=[
            {"name": "conf", "check": "true", "run": "true", "timeoutSeconds": 9},
            {"name": "restart", "run": "true", "retries": 2, "image": "busybox:1"},
        ],
        hooks={"onCompletion": ["notify", "per-host"]},
        hookOperations=[
            {"name": "notify", "run": "true"},
            {"name": "per-host", "run": "true", "hosts": {"names": ["web1"]}},
        ],
    )
    rb = RunbookSpec.model_validate(body)
    pods: list[dict[str, Any]] = []
    for kind, op, command in [
        (Kind.CONNECT, None, "true"),
        (Kind.CONNECT, None, ""),
        (Kind.CHECK, rb.operations[0], "true"),
        (Kind.RUN, rb.operations[0], "true"),
        (Kind.RUN, rb.operations[1], "true"),
        (Kind.HOOK, rb.hook_operations[1], "true"),
    ]:
        for host in rb.inventory.hosts:
            key = WorkKey(kind, op.name if op else "", host.name)
            pods.append(pod_of(build_intent(rb, key, command, host=host, op=op)))
    hook = WorkKey(Kind.HOOK, "notify", "")
    pods.append(pod_of(build_intent(rb, hook, "true", host=None, op=rb.hook_operations[0])))
    return pods


@pytest.mark.parametrize("connector", [{"type": "pod"}, SSH], ids=["pod", "ssh"])
def test_every_pod_and_ssh_work_pod_meets_the_restricted_profile(
    connector: dict[str, Any],
) -> None:
    pods = every_pod(connector)
    assert len(pods) == 13
    for pod in pods:
        assert restricted_violations(pod) == [], pod["metadata"]["name"]
        assert pod["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "runstate"


def test_node_pods_are_privileged_by_design_and_the_profile_says_so() -> None:
    rb = RunbookSpec.model_validate(node_spec(allowPrivileged=True))
    nodes = (Host(name="edge-1"),)
    obs = Observation(run_spec(), rb, None, None, (), T0, nodes=nodes, privileged_allowed=True)
    (intent,) = decide(obs).create
    violations = " ".join(restricted_violations(pod_of(intent)))
    for rule in ("privileged", "host namespaces", "hostPath"):
        assert rule in violations.lower() or rule in violations, violations
