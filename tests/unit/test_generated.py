"""One source of truth: CRDs come from the models, layers are enforced, metrics are named."""

import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import yaml

from runstate import metrics
from runstate.api.crds import build_crds, render_crd_files

ROOT = Path(__file__).resolve().parents[2]


def test_committed_crds_match_the_models() -> None:
    for folder in ("crds", "charts/runstate/crds"):
        for name, text in render_crd_files().items():
            path = ROOT / folder / name
            assert path.read_text() == text, f"{path} drifted: run `runstate crds`"


def test_crds_are_structural_with_status_columns_and_category() -> None:
    runbook, run = build_crds()
    for crd in (runbook, run):
        version = crd["spec"]["versions"][0]
        assert version["subresources"] == {"status": {}}
        assert crd["spec"]["names"]["categories"] == ["runstate"]
        _assert_structural(version["schema"]["openAPIV3Schema"], crd["metadata"]["name"])
    assert runbook["spec"]["names"]["shortNames"] == ["rb"]
    assert run["spec"]["names"]["shortNames"] == ["rsr"]
    runbook_columns = runbook["spec"]["versions"][0]["additionalPrinterColumns"]
    assert [c["name"] for c in runbook_columns if "priority" not in c] == [
        "Hosts",
        "Operations",
        "Ready",
        "Last Run",
        "Active",
        "Age",
    ]
    columns = [c["name"] for c in run["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert columns[:4] == ["Type", "State", "Stage", "Hosts"] and columns[-1] == "Age"
    status = run["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    for field in (
        "state",
        "stage",
        "hosts",
        "stageWarnings",
        "operations",
        "failedHosts",
        "history",
        "conditions",
        "observedGeneration",
        "hostsSummary",
    ):
        assert field in status["properties"], f"status.{field} would be pruned"


def _assert_structural(node: dict[str, Any], where: str) -> None:
    assert "$ref" not in node and "anyOf" not in node and "allOf" not in node, where
    assert (
        "type" in node
        or node.get("x-kubernetes-preserve-unknown-fields")
        or node.get("x-kubernetes-int-or-string")  # a Quantity or IntOrString of Kubernetes'
    ), where
    for name, sub in (node.get("properties") or {}).items():
        _assert_structural(sub, f"{where}.{name}")
    if "items" in node:
        _assert_structural(node["items"], f"{where}[]")
    if isinstance(node.get("additionalProperties"), dict):
        _assert_structural(node["additionalProperties"], f"{where}{{}}")


def test_crd_files_are_yaml_documents() -> None:
    for text in render_crd_files().values():
        assert yaml.safe_load(text)["kind"] == "CustomResourceDefinition"


def test_layers_are_kept() -> None:
    """import-linter: handlers → controller → kube/stores → domain → api, the pure core
    imports no kopf, Kubernetes client, Redis or HTTP, the stores nothing but redis, and the
    operator and the dev tools nothing of each other, the runner nothing of the API, the
    pyinfra catalog nothing of Kubernetes, Redis or the runner, the kubectl plugin nothing of
    kopf, the controller or the handlers (every contract in pyproject.toml)."""
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"][
        "contracts"
    ]
    result = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(contracts) == 11
    assert f"Contracts: {len(contracts)} kept, 0 broken" in result.stdout


def test_metric_names_live_in_one_module() -> None:
    registered = {
        m.name + ("_total" if m.type == "counter" else "") for m in metrics.REGISTRY.collect()
    }
    ours = {name for name in registered if name.startswith("runstate_")}
    assert ours | {metrics.RUNS_GAUGE} == set(metrics.NAMES)
    # prometheus-client's process and platform collectors, on the operator's own registry.
    assert {"process_cpu_seconds_total", "process_start_time_seconds", "python_info"} <= registered
    for name in metrics.NAMES:
        assert name.startswith("runstate_")
