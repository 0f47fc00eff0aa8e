"""The base of every API type: camelCase on the wire, snake_case in Python, frozen.

Owns `ApiModel` and `list_map` (the schema marker of a list keyed by some of its items'
fields), so that the modules of `runstate.api` (the resources, the
connector, the pod template) share one wire convention without importing each other. Must not
import anything with I/O.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

LIST_TYPE = "x-kubernetes-list-type"
LIST_MAP_KEYS = "x-kubernetes-list-map-keys"


def list_map(*keys: str) -> dict[str, Any]:
    """`json_schema_extra` of a list whose items `keys` name (wire names, each required in the
    item): the CRD declares it a list-map, and the API server refuses duplicate keys."""
    return {LIST_TYPE: "map", LIST_MAP_KEYS: list(keys)}


class ApiModel(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields ignored (the API server prunes
    what the schema does not declare, and a newer CRD must not break an older operator)."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True
    )
