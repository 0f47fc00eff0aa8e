"""Units of work as the domain sees them: one probe, check or run of an operation on a host.

A unit is identified by a `WorkKey` (kind, operation, host, run attempt, try). The operator turns
each unit into exactly one pod with a deterministic name, so the set of observed units *is* the
run's progress: a restarted operator reads it back and continues, and never starts a key twice.
This module also classifies what a finished unit means (pyinfra's check exit codes, timeouts,
`RunResult`) and is the one home of how a failed unit becomes a failed host (`failed_host`).
It must not do I/O or know about Kubernetes: it sees units of work, not pods.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from runstate.api.podtemplate import PodTemplate
from runstate.api.v1alpha1 import EnvVar, FailedHost, Stage
from runstate.domain.targets import Connection, PyinfraTask
from runstate.runner.result import ErrorClass


class Kind(enum.StrEnum):
    CONNECT = "connect"  # Connect stage: the probe, once per host
    CHECK = "check"  # Prepare stage: does this operation need a change on this host?
    RUN = "run"  # Execute stage: the operation itself
    HOOK = "hook"  # after the run ended: a state hook (never changes the run's state)


# Pod-level reasons for a pod that failed because of its node, not its command: an evicted pod
# (node pressure, ephemeral-storage limit), a pod lost with its node, preempted, or shut down
# with the node. Its unit of work did not fail; the run cannot trust what it did (Crashed).
INFRASTRUCTURE_REASONS = frozenset(
    {
        "Evicted",
        "NodeLost",
        "Preempting",
        "NodeShutdown",
        "Terminated",
        "UnexpectedAdmissionError",
        "OutOfcpu",
        "OutOfmemory",
        "OutOfpods",
    }
)


# A unit that ran out of time: its pod's deadline, or its runner's timeout (the runner's
# `ErrorClass.TIMEOUT`).
TIMEOUT_REASONS = frozenset({"DeadlineExceeded", ErrorClass.TIMEOUT.value})


class Phase(enum.StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    UNKNOWN = "Unknown"


@dataclass(frozen=True, order=True)
class WorkKey:
    kind: Kind
    operation: str  # "" for connect probes
    host: str
    attempt: int = 1  # the run's attempt (run-level retries)
    try_: int = 0  # the operation's retry on this host (0 = first try)


@dataclass(frozen=True)
class Observed:
    """What a pod says about its unit of work."""

    key: WorkKey
    phase: Phase
    exit_code: int | None = None
    reason: str = ""
    message: str = ""
    started_at: str | None = None
    finished_at: str | None = None
    deleting: bool = False  # the pod has a deletionTimestamp: someone is deleting it
    # Seconds from the pod's creation to its start, once started (slow starts are warnings);
    # worked out once per pod event, not once per decision and unit.
    start_delay: float | None = None
    # Its runner connected without checking the host key (insecureSkipHostKeyCheck).
    host_key_check_skipped: bool = False
    # pyinfra units: the commands pyinfra would run (dry mode) or ran, bounded by the runner,
    # and how many warnings pyinfra logged (each a warning of the unit's stage).
    commands: tuple[str, ...] = ()
    warnings: int = 0

    @property
    def finished(self) -> bool:
        return self.phase in (Phase.SUCCEEDED, Phase.FAILED)

    @property
    def infrastructure(self) -> bool:
        """Failed because of its node (evicted, node lost ...), not because of its command."""
        return self.phase is Phase.FAILED and self.reason in INFRASTRUCTURE_REASONS

    @property
    def timed_out(self) -> bool:
        return self.phase is Phase.FAILED and self.reason in TIMEOUT_REASONS


@dataclass(frozen=True)
class Intent:
    """A unit the engine wants started: everything a pod builder needs, nothing of Kubernetes."""

    key: WorkKey
    command: str
    image: str
    env: tuple[EnvVar, ...] = ()
    timeout_seconds: int | None = None
    host_data: Mapping[str, Any] = field(default_factory=dict)
    groups: tuple[str, ...] = ()
    service_account_name: str | None = None
    resources: Mapping[str, Any] | None = None
    node_name: str | None = None  # Node inventories: the pod runs on its host's Node
    tolerate: tuple[Mapping[str, Any], ...] = ()  # taints ({key, value, effect}) to tolerate
    connection: Connection = None  # None: the command runs in the pod (the pod connector)
    # podTemplates to merge into the pod, in order (the Runbook's defaults, the operation's).
    pod_templates: tuple[PodTemplate, ...] = ()
    pyinfra: PyinfraTask | None = None  # a pyinfra operation instead of `command`


MESSAGE_LIMIT = 512  # characters of a pod's output kept per failed host or hook


def trim_message(text: str) -> str:
    """A pod's output for status: its end, where the error usually is, within MESSAGE_LIMIT."""
    text = text.strip()
    return text if len(text) <= MESSAGE_LIMIT else "…" + text[-MESSAGE_LIMIT:]


class CheckResult(enum.StrEnum):
    NO_CHANGE = "no_change"
    CHANGE = "change"
    ERROR = "error"


def classify_check(obs: Observed) -> CheckResult:
    """pyinfra-style change detection: 0 = in desired state, 1–125 = change, else error.

    Exit codes ≥ 126 mean the shell could not run the command (126, 127) or a signal killed it
    (128 + n), so they say nothing about the host's state; a timed-out check neither.
    """
    if obs.phase is Phase.SUCCEEDED:
        return CheckResult.NO_CHANGE
    if obs.timed_out or obs.exit_code is None:
        return CheckResult.ERROR
    return CheckResult.CHANGE if 1 <= obs.exit_code <= 125 else CheckResult.ERROR


#: What the store keeps of one operation × host ("operation|host"): result, exitCode, reason,
#: try, message.
UnitResult = Mapping[str, str | int | None]


class RunResult(enum.StrEnum):
    SUCCESS = "success"
    ERROR = "error"
    IGNORED = "ignored"  # an error under ignoreErrors: the host stays active
    PARTIAL = "partial"  # timed out or interrupted: the op ran only in part
    NO_CHANGE = "no_change"  # not run: the check said the host is already in state

    @property
    def failed(self) -> bool:
        """The host failed this operation (it leaves the active set)."""
        return self in (RunResult.ERROR, RunResult.PARTIAL)


def failure_reason(unit: Observed) -> str:
    """Why a unit failed, for `status.failedHosts[].reason`: the pod's reason, else its exit
    code, else "Error" (never "ExitCodeNone" for a unit that has no exit code)."""
    if unit.reason:
        return unit.reason
    return f"ExitCode{unit.exit_code}" if unit.exit_code else "Error"


def failed_host(unit: Observed, stage: Stage, operation: str | None = None) -> FailedHost:
    """The failed host `unit` makes of its host, at `stage` (and `operation`, past Connect)."""
    return FailedHost(
        host=unit.key.host,
        stage=stage,
        operation=operation,
        reason=failure_reason(unit),
        message=trim_message(unit.message),
    )
