"""The raw API row: a client loop that creates a pod (already bound) and merge-patches the
process kubelet's own final status onto it, with no kubelet running: the API server's ceiling
for create + status.

Owns that loop and its bare pod. Must not run while a kubelet runs (its pods would be run).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from fanout_rows.podwatch import PodWatch
from fanout_rows.result import Result
from harness.components import NODE
from harness.cpu import Cpu
from harness.kube import bare_pod, checked
from harness.waiting import bounded, wait_until
from runstate_dev.kubelet import terminal_status

NAMESPACE = "raw"


def rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def create_finished(core: Any, i: int) -> None:
    """Pod p<i> created bound, then patched Succeeded as the kubelet would."""
    pod = bare_pod(f"p{i}", node=NODE)
    await checked(core.create_namespaced_pod(NAMESPACE, pod, _preload_content=False))
    now = rfc3339()
    terminated = {
        "exitCode": 0,
        "reason": "Completed",
        "startedAt": now,
        "finishedAt": now,
        "containerID": f"process://{i}",
    }
    status = terminal_status(pod, start_time=now, terminated=terminated, phase="Succeeded")
    await checked(
        core.patch_namespaced_pod_status(
            pod["metadata"]["name"],
            NAMESPACE,
            {"status": status},
            _content_type="application/merge-patch+json",
            _preload_content=False,
        )
    )


async def measure_raw(core: Any, watch: PodWatch, *, n: int, parallel: int, cpu: Cpu) -> Result:
    """Create + final status patch per pod, at most `parallel` at once."""
    t0 = time.perf_counter()
    await bounded(n, parallel, lambda i: create_finished(core, i))
    t1 = time.perf_counter()
    result = Result("raw", n, seconds=t1 - t0, cpu=cpu.used())

    async def caught_up() -> bool:  # the watch has seen every pod end
        return len(watch.finished) >= n

    await wait_until(caught_up, f"the pod watch of {NAMESPACE} seeing {n} pods end", limit=60)
    result.peak, result.mean_in_flight = watch.in_flight(t0, t1)
    return result
