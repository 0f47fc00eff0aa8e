"""Every Prometheus metric of runstate, by name, in one place.

The Grafana dashboard and alert rules in the chart are tested against `NAMES`, so a metric is
renamed here or nowhere. Labels never carry run or host names (unbounded cardinality); failure
reasons come from a closed set (`FAILURE_REASONS`). Exposition is prometheus-client's own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)

STAGE_WARNINGS = Counter(
    "runstate_stage_warnings_total",
    "Warnings per stage (retried op, ignored error, host skipped by limit, ...)",
    ["namespace", "runbook", "stage"],
    registry=REGISTRY,
)
RUN_FAILURES = Counter(
    "runstate_run_failures_total",
    "Runs that ended FAILED or CRASHED, by bounded reason",
    ["namespace", "runbook", "state_type", "reason"],
    registry=REGISTRY,
)
HOST_FAILURES = Counter(
    "runstate_host_failures_total",
    "Hosts that failed, by the stage they failed in",
    ["namespace", "runbook", "stage"],
    registry=REGISTRY,
)
OPERATION_RESULTS = Counter(
    "runstate_operation_results_total",
    "Operation × host results (success, error, ignored, partial, no_change)",
    ["namespace", "runbook", "operation", "result"],
    registry=REGISTRY,
)
STATE_TRANSITIONS = Counter(
    "runstate_state_transitions_total",
    "Run state transitions by state type",
    ["from_type", "to_type"],
    registry=REGISTRY,
)
RUN_DURATION = Histogram(
    "runstate_run_duration_seconds",
    "Time from Running to a terminal state",
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600),
    registry=REGISTRY,
)
STAGE_DURATION = Histogram(
    "runstate_stage_duration_seconds",
    "Time a run spent in a stage",
    ["stage"],
    buckets=(0.1, 0.5, 1, 5, 15, 30, 60, 300, 900, 3600),
    registry=REGISTRY,
)
STORE_OPERATION = Histogram(
    "runstate_store_operation_seconds",
    "Latency of state-store operations",
    ["store", "operation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5),
    registry=REGISTRY,
)
STORE_ERRORS = Counter(
    "runstate_store_errors_total",
    "State-store operations that failed",
    ["store"],
    registry=REGISTRY,
)
RECONCILE_ERRORS = Counter(
    "runstate_reconcile_errors_total",
    "Reconciles that raised (the object is retried with backoff)",
    ["kind"],
    registry=REGISTRY,
)
API_WRITES = Counter(
    "runstate_api_writes_total",
    "Writes the operator sent to the Kubernetes API, by resource",
    ["resource"],
    registry=REGISTRY,
)
API_CONFLICTS = Counter(
    "runstate_api_conflicts_total",
    "Writes the API server refused with 409 because the object had changed since it was read, "
    "by resource; each is retried on the current object",
    ["resource"],
    registry=REGISTRY,
)

#: The gauge `runstate_runs{namespace,state_type}` is collected at scrape time from the
#: operator's cache of Runs (see `RunsCollector`); it is listed here with the others.
RUNS_GAUGE = "runstate_runs"

#: Bounded values of RUN_FAILURES' `reason` label.
FAILURE_REASONS = frozenset(
    {
        "invalid_spec",
        "fail_percent",
        "no_hosts",
        "hosts_failed",
        "timeout",
        "infrastructure",
        "concurrency",
    }
)


class RunsCollector(Collector):
    """`runstate_runs`: how many Runs are in each state type right now, per namespace."""

    def __init__(self, counts: Callable[[], Mapping[tuple[str, str], int]]) -> None:
        self._counts = counts

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            RUNS_GAUGE, "Runs by namespace and state type", labels=["namespace", "state_type"]
        )
        for (namespace, state_type), n in sorted(self._counts().items()):
            family.add_metric([namespace, state_type], n)
        yield family

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return []


NAMES: frozenset[str] = frozenset(
    {
        "runstate_stage_warnings_total",
        "runstate_run_failures_total",
        "runstate_host_failures_total",
        "runstate_operation_results_total",
        "runstate_state_transitions_total",
        RUNS_GAUGE,
        "runstate_run_duration_seconds",
        "runstate_stage_duration_seconds",
        "runstate_store_operation_seconds",
        "runstate_store_errors_total",
        "runstate_reconcile_errors_total",
        "runstate_api_writes_total",
        "runstate_api_conflicts_total",
    }
)
