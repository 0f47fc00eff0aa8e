"""The workers' failure log: one line per retry with the reason, the traceback once."""

from __future__ import annotations

import logging

import pytest

from runstate.controller.dispatch import FailureLog, run_key
from runstate.kube.api import USER_AGENT
from runstate_stores import StoreUnavailable


def test_a_failing_reconcile_logs_its_traceback_once(caplog: pytest.LogCaptureFixture) -> None:
    log = FailureLog()
    key = run_key("ns", "r1")
    caplog.set_level(logging.WARNING, logger="runstate")
    for delay in (0.5, 1.0, 2.0):
        try:
            raise ValueError("bad thing")
        except ValueError as exc:
            log.failed(key, exc, delay)
    records = [r for r in caplog.records if r.name == "runstate"]
    assert len(records) == 3
    assert [r.exc_info is not None and r.exc_info[0] is not None for r in records] == [
        True,
        False,
        False,
    ]
    assert all("ns/r1" in r.getMessage() and "bad thing" in r.getMessage() for r in records)
    assert "retry in 2.0s" in records[-1].getMessage()
    # A new error, or the same one after a success, shows its traceback again.
    log.succeeded(key)
    log.failed(key, ValueError("bad thing"), 0.5)
    assert caplog.records[-1].exc_info is not None


def test_a_store_outage_is_one_line_without_traceback(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="runstate")
    FailureLog().failed(run_key("ns", "r1"), StoreUnavailable("redis down"), 1.0)
    (record,) = [r for r in caplog.records if r.name == "runstate"]
    assert record.levelno == logging.WARNING and not record.exc_info
    assert "waits for the state store" in record.getMessage()


async def test_the_client_says_who_it_is() -> None:
    from kubernetes_asyncio import client as k8s

    from runstate.kube.client import KubeClient

    api = k8s.ApiClient(k8s.Configuration())
    kube = KubeClient(api)
    assert api.user_agent == USER_AGENT == "runstate/0.1.0"
    await kube.close()
