"""What a Runbook starts by itself: a Run per new generation (onChange) and per cron time.

Pure planning: given the trigger spec, what the Runbook's status says was already done, and
the time, `plan()` says which Runs to create (with deterministic names, so creating one twice
is impossible) and what the status should remember. The missed-time policy is CronJob's, made
stricter: after downtime, only the latest missed time starts a Run, and only if it is at most
`startingDeadlineSeconds` old; every other missed time is skipped and counted. Never a burst.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from runstate.api.v1alpha1 import Trigger
from runstate.domain.errors import SpecError
from runstate.domain.states import rfc3339

MAX_SCAN = 10_000  # cron times looked at after downtime before giving up counting exactly
# A schedule of 5 or 6 fields that fires once fires again within 8 years (29 February, 2096 →
# 2104): looking from this time for a first one tells a schedule that never fires. croniter's
# own search for a next time gives up after a bounded number of years, in milliseconds.
_NEVER_FROM = datetime(2000, 1, 1)


@dataclass(frozen=True)
class RunToStart:
    name: str
    trigger: str  # "onChange" | "schedule"
    scheduled_time: str | None = None


@dataclass(frozen=True)
class TriggerPlan:
    start: tuple[RunToStart, ...] = ()
    last_triggered_generation: int | None = None
    last_schedule_time: str | None = None
    next_scheduled_time: str | None = None
    missed: int = 0  # newly skipped schedule times
    wake_in: float | None = None  # seconds until the next schedule time
    notes: tuple[str, ...] = field(default_factory=tuple)


def _zone(trigger: Trigger) -> ZoneInfo:
    try:
        return ZoneInfo(trigger.time_zone)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        # OSError: a directory of the database (`America`), a name too long for a file name.
        raise SpecError(
            "spec.trigger.timeZone", f"unknown time zone {trigger.time_zone!r}"
        ) from None


def _never(schedule: str, after: datetime | None = None) -> SpecError:
    when = f" after {rfc3339(after)}" if after is not None else ""
    return SpecError(
        "spec.trigger.schedule", f"{schedule!r} never fires{when} (a day no month has?)"
    )


def _step(times: croniter, schedule: str, since: datetime | None, prev: bool = False) -> datetime:
    """The next (or previous) time of `times`; a schedule with none is a `SpecError`."""
    try:
        moment: datetime = times.get_prev(datetime) if prev else times.get_next(datetime)
    except (CroniterError, ValueError, OverflowError):
        raise _never(schedule, since) from None
    return moment


def validate(trigger: Trigger) -> None:
    """Raise `SpecError` naming the field for a schedule or time zone that cannot work:
    an unknown zone, no cron expression, more than 6 fields, or a schedule that never fires
    (`0 0 30 2 *`). Quick: croniter's search for a next time is bounded."""
    zone = _zone(trigger)
    schedule = trigger.schedule
    if schedule is None:
        return
    fields = schedule.split()
    if not schedule.startswith("@") and len(fields) not in (5, 6):
        raise SpecError(
            "spec.trigger.schedule",
            f"{schedule!r}: a cron expression has 5 fields, or 6 with seconds last",
        )
    if not croniter.is_valid(schedule):
        raise SpecError("spec.trigger.schedule", f"not a cron expression: {schedule!r}")
    try:
        times = croniter(schedule, _NEVER_FROM.replace(tzinfo=zone))
    except (CroniterError, ValueError) as exc:
        raise SpecError("spec.trigger.schedule", f"{schedule!r}: {exc}") from None
    _step(times, schedule, None)


def _name(runbook: str, suffix: str) -> str:
    return f"{runbook[: 62 - len(suffix)]}-{suffix}"


def generation_run_name(runbook: str, generation: int) -> str:
    """The name of the Run an onChange trigger starts for `generation` of `runbook`."""
    return _name(runbook, f"g{generation}")


def plan(
    trigger: Trigger,
    *,
    runbook: str,
    generation: int,
    created: datetime,
    last_generation: int | None,
    last_schedule: datetime | None,
    now: datetime,
) -> TriggerPlan:
    validate(trigger)
    start: list[RunToStart] = []
    notes: list[str] = []
    triggered = last_generation
    if trigger.on_change and (last_generation is None or generation > last_generation):
        start.append(RunToStart(generation_run_name(runbook, generation), "onChange"))
        triggered = generation

    if trigger.schedule is None:
        return TriggerPlan(tuple(start), triggered)

    zone = _zone(trigger)
    schedule = trigger.schedule
    since = (last_schedule or created).astimezone(zone)
    times = croniter(schedule, since)
    due: list[datetime] = []
    upcoming: datetime = _step(times, schedule, since)
    while upcoming <= now and len(due) < MAX_SCAN:
        due.append(upcoming)
        upcoming = _step(times, schedule, since)
    if upcoming <= now:  # more than MAX_SCAN missed: jump to the last one before now
        here = now.astimezone(zone)
        due.append(_step(croniter(schedule, here), schedule, here, prev=True))
        upcoming = _step(croniter(schedule, here), schedule, here)
    missed = max(0, len(due) - 1)
    last = due[-1] if due else last_schedule
    if due:
        latest = due[-1]
        if (now - latest).total_seconds() <= trigger.starting_deadline_seconds:
            stamp = int(latest.timestamp())
            start.append(RunToStart(_name(runbook, f"s{stamp}"), "schedule", rfc3339(latest)))
        else:
            missed += 1
            notes.append(
                f"schedule time {rfc3339(latest)} is more than "
                f"{trigger.starting_deadline_seconds}s old: skipped"
            )
    if missed:
        notes.append(f"{missed} schedule time(s) missed while the operator was away: skipped")
    return TriggerPlan(
        start=tuple(start),
        last_triggered_generation=triggered,
        last_schedule_time=rfc3339(last) if last else None,
        next_scheduled_time=rfc3339(upcoming),
        missed=missed,
        wake_in=max(0.0, (upcoming - now).total_seconds()),
        notes=tuple(notes),
    )
