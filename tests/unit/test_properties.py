"""Property-based: whatever happens, in whatever order, the engine's invariants hold.

Random runbooks meet random sequences of events (time passing, pods finishing with any exit
code or timing out, pods vanishing, pause / resume, cancel). After every decision:
no transition leaves a terminal state; transitions chain (each starts where the last ended);
the stage never moves backwards within an attempt; no unit of work is started twice (a started
pod deleted behind the operator's back crashes the run instead); `parallel` holds; a paused
run starts nothing.
"""

from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runstate.api.v1alpha1 import RunbookSpec, StateType
from runstate.domain import stages
from runstate.domain.engine import Observation, Progress, decide
from runstate.domain.states import is_final
from runstate.domain.work import Observed, Phase, WorkKey
from tests.unit.sim import T0, run_spec


@st.composite
def runbooks(draw: st.DrawFn) -> RunbookSpec:
    hosts = [
        {"name": f"h{i}", "groups": ["g"] if i % 2 else []} for i in range(draw(st.integers(1, 4)))
    ]
    ops: list[dict[str, Any]] = []
    for i in range(draw(st.integers(1, 3))):
        op: dict[str, Any] = {"name": f"op{i}", "run": "x"}
        if draw(st.booleans()):
            op["check"] = "c"
        if i and draw(st.booleans()):
            op["dependsOn"] = []
        op["retries"] = draw(st.integers(0, 1))
        op["ignoreErrors"] = draw(st.booleans())
        ops.append(op)
    spec: dict[str, Any] = {
        "inventory": {"hosts": hosts},
        "operations": ops,
        "config": {
            "parallel": draw(st.integers(1, 3)),
            "failPercent": draw(st.none() | st.integers(0, 100)),
        },
        "retries": {"limit": draw(st.integers(0, 2)), "delaySeconds": draw(st.integers(0, 30))},
    }
    if draw(st.booleans()):
        spec["connect"] = {"run": "probe"}
    return RunbookSpec.model_validate(spec)


EVENTS = st.one_of(
    st.tuples(st.just("tick"), st.integers(0, 90)),
    st.tuples(st.just("finish"), st.integers(0, 5), st.sampled_from([0, 0, 0, 1, 2, 127, 137])),
    st.tuples(st.just("timeout"), st.integers(0, 5)),
    st.tuples(st.just("vanish"), st.integers(0, 5)),
    st.tuples(st.just("pause"), st.booleans()),
    st.tuples(st.just("cancel"), st.just(True)),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rb=runbooks(), events=st.lists(EVENTS, max_size=40))
def test_invariants_hold_for_any_sequence(rb: RunbookSpec, events: list[tuple[Any, ...]]) -> None:
    now = T0
    paused = cancel = False
    progress: Progress | None = None
    units: dict[WorkKey, Observed] = {}
    started: set[WorkKey] = set()
    crash_expected = False
    for event in [("tick", 0), *events, *[("finish", 0, 0)] * 30]:
        kind = event[0]
        in_flight = [k for k, u in units.items() if not u.finished]
        if kind == "tick":
            now += timedelta(seconds=event[1])
        elif kind == "finish" and in_flight:
            key = in_flight[event[1] % len(in_flight)]
            code = event[2]
            units[key] = Observed(
                key,
                Phase.SUCCEEDED if code == 0 else Phase.FAILED,
                code,
                "Completed" if code == 0 else "Error",
            )
        elif kind == "timeout" and in_flight:
            key = in_flight[event[1] % len(in_flight)]
            units[key] = Observed(key, Phase.FAILED, 137, "DeadlineExceeded")
        elif kind == "vanish" and in_flight:
            gone = in_flight[event[1] % len(in_flight)]
            del units[gone]
            if (
                progress is not None
                and not is_final(progress.state.type)
                and (
                    progress.state.type is not StateType.CANCELLING
                    and gone.attempt == progress.attempt
                )
            ):
                crash_expected = True
        elif kind == "pause":
            paused = event[1]
        elif kind == "cancel":
            cancel = True
        spec = run_spec(paused=paused, cancel=cancel, pauseTimeoutSeconds=120)
        d = decide(
            Observation(spec, rb, None, progress, tuple(units.values()), now, frozenset(started))
        )

        if crash_expected:
            # A started pod deleted behind the operator's back: never re-run, the run crashes.
            assert d.progress.state.type in (
                StateType.CRASHED,
                StateType.CANCELLING,
                StateType.CANCELLED,
            ), d.progress.state
            crash_expected = False
        before = progress.state if progress else None
        if before is not None and is_final(before.type):
            assert d.transitions == (), "a terminal state was left"
        for frm, to in d.transitions:
            assert frm == before, "transitions must chain"
            before = to
        assert d.progress.state == (before if before is not None else d.progress.state)
        if progress is not None and d.progress.attempt == progress.attempt:
            assert stages.index(d.progress.stage) >= stages.index(progress.stage), "stage went back"
        if d.progress.state.type is StateType.PAUSED:
            assert d.create == (), "a paused run started a pod"
        if d.create:
            live = [k for k, u in units.items() if not u.finished]
            assert len(live) + len(d.create) <= rb.config.parallel, "parallel exceeded"
        for intent in d.create:
            assert intent.key not in started, f"started twice: {intent.key}"
            started.add(intent.key)
            units[intent.key] = Observed(intent.key, Phase.RUNNING)
        for key in d.delete:
            units.pop(key, None)
        progress = d.progress
