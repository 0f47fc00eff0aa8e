"""`spec.inventory`: the hosts runs work on, a static list or a selector over Nodes.

Owns `Host`, `Inventory` and the Node label selector (`NodeSelector`, `SelectorRequirement`,
`SelectorOperator`) with the label-key checks they need. Which hosts an operation targets is
`operation.HostSelector`; resolving a selector against Nodes is the domain's and the
controller's. Must not import anything with I/O.
"""

from __future__ import annotations

import enum
import re
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator

from runstate.api.model import ApiModel, list_map
from runstate.api.v1alpha1.formats import LABEL_KEY, LABEL_VALUE


class Host(ApiModel):
    name: Annotated[str, Field(min_length=1, max_length=253)] = Field(
        description="Unique in the inventory; pods and status name the host by it (ssh: its "
        "address unless host data ssh_hostname)"
    )
    groups: list[Annotated[str, Field(min_length=1, max_length=63)]] = Field(
        default_factory=list, description="Groups it is in (operations[].hosts.groups)"
    )
    data: dict[str, Any] = Field(
        default_factory=dict, description="Host data, exposed to pods as RUNSTATE_HOST_DATA (JSON)"
    )


class SelectorOperator(enum.StrEnum):
    In = "In"
    NotIn = "NotIn"
    Exists = "Exists"
    DoesNotExist = "DoesNotExist"


def _check_label_key(key: str) -> None:
    prefix, _, name = key.rpartition("/")
    if re.match(LABEL_KEY, key) is None or len(name) > 63 or len(prefix) > 253:
        raise ValueError(
            f"{key!r} is not a label key ([prefix/]name: a DNS subdomain, then at most 63 "
            "alphanumerics, '-', '_' or '.')"
        )


LabelValue = Annotated[str, Field(max_length=63, pattern=LABEL_VALUE)]


class SelectorRequirement(ApiModel):
    key: Annotated[str, Field(min_length=1, max_length=317, pattern=LABEL_KEY)] = Field(
        description="A label key"
    )
    operator: SelectorOperator = Field(description="In, NotIn, Exists or DoesNotExist")
    values: list[LabelValue] = Field(
        default_factory=list, description="In and NotIn: the values (Exists and DoesNotExist: none)"
    )

    @field_validator("key")
    @classmethod
    def _label_key(cls, key: str) -> str:
        _check_label_key(key)
        return key

    @model_validator(mode="after")
    def _values_fit(self) -> SelectorRequirement:
        needs = self.operator in (SelectorOperator.In, SelectorOperator.NotIn)
        if needs and not self.values:
            raise ValueError(f"operator {self.operator.value} needs at least one value")
        if not needs and self.values:
            raise ValueError(f"operator {self.operator.value} takes no values")
        return self


class NodeSelector(ApiModel):
    """A Kubernetes label selector over Nodes (both parts must match)."""

    match_labels: dict[str, LabelValue] = Field(
        default_factory=dict, description="Nodes with all these labels"
    )
    match_expressions: list[SelectorRequirement] = Field(
        default_factory=list, description="Nodes matching all these requirements"
    )

    @field_validator("match_labels")
    @classmethod
    def _label_keys(cls, labels: dict[str, str]) -> dict[str, str]:
        for key in labels:
            _check_label_key(key)
        return labels


class Inventory(ApiModel):
    """The hosts runs work on: a static list, or the Nodes a selector matches."""

    hosts: list[Host] = Field(
        default_factory=list,
        description="Static hosts (pyinfra Inventory), names unique",
        json_schema_extra=list_map("name"),
    )
    node_selector: NodeSelector | None = Field(
        default=None,
        description="Alternative to hosts: each Node matching this selector is a host, its pods "
        "pinned to it with nodeName. Resolved once, when a run starts.",
    )
    tolerate_taints: bool = Field(
        default=False,
        description="Node inventories: pods tolerate the taints of the Node they are pinned to",
    )

    @model_validator(mode="after")
    def _one_source(self) -> Inventory:
        if self.hosts and self.node_selector is not None:
            raise ValueError("hosts and nodeSelector are alternatives: set one of them")
        return self
