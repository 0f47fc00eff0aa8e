"""pyinfra's forward-only stages: Setup → Connect → Prepare → Execute → Disconnect.

Owns their order and the rule that they never go backwards within one attempt. What happens in
each stage is its planner's (`runstate.domain.planners`); this module must not know about units,
states or I/O.
"""

from __future__ import annotations

from runstate.api.v1alpha1 import Stage

ORDER: tuple[Stage, ...] = (
    Stage.Setup,
    Stage.Connect,
    Stage.Prepare,
    Stage.Execute,
    Stage.Disconnect,
)


class StageError(RuntimeError):
    """A stage was asked to move backwards within one attempt."""


def index(stage: Stage) -> int:
    return ORDER.index(stage)


def advance(current: Stage | None, target: Stage) -> Stage:
    """Move to `target`; stages never go backwards (pyinfra's set_stage)."""
    if current is not None and index(target) < index(current):
        raise StageError(f"stage cannot go backwards: {current.value} → {target.value}")
    return target
