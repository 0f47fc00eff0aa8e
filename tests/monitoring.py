"""The chart's monitoring artefacts as data, for the packaging and the integration tests: the
PrometheusRule rendered as a Prometheus rule file, the dashboard's queries, and Debian's
Prometheus binaries (`prometheus` package; runstate_dev.build.MONITORING_PACKAGES)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.availability import unavailable

CHART = Path(__file__).resolve().parents[1] / "charts" / "runstate"
PROMTOOL_TESTS = Path(__file__).resolve().parent / "promtool"


@dataclass(frozen=True)
class Query:
    """One dashboard query: the panel (or template variable) it feeds and its PromQL."""

    panel: str
    expr: str


def prometheus_binary(name: str) -> str:
    """Path of Debian's `prometheus` or `promtool`; unavailable (skip, or fail in CI) without."""
    path = shutil.which(name)
    if path is None:
        unavailable(f"{name} is not installed (Debian package prometheus)")
    return path


def rule_file(manifests: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The rendered PrometheusRule's groups, as a Prometheus rule file (`promtool`, `prometheus`)."""
    [rule] = [m for m in manifests if m["kind"] == "PrometheusRule"]
    return {"groups": rule["spec"]["groups"]}


def alert_rules(rules: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for g in rules["groups"] for r in g["rules"] if "alert" in r}


def dashboard() -> dict[str, Any]:
    result: dict[str, Any] = json.loads((CHART / "dashboards" / "runstate.json").read_text())
    return result


def dashboard_queries() -> list[Query]:
    """Every panel target and every query template variable of the shipped dashboard."""
    dash = dashboard()
    queries = [Query(p["title"], t["expr"]) for p in dash["panels"] for t in p.get("targets", [])]
    queries += [
        Query(f"${v['name']}", v["query"])
        for v in dash["templating"]["list"]
        if v.get("type") == "query"
    ]
    return queries


def promtool_tested_alerts() -> set[str]:
    """The alerts the promtool unit tests (tests/promtool/*.test.yaml) expect to fire."""
    import yaml

    names: set[str] = set()
    for path in PROMTOOL_TESTS.glob("*.test.yaml"):
        for test in yaml.safe_load(path.read_text())["tests"]:
            names |= {t["alertname"] for t in test.get("alert_rule_test", []) if t["exp_alerts"]}
    return names
