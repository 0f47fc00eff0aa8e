"""What the CRDs tell and refuse, asked of a real v1.20.2 API server (OpenAPI v2 only).

- `kubectl explain --recursive` lists exactly the fields of the generated schemas: none lost
  (an OpenAPI v2 server publishes a `nullable` field untyped, its subfields gone), deep fields
  come with their description;
- name-keyed lists are list-maps: two hosts, operations or env vars of one name are refused at
  create time, the message naming the list and the name;
- `null` keeps a meaning only where one is documented (`history.keepRuns`); elsewhere the API
  server drops it, as if the field were absent.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runstate.api.crds import build_crds
from runstate_dev.cluster import ControlPlane
from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]
CRDS = {crd["spec"]["names"]["plural"]: crd for crd in build_crds()}
# `kubectl explain --recursive`: a field, indented three spaces a level, then `<type>`.
FIELD = re.compile(r"^( +)(\S+)\t<(.*)>$")


def _kubectl(
    plane: ControlPlane, kubectl: str, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [kubectl, "--kubeconfig", str(plane.kubeconfig), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _explainable(plane: ControlPlane, kubectl: str) -> bool:
    """Both CRDs established, and `kubectl explain` finds their published schemas."""
    return all(
        _kubectl(plane, kubectl, "explain", f"{plural}.status").returncode == 0 for plural in CRDS
    )


@pytest.fixture(scope="module")
def crds(control_plane: ControlPlane, kubectl: str) -> ControlPlane:
    applied = _kubectl(control_plane, kubectl, "apply", "-f", str(ROOT / "crds"))
    assert applied.returncode == 0, applied.stderr
    wait_for("CRDs published", lambda: _explainable(control_plane, kubectl), timeout=90)
    return control_plane


def _schema_nodes(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every property (path, schema) as `kubectl explain` walks them: through objects and
    list items (a map's values it does not walk: none of ours has fields)."""
    assert not (node.get("additionalProperties") or {}).get("properties"), path
    for name, sub in (node.get("properties") or {}).items():
        where = f"{path}.{name}" if path else name
        yield where, sub
        yield from _schema_nodes(
            sub.get("items", sub) if sub.get("type") == "array" else sub, where
        )


def _schema_paths(node: dict[str, Any]) -> set[str]:
    return {path for path, _ in _schema_nodes(node)}


def _explained(output: str) -> dict[str, str]:
    """Field path → type, of `kubectl explain X --recursive` (below X)."""
    lines = output.split("FIELDS:\n", 1)[1].splitlines()
    stack: list[str] = []
    fields = {}
    for line in lines:
        match = FIELD.match(line)
        if match is None:
            continue
        depth = len(match.group(1)) // 3 - 1
        stack[depth:] = [match.group(2)]
        fields[".".join(stack)] = match.group(3)
    return fields


def _explained_paths(output: str) -> set[str]:
    return set(_explained(output))


def _untyped(output: str) -> set[str]:
    """The fields `kubectl explain` shows as `<>`: what the server published without a type."""
    return {path for path, kind in _explained(output).items() if not kind}


def _schema(plural: str) -> dict[str, Any]:
    schema: dict[str, Any] = CRDS[plural]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


@pytest.mark.parametrize("plural", sorted(CRDS))
@pytest.mark.parametrize("part", ["spec", "status"])
def test_explain_recursive_lists_every_field_of_the_schema(
    crds: ControlPlane, kubectl: str, plural: str, part: str
) -> None:
    explained = _kubectl(crds, kubectl, "explain", f"{plural}.{part}", "--recursive")
    assert explained.returncode == 0, explained.stderr
    wanted = _schema_paths(_schema(plural)["properties"][part])
    got = _explained_paths(explained.stdout)
    assert len(wanted) > 15
    assert got == wanted, (
        f"{plural}.{part}: missing {sorted(wanted - got)[:20]}, unknown {sorted(got - wanted)[:20]}"
    )
    untyped = {
        path
        for path, node in _schema_nodes(_schema(plural)["properties"][part])
        if node.get("nullable")
        or "type" not in node
        or node.get("x-kubernetes-preserve-unknown-fields")
    }
    # Published untyped: free-form JSON, int-or-string, and nullable fields (keepRuns alone).
    assert _untyped(explained.stdout) == untyped


def _described(plural: str, path: str) -> str:
    node = _schema(plural)
    for part in path.split("."):
        node = node.get("items", node) if node.get("type") == "array" else node
        node = node["properties"][part]
    return str(node["description"])


DEEP = [
    ("runs", ""),
    ("runs", "spec"),
    ("runs", "status"),
    ("runs", "status.conditions.type"),
    ("runs", "status.operations.noChange"),
    ("runs", "status.state.scheduledTime"),
    ("runs", "status.failedHosts.stage"),
    ("runs", "spec.runbook.operations.connector.ssh.privateKey.secretRef"),
    ("runs", "spec.runbook.trigger.concurrency.policy"),
    ("runs", "spec.pauseTimeoutSeconds"),
    ("runbooks", ""),
    ("runbooks", "spec.history.keepRuns"),
    ("runbooks", "spec.operations.pyinfra.files.configMapRef.name"),
    ("runbooks", "spec.inventory.nodeSelector.matchExpressions.operator"),
    ("runbooks", "spec.defaults.podTemplate.volumes"),
    ("runbooks", "status.lastRun.state"),
    ("runbooks", "status.conditions"),
]


@pytest.mark.parametrize(("plural", "path"), DEEP)
def test_explain_describes_deep_fields(
    crds: ControlPlane, kubectl: str, plural: str, path: str
) -> None:
    explained = _kubectl(crds, kubectl, "explain", ".".join(filter(None, (plural, path))))
    assert explained.returncode == 0, explained.stderr
    description = _schema(plural)["description"] if not path else _described(plural, path)
    shown = " ".join(explained.stdout.split("DESCRIPTION:", 1)[1].split())
    assert " ".join(description.split()) in shown, explained.stdout


def _runbook(name: str, **spec: Any) -> str:
    body = {"operations": [{"name": "a", "run": "true"}], **spec}
    doc = {"apiVersion": "runstate.dev/v1alpha1", "kind": "Runbook", "metadata": {"name": name}}
    return json.dumps({**doc, "spec": body})


DUPLICATES = [
    (
        {"inventory": {"hosts": [{"name": "web1"}, {"name": "web2"}, {"name": "web1"}]}},
        'spec.inventory.hosts[2]: Duplicate value: map[string]interface {}{"name":"web1"}',
    ),
    (
        {"operations": [{"name": "a", "run": "true"}, {"name": "a", "run": "false"}]},
        'spec.operations[1]: Duplicate value: map[string]interface {}{"name":"a"}',
    ),
    (
        {"defaults": {"env": [{"name": "X", "value": "1"}, {"name": "X", "value": "2"}]}},
        'spec.defaults.env[1]: Duplicate value: map[string]interface {}{"name":"X"}',
    ),
]


@pytest.mark.parametrize(("spec", "message"), DUPLICATES)
def test_the_api_server_refuses_duplicate_names(
    crds: ControlPlane, kubectl: str, name: str, spec: dict[str, Any], message: str
) -> None:
    created = _kubectl(crds, kubectl, "create", "-f", "-", stdin=_runbook(name, **spec))
    assert created.returncode != 0, created.stdout
    assert message in created.stderr
    got = _kubectl(crds, kubectl, "get", "runbook", name)
    assert "NotFound" in got.stderr


def test_the_api_server_refuses_duplicate_names_on_update(
    crds: ControlPlane, kubectl: str, name: str
) -> None:
    hosts = [{"name": "web1"}, {"name": "web2"}]
    created = _kubectl(
        crds, kubectl, "apply", "-f", "-", stdin=_runbook(name, inventory={"hosts": hosts})
    )
    assert created.returncode == 0, created.stderr
    try:
        again = _runbook(name, inventory={"hosts": [*hosts, {"name": "web2", "groups": ["x"]}]})
        applied = _kubectl(crds, kubectl, "apply", "-f", "-", stdin=again)
        assert applied.returncode != 0, applied.stdout
        assert (
            'spec.inventory.hosts[2]: Duplicate value: map[string]interface {}{"name":"web2"}'
            in (applied.stderr)
        )
    finally:
        _kubectl(crds, kubectl, "delete", "runbook", name, "--wait=false")


def test_null_means_something_only_where_documented(
    crds: ControlPlane, kubectl: str, name: str
) -> None:
    """`keepRuns: null` (keep every Run) stays null; a null elsewhere is dropped, and a
    defaulted field then takes its default, as if it had been left out."""
    history = {"keepRuns": None, "ttlSecondsAfterFinished": None}
    text = _runbook(name, history=history, connect=None, trigger={"timeZone": None})
    created = _kubectl(crds, kubectl, "create", "-f", "-", "-o", "json", stdin=text)
    assert created.returncode == 0, created.stderr
    try:
        spec = json.loads(created.stdout)["spec"]
        assert spec["history"] == {"keepRuns": None}
        assert "connect" not in spec
        assert spec["trigger"]["timeZone"] == "UTC"
    finally:
        _kubectl(crds, kubectl, "delete", "runbook", name, "--wait=false")
