"""The operation DAG: order, levels and cycle detection (pyinfra's get_op_order).

An operation depends on the previous one unless it says `dependsOn` (an empty list means "no
dependencies", so operations can run side by side). Errors name the field and the cycle.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from graphlib import CycleError, TopologicalSorter

from runstate.api.v1alpha1 import Operation
from runstate.domain.errors import SpecError


@dataclass(frozen=True)
class Dag:
    order: tuple[str, ...]  # a topological order; ties by position in the spec
    deps: Mapping[str, frozenset[str]]
    levels: tuple[tuple[str, ...], ...]  # operations that may run side by side

    def ready(self, finished: set[str] | frozenset[str]) -> list[str]:
        """Unfinished operations whose dependencies have all finished, in DAG order."""
        return [op for op in self.order if op not in finished and self.deps[op] <= finished]


def build_dag(operations: Sequence[Operation]) -> Dag:
    position: dict[str, int] = {}
    for i, op in enumerate(operations):
        if op.name in position:
            raise SpecError(f"spec.operations[{i}].name", f"duplicate operation {op.name!r}")
        position[op.name] = i

    deps: dict[str, frozenset[str]] = {}
    for i, op in enumerate(operations):
        if op.depends_on is None:
            deps[op.name] = frozenset({operations[i - 1].name}) if i else frozenset()
            continue
        for dep in op.depends_on:
            if dep not in position:
                raise SpecError(
                    f"spec.operations[{i}].dependsOn",
                    f"operation {op.name!r} depends on unknown operation {dep!r}",
                )
        deps[op.name] = frozenset(op.depends_on)

    sorter: TopologicalSorter[str] = TopologicalSorter()
    for name in position:
        sorter.add(name, *sorted(deps[name], key=position.__getitem__))
    try:
        sorter.prepare()
    except CycleError as exc:
        cycle: list[str] = list(exc.args[1])
        raise SpecError(
            "spec.operations", "dependency cycle: " + " → ".join(reversed(cycle))
        ) from None

    order: list[str] = []
    levels: list[tuple[str, ...]] = []
    while sorter.is_active():
        group = tuple(sorted(sorter.get_ready(), key=position.__getitem__))
        sorter.done(*group)
        order.extend(group)
        levels.append(group)
    return Dag(order=tuple(order), deps=deps, levels=tuple(levels))
