"""The Helm chart: lint, rendering variants, RBAC, values schema, and its contract with the
operator's settings (the environment it sets is what runstate.settings reads)."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from runstate.settings import Settings, random_peering_priority
from tests.integration.test_recovery import peering_crds
from tests.packaging.test_chart_rbac import grants, operator_roles

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "runstate"
NAMESPACE = "runstate-system"

Manifest = dict[str, Any]
Render = Callable[..., list[Manifest]]


def by_kind(manifests: list[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


def one(manifests: list[Manifest], kind: str) -> Manifest:
    (found,) = by_kind(manifests, kind)
    return found


def container(manifests: list[Manifest]) -> Manifest:
    operator: Manifest
    (operator,) = one(manifests, "Deployment")["spec"]["template"]["spec"]["containers"]
    return operator


def env_of(manifests: list[Manifest]) -> dict[str, Any]:
    """The container's env: name -> value, or the valueFrom mapping."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(manifests)["env"]}


def test_lint_strict(helm: str) -> None:
    proc = subprocess.run(
        [helm, "lint", "--strict", str(CHART)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_default_render(render: Render) -> None:
    manifests = render()
    assert Counter(m["kind"] for m in manifests) == {
        "ServiceAccount": 1,
        "ClusterRole": 3,  # the operator's, and view/edit for people (aggregated)
        "ClusterRoleBinding": 1,
        "Service": 1,
        "Deployment": 1,
        "ConfigMap": 1,  # the Grafana dashboard
    }
    for m in manifests:
        if m["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            assert m["metadata"]["namespace"] == NAMESPACE, m["kind"]

    deployment = one(manifests, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == one(manifests, "ServiceAccount")["metadata"]["name"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532

    operator = container(manifests)
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert operator["image"] == f"ghcr.io/runstate/runstate:{chart['appVersion']}"
    assert operator["args"][0] == "operator"
    assert operator["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert operator["ports"] == [{"name": "metrics", "containerPort": 8080, "protocol": "TCP"}]
    assert operator["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert operator["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert operator["resources"]["requests"] and operator["resources"]["limits"]
    assert "RUNSTATE_REDIS_URL" not in env_of(manifests)
    assert "RUNSTATE_PEERING" not in env_of(manifests)

    service = one(manifests, "Service")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}
    ]
    assert service["spec"]["selector"].items() <= pod_labels(deployment).items()
    assert service["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8080",
        "prometheus.io/path": "/metrics",
    }


def pod_labels(deployment: Manifest) -> dict[str, str]:
    labels: dict[str, str] = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    return labels


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({}, Settings()),
        (
            {
                "watchNamespaces": ["team-a", "team-b"],
                "metrics": {"port": 9090},
                "operator": {"workers": 4, "resyncSeconds": 30, "standalone": True},
            },
            Settings.with_values(
                {
                    "server": {"port": 9090},
                    "reconcile": {"workers": 4, "resync_seconds": 30.0},
                    "watch": {"namespaces": ("team-a", "team-b")},
                    "peering": {"standalone": True},
                }
            ),
        ),
        (
            {"operator": {"peering": "runstate"}},
            Settings.with_values({"peering": {"name": "runstate"}}),
        ),
        # ssh and node work pods run the operator's own image unless told otherwise.
        (
            {"image": {"repository": "registry.example/runstate", "tag": "dev"}},
            Settings.with_values({"operations": {"runner_image": "registry.example/runstate:dev"}}),
        ),
        (
            {"operations": {"runnerImage": "registry.example/runner:1", "allowPrivileged": True}},
            Settings.with_values(
                {
                    "operations": {
                        "runner_image": "registry.example/runner:1",
                        "allow_privileged": True,
                    }
                }
            ),
        ),
    ],
)
def test_env_is_what_the_operator_reads(
    render: Render, values: dict[str, Any], expected: Settings
) -> None:
    manifests = render(values)
    env = env_of(manifests)
    assert Settings.from_env(env) == expected
    port = expected.server.port
    assert container(manifests)["ports"][0]["containerPort"] == port
    assert one(manifests, "Service")["spec"]["ports"][0]["port"] == port


def test_redis_url_goes_through_a_secret(render: Render) -> None:
    url = "redis://:s3cret@redis.example:6379/0"
    manifests = render({"redis": {"url": url}})
    secret = one(manifests, "Secret")
    ref = env_of(manifests)["RUNSTATE_REDIS_URL"]["secretKeyRef"]
    assert ref["name"] == secret["metadata"]["name"]
    assert secret["stringData"] == {ref["key"]: url}
    # The password is in the Secret only, never in the Deployment's text.
    deployment_text = yaml.safe_dump(one(manifests, "Deployment"))
    assert "s3cret" not in deployment_text
    annotations = one(manifests, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert "checksum/redis" in annotations
    changed = render({"redis": {"url": url + "1"}})
    assert (
        one(changed, "Deployment")["spec"]["template"]["metadata"]["annotations"] != annotations
    ), "a new URL must roll the pods"


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://:s3cret@s1:26379,s2:26379/mymaster/0",
        "rediss+sentinel://:s3cret@s1/mymaster?sentinel_password=x",
        "redis+cluster://:s3cret@n1:6379,n2:6379",
        "rediss+cluster://n1:6379",
        "unix:///run/redis/redis.sock",
    ],
)
def test_schema_accepts_every_store_url_scheme(render: Render, url: str) -> None:
    # The schemes runstate_stores.store_from_url understands (stores/README.md).
    assert list(one(render({"redis": {"url": url}}), "Secret")["stringData"].values()) == [url]


def test_redis_existing_secret(render: Render) -> None:
    manifests = render({"redis": {"existingSecret": "my-redis", "existingSecretKey": "url"}})
    assert not by_kind(manifests, "Secret")
    ref = env_of(manifests)["RUNSTATE_REDIS_URL"]["secretKeyRef"]
    assert ref == {"name": "my-redis", "key": "url"}


def test_redis_url_and_existing_secret_conflict(helm_template: Callable[..., str]) -> None:
    with pytest.raises(subprocess.CalledProcessError) as failed:
        helm_template({"redis": {"url": "redis://r:6379", "existingSecret": "my-redis"}})
    assert "not both" in failed.value.stderr


def test_one_replica_is_unpeered_and_recreated(render: Render) -> None:
    manifests = render({"redis": {"existingSecret": "my-redis"}})
    assert one(manifests, "Deployment")["spec"]["strategy"] == {"type": "Recreate"}
    assert not by_kind(manifests, "ClusterKopfPeering") and not by_kind(manifests, "KopfPeering")
    env = env_of(manifests)
    assert not {"RUNSTATE_PEERING", "RUNSTATE_PEERING_PRIORITY", "POD_ID"} & set(env)
    assert "RUNSTATE_PEERING_LIFETIME" not in env
    assert not by_kind(manifests, "PodDisruptionBudget")  # one replica: nothing to keep up


# Replicas need a store they share (the chart refuses the in-memory one for them).
HA = {"replicaCount": 2, "redis": {"existingSecret": "my-redis"}}


def peering_objects(manifests: list[Manifest]) -> list[Manifest]:
    return by_kind(manifests, "ClusterKopfPeering") + by_kind(manifests, "KopfPeering")


def assert_peered_env(manifests: list[Manifest], name: str) -> None:
    """The environment of a peered replica: kopf peering by `name`, a priority of its own,
    and the pod's name as its identity."""
    env = env_of(manifests)
    assert env["RUNSTATE_PEERING"] == name
    assert env["RUNSTATE_PEERING_PRIORITY"] == "random"
    assert env["RUNSTATE_PEERING_LIFETIME"] == "60"
    assert env["POD_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["RUNSTATE_STANDALONE"] == "false"
    plain = {k: v for k, v in env.items() if isinstance(v, str)}
    settings = Settings.from_env(plain)
    assert (settings.peering.name, settings.peering.standalone) == (name, False)
    assert settings.peering.priority == random_peering_priority()


def test_replicas_peer_cluster_wide(render: Render) -> None:
    manifests = render(HA)
    deployment = one(manifests, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    name = deployment["metadata"]["name"]  # the release's full name
    (peering,) = peering_objects(manifests)
    assert peering["apiVersion"] == "kopf.dev/v1"
    assert peering["kind"] == "ClusterKopfPeering"
    assert peering["metadata"]["name"] == name
    assert "namespace" not in peering["metadata"]
    assert_peered_env(manifests, name)
    # Only one replica acts, so old and new pods may overlap; one is always there to take over.
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    # A node drain takes one replica at a time, never the last.
    pdb = one(manifests, "PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"  # helm's default Kubernetes version is current
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == (deployment["spec"]["selector"]["matchLabels"])
    assert pdb["metadata"]["namespace"] == NAMESPACE


def test_the_failover_time_is_a_value(render: Render) -> None:
    manifests = render({**HA, "operator": {"peeringLifetimeSeconds": 15}})
    env = env_of(manifests)
    assert env["RUNSTATE_PEERING_LIFETIME"] == "15"
    plain = {k: v for k, v in env.items() if isinstance(v, str)}
    assert Settings.from_env(plain).peering.lifetime == 15


def test_replicas_peer_in_each_watched_namespace(render: Render) -> None:
    watched = ["team-a", "team-b"]
    manifests = render({**HA, "replicaCount": 3, "watchNamespaces": watched})
    name = one(manifests, "Deployment")["metadata"]["name"]
    peerings = peering_objects(manifests)
    assert {p["kind"] for p in peerings} == {"KopfPeering"}
    assert {p["apiVersion"] for p in peerings} == {"kopf.dev/v1"}
    assert sorted(p["metadata"]["namespace"] for p in peerings) == watched
    assert {p["metadata"]["name"] for p in peerings} == {name}
    assert_peered_env(manifests, name)
    assert env_of(manifests)["RUNSTATE_NAMESPACES"] == "team-a,team-b"


def test_operator_peering_names_the_peering_object(render: Render) -> None:
    manifests = render({**HA, "operator": {"peering": "ops-peers"}})
    assert [p["metadata"]["name"] for p in peering_objects(manifests)] == ["ops-peers"]
    assert_peered_env(manifests, "ops-peers")


@pytest.mark.parametrize("watched", [[], ["team-a", "team-b"]])
def test_rbac_covers_what_kopf_does_on_the_peering_objects(
    render: Render, watched: list[str]
) -> None:
    """kopf lists and watches the peering objects and patches itself into their status (no
    status subresource: see crds/kopf-peering.yaml); the operator's workers list and watch
    them too. Each object must be reachable by the ServiceAccount in its own scope."""
    manifests = render({**HA, "watchNamespaces": watched})
    needed = {"list", "watch", "patch"}
    for peering in peering_objects(manifests):
        namespace = peering["metadata"].get("namespace")
        if namespace is None:
            (role,) = operator_roles(manifests)
            binding = one(manifests, "ClusterRoleBinding")
        else:
            (role,) = [
                r for r in by_kind(manifests, "Role") if r["metadata"]["namespace"] == namespace
            ]
            (binding,) = [
                b
                for b in by_kind(manifests, "RoleBinding")
                if b["metadata"]["namespace"] == namespace
            ]
        assert_bound(binding, role, manifests)
        plural = {"ClusterKopfPeering": "clusterkopfpeerings", "KopfPeering": "kopfpeerings"}
        granted = {v for g, r, v in grants(role) if (g, r) == ("kopf.dev", plural[peering["kind"]])}
        assert granted >= needed, (peering["kind"], namespace, granted)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicaCount": 2}, "redis.url or redis.existingSecret"),
        ({**HA, "operator": {"standalone": True}}, "operator.standalone must be false"),
    ],
)
def test_replicas_refuse_what_would_make_them_unsafe(
    helm_template: Callable[..., str], values: dict[str, Any], message: str
) -> None:
    with pytest.raises(subprocess.CalledProcessError) as failed:
        helm_template(values)
    assert message in failed.value.stderr


def test_scheduling_values(render: Render) -> None:
    values = {
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {}},
    }
    pod = one(render(values), "Deployment")["spec"]["template"]["spec"]
    assert {k: pod[k] for k in values} == values


@pytest.mark.parametrize(
    "values",
    [
        {"replicaCount": "two"},
        {"operator": {"peeringLifetimeSeconds": 1}},
        {"unknownKey": 1},
        {"image": {"repository": "x", "pullPolicy": "Sometimes"}},
        {"metrics": {"port": 0}},
        {"watchNamespaces": ["Not_A_Namespace"]},
        {"redis": {"url": "http://not-redis"}},
        {"redis": {"url": "redis+memcache://r:6379"}},
        {"operator": {"logLevel": "loud"}},
        {"operator": {"peering": "Not_A_Name"}},
    ],
)
def test_schema_rejects(helm_template: Callable[..., str], values: dict[str, Any]) -> None:
    with pytest.raises(subprocess.CalledProcessError) as failed:
        helm_template(values)
    assert "schema" in failed.value.stderr


def assert_bound(binding: Manifest, role: Manifest, manifests: list[Manifest]) -> None:
    """`binding` gives `role` to the operator's ServiceAccount."""
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": role["kind"],
        "name": role["metadata"]["name"],
    }
    account = one(manifests, "ServiceAccount")["metadata"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["name"], "namespace": NAMESPACE}
    ]


def test_chart_crds_are_the_generated_ones() -> None:
    top = {p.name: p.read_bytes() for p in (REPO / "crds").glob("*.yaml")}
    chart = {p.name: p.read_bytes() for p in (CHART / "crds").glob("runstate.dev_*.yaml")}
    assert set(top) == {"runstate.dev_runbooks.yaml", "runstate.dev_runs.yaml"}
    assert chart == top
    # Besides them the chart ships kopf's peering CRDs, and nothing else.
    assert {p.name for p in (CHART / "crds").iterdir()} == {*top, KOPF_CRDS.name}


KOPF_CRDS = CHART / "crds" / "kopf-peering.yaml"


def test_chart_ships_kopfs_peering_crds() -> None:
    """The same definitions the peering integration test installs and runs two replicas
    against (tests/integration/test_recovery.py)."""
    shipped = [doc for doc in yaml.safe_load_all(KOPF_CRDS.read_text()) if doc]
    proven = [yaml.safe_load(line) for line in peering_crds().splitlines()]
    assert shipped == proven
    by_name = {crd["metadata"]["name"]: crd["spec"] for crd in shipped}
    assert by_name["clusterkopfpeerings.kopf.dev"]["scope"] == "Cluster"
    assert by_name["clusterkopfpeerings.kopf.dev"]["names"]["kind"] == "ClusterKopfPeering"
    assert by_name["kopfpeerings.kopf.dev"]["scope"] == "Namespaced"
    assert by_name["kopfpeerings.kopf.dev"]["names"]["kind"] == "KopfPeering"
    for spec in by_name.values():
        (version,) = spec["versions"]
        # kopf 1.45 talks kopf.dev/v1 and writes the peers into status through the object
        # itself: a status subresource would need RBAC on it, which the chart does not grant.
        assert (spec["group"], version["name"]) == ("kopf.dev", "v1")
        assert version["served"] and version["storage"]
        assert "subresources" not in version


def test_extra_env_and_env_from_reach_the_operator(render: Render) -> None:
    extra = [
        {"name": "RUNSTATE_CREATE_CONCURRENCY", "value": "32"},
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "token"}}},
    ]
    env_from = [{"secretRef": {"name": "runstate-extra"}}, {"configMapRef": {"name": "cm"}}]
    manifests = render({"extraEnv": extra, "extraEnvFrom": env_from})
    operator = container(manifests)
    # After the chart's own variables, so that a variable set twice resolves to the extra one.
    assert operator["env"][-2:] == extra
    assert operator["envFrom"] == env_from
    plain = {k: v for k, v in env_of(manifests).items() if isinstance(v, str)}
    assert Settings.from_env(plain).reconcile.create_concurrency == 32
    assert "envFrom" not in container(render())


SCHEMA = CHART / "values.schema.json"


def schema_properties(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted path, schema) of every property and array item in the values schema."""
    for key, sub in (node.get("properties") or {}).items():
        here = f"{path}.{key}" if path else key
        yield here, sub
        yield from schema_properties(sub, here)
    items = node.get("items")
    if isinstance(items, dict):
        yield f"{path}[]", items
        yield from schema_properties(items, f"{path}[]")


def test_every_schema_property_is_described() -> None:
    schema = json.loads(SCHEMA.read_text())
    found = list(schema_properties(schema))
    assert len(found) > 50  # the walk reaches the nested properties
    undescribed = [path for path, sub in found if not str(sub.get("description", "")).strip()]
    assert undescribed == []


def value_paths(values: Any, path: str = "") -> Iterator[str]:
    """Dotted paths of every key in values.yaml (into maps, not into free-form ones' keys)."""
    if isinstance(values, dict):
        for key, sub in values.items():
            here = f"{path}.{key}" if path else key
            yield here
            yield from value_paths(sub, here)


def test_every_values_key_is_in_the_schema() -> None:
    schema = json.loads(SCHEMA.read_text())
    known = {path for path, _ in schema_properties(schema)}
    # Maps whose keys are the user's (labels, annotations, resources, securityContext ...).
    free = {
        path
        for path, sub in schema_properties(schema)
        if (sub.get("type") == "object" and "properties" not in sub) or "$ref" in sub
    }
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    unknown = [
        p
        for p in value_paths(values)
        if p not in known and not any(p.startswith(f + ".") for f in free)
    ]
    assert unknown == []


def test_values_yaml_validates_against_the_schema(helm_template: Callable[..., str]) -> None:
    """helm validates the values it renders with against values.schema.json: values.yaml as
    it is passes, and the same file with one value of the wrong type is refused."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert helm_template(values)
    values["operator"]["workers"] = "many"
    with pytest.raises(subprocess.CalledProcessError) as failed:
        helm_template(values)
    assert "schema" in failed.value.stderr
