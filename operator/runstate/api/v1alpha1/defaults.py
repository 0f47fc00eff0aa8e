"""`spec.defaults`: what every operation (and hook) takes unless it sets its own.

Owns `Defaults` (image, env, service account, resources, pod template) and the check of
container resources (limits and requests of quantities). How an operation's own values merge
over these is the domain's (`runstate.domain.templates`, `intents`) and the pod builder's. Must
not import anything with I/O.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import Field, field_validator

from runstate.api.model import ApiModel, list_map
from runstate.api.podtemplate import PodTemplate
from runstate.api.v1alpha1.env import EnvVar, unique_env
from runstate.api.v1alpha1.formats import DNS_SUBDOMAIN, IMAGE, QUANTITY

_RESOURCE_KEYS = ("limits", "requests", "claims")


def _check_resources(resources: dict[str, Any] | None) -> None:
    """Container resources as the API server would take them: limits/requests of quantities."""
    if resources is None:
        return
    for key, amounts in resources.items():
        if key not in _RESOURCE_KEYS:
            raise ValueError(f"unknown key {key!r} (limits, requests or claims)")
        if key == "claims" or amounts is None:
            continue
        if not isinstance(amounts, dict):
            raise ValueError(f"{key} must map resource names to quantities")
        for name, amount in amounts.items():
            ok = (
                isinstance(amount, int | float)
                and not isinstance(amount, bool)
                and 0 <= amount < 1e18
            ) or (isinstance(amount, str) and re.match(QUANTITY, amount) is not None)
            if not ok:
                raise ValueError(f"{key}.{name}: {amount!r} is not a quantity (e.g. 500m, 1Gi)")


class Defaults(ApiModel):
    """What every operation (and hook) takes unless it sets its own."""

    image: str = Field(
        default="alpine:3.20",
        min_length=1,
        max_length=512,
        pattern=IMAGE,
        description="The work image (an operation's image replaces it)",
    )
    env: list[EnvVar] = Field(
        default_factory=list,
        description="Env of every work container (an operation's own of a name wins)",
        json_schema_extra=list_map("name"),
    )
    service_account_name: (
        Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)] | None
    ) = Field(default=None, description="The work pods' service account")
    resources: dict[str, Any] | None = Field(
        default=None,
        description="Container resources (requests/limits of quantities), passed to pods as is",
    )
    pod_template: PodTemplate | None = Field(
        default=None,
        description="Added to every work pod (volumes, nodeSelector, tolerations, "
        "securityContext ...); an operation's own podTemplate is merged over it",
    )

    @field_validator("env")
    @classmethod
    def _env_unique(cls, env: list[EnvVar]) -> list[EnvVar]:
        unique_env(env)
        return env

    @field_validator("resources")
    @classmethod
    def _quantities(cls, resources: dict[str, Any] | None) -> dict[str, Any] | None:
        _check_resources(resources)
        return resources
