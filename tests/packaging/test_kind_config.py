"""kind-config.yaml: a valid kind cluster config whose instructions match the chart."""

from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
TEXT = (REPO / "kind-config.yaml").read_text()


def test_is_a_kind_cluster() -> None:
    config = yaml.safe_load(TEXT)
    assert config["kind"] == "Cluster"
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert config["name"] == "runstate"
    roles = [node["role"] for node in config["nodes"]]
    assert roles.count("control-plane") == 1


def test_loads_the_image_the_chart_uses() -> None:
    chart = yaml.safe_load((REPO / "charts" / "runstate" / "Chart.yaml").read_text())
    values = yaml.safe_load((REPO / "charts" / "runstate" / "values.yaml").read_text())
    image = f"{values['image']['repository']}:{chart['appVersion']}"
    assert values["image"]["pullPolicy"] == "IfNotPresent", "else nodes pull instead of load"
    assert f"docker build -t {image} ." in TEXT
    assert f"kind load docker-image {image} --name runstate" in TEXT
    assert "helm install runstate charts/runstate" in TEXT
