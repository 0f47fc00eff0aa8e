"""Node inventories (each matching Node is a host) and the size of a big run's status."""

import json
from typing import Any

import pytest
from pydantic import ValidationError

from runstate.api.v1alpha1 import Inventory, RunbookSpec
from runstate.domain.engine import Observation, decide, validate_runbook
from runstate.domain.inventory import describe_selector
from runstate.domain.work import Intent, Kind, Observed, Phase, WorkKey
from runstate.kube import nodes, pods, status
from tests.unit.sim import T0, run_spec

RUNNER = "ghcr.io/runstate/runstate:0.1.0"


def node(name: str, *, labels: dict[str, str] | None = None, taints: Any = ()) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels or {}}, "spec": {"taints": list(taints)}}


EDGE = {"role": "edge"}
NO_SCHEDULE = {"key": "dedicated", "value": "edge", "effect": "NoSchedule"}


def node_runbook(**inventory: Any) -> RunbookSpec:
    return RunbookSpec.model_validate(
        {
            "inventory": {"nodeSelector": {"matchLabels": EDGE}, **inventory},
            "operations": [{"name": "patch", "run": "true"}],
        }
    )


def test_a_node_is_a_host_with_its_roles_as_groups_and_labels_and_taints_as_data() -> None:
    host = nodes.host_from_node(
        node(
            "edge-1",
            labels={"role": "edge", "node-role.kubernetes.io/worker": ""},
            taints=[NO_SCHEDULE, {"key": "spot", "effect": "NoExecute"}],
        )
    )
    assert host.name == "edge-1" and host.groups == ["worker"]
    assert host.data == {
        "labels": {"role": "edge", "node-role.kubernetes.io/worker": ""},
        "taints": [NO_SCHEDULE, {"key": "spot", "effect": "NoExecute"}],
    }
    assert nodes.tolerations(host.data["taints"]) == [
        {"key": "dedicated", "operator": "Equal", "value": "edge", "effect": "NoSchedule"},
        {"key": "spot", "operator": "Exists", "effect": "NoExecute"},
    ]
    names = [h.name for h in nodes.hosts_from_nodes([node("b"), node("a"), node("c")])]
    assert names == ["a", "b", "c"]  # the same order on every replica and restart


def test_selector_in_kubectl_syntax() -> None:
    inv = Inventory.model_validate(
        {
            "nodeSelector": {
                "matchLabels": {"role": "edge", "env": "prod"},
                "matchExpressions": [
                    {"key": "zone", "operator": "In", "values": ["a", "b"]},
                    {"key": "spot", "operator": "DoesNotExist"},
                    {"key": "gpu", "operator": "Exists"},
                    {"key": "tier", "operator": "NotIn", "values": ["dev"]},
                ],
            }
        }
    )
    assert inv.node_selector is not None
    assert describe_selector(inv.node_selector) == (
        "env=prod,role=edge,zone in (a,b),!spot,gpu,tier notin (dev)"
    )


@pytest.mark.parametrize(
    ("inventory", "message"),
    [
        (
            {"hosts": [{"name": "h"}], "nodeSelector": {"matchLabels": EDGE}},
            "hosts and nodeSelector are alternatives: set one of them",
        ),
        (
            {"nodeSelector": {"matchExpressions": [{"key": "zone", "operator": "In"}]}},
            "operator In needs at least one value",
        ),
        (
            {
                "nodeSelector": {
                    "matchExpressions": [{"key": "z", "operator": "Exists", "values": ["a"]}]
                }
            },
            "operator Exists takes no values",
        ),
    ],
)
def test_bad_node_inventories_are_rejected(inventory: Any, message: str) -> None:
    with pytest.raises(ValidationError) as err:
        Inventory.model_validate(inventory)
    assert message in str(err.value)


def test_a_node_runbook_is_valid_before_any_node_is_known() -> None:
    spec = RunbookSpec.model_validate(
        {
            "inventory": {"nodeSelector": {"matchLabels": EDGE}},
            "operations": [{"name": "patch", "run": "true", "hosts": {"groups": ["worker"]}}],
        }
    )
    validate_runbook(spec)  # groups come from the Nodes: none is "unknown" in advance


def start(rb: RunbookSpec, hosts: Any) -> Any:
    return decide(Observation(run_spec(), rb, None, None, (), T0, nodes=hosts))


def test_pods_of_a_node_host_are_pinned_to_it_and_tolerate_its_taints_when_asked() -> None:
    hosts = nodes.hosts_from_nodes(
        [node("edge-1", labels=EDGE, taints=[NO_SCHEDULE]), node("edge-2", labels=EDGE)]
    )
    d = start(node_runbook(tolerateTaints=True), hosts)
    built = {
        i.key.host: pods.build_pod(
            run_name="r", run_uid="u", namespace="ns", intent=i, parameters={}, runner_image=RUNNER
        )
        for i in d.create
    }
    assert sorted(built) == ["edge-1", "edge-2"]
    assert built["edge-1"]["spec"]["nodeName"] == "edge-1"
    assert built["edge-1"]["spec"]["tolerations"] == [
        {"key": "dedicated", "operator": "Equal", "value": "edge", "effect": "NoSchedule"}
    ]
    assert "tolerations" not in built["edge-2"]["spec"]
    env = {e["name"]: e.get("value") for e in built["edge-1"]["spec"]["containers"][0]["env"]}
    assert json.loads(env["RUNSTATE_HOST_DATA"])["labels"] == EDGE
    # Not asked: pinned, but no toleration.
    d = start(node_runbook(), hosts)
    pod = pods.build_pod(
        run_name="r",
        run_uid="u",
        namespace="ns",
        intent=d.create[0],
        parameters={},
        runner_image=RUNNER,
    )
    assert pod["spec"]["nodeName"] == "edge-1" and "tolerations" not in pod["spec"]


def test_no_matching_node_fails_the_run_naming_the_selector() -> None:
    d = start(node_runbook(), ())
    assert d.progress.state.name == "Failed"
    assert d.progress.state.message == (
        "Setup failed: spec.inventory.nodeSelector: no Node matches 'role=edge'"
    )


def test_status_stays_small_for_10000_hosts_and_20_operations() -> None:
    n_hosts, n_ops = 10_000, 20
    rb = RunbookSpec.model_validate(
        {
            "inventory": {"hosts": [{"name": f"host-{i:05d}.example.com"} for i in range(n_hosts)]},
            "operations": [{"name": f"op-{j:02d}", "run": "true"} for j in range(n_ops)],
            "config": {"parallel": 10_000, "failPercent": 100},
        }
    )
    # Every op ran on every host; a tenth of the hosts failed their first op with long output.
    units = []
    for i in range(n_hosts):
        host = f"host-{i:05d}.example.com"
        for j in range(n_ops):
            key = WorkKey(Kind.RUN, f"op-{j:02d}", host)
            if i % 10 == 0:
                if j == 0:
                    units.append(Observed(key, Phase.FAILED, 1, "Error", "x" * 4000))
                continue
            units.append(Observed(key, Phase.SUCCEEDED, 0, "Completed"))
    first = decide(Observation(run_spec(), rb, None, None, (), T0))
    d = decide(Observation(run_spec(), rb, None, first.progress, tuple(units), T0))
    assert d.progress.state.name == "Completed", d.progress.state.message
    st = status.run_status(d, previous={}, generation=1, history=[], now=T0)
    size = len(json.dumps(st))
    assert st["hosts"] == {
        "total": 10_000,
        "active": 9_000,
        "failed": 1_000,
        "unreachable": 0,
        "limited": 0,
    }
    assert len(st["failedHosts"]) == 20 and len(st["operations"]) == n_ops
    assert size < 32 * 1024, size  # the object limit is 1 MiB; results stay in the store
    assert d.summary is not None and len(d.summary.results) == 9_000 * n_ops + 1_000


def test_a_pod_that_starts_slowly_is_a_warning_of_its_stage() -> None:
    rb = RunbookSpec.model_validate(
        {
            "inventory": {"hosts": [{"name": "a"}, {"name": "b"}]},
            "operations": [{"name": "op", "run": "true", "check": "false"}],
            "config": {"slowStartSeconds": 30},
        }
    )

    def unit(kind: Kind, host: str, waited: int) -> Observed:
        return Observed(
            WorkKey(kind, "op", host),
            Phase.SUCCEEDED,
            0,
            "Completed",
            started_at=f"2026-11-24T12:00:{waited:02d}Z",
            start_delay=waited,
        )

    units = (
        unit(Kind.CHECK, "a", 31),  # slow: a Prepare warning
        unit(Kind.CHECK, "b", 30),  # exactly the threshold: not slow
        unit(Kind.RUN, "a", 45),  # slow: an Execute warning
    )
    first = decide(Observation(run_spec(), rb, None, None, (), T0))
    d = decide(Observation(run_spec(), rb, None, first.progress, units, T0))
    assert d.summary is not None
    warnings = d.summary.stage_warnings
    assert (warnings.Prepare, warnings.Execute) == (1, 1)


def test_a_pods_start_delay_is_read_from_its_creation_and_start() -> None:
    intent = Intent(key=WorkKey(Kind.RUN, "op", "a"), command="x", image="alpine")
    pod = pods.build_pod(
        run_name="r", run_uid="u", namespace="ns", intent=intent, parameters={}, runner_image=RUNNER
    )
    pod["metadata"]["creationTimestamp"] = "2026-11-24T12:00:00Z"
    pod["status"] = {
        "phase": "Running",
        "containerStatuses": [
            {"name": pods.CONTAINER, "state": {"running": {"startedAt": "2026-11-24T12:01:05Z"}}}
        ],
    }
    unit = pods.observe(pod)
    assert unit is not None and unit.start_delay == 65.0
