"""Environment variables of the work container: `EnvVar` and the uniqueness of a list of them.

Owns `EnvVar` (a value, or a `valueFrom` of the shape the API server demands) and
`unique_env`, the check that `spec.defaults.env` and `operations[].env` each share. Which env a
pod gets in the end (defaults, the operation's own, runstate's) is the domain's. Must not import
anything with I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import Field, model_validator

from runstate.api.model import ApiModel
from runstate.api.v1alpha1.formats import ENV_NAME

# valueFrom: each source and the fields it needs (as the API server would demand them).
_VALUE_SOURCES: dict[str, tuple[str, ...]] = {
    "secretKeyRef": ("key",),
    "configMapKeyRef": ("key",),
    "fieldRef": ("fieldPath",),
    "resourceFieldRef": ("resource",),
}


class EnvVar(ApiModel):
    """An environment variable of the work container."""

    name: Annotated[str, Field(min_length=1, max_length=1024, pattern=ENV_NAME)] = Field(
        description="Unique in its list; RUNSTATE_* are runstate's"
    )
    value: str | None = Field(default=None, description="The value (or valueFrom)")
    value_from: dict[str, Any] | None = Field(
        default=None,
        description="Passed to the pod as is: exactly one of secretKeyRef, configMapKeyRef, "
        "fieldRef, resourceFieldRef",
    )

    @model_validator(mode="after")
    def _value_from_shape(self) -> EnvVar:
        source = self.value_from
        if source is None:
            return self
        if self.value:
            raise ValueError(f"env {self.name!r}: value and valueFrom are alternatives")
        kinds = sorted(source)
        if len(kinds) != 1 or kinds[0] not in _VALUE_SOURCES:
            raise ValueError(
                f"env {self.name!r}: valueFrom needs exactly one of "
                f"{', '.join(_VALUE_SOURCES)}; got {', '.join(kinds) or 'none'}"
            )
        ref = source[kinds[0]]
        if not isinstance(ref, dict):
            raise ValueError(f"env {self.name!r}: valueFrom.{kinds[0]} must be an object")
        for needed in _VALUE_SOURCES[kinds[0]]:
            if not isinstance(ref.get(needed), str) or not ref[needed]:
                raise ValueError(f"env {self.name!r}: valueFrom.{kinds[0]}.{needed} is required")
        return self


def unique_env(env: Sequence[EnvVar]) -> None:
    """Refuse a list of env vars in which a name repeats, naming both places."""
    seen: dict[str, int] = {}
    for i, var in enumerate(env):
        if var.name in seen:
            raise ValueError(
                f"duplicate env name {var.name!r} (env[{seen[var.name]}] and env[{i}])"
            )
        seen[var.name] = i
