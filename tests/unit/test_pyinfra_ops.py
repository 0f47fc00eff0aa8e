"""pyinfra operations in a Runbook: the API's checks, the units they make (pyinfra's dry mode
is the check, Execute applies), the runner pods, and the plan of a dry run.

The runner's side (pyinfra against real hosts) is in tests/runner/test_runner_pyinfra.py; whole
runs on real hosts in tests/integration/test_pyinfra.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from runstate.api.v1alpha1 import Host, RunbookSpec
from runstate.domain.engine import decide
from runstate.domain.records import Observation
from runstate.domain.work import Kind, Observed, Phase, WorkKey
from runstate.kube.pods import build_pod
from tests.pss import restricted_violations
from tests.unit.sim import T0, run_spec

RUNNER = "registry.example/runstate:1"
LINE = {"op": "files.line", "args": {"path": "/etc/motd", "line": "managed"}}
KEY = {"secretRef": {"name": "fleet-key", "key": "id"}}
SSH = {
    "type": "ssh",
    "ssh": {"privateKey": KEY, "knownHosts": {"secretRef": {"name": "fleet-key", "key": "kh"}}},
}


def spec(*ops: dict[str, Any], **over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "inventory": {
            "hosts": [{"name": "web1", "data": {"tier": "web"}}, {"name": "web2"}],
        },
        "operations": list(ops) or [{"name": "motd", "pyinfra": LINE}],
    }
    body.update(over)
    return body


@pytest.mark.parametrize(
    ("op", "message"),
    [
        ({"name": "x"}, "set exactly one of run and pyinfra"),
        ({"name": "x", "run": "true", "pyinfra": LINE}, "set exactly one of run and pyinfra"),
        ({"name": "x", "check": "true", "pyinfra": LINE}, "takes no check"),
        ({"name": "x", "pyinfra": {"op": "put"}}, "String should match pattern"),
        ({"name": "x", "pyinfra": {}}, "set exactly one of op and deploy"),
        (
            {
                "name": "x",
                "pyinfra": {"deploy": {"configMapRef": {"name": "d", "key": "deploy.py"}}, **LINE},
            },
            "set exactly one of op and deploy",
        ),
        (
            {"name": "x", "pyinfra": {**LINE, "files": {}}},
            "set exactly one of configMapRef and secretRef",
        ),
    ],
)
def test_a_pyinfra_block_that_cannot_work_is_refused(op: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        RunbookSpec.model_validate(spec(op))


def first(body: dict[str, Any], units: tuple[Observed, ...] = (), **obs: Any) -> Any:
    rb = RunbookSpec.model_validate(body)
    d = decide(Observation(run_spec(**obs), rb, None, None, (), T0))
    if not units:
        return d
    return decide(Observation(run_spec(**obs), rb, None, d.progress, units, T0))


def pod_of(intent: Any) -> dict[str, Any]:
    return build_pod(
        run_name="r1",
        run_uid="uid-1",
        namespace="ns",
        intent=intent,
        parameters={},
        runner_image=RUNNER,
    )


def test_prepare_asks_pyinfras_dry_mode_in_the_runner() -> None:
    d = first(spec())
    assert sorted((i.key.kind, i.key.host) for i in d.create) == [
        (Kind.CHECK, "web1"),
        (Kind.CHECK, "web2"),
    ]
    intent = next(i for i in d.create if i.key.host == "web1")
    assert intent.pyinfra is not None and intent.pyinfra.dry
    pod = pod_of(intent)
    container = pod["spec"]["containers"][0]
    assert container["image"] == RUNNER
    argv = container["command"]
    assert argv[:3] == ["runstate", "exec", "--connector=local"]
    assert "--pyinfra-op=files.line" in argv and "--dry" in argv
    args = next(a for a in argv if a.startswith("--pyinfra-args="))
    assert json.loads(args.partition("=")[2]) == LINE["args"]
    host_data = next(a for a in argv if a.startswith("--host-data="))
    assert json.loads(host_data.partition("=")[2]) == {"tier": "web"}
    assert "RUNSTATE_COMMAND" not in {e["name"] for e in container["env"]}
    assert restricted_violations(pod) == []


def check_unit(host: str, code: int, commands: tuple[str, ...] = ()) -> Observed:
    return Observed(
        WorkKey(Kind.CHECK, "motd", host),
        Phase.SUCCEEDED if code == 0 else Phase.FAILED,
        code,
        "" if code == 0 else "Error",
        commands=commands,
    )


def test_execute_applies_only_where_pyinfra_saw_a_change() -> None:
    units = (check_unit("web1", 1, ("echo managed >> /etc/motd",)), check_unit("web2", 0))
    d = first(spec(), units)
    (intent,) = d.create
    assert (intent.key.kind, intent.key.host) == (Kind.RUN, "web1")
    assert intent.pyinfra is not None and not intent.pyinfra.dry
    assert "--dry" not in pod_of(intent)["spec"]["containers"][0]["command"]


def test_a_dry_run_plans_with_pyinfras_commands() -> None:
    commands = tuple(f"command {i}" for i in range(30))
    units = (check_unit("web1", 1, commands), check_unit("web2", 0))
    d = first(spec(), units, dryRun=True)
    assert d.create == ()
    (planned,) = d.summary.plan
    assert (planned.change, planned.no_change) == (["web1"], ["web2"])
    assert planned.commands == {"web1": [f"command {i}" for i in range(20)]}


def test_files_and_deploys_are_mounted_from_their_config_maps() -> None:
    files = {**LINE, "op": "files.put", "args": {"src": "nginx.conf", "dest": "/etc/x"}}
    files["files"] = {"configMapRef": {"name": "nginx-files"}}
    deploy = {"deploy": {"configMapRef": {"name": "deploys", "key": "web.py"}}}
    body = spec(
        {"name": "put", "pyinfra": files},
        {"name": "deploy", "pyinfra": deploy, "dependsOn": []},
        connector=SSH,
    )
    connect = [Observed(WorkKey(Kind.CONNECT, "", h), Phase.SUCCEEDED, 0) for h in ("web1", "web2")]
    d = first(body, tuple(connect))
    pods = {i.key.operation: pod_of(i) for i in d.create if i.key.host == "web1"}
    put, dep = pods["put"], pods["deploy"]
    argv = put["spec"]["containers"][0]["command"]
    assert "--connector=ssh" in argv and "--pyinfra-files=/var/run/runstate/pyinfra/files" in argv
    assert {"name": "runstate-pyinfra-files", "configMap": {"name": "nginx-files"}} in put["spec"][
        "volumes"
    ]
    argv = dep["spec"]["containers"][0]["command"]
    assert "--pyinfra-deploy=/var/run/runstate/deploy/deploy.py" in argv
    assert not [a for a in argv if a.startswith("--pyinfra-op")]
    assert {
        "name": "runstate-deploy",
        "configMap": {"name": "deploys", "items": [{"key": "web.py", "path": "deploy.py"}]},
    } in dep["spec"]["volumes"]
    for pod in pods.values():
        assert restricted_violations(pod) == []


def test_on_a_node_pyinfra_runs_chrooted_into_its_root() -> None:
    body = spec(
        inventory={"nodeSelector": {"matchLabels": {"role": "edge"}}},
        connector={"type": "node", "node": {"allowPrivileged": True}},
    )
    rb = RunbookSpec.model_validate(body)
    obs = Observation(
        run_spec(), rb, None, None, (), T0, nodes=(Host(name="edge-1"),), privileged_allowed=True
    )
    (intent,) = decide(obs).create
    argv = pod_of(intent)["spec"]["containers"][0]["command"]
    assert argv[2:4] == ["--connector=local", "--chroot=/host"]
    assert "--pyinfra-op=files.line" in argv


def test_the_whole_per_host_plan_goes_to_the_store_once() -> None:
    from runstate.controller import hotstate

    commands = tuple(f"command {i}" for i in range(30))
    units = (check_unit("web1", 1, commands), check_unit("web2", 0))
    d = first(spec(), units, dryRun=True)
    assert d.summary is not None
    new = hotstate.new_results(d.summary, set())
    assert new.payload["@plan|motd|web1"] == {"commands": list(commands)}  # all 30
    assert "@plan|motd|web2" not in new.payload  # no change: pyinfra reported no command
    again = hotstate.new_results(d.summary, set(new.payload))
    assert not [k for k in again.payload if k.startswith("@plan|")]


@pytest.mark.parametrize(
    ("pyinfra", "field", "message"),
    [
        ({"op": "files.nope"}, "spec.operations[0].pyinfra.op", "files"),
        (
            {"op": "files.put", "args": {"src": "a", "dset": "/x"}},
            "spec.operations[0].pyinfra.args.dset",
            "did you mean 'dest'",
        ),
    ],
)
def test_an_operation_pyinfra_lacks_fails_at_setup_naming_the_field(
    pyinfra: dict[str, Any], field: str, message: str
) -> None:
    d = first(spec({"name": "put", "pyinfra": pyinfra}))
    assert d.create == ()
    assert d.progress.state.name == "Failed"
    assert f"{field}: " in d.progress.state.message and message in d.progress.state.message


def test_the_runners_pyinfra_result_reaches_the_plan_and_the_warnings() -> None:
    from runstate.kube.pods import observe
    from runstate.runner.result import UnitOutcome

    d = first(spec())
    intent = next(i for i in d.create if i.key.host == "web1")
    pod = pod_of(intent)
    outcome = UnitOutcome(
        exit_code=1,
        error=None,
        message="files.line would change",
        duration_seconds=0.5,
        changed=True,
        commands=("echo managed >> /etc/motd",),
        warnings=2,
    )
    pod["status"] = {
        "phase": "Failed",
        "containerStatuses": [
            {
                "name": "work",
                "state": {"terminated": {"exitCode": 1, "message": outcome.encode().decode()}},
            }
        ],
    }
    unit = observe(pod)
    assert unit is not None
    assert unit.commands == ("echo managed >> /etc/motd",) and unit.warnings == 2
    later = first(spec(), (unit, check_unit("web2", 0)), dryRun=True)
    assert later.summary.plan[0].commands == {"web1": ["echo managed >> /etc/motd"]}
    assert later.summary.stage_warnings.Prepare == 2
