"""One source of truth: CRDs come from the models, layers are enforced, metrics are named."""

import json
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import Field

from runstate import metrics
from runstate.api.crds import build_crds, render_crd_files, schema_of
from runstate.api.model import ApiModel, list_map

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
    kopf, the controller or the handlers, and the layers inside the controller, the domain, the
    stage planners, the API types and the runner's pyinfra units (every contract in
    pyproject.toml)."""
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
    assert len(contracts) == 13
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


# ---- what `kubectl explain` shows: descriptions, nullable, list-maps -------------------------

# The root's ObjectMeta: the API server takes `{type: object}` only and publishes Kubernetes' own.
UNDESCRIBED = {"metadata"}


def _schema(crd: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def _vendored() -> list[dict[str, Any]]:
    """Kubernetes' own schemas as the CRDs embed them, their description (the field's) aside."""
    doc = json.loads((ROOT / "operator/runstate/api/kubernetes.json").read_text())
    return [
        {k: v for k, v in schema.items() if k != "description"}
        for schema in doc["definitions"].values()
    ]


def _is_vendored(node: dict[str, Any], vendored: list[dict[str, Any]]) -> bool:
    for candidate in (node, node.get("items") or {}):
        if {k: v for k, v in candidate.items() if k != "description"} in vendored:
            return True
    return False


def _properties(
    node: dict[str, Any], path: str, vendored: list[dict[str, Any]]
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(path, schema) of every property under `node`, not into Kubernetes' own types."""
    for name, sub in (node.get("properties") or {}).items():
        where = f"{path}.{name}" if path else name
        yield where, sub
        if not _is_vendored(sub, vendored):
            yield from _properties(sub, where, vendored)
    for key, mark in (("items", "[]"), ("additionalProperties", "{}")):
        if isinstance(node.get(key), dict):
            yield from _properties(node[key], path + mark, vendored)


def test_every_field_root_spec_and_status_included_is_described() -> None:
    vendored = _vendored()
    for crd in build_crds():
        schema = _schema(crd)
        assert schema.get("description"), f"{crd['metadata']['name']}: the root"
        undescribed = [
            path
            for path, node in _properties(schema, "", vendored)
            if not node.get("description") and path not in UNDESCRIBED
        ]
        assert undescribed == [], f"{crd['metadata']['name']}: no description: {undescribed}"


def test_kubernetes_own_types_name_where_their_fields_are_explained() -> None:
    vendored = _vendored()
    seen = 0
    for crd in build_crds():
        for path, node in _properties(_schema(crd), "", vendored):
            if _is_vendored(node, vendored):
                seen += 1
                assert "(fields: kubectl explain pod.spec." in node["description"], path
    assert seen == 2 * 3 * 10  # 10 fields, in 3 pod templates of each CRD


def test_nullable_only_where_null_means_something() -> None:
    """`history.keepRuns: null` keeps every Run (absent: the default, 20); no other field
    gives null a meaning of its own, and a nullable field is published untyped by OpenAPI v2
    servers (its subfields gone from `kubectl explain`)."""
    runbook, run = build_crds()
    found = {
        crd["spec"]["names"]["kind"]: [
            (path, node.get("default"))
            for path, node in _properties(_schema(crd), "", _vendored())
            if node.get("nullable")
        ]
        for crd in (runbook, run)
    }
    assert found == {
        "Runbook": [("spec.history.keepRuns", 20)],
        "Run": [("spec.runbook.history.keepRuns", 20)],
    }


LIST_MAPS = {
    "Runbook": {
        "spec.inventory.hosts": "name",
        "spec.operations": "name",
        "spec.hookOperations": "name",
        "spec.defaults.env": "name",
        "spec.operations[].env": "name",
        "spec.hookOperations[].env": "name",
        "spec.defaults.podTemplate.volumes": "name",
        "spec.defaults.podTemplate.env": "name",
        "spec.operations[].podTemplate.volumes": "name",
        "spec.operations[].podTemplate.env": "name",
        "spec.hookOperations[].podTemplate.volumes": "name",
        "spec.hookOperations[].podTemplate.env": "name",
        "status.conditions": "type",
    },
    "Run": {
        "spec.runbook.inventory.hosts": "name",
        "spec.runbook.operations": "name",
        "spec.runbook.hookOperations": "name",
        "spec.runbook.defaults.env": "name",
        "spec.runbook.operations[].env": "name",
        "spec.runbook.hookOperations[].env": "name",
        "spec.runbook.defaults.podTemplate.volumes": "name",
        "spec.runbook.defaults.podTemplate.env": "name",
        "spec.runbook.operations[].podTemplate.volumes": "name",
        "spec.runbook.operations[].podTemplate.env": "name",
        "spec.runbook.hookOperations[].podTemplate.volumes": "name",
        "spec.runbook.hookOperations[].podTemplate.env": "name",
        "status.conditions": "type",
        "status.operations": "name",
        "status.plan": "name",
        "status.failedHosts": "host",
    },
}


def test_name_keyed_lists_are_list_maps_with_required_keys() -> None:
    """The API server refuses two items of one key; status lists too (the operator writes
    each operation, host and condition type once)."""
    for crd in build_crds():
        maps = {
            path: node
            for path, node in _properties(_schema(crd), "", [])
            if node.get("x-kubernetes-list-type") == "map"
        }
        kind = crd["spec"]["names"]["kind"]
        assert {p: n["x-kubernetes-list-map-keys"] for p, n in maps.items()} == {
            p: [key] for p, key in LIST_MAPS[kind].items()
        }
        for path, node in maps.items():
            assert node["x-kubernetes-list-map-keys"][0] in node["items"]["required"], path
            assert (
                "nullable" not in node["items"]["properties"][node["x-kubernetes-list-map-keys"][0]]
            )


class _Item(ApiModel):
    name: str | None = None


class _Keyed(ApiModel):
    items: list[_Item] = Field(default_factory=list, json_schema_extra=list_map("name"))


def test_a_list_map_key_the_items_do_not_require_is_refused() -> None:
    with pytest.raises(ValueError, match=r"list-map keys \['name'\] are not required"):
        schema_of(_Keyed)
