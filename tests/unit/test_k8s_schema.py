"""`runstate_dev.k8s_schema`: an OpenAPI v2 document to structural CRD schemas (the real API
server's document is checked in tests/devcluster/test_devcluster_k8s_schema.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from runstate_dev import k8s_schema

CORE = k8s_schema.CORE


def doc(**definitions: dict[str, Any]) -> dict[str, Any]:
    return {
        "definitions": {
            k8s_schema.INT_OR_STRING: {"type": "string", "format": "int-or-string"},
            k8s_schema.QUANTITY: {"type": "string", "description": "long text"},
            **{CORE + name: schema for name, schema in definitions.items()},
        }
    }


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/definitions/{CORE}{name}", "description": "dropped"}


def test_refs_are_inlined_and_descriptions_kept_at_the_top_only() -> None:
    openapi = doc(
        Root={
            "description": "The root.",
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string", "description": "x"}, "child": ref("Child")},
            "x-kubernetes-patch-strategy": "merge",
        },
        Child={
            "type": "object",
            "properties": {"items": {"type": "array", "items": ref("Leaf")}},
            "x-kubernetes-map-type": "atomic",
            "x-kubernetes-unions": [{"discriminator": "type"}],
        },
        Leaf={"type": "object", "additionalProperties": {"type": "string"}},
    )
    converted = k8s_schema.convert(openapi, "v1.20.2", ("Root",))
    assert converted["source"] == "kube-apiserver v1.20.2 GET /openapi/v2"
    assert converted["definitions"]["Root"] == {
        "description": "The root.",
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string"},
            "child": {
                "type": "object",
                "x-kubernetes-map-type": "atomic",
                "properties": {
                    "items": {
                        "type": "array",
                        "items": {"type": "object", "additionalProperties": {"type": "string"}},
                    }
                },
            },
        },
    }


def test_int_or_string_and_quantity_become_int_or_string() -> None:
    openapi = doc(
        Root={
            "type": "object",
            "properties": {
                "port": {"$ref": f"#/definitions/{k8s_schema.INT_OR_STRING}"},
                "size": {"$ref": f"#/definitions/{k8s_schema.QUANTITY}"},
            },
        }
    )
    props = k8s_schema.convert(openapi, "v", ("Root",))["definitions"]["Root"]["properties"]
    assert props["port"] == {"x-kubernetes-int-or-string": True}
    assert props["size"] == {
        "x-kubernetes-int-or-string": True,
        "pattern": k8s_schema.QUANTITY_PATTERN,
    }


def test_a_free_form_object_keeps_its_fields() -> None:
    openapi = doc(Root={"type": "object", "properties": {"raw": {"type": "object"}}})
    props = k8s_schema.convert(openapi, "v", ("Root",))["definitions"]["Root"]["properties"]
    assert props["raw"] == {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


@pytest.mark.parametrize(
    "definitions,message",
    [
        ({"Root": {"type": "object", "properties": {"a": ref("Root")}}}, "recursive"),
        ({"Root": {"type": "object", "oneOf": []}}, "'oneOf' is not known"),
    ],
)
def test_what_it_cannot_convert_is_an_error(
    definitions: dict[str, dict[str, Any]], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        k8s_schema.convert(doc(**definitions), "v", ("Root",))


def test_render_is_stable_json() -> None:
    converted = {"source": "s", "definitions": {"B": {"type": "string"}, "A": {"type": "integer"}}}
    text = k8s_schema.render(converted)
    assert text.endswith("}\n") and json.loads(text) == converted
    assert text.index('"A"') < text.index('"B"')
