"""A tiny stand-in for the cluster around the pure engine: intents become pods, pods finish.

`simulate()` calls `decide()` until the run is final, starting every wanted unit as a pending
pod and finishing the oldest running ones with the exit code `outcome(key)` gives. It records
what a test may want to assert: transitions, the most pods in flight, creation order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from runstate.api.v1alpha1 import RunbookSpec, RunSpec
from runstate.domain.engine import Decision, Observation, Progress, decide
from runstate.domain.work import Observed, Phase, WorkKey

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def runbook(**spec: Any) -> RunbookSpec:
    spec.setdefault("inventory", {"hosts": [{"name": "web1"}, {"name": "web2"}, {"name": "web3"}]})
    spec.setdefault("operations", [{"name": "update", "run": "true"}])
    return RunbookSpec.model_validate(spec)


def run_spec(**spec: Any) -> RunSpec:
    spec.setdefault("runbookRef", {"name": "rb"})
    return RunSpec.model_validate(spec)


@dataclass
class Trace:
    decisions: list[Decision] = field(default_factory=list)
    created: list[WorkKey] = field(default_factory=list)
    max_in_flight: int = 0
    units: dict[WorkKey, Observed] = field(default_factory=dict)

    @property
    def last(self) -> Decision:
        return self.decisions[-1]

    @property
    def states(self) -> list[str]:
        return [to.name for d in self.decisions for _, to in d.transitions]


def simulate(
    rb: RunbookSpec | None,
    spec: RunSpec | None = None,
    outcome: Callable[[WorkKey], int | str] = lambda key: 0,
    finish_per_step: int = 1,
    max_steps: int = 500,
    problem: str | None = None,
) -> Trace:
    """`outcome` returns an exit code, or "timeout" for a pod that hits its deadline."""
    spec = spec or run_spec()
    trace = Trace()
    progress: Progress | None = None
    now = T0
    for _ in range(max_steps):
        d = decide(Observation(spec, rb, problem, progress, tuple(trace.units.values()), now))
        trace.decisions.append(d)
        progress = d.progress
        for intent in d.create:
            assert intent.key not in trace.units, f"unit started twice: {intent.key}"
            trace.units[intent.key] = Observed(intent.key, Phase.RUNNING)
            trace.created.append(intent.key)
        for key in d.delete:
            trace.units[key] = Observed(key, Phase.FAILED, 137, "Deleted")
        in_flight = [u for u in trace.units.values() if not u.finished]
        trace.max_in_flight = max(trace.max_in_flight, len(in_flight))
        if d.done or (not in_flight and not d.create):
            break
        for unit in in_flight[:finish_per_step]:
            result = outcome(unit.key)
            if result == "timeout":
                done = Observed(unit.key, Phase.FAILED, 137, "DeadlineExceeded", "deadline")
            elif result == 0:
                done = Observed(unit.key, Phase.SUCCEEDED, 0, "Completed")
            else:
                assert isinstance(result, int)
                done = Observed(unit.key, Phase.FAILED, result, "Error", f"exit {result}")
            trace.units[unit.key] = done
        now += timedelta(seconds=1)
    return trace
