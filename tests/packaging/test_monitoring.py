"""The dashboard and alert rules use exactly the metrics the operator exports."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import yaml

from runstate.metrics import NAMES
from tests.monitoring import (
    PROMTOOL_TESTS,
    alert_rules,
    prometheus_binary,
    promtool_tested_alerts,
    rule_file,
)
from tests.packaging.conftest import NAMESPACE, RELEASE, Render

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
        # Only the operator-down alert reads Prometheus' own `up` instead.
        assert used or r["alert"] == "RunstateOperatorDown", r["alert"]
        assert used <= NAMES, (r["alert"], used - NAMES)
        assert (
            "{{ $labels" in r["annotations"]["summary"] or "runstate" in r["annotations"]["summary"]
        )


def test_service_monitor_scrapes_the_metrics_service_with_the_release_label(
    render: Render,
) -> None:
    assert not [d for d in render() if d["kind"] == "ServiceMonitor"]  # off by default
    values = {"serviceMonitor": {"enabled": True, "additionalLabels": {"release": "kps"}}}
    manifests = render({"monitoring": values})
    [monitor] = [d for d in manifests if d["kind"] == "ServiceMonitor"]
    [service] = [d for d in manifests if d["kind"] == "Service"]
    assert monitor["metadata"]["labels"]["release"] == "kps"
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}


def test_every_alert_has_a_runbook_url_with_a_section_in_the_troubleshooting_guide(
    render: Render,
) -> None:
    rules = alert_rules(rule_file(render({"monitoring": {"prometheusRule": {"enabled": True}}})))
    assert "RunstateOperatorDown" in rules
    guide = (CHART.parents[1] / "docs" / "troubleshooting.md").read_text()
    anchors = {line[4:].strip().lower() for line in guide.splitlines() if line.startswith("### ")}
    for name, rule in rules.items():
        url = rule["annotations"]["runbook_url"]
        assert url.endswith(f"/docs/troubleshooting.md#{name.lower()}"), url
        assert name.lower() in anchors, f"no section {name} in docs/troubleshooting.md"


def test_operator_down_reads_the_service_monitors_job(render: Render) -> None:
    on = {"enabled": True}
    default = alert_rules(rule_file(render({"monitoring": {"prometheusRule": on}})))
    # A ServiceMonitor's job label is the Service's name.
    assert default["RunstateOperatorDown"]["expr"] == f'absent(up{{job="{RELEASE}-metrics"}} == 1)'
    assert default["RunstateOperatorDown"]["for"] == "5m"
    custom = {**on, "upSelector": 'job="kubernetes-service-endpoints"'}
    rules = alert_rules(rule_file(render({"monitoring": {"prometheusRule": custom}})))
    assert rules["RunstateOperatorDown"]["expr"] == (
        'absent(up{job="kubernetes-service-endpoints"} == 1)'
    )


def test_promtool_unit_tests_cover_every_alert_and_pass(render: Render, tmp_path: Path) -> None:
    promtool = prometheus_binary("promtool")
    rules = rule_file(render({"monitoring": {"prometheusRule": {"enabled": True}}}))
    assert set(alert_rules(rules)) == promtool_tested_alerts(), "an alert without a firing test"
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules))
    tests = sorted(PROMTOOL_TESTS.glob("*.test.yaml"))
    for test in tests:
        shutil.copy(test, tmp_path / test.name)
    check = subprocess.run(
        [promtool, "check", "rules", "rules.yaml"], cwd=tmp_path, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    result = subprocess.run(
        [promtool, "test", "rules", *(t.name for t in tests)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
