"""The inventory of a run: hosts, groups, `limit`, and which hosts each operation targets."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

from runstate.api.v1alpha1 import (
    Host,
    NodeSelector,
    Operation,
    RunbookSpec,
    SelectorOperator,
)
from runstate.domain.errors import SpecError


@dataclass(frozen=True)
class ResolvedInventory:
    hosts: tuple[Host, ...]  # in inventory order, after `limit`
    limited: tuple[str, ...]  # hosts left out by `limit`
    targets: Mapping[str, tuple[str, ...]]  # operation name → host names

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(h.name for h in self.hosts)

    @cached_property
    def by_name(self) -> Mapping[str, Host]:
        return {h.name: h for h in self.hosts}

    @cached_property
    def target_sets(self) -> Mapping[str, frozenset[str]]:
        """`targets` as sets: membership tests stay O(1) for 10,000-host inventories."""
        return {op: frozenset(hosts) for op, hosts in self.targets.items()}


def _targets(
    i: int,
    op: Operation,
    hosts: Sequence[Host],
    groups: set[str] | None,
    names: set[str] | None = None,
) -> tuple[str, ...]:
    """`groups` / `names` None: not known in advance (Nodes), so none is unknown."""
    if op.hosts is None or (not op.hosts.groups and not op.hosts.names):
        return tuple(h.name for h in hosts)
    for g in op.hosts.groups:
        if groups is not None and g not in groups:
            raise SpecError(f"spec.operations[{i}].hosts.groups", f"unknown group {g!r}")
    for n in op.hosts.names:
        if names is not None and n not in names:
            raise SpecError(f"spec.operations[{i}].hosts.names", f"unknown host {n!r}")
    wanted_groups = set(op.hosts.groups)
    wanted_names = set(op.hosts.names)
    return tuple(h.name for h in hosts if h.name in wanted_names or wanted_groups & set(h.groups))


def describe_selector(selector: NodeSelector) -> str:
    """The selector in kubectl's syntax (`role=edge,zone in (a,b)`), for the LIST call and
    for messages."""
    parts = [f"{k}={v}" for k, v in sorted(selector.match_labels.items())]
    for req in selector.match_expressions:
        if req.operator is SelectorOperator.Exists:
            parts.append(req.key)
        elif req.operator is SelectorOperator.DoesNotExist:
            parts.append(f"!{req.key}")
        else:
            op = "in" if req.operator is SelectorOperator.In else "notin"
            parts.append(f"{req.key} {op} ({','.join(req.values)})")
    return ",".join(parts)


def resolve_inventory(
    spec: RunbookSpec, limit: Sequence[str] | None, nodes: Sequence[Host] | None = None
) -> ResolvedInventory:
    """The run's hosts: the static ones, or for a `nodeSelector` inventory `nodes`, the Nodes
    that matched when the run started."""
    selector = spec.inventory.node_selector
    if selector is not None:
        every: Sequence[Host] = nodes or ()
        if not every:
            raise SpecError(
                "spec.inventory.nodeSelector", f"no Node matches {describe_selector(selector)!r}"
            )
    else:
        every = spec.inventory.hosts
    if not every:
        raise SpecError("spec.inventory.hosts", "the inventory has no hosts")
    seen: set[str] = set()
    for i, host in enumerate(every):
        if host.name in seen:
            raise SpecError(f"spec.inventory.hosts[{i}].name", f"duplicate host {host.name!r}")
        seen.add(host.name)
    groups = {g for h in every for g in h.groups} if selector is None else None
    names = seen if selector is None else None
    # Operations name groups and hosts of the whole inventory: a limit must not turn a valid
    # group or host invalid.
    targets_all = {
        op.name: _targets(i, op, every, groups, names) for i, op in enumerate(spec.operations)
    }

    kept: tuple[Host, ...]
    limited: tuple[str, ...]
    if limit is None:
        kept, limited = tuple(every), ()
    else:
        unknown = sorted(set(limit) - seen)
        if unknown:
            more = f" … ({len(unknown)} in all)" if len(unknown) > 10 else ""
            raise SpecError("spec.limit", f"unknown host(s): {', '.join(unknown[:10])}{more}")
        wanted = set(limit)
        kept = tuple(h for h in every if h.name in wanted)
        limited = tuple(h.name for h in every if h.name not in wanted)
        if not kept:
            raise SpecError("spec.limit", "no host left to run on")
    names = {h.name for h in kept}
    targets = {op: tuple(h for h in hosts if h in names) for op, hosts in targets_all.items()}
    return ResolvedInventory(hosts=kept, limited=limited, targets=targets)
