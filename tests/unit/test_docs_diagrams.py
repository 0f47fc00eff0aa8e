"""The state diagram in docs/user-guide.md is the transition table of the domain, drawn.

`runstate.domain.policy.ALLOWED` is the one source of truth of which state types a run may
move between; the Mermaid diagram users read must be exactly that table (a state that moves
to itself is left out of the drawing), so a change to the rules that the docs miss fails here.
"""

from __future__ import annotations

from pathlib import Path

from runstate.api.v1alpha1 import StateType
from runstate.domain.policy import ALLOWED

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "user-guide.md"
FINAL = (StateType.COMPLETED, StateType.FAILED, StateType.CANCELLED, StateType.CRASHED)


def state_diagram() -> str:
    order = list(StateType)
    lines = ["```mermaid", "stateDiagram-v2"]
    for frm in [None, *(t for t in order if t in ALLOWED)]:
        for to in sorted(ALLOWED[frm], key=order.index):
            if to is not frm:
                lines.append(f"    {'[*]' if frm is None else frm.value} --> {to.value}")
    lines += [f"    {t.value} --> [*]" for t in FINAL]
    lines.append("```")
    return "\n".join(lines)


def test_the_user_guide_draws_exactly_the_allowed_transitions() -> None:
    assert state_diagram() in GUIDE.read_text(), (
        "docs/user-guide.md's state diagram differs from domain.policy.ALLOWED; paste:\n"
        + state_diagram()
    )
