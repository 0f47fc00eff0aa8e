from runstate.api.v1alpha1 import StateType as T
from runstate.domain.aggregate import aggregate, fail_percent_stop, percent_failed


def test_pyinfra_fail_percent_arithmetic_and_message() -> None:
    assert percent_failed(20, 13) == 35.0
    assert fail_percent_stop(20, 13, 20) == "Over 20% of hosts failed (35%)"
    assert fail_percent_stop(20, 16, 20) is None  # exactly 20% is not *over* 20%
    assert fail_percent_stop(20, 19, None) is None  # no FAIL_PERCENT: carry on
    assert fail_percent_stop(3, 0, None) == "No hosts remaining! (3/3 hosts failed)"
    assert fail_percent_stop(3, 0, 100) == "No hosts remaining! (3/3 hosts failed)"


def test_aggregate_rule_follows_prefect_order() -> None:
    assert aggregate([T.COMPLETED] * 3).type is T.COMPLETED
    assert aggregate([T.COMPLETED, T.CANCELLED, T.FAILED]).type is T.CANCELLED
    assert aggregate([T.COMPLETED, T.PAUSED, T.FAILED]).type is T.PAUSED
    failed = aggregate([T.COMPLETED, T.FAILED, T.FAILED])
    assert (failed.type, failed.message) == (T.FAILED, "2/3 hosts failed.")
    assert aggregate([T.COMPLETED, T.CRASHED]).type is T.FAILED


def test_failures_within_fail_percent_complete_the_run() -> None:
    verdict = aggregate([T.COMPLETED, T.COMPLETED, T.FAILED], fail_percent=50, changed=4)
    assert verdict.type is T.COMPLETED
    assert verdict.message == "1/3 hosts failed (within failPercent 50%) (4 changed)."
