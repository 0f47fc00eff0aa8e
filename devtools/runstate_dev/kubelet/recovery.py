"""Restart recovery: pods that were running under a previous kubelet process.

Owns recognising a pod this kubelet did not start but that was started (phase Running, or a
container that ran), and marking it Failed with ContainerStatusUnknown / exit code 137, as the
real kubelet reports a container it cannot find. Must not run, kill or re-run anything: a pod
whose process was lost is never started again.
"""

from __future__ import annotations

from .api import PodApi, with_retries
from .pod import Pod, log, now, pod_ref
from .status import terminal_status

LOST_REASON = "ContainerStatusUnknown"
LOST_MESSAGE = "The container could not be located when the pod was terminated"


def was_started(pod: Pod) -> bool:
    status = pod.get("status") or {}
    if status.get("phase") == "Running":
        return True
    return any(
        "running" in (cs.get("state") or {}) or "terminated" in (cs.get("state") or {})
        for cs in status.get("containerStatuses") or []
    )


async def mark_lost(api: PodApi, pod: Pod) -> None:
    """Write the Failed status of a pod whose process died with the previous kubelet."""
    old = ((pod.get("status") or {}).get("containerStatuses") or [{}])[0]
    started_at = ((old.get("state") or {}).get("running") or {}).get("startedAt") or now()
    terminated = {
        "exitCode": 137,
        "reason": LOST_REASON,
        "message": LOST_MESSAGE,
        "startedAt": started_at,
        "finishedAt": now(),
    }
    start_time = (pod.get("status") or {}).get("startTime") or started_at
    log.warning("%s: was running under a previous kubelet; marking it failed", pod_ref(pod))
    await with_retries(
        f"status of {pod_ref(pod)}",
        lambda: api.patch_status(
            pod,
            terminal_status(
                pod,
                start_time=start_time,
                terminated=terminated,
                phase="Failed",
                container_id=old.get("containerID", ""),
            ),
        ),
    )
