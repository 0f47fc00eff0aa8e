"""Connect: the probe once per host (again, while its retries last).

The probe is the user's `connect.run`; with the `ssh` connector there is one even without it,
the runner's own no-op (an empty command): a session to the host, its key and the client's
key checked. Owns which hosts passed their probe, which failed it (failed hosts of the Connect
stage, with the runner's reason: Unreachable, HostKeyMismatch ...), and which probes to start
next. It must not look at checks or operations, nor move the run's state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from runstate.api.v1alpha1 import Connect, FailedHost, RunbookSpec, Stage
from runstate.domain import connection
from runstate.domain.attempt import AttemptView
from runstate.domain.intents import Starter
from runstate.domain.work import Kind, Phase, WorkKey, failed_host


@dataclass(frozen=True)
class ConnectPlan:
    waiting: bool  # some host's probe has not passed or failed for good yet
    failed: Mapping[str, FailedHost] = field(default_factory=dict)  # by host, inventory order


# The runner's own probe (connect, run `true`): what an ssh Connect stage runs without `connect`.
_NO_OP = Connect.model_construct(run="", timeout_seconds=None, retries=0)


def probe_of(rb: RunbookSpec) -> Connect | None:
    """The Connect stage's probe of `rb`: its `connect`, else the runner's no-op when its
    connector connects (ssh), else none (the stage passes at once)."""
    if rb.connect is not None:
        return rb.connect
    return _NO_OP if connection.connects(rb) else None


def plan_connect(
    view: AttemptView, hosts: Sequence[str], probe: Connect | None, starter: Starter
) -> ConnectPlan:
    """Hosts whose probe fails are failed hosts; a probe not yet over keeps the run here."""
    if probe is None:
        return ConnectPlan(waiting=False)
    failed: dict[str, FailedHost] = {}
    waiting = False
    for host in hosts:
        unit = view.probes.get(host)
        if unit is not None and unit.finished:
            if unit.phase is Phase.SUCCEEDED:
                continue
            if unit.key.try_ >= probe.retries:
                failed.setdefault(host, failed_host(unit, Stage.Connect))
                continue
        waiting = True
        if unit is None or unit.finished:
            try_ = 0 if unit is None else unit.key.try_ + 1
            key = WorkKey(Kind.CONNECT, "", host, view.attempt, try_)
            starter.want(key, probe.run, timeout=probe.timeout_seconds)
    return ConnectPlan(waiting=waiting, failed=failed)
