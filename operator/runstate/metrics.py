"""Every Prometheus metric of runstate, by name, in one place.

The Grafana dashboard and alert rules in the chart are tested against `NAMES`, so a metric is
renamed here or nowhere. Labels never carry run or host names (unbounded cardinality); failure
reasons come from a closed set (`FAILURE_REASONS`). Exposition is prometheus-client's own.

The counters an alert takes `increase()` of are primed at 0 (`prime_runbook`) as soon as the
operator sees a Runbook or a Run of it: a series born at 1 has no earlier sample, so Prometheus
would see no increase and the first failure of a runbook (and the first after each restart)
would never alert. The registry also carries `runstate_build_info` and prometheus-client's
process and platform collectors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from runstate import __version__
from runstate.api.v1alpha1 import Stage

REGISTRY = CollectorRegistry(auto_describe=True)
# process_* (CPU, memory, open fds, start time) and python_info, as on the default registry.
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

BUILD_INFO = Gauge(
    "runstate_build_info",
    "Always 1; the operator's version in the `version` label",
    ["version"],
    registry=REGISTRY,
)
BUILD_INFO.labels(__version__).set(1)

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


#: The state types a run can end in that RUN_FAILURES counts.
FAILURE_STATE_TYPES = ("FAILED", "CRASHED")
#: pyinfra's stages, the `stage` label of the per-runbook counters.
STAGES = tuple(stage.value for stage in Stage)

#: Values of OPERATION_RESULTS' `result` label (`domain.work.RunResult`).
RESULTS = ("success", "error", "ignored", "partial", "no_change")

_primed: set[tuple[str, ...]] = set()


def prime_runbook(namespace: str, runbook: str, operations: Iterable[str] = ()) -> None:
    """Create, at 0, every per-runbook series the alerts and the dashboard take `increase()`
    of, and each operation's results (once per process)."""
    if (namespace, runbook) not in _primed:
        _primed.add((namespace, runbook))
        for state_type in FAILURE_STATE_TYPES:
            for reason in sorted(FAILURE_REASONS):
                RUN_FAILURES.labels(namespace, runbook, state_type, reason).inc(0)
        for stage in STAGES:
            HOST_FAILURES.labels(namespace, runbook, stage).inc(0)
            STAGE_WARNINGS.labels(namespace, runbook, stage).inc(0)
    for operation in operations:
        if (namespace, runbook, operation) not in _primed:
            _primed.add((namespace, runbook, operation))
            for result in RESULTS:
                OPERATION_RESULTS.labels(namespace, runbook, operation, result).inc(0)


#: The resources whose writes can conflict (`API_CONFLICTS`): the Run and its status.
CONFLICT_RESOURCES = ("runs", "runs/status")


def prime_operator(
    store: str, kinds: Iterable[str], transitions: Iterable[tuple[str, str]]
) -> None:
    """Create, at 0, the operator-wide series: errors, conflicts and every allowed state
    transition (`from_type` "" for a new run)."""
    STORE_ERRORS.labels(store).inc(0)
    for kind in kinds:
        RECONCILE_ERRORS.labels(kind).inc(0)
    for resource in CONFLICT_RESOURCES:
        API_CONFLICTS.labels(resource).inc(0)
    for from_type, to_type in transitions:
        STATE_TRANSITIONS.labels(from_type, to_type).inc(0)


class RunsCollector(Collector):
    """`runstate_runs`: how many Runs are in each state type right now, per namespace.

    `active` says whether this replica is the one acting: a standby's cache is not kept up to
    date (kopf pauses its watches), so it exports no `runstate_runs` series at all rather than
    stale ones that would double the leader's in a `sum`."""

    def __init__(
        self,
        counts: Callable[[], Mapping[tuple[str, str], int]],
        active: Callable[[], bool] = lambda: True,
    ) -> None:
        self._counts = counts
        self._active = active

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            RUNS_GAUGE, "Runs by namespace and state type", labels=["namespace", "state_type"]
        )
        if self._active():
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
        "runstate_build_info",
    }
)
