"""The chart's RBAC is exactly what the operator calls: nothing missing, nothing granted unused.

What the operator calls is read from its code, not written down a second time: every call of
the `KubeApi` protocol (runstate.kube.api) in the operator, with the plural it names, mapped to
the (apiGroup, resource, verb) the real client (runstate.kube.client) sends for it; the kinds
kopf watches, read from the handlers' registrations; and kopf's own needs, from kopf's source
(the table `KOPF` below, with the reason for each). A new client method, a new call of an
existing one on another resource, or a rule the chart grants for nothing fails here.

The integration test tests/integration/test_restricted_operator.py runs the operator under
these rules (rendered by helm for one watched namespace) and fails on any refused call.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runstate.kube.api import KubeApi
from runstate.kube.client import KubeClient

REPO = Path(__file__).resolve().parents[2]
OPERATOR = REPO / "operator" / "runstate"

Manifest = dict[str, Any]
Render = Callable[..., list[Manifest]]
Grant = tuple[str, str, str]  # (apiGroup, resource, verb)
GROUP = "runstate.dev"
PLURAL = "{plural}"  # the call's Plural argument (runs or runbooks)

# What runstate.kube.client sends for each KubeApi method. `PLURAL` stands for the plural the
# call site passes. Peering objects: cluster-scoped when watching every namespace, else one per
# namespace (see runstate.controller.runtime).
CLIENT: dict[str, set[Grant]] = {
    "create_pod": {("", "pods", "create")},
    "delete_pod": {("", "pods", "delete")},
    "delete_pods": {("", "pods", "deletecollection")},  # delete_collection_namespaced_pod
    "list_pods": {("", "pods", "list")},
    "watch_pods": {("", "pods", "watch")},
    "get_object": {(GROUP, PLURAL, "get")},
    "create_run": {(GROUP, "runs", "create")},
    "delete_run": {(GROUP, "runs", "delete")},
    "patch_status": {(GROUP, PLURAL + "/status", "patch")},  # merge patch of the subresource
    "patch_spec": {(GROUP, PLURAL, "patch")},
    "set_finalizers": {(GROUP, PLURAL, "patch")},  # merge patch of metadata.finalizers
    "list_nodes": {("", "nodes", "list")},
    "list_peering": {("kopf.dev", "{peerings}", "list")},
    "watch_peering": {("kopf.dev", "{peerings}", "watch")},
    "post_event": {("", "events", "create")},  # core/v1 Events, created only
}
NOT_CALLS = {"close", "connect"}  # KubeClient methods that are not API calls

# kopf 1.45 under the operator (kopf/_core/reactor/observation.py, _cogs/clients/events.py,
# _core/engines/peering.py). Mode: "any", "all" (watching every namespace) or "some".
KOPF: dict[Grant, tuple[str, str]] = {
    ("apiextensions.k8s.io", "customresourcedefinitions", "list"): ("any", "resource observer"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "watch"): ("any", "resource observer"),
    ("", "namespaces", "list"): ("some", "namespace observer, only when not cluster-wide"),
    ("", "namespaces", "watch"): ("some", "namespace observer, only when not cluster-wide"),
    ("", "events", "create"): ("any", "posting its warnings as core/v1 Events"),
    ("kopf.dev", "{peerings}", "list"): ("any", "peering: the peers"),
    ("kopf.dev", "{peerings}", "watch"): ("any", "peering: the peers"),
    ("kopf.dev", "{peerings}", "patch"): ("any", "peering keep-alive (no status subresource)"),
}


def _calls() -> set[tuple[str, str | None]]:
    """(KubeApi method, plural or None) of every call in the operator (not its kubectl plugin,
    which runs as the user)."""
    methods = set(CLIENT)
    found: set[tuple[str, str | None]] = set()
    for path in OPERATOR.rglob("*.py"):
        relative = path.relative_to(OPERATOR).as_posix()
        if relative.startswith("kubectl/") or relative in ("kube/client.py", "kube/api.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if node.func.attr not in methods:
                continue
            plural = None
            if any(PLURAL in g[1] for g in CLIENT[node.func.attr]):
                arg = node.args[0] if node.args else None
                assert isinstance(arg, ast.Attribute), (
                    f"{relative}:{node.lineno}: {node.func.attr} with a plural the test cannot "
                    "read: pass Plural.X"
                )
                plural = {"RUNS": "runs", "RUNBOOKS": "runbooks"}[arg.attr]
            found.add((node.func.attr, plural))
    return found


def _owner_kinds() -> set[str]:
    """Kinds the operator's objects name as owner with blockOwnerDeletion (which needs update
    on the owner's finalizers subresource)."""
    kinds = set()
    for path in (OPERATOR / "kube").glob("*.py"):
        text = path.read_text()
        for match in re.finditer(r'"kind": "(\w+)",[^}]*"blockOwnerDeletion": True', text):
            kinds.add(match.group(1))
    return kinds


def _watched_plurals() -> set[str]:
    """The runstate kinds kopf lists and watches: those with a handler or index."""
    text = (OPERATOR / "handlers.py").read_text()
    return set(re.findall(r"@kopf\.(?:index|on\.\w+)\(GROUP, VERSION, \"(\w+)\"", text))


def needed(clusterwide: bool) -> set[Grant]:
    peerings = "clusterkopfpeerings" if clusterwide else "kopfpeerings"
    grants: set[Grant] = set()
    for method, plural in _calls():
        for group, resource, verb in CLIENT[method]:
            resource = resource.replace(PLURAL, plural or "").replace("{peerings}", peerings)
            grants.add((group, resource, verb))
    for (group, resource, verb), (mode, _why) in KOPF.items():
        if mode == "any" or (mode == "all") == clusterwide:
            grants.add((group, resource.replace("{peerings}", peerings), verb))
    for plural in _watched_plurals():
        grants |= {(GROUP, plural, "list"), (GROUP, plural, "watch")}
    plurals = {"Run": "runs", "Runbook": "runbooks"}
    grants |= {(GROUP, f"{plurals[kind]}/finalizers", "update") for kind in _owner_kinds()}
    return grants


def grants(role: Manifest) -> set[Grant]:
    found: set[Grant] = set()
    for rule in role["rules"]:
        # Least privilege: no wildcards, and nothing beyond groups/resources/verbs.
        assert set(rule) == {"apiGroups", "resources", "verbs"}, rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    assert "*" not in (group, resource, verb), rule
                    found.add((group, resource, verb))
    return found


def operator_roles(manifests: list[Manifest]) -> list[Manifest]:
    """The operator's own roles (not the aggregated ones for people)."""
    return [
        m
        for m in manifests
        if m["kind"] in ("ClusterRole", "Role")
        and not any("aggregate-to" in k for k in m["metadata"]["labels"])
    ]


def is_cluster_scoped(group: str, resource: str) -> bool:
    return (group, resource) in {
        ("apiextensions.k8s.io", "customresourcedefinitions"),
        ("", "nodes"),
        ("", "namespaces"),
        ("kopf.dev", "clusterkopfpeerings"),
    }


def test_every_client_method_is_mapped() -> None:
    """A new KubeApi method must say here what it sends, else the checks below are blind."""
    protocol = {n for n in vars(KubeApi) if not n.startswith("_") and callable(vars(KubeApi)[n])}
    client = {n for n in vars(KubeClient) if not n.startswith("_")} - NOT_CALLS
    assert protocol - NOT_CALLS == set(CLIENT), protocol ^ set(CLIENT)
    assert client == set(CLIENT), client ^ set(CLIENT)


def test_the_scan_sees_the_calls_it_must() -> None:
    """The scan is not vacuous: it finds the calls every run makes."""
    calls = _calls()
    assert {("create_pod", None), ("patch_status", "runs"), ("patch_status", "runbooks")} <= calls
    assert _owner_kinds() == {"Run", "Runbook"}
    assert _watched_plurals() == {"runs", "runbooks"}


def test_cluster_wide_role_is_exactly_what_is_called(render: Render) -> None:
    (role,) = operator_roles(render())
    assert role["kind"] == "ClusterRole"
    granted = grants(role)
    want = needed(clusterwide=True)
    assert granted - want == set(), f"granted but never used: {sorted(granted - want)}"
    assert want - granted == set(), f"used but not granted: {sorted(want - granted)}"


def test_watched_namespaces_roles_are_exactly_what_is_called(render: Render) -> None:
    watched = ["team-a", "team-b"]
    manifests = render({"watchNamespaces": watched})
    roles = operator_roles(manifests)
    (cluster_role,) = [r for r in roles if r["kind"] == "ClusterRole"]
    namespaced = [r for r in roles if r["kind"] == "Role"]
    assert sorted(r["metadata"]["namespace"] for r in namespaced) == watched
    want = needed(clusterwide=False)
    assert grants(cluster_role) == {g for g in want if is_cluster_scoped(g[0], g[1])}
    for role in namespaced:
        assert grants(role) == {g for g in want if not is_cluster_scoped(g[0], g[1])}


@pytest.mark.parametrize("values", [{}, {"watchNamespaces": ["team-a"]}])
def test_no_grant_reaches_secrets_or_writes_nodes(render: Render, values: Manifest) -> None:
    """The operator reads Secrets only through the pods it creates (mounted by the kubelet),
    and never changes a Node."""
    for role in operator_roles(render(values)):
        for group, resource, verb in grants(role):
            assert resource != "secrets", (group, resource, verb)
            assert not (resource == "nodes" and verb != "list"), (group, resource, verb)


# ---- roles for people ---------------------------------------------------------------------

AGGREGATE = "rbac.authorization.k8s.io/aggregate-to-"


def aggregated(manifests: list[Manifest]) -> dict[str, set[Grant]]:
    """What each built-in role (view, edit, admin) gains from the chart's ClusterRoles."""
    gained: dict[str, set[Grant]] = {"view": set(), "edit": set(), "admin": set()}
    for role in manifests:
        if role["kind"] != "ClusterRole":
            continue
        for label, value in role["metadata"]["labels"].items():
            if label.startswith(AGGREGATE) and value == "true":
                gained[label.removeprefix(AGGREGATE)] |= grants(role)
    return gained


def test_people_get_runs_and_runbooks_through_view_edit_admin(render: Render) -> None:
    gained = aggregated(render())
    kinds = ("runs", "runbooks")
    read = {(GROUP, r, v) for r in kinds for v in ("get", "list", "watch")}
    write = {
        (GROUP, r, v)
        for r in kinds
        for v in ("create", "update", "patch", "delete", "deletecollection")
    }
    assert read <= gained["view"]
    assert not {g for g in gained["view"] if g[2] not in ("get", "list", "watch")}
    # kubectl runstate start/retry create Runs; cancel/pause/resume merge-patch spec.
    assert read | write <= gained["edit"]
    assert gained["admin"] >= gained["edit"]
    # Status is the operator's: nobody's role may write it.
    assert not {g for role in gained.values() for g in role if g[1].endswith("/status")} - {
        (GROUP, f"{r}/status", v) for r in kinds for v in ("get", "list", "watch")
    }


def test_aggregated_roles_can_be_turned_off(render: Render) -> None:
    assert aggregated(render({"rbac": {"aggregateRoles": False}})) == {
        "view": set(),
        "edit": set(),
        "admin": set(),
    }
