"""The shipped dashboard and alerts, evaluated by a real Prometheus scraping the real operator.

Debian's `prometheus` scrapes the session operator every second (and loads the chart's alert
rules) while runs of one namespace fail, crash, warn and wait. Then every dashboard query and
every alert expression goes through Prometheus' HTTP API, and each must return the series the
incidents call for, with their labels and values: not merely parse.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from runstate import __version__
from tests.components import helm_binary
from tests.conftest import Cluster, Operator, free_port, wait_for
from tests.integration.test_runs import final_status, run, runbook
from tests.monitoring import CHART, Query, alert_rules, dashboard_queries, prometheus_binary
from tests.monitoring import rule_file as chart_rule_file

pytestmark = pytest.mark.integration

JOB = "runstate-metrics"  # the operator's scrape job (what the ServiceMonitor's would be)
STOPPED_JOB = "runstate-stopped"  # a target nobody listens on: an operator that is down
RATE_INTERVAL = "10m"  # Grafana's $__rate_interval, long enough to cover the whole test

Series = dict[str, Any]  # one element of an instant vector: {"metric": {...}, "value": [t, "v"]}


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[Series]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", (expr, data)
        result: list[Series] = data["result"]
        return result

    def ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"prometheus exited:\n{self.log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False


def render_rules() -> dict[str, Any]:
    """The chart's alert rules, rendered by helm with the operator-down alert on `JOB`."""
    values = {"monitoring": {"prometheusRule": {"enabled": True, "upSelector": f'job="{JOB}"'}}}
    rendered = subprocess.run(
        [helm_binary(), "template", "runstate", str(CHART), "--values", "-"],
        input=json.dumps(values),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return chart_rule_file([m for m in yaml.safe_load_all(rendered) if m])


def prometheus_config(operator: Operator) -> dict[str, Any]:
    target = urllib.parse.urlsplit(operator.metrics_url).netloc
    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": ["rules.yaml"],
        "scrape_configs": [
            {"job_name": JOB, "static_configs": [{"targets": [target]}]},
            {
                "job_name": STOPPED_JOB,
                "static_configs": [{"targets": [f"127.0.0.1:{free_port()}"]}],
            },
        ],
    }


@pytest.fixture(scope="module")
def rules() -> dict[str, Any]:
    return render_rules()


@pytest.fixture(scope="module")
def prometheus(
    operator: Operator, rules: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prometheus]:
    binary = prometheus_binary("prometheus")
    folder = tmp_path_factory.mktemp("prometheus")
    (folder / "rules.yaml").write_text(yaml.safe_dump(rules))
    (folder / "prometheus.yml").write_text(yaml.safe_dump(prometheus_config(operator)))
    port = free_port()
    log = folder / "prometheus.log"
    argv = [
        binary,
        f"--config.file={folder / 'prometheus.yml'}",
        f"--storage.tsdb.path={folder / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=folder)
    prom = Prometheus(f"http://127.0.0.1:{port}", process, log)
    try:
        wait_for("prometheus /-/ready", prom.ready, timeout=60)
        yield prom
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


# ---- the incidents --------------------------------------------------------------------------

RUNBOOKS = {
    # Every host fails: the run ends FAILED, with 5 host failures (the default alert threshold).
    "failing": runbook("failing", ops=[{"name": "break", "run": "exit 3"}], hosts=5),
    # Its pod is deleted under it: CRASHED.
    "victim": runbook("victim", ops=[{"name": "wait", "run": "sleep 60"}], hosts=1),
    # One host's error is ignored: COMPLETED with an Execute warning.
    "warned": runbook(
        "warned",
        ops=[
            {
                "name": "update",
                "ignoreErrors": True,
                "run": '[ "$RUNSTATE_HOST" != web2.example.com ] || exit 3',
            }
        ],
        hosts=2,
    ),
}


def one(prom: Prometheus, expr: str) -> float | None:
    result = prom.query(expr)
    return float(result[0]["value"][1]) if result else None


def crash(cluster: Cluster, ns: str, run_name: str) -> None:
    def running_pod() -> str | None:
        pods = cluster.items("pods", ns, "-l", f"runstate.dev/run={run_name}")
        running = [p for p in pods if p["status"].get("phase") == "Running"]
        return str(running[0]["metadata"]["name"]) if running else None

    pod = wait_for(f"a running pod of {run_name}", running_pod, timeout=60)
    cluster.kubectl("delete", "pod", pod, "-n", ns, "--wait=false")


@pytest.fixture(scope="module")
def incidents(kube_cluster: Cluster, operator: Operator, prometheus: Prometheus) -> Iterator[str]:
    """A namespace whose runs failed, crashed, warned and wait, all scraped; its name."""
    ns = kube_cluster.namespace()
    for body in RUNBOOKS.values():
        kube_cluster.apply(body, ns)
    primed = f'runstate_run_failures_total{{namespace="{ns}",state_type="CRASHED",reason="infrastructure"}}'
    results = f'runstate_operation_results_total{{namespace="{ns}",result="error"}}'
    wait_for(  # primed at 0 and scraped, before anything fails
        "the primed failure and result counters in Prometheus",
        lambda: (
            {s["metric"]["runbook"] for s in prometheus.query(primed)} == set(RUNBOOKS)
            and {s["metric"]["operation"] for s in prometheus.query(results)}
            == {"break", "wait", "update"}
        ),
        timeout=30,
    )
    kube_cluster.apply(run("fails", "failing"), ns)
    kube_cluster.apply(run("warns", "warned"), ns)
    kube_cluster.apply(run("crashes", "victim"), ns)
    kube_cluster.apply(run("waits", "no-such-runbook"), ns)
    crash(kube_cluster, ns, "crashes")
    ended = {
        name: final_status(kube_cluster, ns, name)["state"]["type"]
        for name in ("fails", "warns", "crashes")
    }
    assert ended == {"fails": "FAILED", "warns": "COMPLETED", "crashes": "CRASHED"}
    crashed = f'runstate_run_failures_total{{namespace="{ns}",runbook="victim",state_type="CRASHED"}} == 1'
    wait_for("the crash scraped", lambda: prometheus.query(crashed), timeout=30)
    pending = f'runstate_runs{{namespace="{ns}",state_type="PENDING"}} == 1'
    wait_for("the pending run scraped", lambda: prometheus.query(pending), timeout=30)
    time.sleep(3)  # a few more scrapes of everything else the runs moved
    yield ns
    kube_cluster.kubectl("delete", "run", "waits", "-n", ns, "--wait=false")


# ---- what each query must return --------------------------------------------------------------


def positive(v: float) -> bool:
    return v > 0


def at_least(n: float) -> Callable[[float], bool]:
    return lambda v: v >= n - 0.01


def about(n: float) -> Callable[[float], bool]:
    return lambda v: abs(v - n) < 0.5


def finite(v: float) -> bool:
    return math.isfinite(v) and v >= 0


@dataclass(frozen=True)
class Expect:
    """A series with (at least) these labels whose value passes `value`."""

    labels: Mapping[str, str] = field(default_factory=dict)
    value: Callable[[float], bool] = finite

    def found_in(self, result: list[Series]) -> bool:
        return any(
            self.labels.items() <= s["metric"].items() and self.value(float(s["value"][1]))
            for s in result
        )


# (panel title, a metric its query reads) -> the series it must return for `incidents`.
DASHBOARD: Mapping[tuple[str, str], list[Expect]] = {
    ("Active runs", "runstate_runs"): [Expect(value=about(1))],  # the waiting run
    ("Failed or crashed runs (24h)", "runstate_run_failures_total"): [Expect(value=about(2))],
    ("Host failures (24h)", "runstate_host_failures_total"): [Expect(value=at_least(5))],
    ("Reconcile errors (1h)", "runstate_reconcile_errors_total"): [Expect()],
    ("Runs by state type", "runstate_runs"): [
        Expect({"state_type": t}, about(1)) for t in ("FAILED", "CRASHED", "COMPLETED", "PENDING")
    ],
    ("State transitions / s", "runstate_state_transitions_total"): [
        Expect({"to_type": "FAILED"}, positive),
        Expect({"to_type": "CRASHED"}, positive),
    ],
    ("Run failures by reason", "runstate_run_failures_total"): [
        Expect({"runbook": "failing", "state_type": "FAILED"}, at_least(1)),
        Expect(
            {"runbook": "victim", "state_type": "CRASHED", "reason": "infrastructure"}, at_least(1)
        ),
    ],
    ("Host failures by stage", "runstate_host_failures_total"): [
        Expect({"runbook": "failing", "stage": "Execute"}, at_least(5))
    ],
    ("Stage warnings", "runstate_stage_warnings_total"): [
        Expect({"runbook": "warned", "stage": "Execute"}, at_least(1))
    ],
    ("Operation results", "runstate_operation_results_total"): [
        Expect({"operation": "break", "result": "error"}, at_least(5)),
        Expect({"operation": "update", "result": "ignored"}, at_least(1)),
        Expect({"operation": "update", "result": "success"}, at_least(1)),
    ],
    ("Run duration", "runstate_run_duration_seconds"): [Expect(value=positive)],
    ("Stage duration p95", "runstate_stage_duration_seconds"): [
        Expect({"stage": "Execute"}, positive)
    ],
    ("State store latency p99", "runstate_store_operation_seconds"): [
        Expect({"store": "redis"}, positive)
    ],
    ("State store errors / s", "runstate_store_errors_total"): [Expect({"store": "redis"})],
    ("Kubernetes API writes / s", "runstate_api_writes_total"): [Expect(value=positive)],
    ("Kubernetes API writes / s", "runstate_api_conflicts_total"): [
        Expect({"resource": "runs/status"})
    ],
    ("Reconcile errors / s", "runstate_reconcile_errors_total"): [
        Expect({"kind": "run"}),
        Expect({"kind": "runbook"}),
    ],
    ("Operator replicas by version", "runstate_build_info"): [
        Expect({"version": __version__}, about(1))
    ],
    ("$namespace", "runstate_runs"): [],  # checked against the namespace itself, below
}


def promql(q: Query, ns: str) -> str:
    """The query as Grafana would send it, for the `incidents` namespace."""
    label_values = re.fullmatch(r"label_values\((\w+), *(\w+)\)", q.expr)
    if label_values:  # Grafana's template function: the label's values among the series
        metric, label = label_values.groups()
        return f"count by ({label}) ({metric})"
    return q.expr.replace("$namespace", ns).replace("$__rate_interval", RATE_INTERVAL)


def expectation(q: Query) -> list[Expect]:
    [key] = [k for k in DASHBOARD if k[0] == q.panel and k[1] in q.expr]
    return DASHBOARD[key]


def test_every_dashboard_query_returns_the_incidents(
    prometheus: Prometheus, incidents: str
) -> None:
    queries = dashboard_queries()
    assert {
        (q.panel, m) for q in queries for (p, m) in DASHBOARD if p == q.panel and m in q.expr
    } == set(DASHBOARD)
    missing = []
    for q in queries:
        result = prometheus.query(promql(q, incidents))
        assert result, f"{q.panel}: no data for {promql(q, incidents)}"
        if q.panel == "$namespace":
            assert {"namespace": incidents} in [s["metric"] for s in result]
        missing += [(q.panel, q.expr, e, result) for e in expectation(q) if not e.found_in(result)]
    assert not missing, "\n".join(map(str, missing))


# ---- the alerts -------------------------------------------------------------------------------


def firing_in(prometheus: Prometheus, expr: str, ns: str, label: str) -> set[str]:
    return {
        s["metric"][label] for s in prometheus.query(expr) if s["metric"].get("namespace") == ns
    }


def without_threshold(expr: str) -> str:
    """An alert's expression without its final comparison: what it compares."""
    return re.sub(r"\s*(>=|>|==)\s*[\d.]+$", "", expr)


def test_every_alert_expression_returns_the_incidents(
    prometheus: Prometheus, incidents: str, rules: dict[str, Any]
) -> None:
    ns = incidents
    alerts = {name: r["expr"] for name, r in alert_rules(rules).items()}
    assert firing_in(prometheus, alerts.pop("RunstateRunsFailing"), ns, "runbook") == {"failing"}
    assert firing_in(prometheus, alerts.pop("RunstateRunsCrashing"), ns, "runbook") == {"victim"}
    assert firing_in(prometheus, alerts.pop("RunstateHostFailuresHigh"), ns, "runbook") == {
        "failing"
    }
    stuck = prometheus.query(alerts.pop("RunstateRunsStuckPending"))
    assert ns in {s["metric"]["namespace"] for s in stuck}
    # Quiet: no errors. What they compare is there, at 0 (primed), not missing.
    for name, label, values in (
        ("RunstateReconcileErrors", "kind", {"run", "runbook"}),
        ("RunstateStoreErrors", "store", {"redis"}),
    ):
        expr = alerts.pop(name)
        assert prometheus.query(expr) == [], name
        compared = prometheus.query(without_threshold(expr))
        assert {s["metric"][label] for s in compared} >= values, (name, compared)
        assert all(float(s["value"][1]) == 0 for s in compared), (name, compared)
    down = alerts.pop("RunstateOperatorDown")
    assert prometheus.query(down) == []  # the operator is up
    # On a target that is down (nothing listens), it fires.
    [fired] = prometheus.query(down.replace(JOB, STOPPED_JOB))
    assert fired["metric"] == {} and fired["value"][1] == "1"
    assert not alerts, f"alerts without an expectation: {sorted(alerts)}"


def test_prometheus_loads_every_alert_rule(prometheus: Prometheus, rules: dict[str, Any]) -> None:
    groups = prometheus.api("rules", type="alert")["groups"]
    loaded = {r["name"]: r for g in groups for r in g["rules"]}
    assert set(loaded) == set(alert_rules(rules))
    assert all(r["health"] == "ok" for r in loaded.values()), loaded
