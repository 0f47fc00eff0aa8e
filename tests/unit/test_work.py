"""Units of work: how a failed unit becomes a failed host, and what a result kind means."""

import pytest

from runstate.api.v1alpha1 import HookOutcome, Stage
from runstate.domain.hooks import is_failure
from runstate.domain.work import (
    Kind,
    Observed,
    Phase,
    RunResult,
    WorkKey,
    failed_host,
    failure_reason,
)

KEY = WorkKey(Kind.RUN, "install", "web1")


@pytest.mark.parametrize(
    ("exit_code", "reason", "expected"),
    [
        (None, "", "Error"),  # no exit code: never "ExitCodeNone"
        (0, "", "Error"),
        (2, "", "ExitCode2"),
        (137, "OOMKilled", "OOMKilled"),
        (None, "DeadlineExceeded", "DeadlineExceeded"),
    ],
)
def test_failure_reason(exit_code: int | None, reason: str, expected: str) -> None:
    unit = Observed(KEY, Phase.FAILED, exit_code, reason)
    assert failure_reason(unit) == expected
    assert "None" not in failure_reason(unit)


def test_failed_host_names_host_stage_and_operation() -> None:
    unit = Observed(KEY, Phase.FAILED, None, "", "x" * 2000)
    host = failed_host(unit, Stage.Execute, "install")
    assert (host.host, host.stage, host.operation, host.reason) == (
        "web1",
        Stage.Execute,
        "install",
        "Error",
    )
    assert len(host.message) <= 513
    probe = Observed(WorkKey(Kind.CONNECT, "", "db1"), Phase.FAILED, 255)
    assert failed_host(probe, Stage.Connect).operation is None


def test_which_run_results_fail_a_host() -> None:
    assert {r for r in RunResult if r.failed} == {RunResult.ERROR, RunResult.PARTIAL}


@pytest.mark.parametrize(
    ("result", "failure"),
    [
        (HookOutcome.FAILED, True),
        (HookOutcome.LOST, True),
        ("Failed", True),  # as read back from a status
        ("Lost", True),
        (HookOutcome.SUCCEEDED, False),
        (HookOutcome.PENDING, False),
        ("Running", False),
        (None, False),
    ],
)
def test_hook_outcome_failure_has_one_rule(result: object, failure: bool) -> None:
    assert is_failure(result) is failure
