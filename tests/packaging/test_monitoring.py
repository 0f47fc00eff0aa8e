"""The dashboard and alert rules use exactly the metrics the operator exports."""

import json
import re
from pathlib import Path

from runstate.metrics import NAMES
from tests.packaging.conftest import Render

CHART = Path(__file__).resolve().parents[2] / "charts" / "runstate"
METRIC = re.compile(r"\b(runstate_[a-z_]+)")


def metric_names(expr: str) -> set[str]:
    return {re.sub(r"_(bucket|sum|count)$", "", m) for m in METRIC.findall(expr)}


def dashboard_exprs() -> list[str]:
    dash = json.loads((CHART / "dashboards" / "runstate.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [v["query"] for v in dash["templating"]["list"] if v.get("type") == "query"]
    return exprs


def test_dashboard_uses_only_exported_metrics_and_covers_the_failures() -> None:
    used = set().union(*(metric_names(e) for e in dashboard_exprs()))
    assert used <= NAMES, f"unknown metrics in the dashboard: {used - NAMES}"
    assert used == NAMES, f"metrics with no panel: {NAMES - used}"


def test_dashboard_ships_as_a_sidecar_configmap(render: Render) -> None:
    [cm] = [
        d
        for d in render()
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard")
    ]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["runstate.json"])["uid"] == "runstate"
    assert not [
        d
        for d in render({"monitoring": {"dashboard": {"enabled": False}}})
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard")
    ]


def test_alert_rules_use_only_exported_metrics(render: Render) -> None:
    assert not [d for d in render() if d["kind"] == "PrometheusRule"]  # off by default
    [rule] = [
        d
        for d in render({"monitoring": {"prometheusRule": {"enabled": True}}})
        if d["kind"] == "PrometheusRule"
    ]
    rules = rule["spec"]["groups"][0]["rules"]
    alerts = {r["alert"] for r in rules}
    assert {"RunstateRunsFailing", "RunstateRunsCrashing", "RunstateStoreErrors"} <= alerts
    for r in rules:
        used = metric_names(r["expr"])
        assert used and used <= NAMES, (r["alert"], used - NAMES)
        assert (
            "{{ $labels" in r["annotations"]["summary"] or "runstate" in r["annotations"]["summary"]
        )
