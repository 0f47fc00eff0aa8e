"""The pod status documents the kubelet writes: Pending (waiting), Running, Succeeded/Failed.

Owns their shape, as the real kubelet fills them (and CrashLoopBackOff between restarts):
phase, host and pod IPs, startTime, the four conditions and the one container's
`containerStatuses` with its restartCount and lastState (each write carries the whole status,
since a merge patch replaces lists whole). Pure: must not write anything, decide a phase or a
reason (the callers do), or look at processes.
"""

from __future__ import annotations

from typing import Any

from .pod import HOST_IP, Pod, now


def _condition(kind: str, status: bool, when: str, reason: str | None = None) -> dict[str, Any]:
    cond: dict[str, Any] = {
        "type": kind,
        "status": "True" if status else "False",
        "lastProbeTime": None,
        "lastTransitionTime": when,
    }
    if reason:
        cond["reason"] = reason
    return cond


def _container_status(
    pod: Pod,
    state: dict[str, Any],
    *,
    running: bool,
    container_id: str | None = None,
    image_id: str = "",
    ready: bool | None = None,
    restart_count: int = 0,
    last_state: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """`containerStatuses` for the pod's one container, in the given state."""
    container = pod["spec"]["containers"][0]
    entry: dict[str, Any] = {
        "name": container["name"],
        "image": container.get("image", ""),
        "imageID": image_id,
        "ready": running if ready is None else ready,
        "started": running,
        "restartCount": restart_count,
        "state": state,
        "lastState": last_state or {},
    }
    if container_id is not None:
        entry["containerID"] = container_id
    return [entry]


def _base_status(pod: Pod, phase: str, start_time: str) -> dict[str, Any]:
    return {
        "phase": phase,
        "hostIP": HOST_IP,
        "podIP": HOST_IP,
        "podIPs": [{"ip": HOST_IP}],
        "startTime": start_time,
        "qosClass": "BestEffort",
    }


def running_status(
    pod: Pod,
    start_time: str,
    started_at: str,
    pid: int,
    *,
    image_id: str = "",
    ready: bool = True,
    ready_since: str | None = None,
    restart_count: int = 0,
    last_state: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Running; ``ready`` as the readiness probe says (since ``ready_since``, default the
    container's start)."""
    status = _base_status(pod, "Running", start_time)
    since = ready_since or started_at
    unready = None if ready else "ContainersNotReady"
    status["conditions"] = [
        _condition("Initialized", True, start_time),
        _condition("Ready", ready, since, unready),
        _condition("ContainersReady", ready, since, unready),
        _condition("PodScheduled", True, start_time),
    ]
    status["containerStatuses"] = _container_status(
        pod,
        {"running": {"startedAt": started_at}},
        running=True,
        ready=ready,
        container_id=f"process://{pid}",
        image_id=image_id,
        restart_count=restart_count,
        last_state=last_state,
    )
    return status


def terminal_status(
    pod: Pod,
    *,
    start_time: str,
    terminated: dict[str, Any],
    phase: str,
    container_id: str = "",
    reason: str | None = None,
    message: str | None = None,
    image_id: str = "",
    restart_count: int = 0,
    last_state: dict[str, Any] | None = None,
) -> dict[str, Any]:
    when = terminated.get("finishedAt") or now()
    status = _base_status(pod, phase, start_time)
    status["conditions"] = [
        _condition("Initialized", True, start_time, "PodCompleted"),
        _condition("Ready", False, when, "PodCompleted"),
        _condition("ContainersReady", False, when, "PodCompleted"),
        _condition("PodScheduled", True, start_time),
    ]
    status["containerStatuses"] = _container_status(
        pod,
        {"terminated": terminated},
        running=False,
        container_id=container_id,
        image_id=image_id,
        restart_count=restart_count,
        last_state=last_state,
    )
    # Merge patch: null removes a reason/message left by an earlier write.
    status["reason"] = reason
    status["message"] = message
    return status


def waiting_status(
    pod: Pod, start_time: str, reason: str, message: str | None = None
) -> dict[str, Any]:
    status = _base_status(pod, "Pending", start_time)
    status["conditions"] = [
        _condition("Initialized", True, start_time),
        _condition("Ready", False, start_time, "ContainersNotReady"),
        _condition("ContainersReady", False, start_time, "ContainersNotReady"),
        _condition("PodScheduled", True, start_time),
    ]
    waiting = {"reason": reason} if message is None else {"reason": reason, "message": message}
    status["containerStatuses"] = _container_status(pod, {"waiting": waiting}, running=False)
    return status


def backoff_status(
    pod: Pod,
    start_time: str,
    message: str,
    *,
    restart_count: int,
    last_state: dict[str, Any],
    image_id: str = "",
) -> dict[str, Any]:
    """Running, its container waiting in CrashLoopBackOff to be restarted (restartPolicy
    Always or OnFailure), the last run's end in ``lastState``."""
    status = _base_status(pod, "Running", start_time)
    when = now()
    status["conditions"] = [
        _condition("Initialized", True, start_time),
        _condition("Ready", False, when, "ContainersNotReady"),
        _condition("ContainersReady", False, when, "ContainersNotReady"),
        _condition("PodScheduled", True, start_time),
    ]
    status["containerStatuses"] = _container_status(
        pod,
        {"waiting": {"reason": "CrashLoopBackOff", "message": message}},
        running=False,
        image_id=image_id,
        restart_count=restart_count,
        last_state=last_state,
    )
    return status
