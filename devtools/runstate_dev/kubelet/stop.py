"""Why the kubelet stops a pod's process, and what each reason means for the pod.

Owns `StopReason` and the rules that hang on it: which reasons abandon the pod (no grace, no
status), the default grace period, and the pod-level reason and message a stop leaves on a
failed pod (DeadlineExceeded, Evicted). Must not signal processes (`process`) or write
status (`worker`).
"""

from __future__ import annotations

import enum

DEFAULT_GRACE_SECONDS = 30
DEADLINE_REASON = "DeadlineExceeded"
DEADLINE_MESSAGE = "Pod was active on the node longer than the specified deadline"
EVICTED_REASON = "Evicted"


class StopReason(enum.StrEnum):
    """Why the kubelet stops a pod's process; the first reason decides the pod's status."""

    #: The pod has a deletionTimestamp: SIGTERM, SIGKILL after its grace period, a final
    #: status from the exit code, then the delete is finished.
    DELETED = "deleted"
    #: activeDeadlineSeconds passed: as DELETED, and the pod fails with DeadlineExceeded.
    DEADLINE = "deadline"
    #: Its local storage went over its ephemeral-storage limit: SIGKILL at once (grace 0),
    #: and the pod fails with Evicted.
    EVICTED = "evicted"
    #: Its liveness probe failed: as DELETED (SIGTERM, then SIGKILL after the grace period);
    #: the container then restarts as its restartPolicy says (with Never, the exit code
    #: decides the status).
    LIVENESS = "liveness"
    #: The pod object is gone (force delete, or missing from a re-list): SIGKILL, no status.
    GONE = "gone"
    #: The kubelet itself stops: SIGKILL, no status.
    SHUTDOWN = "shutdown"

    @property
    def abandons_pod(self) -> bool:
        """No grace and no status: the pod object is gone, or the kubelet stops."""
        return self in (StopReason.GONE, StopReason.SHUTDOWN)


def pod_failure(reason: StopReason | None, eviction_message: str) -> tuple[str, str] | None:
    """The failed pod's (reason, message) when the kubelet stopped it on its own account
    (deadline, eviction), whatever the exit code says; None when the exit code decides."""
    if reason is StopReason.DEADLINE:
        return DEADLINE_REASON, DEADLINE_MESSAGE
    if reason is StopReason.EVICTED:
        return EVICTED_REASON, eviction_message
    return None
