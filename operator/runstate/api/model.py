"""The base of every API type: camelCase on the wire, snake_case in Python, frozen.

Owns `ApiModel` and nothing else, so that the modules of `runstate.api` (the resources, the
connector, the pod template) share one wire convention without importing each other. Must not
import anything with I/O.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class ApiModel(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields ignored (the API server prunes
    what the schema does not declare, and a newer CRD must not break an older operator)."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True
    )
