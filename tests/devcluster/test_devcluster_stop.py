"""The process kubelet's stop reasons: which abandon the pod, and what each leaves on it."""

from __future__ import annotations

import pytest

from runstate_dev.kubelet import (
    DEADLINE_MESSAGE,
    DEADLINE_REASON,
    EVICTED_REASON,
    StopReason,
)
from runstate_dev.kubelet.stop import pod_failure


def test_gone_and_shutdown_abandon_the_pod_the_others_do_not() -> None:
    assert {r for r in StopReason if r.abandons_pod} == {StopReason.GONE, StopReason.SHUTDOWN}


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        (None, None),
        (StopReason.DELETED, None),
        (StopReason.DEADLINE, (DEADLINE_REASON, DEADLINE_MESSAGE)),
        (StopReason.EVICTED, (EVICTED_REASON, "over the limit")),
        (StopReason.GONE, None),
        (StopReason.SHUTDOWN, None),
    ],
)
def test_pod_failure(reason: StopReason | None, expected: tuple[str, str] | None) -> None:
    assert pod_failure(reason, "over the limit") == expected


def test_reasons_print_as_in_the_kubelet_log() -> None:
    assert f"stopping ({StopReason.DELETED})" == "stopping (deleted)"
