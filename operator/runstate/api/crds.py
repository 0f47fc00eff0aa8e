"""CustomResourceDefinitions generated from the API models (one source of truth).

`build_crds()` turns the pydantic models of `v1alpha1` into structural OpenAPI v3 schemas and
wraps them in `apiextensions.k8s.io/v1` CRDs with the status subresource, printer columns and
the `runstate` category. `runstate crds` writes them to `crds/`; a test fails when the files
drift from the models. Pure: no I/O beyond what the caller does with the returned dicts.

Rules the generated schemas keep, so that `kubectl explain` shows every field:

- **Descriptions.** Every property has one, from the models (a field's `description`, else its
  model's docstring); the root, `spec` and `status` too. The schemas of Kubernetes' own types
  under `podTemplate` are described at their root only (their fields' texts would not fit
  `kubectl apply`'s annotation): the root names the `kubectl explain pod.spec...` that has them.
- **`nullable` only where null means something**: an optional field whose default is not null
  (absent, the API server fills the default in; null, the field's documented meaning, e.g.
  `history.keepRuns: null` keeps every Run). Every other optional field is simply not required:
  a null there is pruned by the API server as if absent, and the operator never writes one
  (its status is dumped with `exclude_none`, and a merge patch's null deletes the key). This
  matters beyond taste: in OpenAPI v2 (all a 1.20 API server publishes, and what `kubectl
  explain` reads when there is no v3) a nullable field is published untyped, its subfields gone.
- **List-maps.** A list whose items a key names (`list_map("name")` in the models: hosts,
  operations, env, status conditions by `type` ...) carries `x-kubernetes-list-type: map` and its
  `x-kubernetes-list-map-keys`, so the API server rejects two items of the same key at apply time
  (v1.20 does, on create and update). Each key must be required in the item schema.
"""

from __future__ import annotations

import copy
import functools
import json
from importlib import resources
from typing import Any

import yaml
from pydantic import BaseModel

from runstate.api.model import LIST_MAP_KEYS, LIST_TYPE
from runstate.api.podtemplate import K8S_SCHEMA
from runstate.api.v1alpha1 import (
    API_VERSION,
    GROUP,
    VERSION,
    RunbookSpec,
    RunbookStatus,
    RunSpec,
    RunStatus,
)

Schema = dict[str, Any]

# JSON-schema keywords that a structural Kubernetes schema accepts as they are.
_KEEP = {
    "type",
    "description",
    "enum",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "minItems",
    "maxItems",
    "format",
    "default",
    LIST_TYPE,
    LIST_MAP_KEYS,
}


def _resolve(node: Schema, defs: dict[str, Schema]) -> Schema:
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _resolve(merged, defs)
    return node


@functools.cache
def _kubernetes() -> dict[str, Schema]:
    """Kubernetes' own structural schemas, vendored by `runstate_dev k8s-schema`."""
    text = resources.files("runstate.api").joinpath("kubernetes.json").read_text()
    definitions: dict[str, Schema] = json.loads(text)["definitions"]
    return definitions


def kubernetes_schema(definition: str, description: str | None = None) -> Schema:
    """The vendored schema of `definition` (`Volume` ...), described by `description` (the
    field's own) instead of Kubernetes' text: the CRDs embed it several times."""
    schema = copy.deepcopy(_kubernetes()[definition])
    schema.pop("description", None)
    return {"description": description, **schema} if description else schema


def _structural(node: Schema, defs: dict[str, Schema]) -> Schema:
    """Rewrite one pydantic JSON-schema node into a structural Kubernetes schema node."""
    node = _resolve(node, defs)
    if K8S_SCHEMA in node:
        return kubernetes_schema(node[K8S_SCHEMA], node.get("description"))
    if "anyOf" in node:  # Optional[X] is the only union the models use
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"unsupported union in schema: {node['anyOf']}")
        outer = {k: v for k, v in node.items() if k != "anyOf"}
        inner = _structural(
            {**options[0], **{k: v for k, v in outer.items() if k != "default"}}, defs
        )
        if outer.get("default") is not None:
            # Absent: the default; null: what the field's description says null means.
            inner["nullable"] = True
            inner["default"] = outer["default"]
        return inner

    out: Schema = {k: copy.deepcopy(v) for k, v in node.items() if k in _KEEP}
    if "default" in out and out["default"] in (None, "", [], {}):
        # Empty defaults say nothing, and the API server reads `''` as null for a string.
        del out["default"]
    if not out.get("type") and "enum" in out:
        out["type"] = "string"
    kind = out.get("type")
    if kind is None:  # Any: free-form JSON
        out["x-kubernetes-preserve-unknown-fields"] = True
    elif kind == "object":
        if "properties" in node:
            out["properties"] = {
                name: _structural(sub, defs) for name, sub in node["properties"].items()
            }
            if node.get("required"):
                # Fields with defaults are filled in by the API server; only truly required stay.
                out["required"] = sorted(
                    n for n in node["required"] if "default" not in node["properties"][n]
                )
        extra = node.get("additionalProperties")
        if isinstance(extra, dict) and extra:
            out["additionalProperties"] = _structural(extra, defs)
        elif (
            extra is True
            or (extra == {} and "properties" not in node)
            or ("properties" not in node and extra is None)
        ):
            out["x-kubernetes-preserve-unknown-fields"] = True
    elif kind == "array":
        out["items"] = _structural(node.get("items", {}), defs)
        _check_list_map(out)
    return out


def _check_list_map(array: Schema) -> None:
    """A list-map's keys must be properties its items require (the API server's rule is
    "required or defaulted"; the models give keys no default)."""
    keys = array.get(LIST_MAP_KEYS)
    if (array.get(LIST_TYPE) == "map") != bool(keys):
        raise ValueError(f"{LIST_TYPE}: map goes with {LIST_MAP_KEYS}: {array}")
    items = array["items"]
    missing = [k for k in keys or () if k not in items.get("required", ())]
    if missing:
        raise ValueError(f"list-map keys {missing} are not required in {items}")


def _drop_defaults(node: Schema) -> Schema:
    node.pop("default", None)
    for sub in (node.get("properties") or {}).values():
        _drop_defaults(sub)
    if isinstance(node.get("items"), dict):
        _drop_defaults(node["items"])
    return node


def schema_of(model: type[BaseModel], *, defaults: bool = True) -> Schema:
    """The structural schema of `model`; `defaults=False` for status, which only the operator
    writes (API-server defaulting there would invent values the operator never decided)."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    schema = _structural(raw, raw.get("$defs", {}))
    return schema if defaults else _drop_defaults(schema)


def _object_meta(kind: str) -> dict[str, Schema]:
    """apiVersion, kind and metadata. `metadata` may say nothing but its type (the API server
    refuses more, and publishes Kubernetes' ObjectMeta, described, in its place)."""
    return {
        "apiVersion": {"type": "string", "description": f"The object's schema: {API_VERSION}"},
        "kind": {"type": "string", "description": f"The object's kind: {kind}"},
        "metadata": {"type": "object"},
    }


def _crd(
    *,
    kind: str,
    description: str,
    plural: str,
    short_names: list[str],
    spec_schema: Schema,
    status_schema: Schema,
    columns: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                **({"shortNames": short_names} if short_names else {}),
                "categories": ["runstate"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": description,
                            "required": ["spec"],
                            "properties": {
                                **_object_meta(kind),
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


def _age() -> dict[str, Any]:
    return {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


def build_crds() -> list[dict[str, Any]]:
    """The Runbook and Run CRDs, ready to serialise."""
    run_spec = schema_of(RunSpec)
    # "Exactly one of runbookRef / runbook" as a structural value validation (no CEL in 1.20).
    run_spec["oneOf"] = [{"required": ["runbookRef"]}, {"required": ["runbook"]}]
    runbook = _crd(
        kind="Runbook",
        description="Runbook: hosts, and operations to run on them in pyinfra's stages (Setup, "
        "Connect, Prepare, Execute, Disconnect); each execution of it is a Run",
        plural="runbooks",
        short_names=["rb"],
        spec_schema=schema_of(RunbookSpec),
        status_schema=schema_of(RunbookStatus, defaults=False),
        columns=[
            {"name": "Hosts", "type": "integer", "jsonPath": ".status.hosts"},
            {"name": "Operations", "type": "integer", "jsonPath": ".status.operations"},
            {
                "name": "Ready",
                "type": "string",
                "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
            },
            {"name": "Last Run", "type": "string", "jsonPath": ".status.lastRun.name"},
            {"name": "Active", "type": "integer", "jsonPath": ".status.activeRuns"},
            {
                "name": "Message",
                "type": "string",
                "priority": 1,
                "jsonPath": '.status.conditions[?(@.type=="Ready")].message',
            },
            _age(),
        ],
    )
    run = _crd(
        kind="Run",
        description="Run: one execution of a Runbook, with Prefect's states (status.state) and "
        "pyinfra's stages (status.stage)",
        plural="runs",
        # `run` alone would be ambiguous (and `rs` is the ReplicaSet's): runstate run.
        short_names=["rsr"],
        spec_schema=run_spec,
        status_schema=schema_of(RunStatus, defaults=False),
        columns=[
            {"name": "Type", "type": "string", "jsonPath": ".status.state.type"},
            {"name": "State", "type": "string", "jsonPath": ".status.state.name"},
            {"name": "Stage", "type": "string", "jsonPath": ".status.stage"},
            {
                "name": "Hosts",
                "type": "string",
                "jsonPath": ".status.hostsSummary",
                "description": "hosts ok/total",
            },
            {
                "name": "Runbook",
                "type": "string",
                "jsonPath": ".spec.runbookRef.name",
                "priority": 1,
            },
            {
                "name": "Message",
                "type": "string",
                "jsonPath": ".status.state.message",
                "priority": 1,
            },
            _age(),
        ],
    )
    return [runbook, run]


def render_crd_files() -> dict[str, str]:
    """File name → YAML text, as committed under `crds/` and the chart's `crds/`."""
    header = "# Generated by `runstate crds` from runstate.api.v1alpha1. Do not edit.\n"
    files: dict[str, str] = {}
    for crd in build_crds():
        plural = crd["spec"]["names"]["plural"]
        files[f"runstate.dev_{plural}.yaml"] = header + yaml.safe_dump(
            crd, sort_keys=False, width=100
        )
    return files


__all__ = ["build_crds", "kubernetes_schema", "render_crd_files", "schema_of"]
