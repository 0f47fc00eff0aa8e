"""The process-kubelet-alone row: a client loop that creates a bare `sh -c true` pod and waits
until the process kubelet has run it to Succeeded: the harness's own ceiling.

Owns that loop. Must not start the kubelet (the suite does, and guards it).
"""

from __future__ import annotations

import time
from typing import Any

from fanout_rows.podwatch import PodWatch
from fanout_rows.result import Result
from harness.cpu import Cpu
from harness.kube import bare_pod, checked
from harness.waiting import bounded

NAMESPACE = "kubelet"


async def measure_kubelet(core: Any, watch: PodWatch, *, n: int, parallel: int, cpu: Cpu) -> Result:
    """Create a bare pod and wait for Succeeded, at most `parallel` at once."""

    async def unit(i: int) -> None:
        done = watch.expect(f"p{i}")
        await checked(
            core.create_namespaced_pod(NAMESPACE, bare_pod(f"p{i}"), _preload_content=False)
        )
        await done

    t0 = time.perf_counter()
    await bounded(n, parallel, unit)
    t1 = time.perf_counter()
    result = Result("kubelet", n, seconds=t1 - t0, cpu=cpu.used())
    result.peak, result.mean_in_flight = watch.in_flight(t0, t1)
    if watch.failed:
        raise RuntimeError(f"{len(watch.failed)} bare pods failed, e.g. {sorted(watch.failed)[0]}")
    return result
