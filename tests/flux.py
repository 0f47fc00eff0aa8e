"""The shipped Flux `healthCheckExprs` for runstate's kinds, evaluated with cel-python the
way Flux's kustomize-controller uses them: the object's top-level fields are the variables;
`inProgress`, then `failed`, then `current` are tried, and the first that holds decides; none,
or an expression that cannot be evaluated (a field not there yet), leaves it InProgress."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

EXPRS = (
    Path(__file__).resolve().parents[1] / "charts" / "runstate" / "flux" / "health-check-exprs.yaml"
)
ORDER = (("inProgress", "InProgress"), ("failed", "Failed"), ("current", "Current"))


def cel_available() -> bool:
    try:
        import celpy  # noqa: F401
    except ImportError:
        return False
    return True


def exprs(kind: str) -> Mapping[str, str]:
    checks: list[dict[str, str]] = yaml.safe_load(EXPRS.read_text())
    return next(c for c in checks if c["kind"] == kind)


def health(kind: str, obj: Mapping[str, Any]) -> str:
    """What Flux reads from `obj` with the shipped expressions."""
    import celpy
    from celpy.adapter import json_to_cel
    from celpy.evaluation import CELEvalError

    env = celpy.Environment()
    activation = {key: json_to_cel(value) for key, value in obj.items()}
    check = exprs(kind)
    for key, verdict in ORDER:
        if key not in check:
            continue
        program = env.program(env.compile(check[key]))
        try:
            result = program.evaluate(activation)
        except CELEvalError:
            return "InProgress"
        if isinstance(result, CELEvalError):
            return "InProgress"
        if bool(result):
            return verdict
    return "InProgress"
