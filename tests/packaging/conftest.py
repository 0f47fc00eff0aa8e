"""Fixtures for the packaging tests: the pinned helm binary and rendered chart manifests.

helm comes from tools/helm.py (installed into the cache on first use). With CI=true a helm
that cannot be had fails the run; it must never silently skip there.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.components import helm_binary

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "runstate"
RELEASE = "runstate"
NAMESPACE = "runstate-system"

Manifest = dict[str, Any]
Render = Callable[..., list[Manifest]]


@pytest.fixture(scope="session")
def helm() -> str:
    """Path of the pinned helm binary."""
    return helm_binary()


@pytest.fixture(scope="session")
def helm_template(helm: str, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., str]:
    """`helm template` of the chart (release runstate in runstate-system) with the given values."""
    folder = tmp_path_factory.mktemp("values")

    def run(values: dict[str, Any] | None = None, kube_version: str | None = None) -> str:
        args = [helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE]
        if kube_version:  # what .Capabilities.KubeVersion says (helm's default otherwise)
            args += ["--kube-version", kube_version]
        if values:
            path = folder / f"values-{len(list(folder.iterdir()))}.json"
            path.write_text(json.dumps(values))  # JSON is YAML, for --values
            args += ["--values", str(path)]
        # CalledProcessError on failure, with helm's message in .stderr.
        return subprocess.run(args, capture_output=True, text=True, timeout=120, check=True).stdout

    return run


@pytest.fixture(scope="session")
def render(helm_template: Callable[..., str]) -> Render:
    """The chart's manifests rendered with the given values, parsed."""

    def run(values: dict[str, Any] | None = None) -> list[Manifest]:
        return [doc for doc in yaml.safe_load_all(helm_template(values)) if doc]

    return run
