"""A Runbook's run history (spec.history): which finished Runs it started go, and when."""

from datetime import UTC, datetime, timedelta

import pytest

from runstate.api.v1alpha1 import History, RunbookSpec
from runstate.domain.history import FinishedRun, expired

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def runs(*ages: int) -> list[FinishedRun]:
    """Runs named r0, r1 … that ended `age` seconds before T0."""
    return [FinishedRun(f"r{i}", T0 - timedelta(seconds=age)) for i, age in enumerate(ages)]


def test_the_default_keeps_the_newest_twenty() -> None:
    history = RunbookSpec.model_validate({"operations": [{"name": "a", "run": "true"}]}).history
    assert (history.keep_runs, history.ttl_seconds_after_finished) == (20, None)
    result = expired(runs(*range(25)), history, T0)
    assert result.delete == ("r20", "r21", "r22", "r23", "r24")  # the five oldest
    assert (result.by_count, result.next_in) == (5, None)


def test_keep_runs_zero_deletes_every_finished_run_and_null_keeps_all() -> None:
    assert expired(runs(5, 1), History(keep_runs=0), T0).delete == ("r0", "r1")
    assert expired(runs(*range(100)), History(keep_runs=None), T0).delete == ()


def test_ttl_deletes_by_age_and_says_when_the_next_one_is_due() -> None:
    result = expired(runs(100, 30, 10), History(keep_runs=None, ttl_seconds_after_finished=60), T0)
    assert result.delete == ("r0",)
    assert result.by_count == 0
    assert result.next_in == 30  # r1 ended 30 s ago: 30 s to go


def test_count_and_age_together_count_each_run_once() -> None:
    history = History(keep_runs=2, ttl_seconds_after_finished=60)
    result = expired(runs(100, 90, 10, 5), history, T0)
    # r0 and r1 are over the count (and old too); none of the kept two is old yet.
    assert result.delete == ("r0", "r1")
    assert result.by_count == 2
    assert result.next_in == 50


def test_equal_end_times_are_ordered_by_name_so_every_replica_agrees() -> None:
    same = [FinishedRun(n, T0) for n in ("b", "a", "c")]
    assert expired(same, History(keep_runs=1), T0).delete == ("a", "b")


@pytest.mark.parametrize("field", ["keepRuns", "ttlSecondsAfterFinished"])
def test_negative_values_are_rejected_naming_the_field(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        RunbookSpec.model_validate(
            {"operations": [{"name": "a", "run": "true"}], "history": {field: -1}}
        )


def test_the_event_says_how_many_went_and_why() -> None:
    from runstate.domain.history import deleted_message

    history = History(keep_runs=2, ttl_seconds_after_finished=60)
    result = expired(runs(100, 90, 80, 10), history, T0)
    assert result.delete == ("r0", "r1", "r2") and result.by_count == 2
    assert deleted_message(result, history, list(result.delete)) == (
        "Deleted 3 finished Run(s) (2 over history.keepRuns 2, 1 older than "
        "history.ttlSecondsAfterFinished 60s): r0, r1, r2"
    )
