"""What /metrics says before anything happened: primed counters, build info, no standby gauge."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from runstate import __version__, metrics
from runstate.controller import runtime
from runstate.controller.peering import PeeringGate
from runstate.controller.view import ObjectKey
from runstate.domain.work import RunResult
from runstate_stores import InMemoryStateStore
from tests.fakekube import FakeKube
from tests.unit.operator_harness import Operator


def samples(
    name: str, *labels: str, registry: CollectorRegistry = metrics.REGISTRY
) -> dict[tuple[str, ...], float]:
    """Every exposed sample of `name`: the values of `labels`, in that order -> its value."""
    text = generate_latest(registry).decode()
    return {
        tuple(s.labels[label] for label in labels): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


def of(name: str, namespace: str, runbook: str, last: str) -> dict[tuple[str, ...], float]:
    """The samples of one runbook: (namespace, runbook, ... `last` labels) -> value."""
    found = samples(name, "namespace", "runbook", *last.split())
    return {k: v for k, v in found.items() if k[:2] == (namespace, runbook)}


def test_priming_a_runbook_creates_every_alerting_series_at_zero() -> None:
    metrics.prime_runbook("prime-ns", "web")
    failures = of("runstate_run_failures_total", "prime-ns", "web", "state_type reason")
    expected = {
        ("prime-ns", "web", state_type, reason)
        for state_type in ("FAILED", "CRASHED")
        for reason in metrics.FAILURE_REASONS
    }
    assert set(failures) == expected and set(failures.values()) == {0.0}
    stages = {"Setup", "Connect", "Prepare", "Execute", "Disconnect"}
    for name in ("runstate_host_failures_total", "runstate_stage_warnings_total"):
        primed = of(name, "prime-ns", "web", "stage")
        assert {k[2] for k in primed} == stages and set(primed.values()) == {0.0}


def test_priming_twice_keeps_what_was_counted() -> None:
    metrics.prime_runbook("prime-ns", "twice")
    metrics.RUN_FAILURES.labels("prime-ns", "twice", "FAILED", "hosts_failed").inc()
    metrics.prime_runbook("prime-ns", "twice")
    failures = of("runstate_run_failures_total", "prime-ns", "twice", "state_type reason")
    assert failures[("prime-ns", "twice", "FAILED", "hosts_failed")] == 1.0
    assert sum(failures.values()) == 1.0


def test_priming_a_runbooks_operations_creates_each_result_at_zero() -> None:
    metrics.prime_runbook("prime-ns", "ops", ["update", "install"])
    found = of("runstate_operation_results_total", "prime-ns", "ops", "operation result")
    assert set(found) == {
        ("prime-ns", "ops", op, result.value)
        for op in ("update", "install")
        for result in RunResult
    }
    assert set(found.values()) == {0.0}


def test_priming_the_operator_creates_its_error_and_transition_series_at_zero() -> None:
    metrics.prime_operator("prime-store", ["run", "runbook"], [("RUNNING", "FAILED")])
    transitions = samples("runstate_state_transitions_total", "from_type", "to_type")
    assert ("RUNNING", "FAILED") in transitions
    assert samples("runstate_store_errors_total", "store")[("prime-store",)] == 0.0
    reconcile = samples("runstate_reconcile_errors_total", "kind")
    assert {("run",), ("runbook",)} <= set(reconcile)
    conflicts = samples("runstate_api_conflicts_total", "resource")
    assert {("runs",), ("runs/status",)} <= set(conflicts)


async def test_reconciling_a_runbook_primes_its_series() -> None:
    kube = FakeKube()
    kube.apply(
        "runbooks",
        {
            "apiVersion": "runstate.dev/v1alpha1",
            "kind": "Runbook",
            "metadata": {"name": "primed-by-reconcile"},
            "spec": {
                "inventory": {"hosts": [{"name": "a"}]},
                "operations": [{"name": "deploy", "run": "true"}, {"name": "Not A Label"}],
            },
        },
    )
    key: ObjectKey = ("default", "primed-by-reconcile")
    await Operator(kube, InMemoryStateStore()).runbooks.reconcile(key)
    primed = of(
        "runstate_run_failures_total", "default", "primed-by-reconcile", "state_type reason"
    )
    assert ("default", "primed-by-reconcile", "CRASHED", "infrastructure") in primed
    results = of("runstate_operation_results_total", "default", "primed-by-reconcile", "operation")
    assert {k[2] for k in results} == {"deploy"}  # a name that is none never becomes a label


def test_build_info_names_the_version() -> None:
    assert samples("runstate_build_info", "version") == {(__version__,): 1.0}


def test_a_standby_replica_exports_no_runs_gauge() -> None:
    active = [True]
    registry = CollectorRegistry()
    registry.register(metrics.RunsCollector(lambda: {("ns", "RUNNING"): 2}, lambda: active[0]))
    assert samples("runstate_runs", "namespace", "state_type", registry=registry) == {
        ("ns", "RUNNING"): 2.0
    }
    active[0] = False
    assert samples("runstate_runs", "namespace", "state_type", registry=registry) == {}
    active[0] = True
    assert samples("runstate_runs", "namespace", "state_type", registry=registry) == {
        ("ns", "RUNNING"): 2.0
    }


async def test_the_operators_runs_gauge_follows_the_peering_gate() -> None:
    async def no_peering(scope: object) -> tuple[None, None]:
        return None, None

    gate = PeeringGate(no_peering, mandatory=True)  # mandatory peering starts standing by
    registry = CollectorRegistry()
    registry.register(runtime.runs_gauge(lambda: {("ns", "PENDING"): 1}, gate))
    assert not gate.active
    assert samples("runstate_runs", "namespace", "state_type", registry=registry) == {}
    gate.apply(None)  # the peering rule lets this replica act
    assert samples("runstate_runs", "namespace", "state_type", registry=registry) == {
        ("ns", "PENDING"): 1.0
    }
    gate.apply("in favour of peer-b (priority 10)")
    assert samples("runstate_runs", "namespace", "state_type", registry=registry) == {}
