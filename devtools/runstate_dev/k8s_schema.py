"""Kubernetes' own schemas of the pod fields a Runbook's `podTemplate` takes, for its CRDs.

This module owns turning the API server's OpenAPI v2 document (`GET /openapi/v2`) into the
structural schemas a CustomResourceDefinition accepts, for the definitions in `ROOTS` and
everything they reference: `$ref`s inlined, `IntOrString` and `Quantity` as
`x-kubernetes-int-or-string` (a Quantity also with controller-gen's pattern), vendor extensions
a CRD does not take dropped, and descriptions kept on each root only (the CRDs embed these
schemas several times; their size is bounded by `kubectl apply`'s annotation). The result is
checked in as `operator/runstate/api/kubernetes.json`; `runstate.api.crds` reads it.

`python -m runstate_dev k8s-schema --dir DIR [--out FILE]` writes it from the dev cluster in
DIR. Must not import the operator (the dev tools depend on nothing of it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from runstate_dev.cluster import ControlPlane

__all__ = ["CORE", "ROOTS", "convert", "fetch", "render"]

Schema = dict[str, Any]

CORE = "io.k8s.api.core.v1."
ROOTS = (
    "Volume",
    "VolumeMount",
    "Toleration",
    "Affinity",
    "LocalObjectReference",
    "PodSecurityContext",
    "SecurityContext",
    "ResourceRequirements",
    "EnvVar",
    "EnvFromSource",
)
INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
# controller-gen's pattern of a resource.Quantity (it applies to the string form only).
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|"
    r"([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)

# Keywords a structural CRD schema takes as the OpenAPI document has them.
_KEEP = frozenset(
    {
        "type",
        "format",
        "enum",
        "required",
        "x-kubernetes-map-type",
        "x-kubernetes-list-type",
        "x-kubernetes-list-map-keys",
    }
)
# Keywords a CRD does not take (strategic-merge-patch hints, unions) or that would only add
# size below the top (descriptions).
_DROP = frozenset(
    {
        "description",
        "x-kubernetes-patch-merge-key",
        "x-kubernetes-patch-strategy",
        "x-kubernetes-unions",
    }
)


def convert(openapi: Mapping[str, Any], version: str, roots: tuple[str, ...] = ROOTS) -> Schema:
    """`{"source": ..., "definitions": {root: structural schema}}` of `openapi` (the API
    server's `/openapi/v2`, of Kubernetes `version`)."""
    definitions: Mapping[str, Schema] = openapi["definitions"]
    out: dict[str, Schema] = {}
    for root in roots:
        definition = definitions[CORE + root]
        schema = _node(definition, definitions, (CORE + root,))
        if definition.get("description"):
            schema = {"description": definition["description"], **schema}
        out[root] = schema
    return {"source": f"kube-apiserver {version} GET /openapi/v2", "definitions": out}


def _ref(name: str, definitions: Mapping[str, Schema], stack: tuple[str, ...]) -> Schema:
    if name == INT_OR_STRING:
        return {"x-kubernetes-int-or-string": True}
    if name == QUANTITY:
        return {"x-kubernetes-int-or-string": True, "pattern": QUANTITY_PATTERN}
    if name in stack:
        raise ValueError(f"recursive definition {name} (via {' -> '.join(stack)})")
    return _node(definitions[name], definitions, (*stack, name))


def _node(
    node: Mapping[str, Any], definitions: Mapping[str, Schema], stack: tuple[str, ...]
) -> Schema:
    """One schema node, structural: its `$ref` inlined, its children converted."""
    if "$ref" in node:
        return _ref(str(node["$ref"]).rsplit("/", 1)[-1], definitions, stack)
    out: Schema = {}
    for key, value in node.items():
        if key in _KEEP:
            out[key] = value
        elif key == "properties":
            out[key] = {name: _node(sub, definitions, stack) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, Mapping):
            out[key] = _node(value, definitions, stack)
        elif key not in _DROP:
            raise ValueError(f"{stack[-1]}: keyword {key!r} is not known to this converter")
    if out.get("type") == "object" and not ({"properties", "additionalProperties"} & out.keys()):
        out["x-kubernetes-preserve-unknown-fields"] = True  # free-form: keep, do not prune
    return out


def render(converted: Mapping[str, Any]) -> str:
    """The checked-in text: sorted keys, one level of indent, a final newline."""
    return json.dumps(converted, indent=1, sort_keys=True) + "\n"


def fetch(plane: ControlPlane) -> Schema:
    """`convert` of what the running API server of `plane` serves."""
    version = str(plane.api("GET", "/version")["gitVersion"])
    return convert(plane.api("GET", "/openapi/v2"), version)
