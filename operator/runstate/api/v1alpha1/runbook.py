"""`Runbook.spec`: a Runbook's hosts, operations and policies, put together.

Owns `RunbookSpec`, the composition of the parts the sibling modules define (inventory,
connector, defaults, the Connect probe, operations, config, retries, trigger, hooks, history,
hook operations). Checks that need more than one part are the domain's
(`runstate.domain.validation`). Must not import anything with I/O.
"""

from __future__ import annotations

from pydantic import Field

from runstate.api.connector import Connector
from runstate.api.model import ApiModel, list_map
from runstate.api.v1alpha1.defaults import Defaults
from runstate.api.v1alpha1.formats import Seconds
from runstate.api.v1alpha1.inventory import Inventory
from runstate.api.v1alpha1.operation import Connect, Operation
from runstate.api.v1alpha1.policy import History, Hooks, Retries, RunConfig, Trigger


class RunbookSpec(ApiModel):
    """Hosts, the operations run on them (a DAG), and how and when Runs of it run."""

    inventory: Inventory = Field(default_factory=Inventory)
    connector: Connector = Field(
        default_factory=Connector,
        description="How run and check reach the hosts: in the pod (pod), on the host over "
        "SSH (ssh), or chrooted into the Node (node)",
    )
    defaults: Defaults = Field(default_factory=Defaults)
    connect: Connect | None = None
    operations: list[Operation] = Field(
        min_length=1,
        max_length=200,
        description="The work: a DAG by dependsOn, run in order of the list otherwise",
        json_schema_extra=list_map("name"),
    )
    config: RunConfig = Field(default_factory=RunConfig)
    retries: Retries = Field(default_factory=Retries)
    late_after_seconds: Seconds = Field(
        default=15, description="A scheduled run not started this long after its time is Late"
    )
    trigger: Trigger = Field(default_factory=Trigger)
    hooks: Hooks = Field(default_factory=Hooks)
    history: History = Field(
        default_factory=History, description="Which finished Runs it started are deleted"
    )
    hook_operations: list[Operation] = Field(
        default_factory=list,
        max_length=50,
        description="Operations that `hooks` name: one pod per run (per selected host when "
        "`hosts` is given), never part of the DAG",
        json_schema_extra=list_map("name"),
    )
