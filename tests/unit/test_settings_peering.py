"""RUNSTATE_PEERING_PRIORITY: an integer, or `random` (what the chart sets for replicas).

Replicas of one Deployment get the same environment; under kopf's rule (a replica stands by
while a live peer has a priority >= its own) equal priorities would make every replica stand
by forever. `random` gives each process its own priority, drawn once."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime

import pytest

from runstate.controller.peering import blocking_peers
from runstate.settings import RANDOM_PRIORITY_MAX, Settings


def priority(raw: str) -> int:
    return Settings.from_env({"RUNSTATE_PEERING_PRIORITY": raw}).peering.priority


def priority_in_a_new_process() -> int:
    code = (
        "from runstate.settings import Settings;"
        "print(Settings.from_env({'RUNSTATE_PEERING_PRIORITY': 'random'}).peering.priority)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return int(proc.stdout)


@pytest.mark.parametrize(("raw", "expected"), [("", 0), ("0", 0), ("100", 100), (" -5 ", -5)])
def test_an_integer_is_taken_as_it_is(raw: str, expected: int) -> None:
    assert priority(raw) == expected


def test_unset_is_zero_as_before() -> None:
    assert Settings.from_env({}).peering.priority == 0


@pytest.mark.parametrize("raw", ["random", "RANDOM", " Random "])
def test_random_is_drawn_once_per_process(raw: str) -> None:
    # Every read of the settings in one process must agree with the priority kopf was given.
    first = priority(raw)
    assert 1 <= first <= RANDOM_PRIORITY_MAX
    assert priority("random") == first
    assert f"priority {first}" in Settings.from_env({"RUNSTATE_PEERING_PRIORITY": raw}).describe()


def test_each_process_draws_its_own() -> None:
    # Three processes standing for three replicas with the same environment: a tie would be a
    # one-in-billions event, so equal values here mean the draw is not random per process.
    drawn = [priority_in_a_new_process() for _ in range(3)]
    assert len(set(drawn)) == 3, drawn
    assert all(1 <= p <= RANDOM_PRIORITY_MAX for p in drawn), drawn


def test_two_random_replicas_one_acts_one_stands_by() -> None:
    """What the draw is for: under kopf's rule exactly one of two replicas gives way."""
    a, b = priority_in_a_new_process(), priority_in_a_new_process()
    now = datetime.now(UTC)

    def peer(p: int) -> dict[str, object]:
        return {"priority": p, "lastseen": now.isoformat(), "lifetime": 60}

    status = {"a": peer(a), "b": peer(b)}
    a_waits = bool(blocking_peers(status, "a", a, now))
    b_waits = bool(blocking_peers(status, "b", b, now))
    assert a_waits != b_waits, (a, b)
    assert a_waits == (b > a)


@pytest.mark.parametrize("raw", ["high", "1.5", "random!"])
def test_anything_else_is_refused_with_the_variable_named(raw: str) -> None:
    with pytest.raises(ValueError, match="RUNSTATE_PEERING_PRIORITY"):
        priority(raw)
