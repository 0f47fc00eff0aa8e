"""Runs a Runbook starts by itself: per generation, per cron time, and never a burst."""

from datetime import UTC, datetime, timedelta

import pytest

from runstate.api.v1alpha1 import Trigger
from runstate.domain.errors import SpecError
from runstate.domain.triggers import TriggerPlan, plan

T = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def trig(**kw: object) -> Trigger:
    return Trigger.model_validate(kw)


def plan_for(
    trigger: Trigger,
    *,
    now: datetime = T,
    generation: int = 1,
    last_generation: int | None = None,
    last_schedule: datetime | None = None,
    runbook: str = "web",
) -> TriggerPlan:
    return plan(
        trigger,
        runbook=runbook,
        generation=generation,
        created=T,
        last_generation=last_generation,
        last_schedule=last_schedule,
        now=now,
    )


def test_on_change_starts_one_run_per_generation() -> None:
    p = plan_for(trig(onChange=True))
    assert [(r.name, r.trigger) for r in p.start] == [("web-g1", "onChange")]
    assert p.last_triggered_generation == 1
    assert plan_for(trig(onChange=True), last_generation=1).start == ()
    nxt = plan_for(trig(onChange=True), generation=3, last_generation=1)
    assert [r.name for r in nxt.start] == ["web-g3"]
    assert plan_for(trig(), generation=2).start == ()


def test_schedule_starts_the_due_time_and_says_when_the_next_is() -> None:
    p = plan_for(trig(schedule="*/30 * * * *"), now=T + timedelta(minutes=31))
    [run] = p.start
    assert run.trigger == "schedule" and run.scheduled_time == "2026-11-24T12:30:00.000000Z"
    assert run.name == f"web-s{int((T + timedelta(minutes=30)).timestamp())}"
    assert p.last_schedule_time == "2026-11-24T12:30:00.000000Z"
    assert p.next_scheduled_time == "2026-11-24T13:00:00.000000Z"
    assert p.wake_in == 29 * 60 and p.missed == 0


def test_downtime_starts_only_the_latest_missed_time() -> None:
    p = plan_for(
        trig(schedule="* * * * *"), last_schedule=T, now=T + timedelta(hours=5, seconds=30)
    )
    assert len(p.start) == 1 and p.missed == 299
    assert p.start[0].scheduled_time == "2026-11-24T17:00:00.000000Z"


def test_a_missed_time_older_than_the_deadline_is_skipped_too() -> None:
    p = plan_for(
        trig(schedule="0 * * * *", startingDeadlineSeconds=60),
        last_schedule=T,
        now=T + timedelta(minutes=90),
    )
    assert p.start == () and p.missed == 1 and "skipped" in p.notes[0]


def test_time_zone_is_respected() -> None:
    p = plan_for(trig(schedule="0 2 * * *", timeZone="America/New_York"), runbook="db")
    assert p.next_scheduled_time == "2026-11-25T07:00:00.000000Z"  # 02:00 EST


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"schedule": "every tuesday"}, "spec.trigger.schedule"),
        ({"schedule": "* * * * *", "timeZone": "Mars/Olympus"}, "spec.trigger.timeZone"),
    ],
)
def test_bad_schedule_names_the_field(kw: dict[str, object], field: str) -> None:
    with pytest.raises(SpecError) as err:
        plan_for(trig(**kw), runbook="x")
    assert err.value.field == field
