"""podTemplate: the merge rules into a work pod (table-driven), the pods `build_pod` makes with
templates, and the Kubernetes schemas the CRDs carry for the template's fields."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from runstate.api.connector import ConnectorType
from runstate.api.crds import build_crds, kubernetes_schema
from runstate.api.podtemplate import PodTemplate
from runstate.api.v1alpha1 import RunbookSpec
from runstate.domain import templates, validation
from runstate.domain.errors import SpecError
from runstate.domain.targets import NodeConnection
from runstate.kube import connectors
from runstate.kube.podtemplate import apply_templates
from tests.unit.test_pods import pod as work_pod

ROOT = Path(__file__).resolve().parents[2]
# kubectl apply (client-side) keeps the whole object in one annotation; all annotations of an
# object together may be 262144 bytes at most.
ANNOTATION_LIMIT = 262_144


def base_pod() -> dict[str, Any]:
    """A pod as `build_pod` shapes it, with one entry of runstate's own in each list."""
    return {
        "metadata": {
            "name": "p",
            "labels": {"app.kubernetes.io/managed-by": "runstate", "runstate.dev/run": "r"},
            "annotations": {"runstate.dev/host": "h"},
        },
        "spec": {
            "securityContext": copy.deepcopy(connectors.RESTRICTED_POD),
            "volumes": [{"name": "runstate-ssh", "projected": {"sources": []}}],
            "tolerations": [{"key": "own", "operator": "Exists"}],
            "containers": [
                {
                    "name": "work",
                    "env": [
                        {"name": "RUNSTATE_HOST", "value": "h"},
                        {"name": "TIER", "value": "web"},
                    ],
                    "volumeMounts": [
                        {"name": "runstate-ssh", "mountPath": "/var/run/runstate/ssh"}
                    ],
                    "securityContext": copy.deepcopy(connectors.RESTRICTED_CONTAINER),
                    "resources": {"limits": {"cpu": "1"}},
                }
            ],
        },
    }


def t(**fields: Any) -> PodTemplate:
    return PodTemplate.model_validate(fields)


def container(pod: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = pod["spec"]["containers"][0]
    return result


CM = {"name": "conf", "configMap": {"name": "conf"}}
SCRATCH = {"name": "scratch", "emptyDir": {}}

# (case, templates, where in the pod, expected value there)
CASES: list[tuple[str, list[PodTemplate], tuple[str | int, ...], Any]] = [
    (
        "volumes come after runstate's own",
        [t(volumes=[CM])],
        ("spec", "volumes"),
        [{"name": "runstate-ssh", "projected": {"sources": []}}, CM],
    ),
    (
        "a later template's volume replaces an earlier one of the same name, in its place",
        [t(volumes=[CM, SCRATCH]), t(volumes=[{"name": "conf", "secret": {"secretName": "s"}}])],
        ("spec", "volumes"),
        [
            {"name": "runstate-ssh", "projected": {"sources": []}},
            {"name": "conf", "secret": {"secretName": "s"}},
            SCRATCH,
        ],
    ),
    (
        "a template volume with runstate's name is dropped: runstate's own win",
        [t(volumes=[{"name": "runstate-ssh", "emptyDir": {}}])],
        ("spec", "volumes"),
        [{"name": "runstate-ssh", "projected": {"sources": []}}],
    ),
    (
        "volumeMounts are keyed by mountPath",
        [
            t(volumeMounts=[{"name": "a", "mountPath": "/a"}, {"name": "b", "mountPath": "/b"}]),
            t(volumeMounts=[{"name": "c", "mountPath": "/a", "readOnly": True}]),
        ],
        ("spec", "containers", 0, "volumeMounts"),
        [
            {"name": "runstate-ssh", "mountPath": "/var/run/runstate/ssh"},
            {"name": "c", "mountPath": "/a", "readOnly": True},
            {"name": "b", "mountPath": "/b"},
        ],
    ),
    (
        "env after runstate's, by name; the spec's env var of the same name stays",
        [
            t(env=[{"name": "A", "value": "1"}, {"name": "TIER", "value": "db"}]),
            t(env=[{"name": "A", "value": "2"}]),
        ],
        ("spec", "containers", 0, "env"),
        [
            {"name": "RUNSTATE_HOST", "value": "h"},
            {"name": "TIER", "value": "web"},
            {"name": "A", "value": "2"},
        ],
    ),
    (
        "envFrom and tolerations have no key: every entry is appended",
        [
            t(envFrom=[{"configMapRef": {"name": "x"}}], tolerations=[{"key": "gpu"}]),
            t(envFrom=[{"configMapRef": {"name": "x"}}], tolerations=[{"key": "gpu"}]),
        ],
        ("spec", "tolerations"),
        [{"key": "own", "operator": "Exists"}, {"key": "gpu"}, {"key": "gpu"}],
    ),
    (
        "imagePullSecrets by name",
        [
            t(imagePullSecrets=[{"name": "reg"}]),
            t(imagePullSecrets=[{"name": "reg"}, {"name": "b"}]),
        ],
        ("spec", "imagePullSecrets"),
        [{"name": "reg"}, {"name": "b"}],
    ),
    (
        "labels merged, runstate's own win",
        [
            t(labels={"team": "a", "tier": "x"}),
            t(labels={"tier": "y", "app.kubernetes.io/managed-by": "me"}),
        ],
        ("metadata", "labels"),
        {
            "team": "a",
            "tier": "y",
            "app.kubernetes.io/managed-by": "runstate",
            "runstate.dev/run": "r",
        },
    ),
    (
        "annotations merged, runstate's own win",
        [t(annotations={"runstate.dev/host": "other", "note": "1"})],
        ("metadata", "annotations"),
        {"note": "1", "runstate.dev/host": "h"},
    ),
    (
        "nodeSelector merged, a later template's value over an earlier's",
        [t(nodeSelector={"zone": "a", "disk": "ssd"}), t(nodeSelector={"zone": "b"})],
        ("spec", "nodeSelector"),
        {"zone": "b", "disk": "ssd"},
    ),
    (
        "the pod's securityContext is merged key by key over runstate's restricted one",
        [t(securityContext={"runAsUser": 1000}), t(securityContext={"fsGroup": 2000})],
        ("spec", "securityContext"),
        {**connectors.RESTRICTED_POD, "runAsUser": 1000, "fsGroup": 2000},
    ),
    (
        "the container's securityContext too",
        [t(containerSecurityContext={"readOnlyRootFilesystem": True})],
        ("spec", "containers", 0, "securityContext"),
        {**connectors.RESTRICTED_CONTAINER, "readOnlyRootFilesystem": True},
    ),
    (
        "affinity: the later template's replaces the earlier's whole",
        [
            t(affinity={"nodeAffinity": {"x": 1}, "podAffinity": {"y": 2}}),
            t(affinity={"podAntiAffinity": {"z": 3}}),
        ],
        ("spec", "affinity"),
        {"podAntiAffinity": {"z": 3}},
    ),
    (
        "affinity of an earlier template stays when a later one sets none",
        [t(affinity={"nodeAffinity": {"x": 1}}), t(labels={"a": "b"})],
        ("spec", "affinity"),
        {"nodeAffinity": {"x": 1}},
    ),
    (
        "priorityClassName: the later one's",
        [t(priorityClassName="low"), t(priorityClassName="high")],
        ("spec", "priorityClassName"),
        "high",
    ),
    (
        "resources replace defaults.resources whole",
        [t(resources={"requests": {"memory": "64Mi"}})],
        ("spec", "containers", 0, "resources"),
        {"requests": {"memory": "64Mi"}},
    ),
    (
        "no template: the pod as it was",
        [],
        (),
        base_pod(),
    ),
]


def at(doc: Any, path: tuple[str | int, ...]) -> Any:
    for part in path:
        doc = doc[part]
    return doc


@pytest.mark.parametrize(
    "templates,path,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_merge_rules(
    templates: list[PodTemplate], path: tuple[str | int, ...], expected: Any
) -> None:
    assert at(apply_templates(base_pod(), templates), path) == expected


def test_env_from_is_appended_after_none_of_runstate() -> None:
    merged = apply_templates(base_pod(), [t(envFrom=[{"secretRef": {"name": "s"}}])])
    assert container(merged)["envFrom"] == [{"secretRef": {"name": "s"}}]


def test_the_input_pod_and_templates_are_untouched() -> None:
    original = base_pod()
    templates = [
        t(
            volumes=[CM],
            securityContext={"runAsUser": 1},
            labels={"a": "b"},
            resources={"limits": {}},
        ),
        t(env=[{"name": "A", "value": "1"}], affinity={"nodeAffinity": {}}),
    ]
    before = [tpl.model_dump() for tpl in templates]
    merged = apply_templates(original, templates)
    assert original == base_pod()
    assert [tpl.model_dump() for tpl in templates] == before
    merged["spec"]["volumes"][1]["configMap"]["name"] = "changed"
    merged["spec"]["securityContext"]["runAsUser"] = 7
    assert templates[0].volumes[0]["configMap"]["name"] == "conf"
    assert templates[0].security_context == {"runAsUser": 1}


def test_build_pod_applies_the_templates_in_order() -> None:
    defaults = t(
        volumes=[CM],
        volumeMounts=[{"name": "conf", "mountPath": "/etc/app"}],
        env=[{"name": "MODE", "value": "defaults"}],
        securityContext={"runAsUser": 1000},
        labels={"team": "infra"},
    )
    op = t(
        volumes=[SCRATCH],
        volumeMounts=[{"name": "scratch", "mountPath": "/scratch"}],
        env=[{"name": "MODE", "value": "op"}],
        priorityClassName="batch",
    )
    p = work_pod(pod_templates=(defaults, op), resources={"limits": {"cpu": "2"}})
    spec, work = p["spec"], container(p)
    assert spec["volumes"] == [CM, SCRATCH]
    assert work["volumeMounts"] == [
        {"name": "conf", "mountPath": "/etc/app"},
        {"name": "scratch", "mountPath": "/scratch"},
    ]
    assert work["env"][-1] == {"name": "MODE", "value": "op"}
    assert [e["name"] for e in work["env"]].count("MODE") == 1
    assert spec["securityContext"] == {**connectors.RESTRICTED_POD, "runAsUser": 1000}
    assert spec["priorityClassName"] == "batch"
    assert p["metadata"]["labels"]["team"] == "infra"
    assert p["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "runstate"
    assert work["resources"] == {"limits": {"cpu": "2"}}  # no template resources: the defaults'


def test_a_node_pod_keeps_its_host_volume_and_gets_the_templates() -> None:
    p = work_pod(
        connection=NodeConnection(),
        pod_templates=(t(tolerations=[{"operator": "Exists"}], volumes=[SCRATCH]),),
    )
    names = [v["name"] for v in p["spec"]["volumes"]]
    assert names == [templates.HOST_VOLUME, "scratch"]
    assert p["spec"]["tolerations"] == [{"operator": "Exists"}]
    assert container(p)["securityContext"] == connectors.PRIVILEGED_CONTAINER


# ---- the schema the CRDs carry ---------------------------------------------------------------


def _template_schema(crd: dict[str, Any], *path: str) -> dict[str, Any]:
    node: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    node = node["properties"]["spec"]
    for part in path:
        node = node["items"] if part == "[]" else node["properties"][part]
    return node


def test_every_template_field_carries_kubernetes_own_schema() -> None:
    runbook, run = build_crds()
    where = [
        (runbook, ("defaults", "podTemplate")),
        (runbook, ("operations", "[]", "podTemplate")),
        (runbook, ("hookOperations", "[]", "podTemplate")),
        (run, ("runbook", "defaults", "podTemplate")),
        (run, ("runbook", "operations", "[]", "podTemplate")),
    ]
    for crd, path in where:
        fields = _template_schema(crd, *path)["properties"]
        for name in (
            "volumes",
            "volumeMounts",
            "tolerations",
            "imagePullSecrets",
            "env",
            "envFrom",
        ):
            assert fields[name]["type"] == "array"
            assert "x-kubernetes-preserve-unknown-fields" not in fields[name]["items"], name
        assert fields["volumes"]["items"] == kubernetes_schema("Volume")
        assert fields["affinity"]["properties"].keys() == {
            "nodeAffinity",
            "podAffinity",
            "podAntiAffinity",
        }
        assert "runAsUser" in fields["securityContext"]["properties"]
        assert "capabilities" in fields["containerSecurityContext"]["properties"]
        limits = fields["resources"]["properties"]["limits"]["additionalProperties"]
        assert limits["x-kubernetes-int-or-string"] is True and "pattern" in limits
        assert fields["volumes"]["description"]  # the field's own, not Kubernetes' long text


def test_the_vendored_schemas_are_structural_and_described_only_at_the_top() -> None:
    doc = json.loads((ROOT / "operator/runstate/api/kubernetes.json").read_text())
    assert doc["source"].startswith("kube-apiserver v1.20.2")

    def walk(node: dict[str, Any], top: bool) -> None:
        assert "$ref" not in node and "anyOf" not in node
        assert top or "description" not in node
        assert not any(k.startswith("x-kubernetes-patch") for k in node)
        assert "type" in node or node.get("x-kubernetes-int-or-string")
        for sub in (node.get("properties") or {}).values():
            walk(sub, False)
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                walk(node[key], False)

    for schema in doc["definitions"].values():
        walk(schema, True)


def test_each_crd_fits_kubectl_apply_with_margin() -> None:
    """`kubectl apply` keeps the object as JSON in an annotation (at most 262144 bytes for all
    of them): each CRD must stay well below that, or it can only be installed server-side."""
    for crd in build_crds():
        size = len(json.dumps(crd, separators=(",", ":")))
        assert size < ANNOTATION_LIMIT * 0.6, (crd["metadata"]["name"], size)


def test_runstates_own_volume_names_are_reserved() -> None:
    """The pod builders name their volumes from `templates` (one home): all reserved."""
    assert templates.OWN_VOLUMES == {
        ConnectorType.SSH: templates.SSH_VOLUME,
        ConnectorType.NODE: templates.HOST_VOLUME,
    }
    assert all(
        n.startswith(templates.RESERVED_VOLUME_PREFIX) for n in templates.OWN_VOLUMES.values()
    )


def _ssh_runbook(**extra: Any) -> RunbookSpec:
    ssh = {
        "privateKey": {"secretRef": {"name": "key", "key": "id"}},
        "insecureSkipHostKeyCheck": True,
    }
    mount = {"name": templates.SSH_VOLUME, "mountPath": "/keys"}
    return RunbookSpec.model_validate(
        {
            "inventory": {"hosts": [{"name": "web1"}]},
            "connector": {"type": "ssh", "ssh": ssh},
            "operations": [{"name": "a", "run": "true", "podTemplate": {"volumeMounts": [mount]}}],
            **extra,
        }
    )


def test_an_ssh_operation_may_mount_runstate_own_key_volume() -> None:
    validation.validate_runbook(_ssh_runbook())


def test_a_hook_may_not_mount_runstate_own_volumes_it_may_run_without() -> None:
    hook = {
        "name": "notify",
        "run": "true",
        "podTemplate": {"volumeMounts": [{"name": templates.SSH_VOLUME, "mountPath": "/k"}]},
    }
    spec = _ssh_runbook(hookOperations=[hook], hooks={"onFailure": ["notify"]})
    with pytest.raises(SpecError) as exc:
        validation.validate_runbook(spec)
    assert exc.value.field == "spec.hookOperations[0].podTemplate.volumeMounts[0].name"
