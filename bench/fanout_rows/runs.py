"""What every runstate row does with its one Run: create it, follow it to COMPLETED under a
pod watch, and collect the figures (rate, CPU, pods in flight, spans, API writes), then the
pods left to verify.

Owns the runstate side of a row up to its figures. Must not decide what a row's Run holds or
what its verification expects (the row modules do).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fanout_rows.podwatch import PodWatch
from fanout_rows.result import Result
from harness.components import WRITES
from harness.cpu import Cpu
from harness.kube import checked, items, wait_event
from harness.metrics import delta, metric_sum, settled
from harness.procs import Proc, check_alive

NAMESPACE = "rs"
RUN = "fanout"  # the Run's name in every row
FAILED = ("FAILED", "CRASHED", "CANCELLED")


@dataclass
class Observed:
    """A runstate row: the Run as it ended, its figures, and what the pod watch saw."""

    run: dict[str, Any]
    result: Result
    first_pod: float
    spans: dict[str, tuple[float, float]]
    durations: dict[str, list[float]]
    writes: dict[str, float]

    @property
    def status(self) -> dict[str, Any]:
        return dict(self.run["status"])

    @property
    def message(self) -> str:
        return str(self.status["state"].get("message", ""))


def run_body(runbook: dict[str, Any], *, parallel: int) -> dict[str, Any]:
    """The row's Run with an inline `runbook`, at `parallel`. Its pods are kept, so they can
    be verified after the run (and the measured window is the run, not the default clean-up
    of its pods that follows it)."""
    config = {"parallel": parallel, "podRetention": {"succeededSeconds": 3600}}
    return {
        "apiVersion": "runstate.dev/v1alpha1",
        "kind": "Run",
        "metadata": {"name": RUN},
        "spec": {"runbook": {**runbook, "config": config}},
    }


async def get_run(custom: Any) -> dict[str, Any]:
    raw = await checked(
        custom.get_namespaced_custom_object(
            "runstate.dev", "v1alpha1", NAMESPACE, "runs", RUN, _preload_content=False
        )
    )
    run: dict[str, Any] = json.loads(raw)
    return run


async def run_to_completion(
    custom: Any, body: dict[str, Any], *, alive: Sequence[Proc], limit: float = 900
) -> tuple[dict[str, Any], float, float]:
    """Create the Run and poll it until COMPLETED: the Run, and perf_counter at both ends.
    Fails when the Run ends otherwise, when it takes over `limit` s, or when one of `alive`
    (the operator, the kubelet) exits meanwhile."""
    t0 = time.perf_counter()
    await checked(
        custom.create_namespaced_custom_object(
            "runstate.dev", "v1alpha1", NAMESPACE, "runs", body, _preload_content=False
        )
    )
    while True:
        run = await get_run(custom)
        state = ((run.get("status") or {}).get("state") or {}).get("type")
        if state == "COMPLETED":
            return run, t0, time.perf_counter()
        if state in FAILED:
            raise RuntimeError(
                f"the run ended {state}: {run['status']['state']}; "
                f"failed hosts: {run['status'].get('failedHosts')}"
            )
        check_alive(alive)
        if time.perf_counter() > t0 + limit:
            raise TimeoutError(f"the run is still {state} after {limit:.0f} s")
        await asyncio.sleep(0.2)


async def observe_run(
    core: Any,
    custom: Any,
    body: dict[str, Any],
    *,
    n: int,
    cpu: Callable[[], Cpu],
    metrics_url: str,
    alive: Sequence[Proc],
) -> Observed:
    """One Run of `n` op × host, create to COMPLETED, under a pod watch; the operator's API
    writes counted until the trailing ones (the Completed Event after the status) are in."""
    watch = PodWatch(core, NAMESPACE)
    await watch.start()
    try:
        writes0 = metric_sum(metrics_url, WRITES)
        sampler = cpu()
        run, t0, t1 = await run_to_completion(custom, body, alive=alive)
        result = Result("runstate", n, seconds=t1 - t0, cpu=sampler.used())
        result.peak, result.mean_in_flight = watch.in_flight(t0, t1)
        first_pod = min(watch.added.values()) - t0
        spans, durations = watch.spans(t0), watch.durations()
        await wait_event(core, NAMESPACE, involved=RUN, reason="Completed")
        writes1 = await settled(metrics_url, WRITES, quiet=1.0)
    finally:
        await watch.stop()
    return Observed(run, result, first_pod, spans, durations, delta(writes0, writes1))


async def pods(core: Any) -> list[dict[str, Any]]:
    """The Run's namespace's pods, as they are now."""
    return await items(core.list_namespaced_pod(NAMESPACE, _preload_content=False))


def fail_on(problems: list[str]) -> None:
    if problems:
        raise RuntimeError("run verification failed: " + "; ".join(problems))


def common_problems(observed: Observed, *, hosts: int, parallel: int) -> list[str]:
    """What every row checks: the host total, no host unreachable, `parallel` respected."""
    status, problems = observed.status, []
    if status["hosts"]["total"] != hosts or status["hosts"].get("unreachable"):
        problems.append(f"hosts: {status['hosts']}")
    if observed.result.peak > parallel:
        problems.append(f"{observed.result.peak} pods in flight at once, over parallel {parallel}")
    return problems


def succeeded_problems(observed: Observed, *, hosts: int, operations: int) -> list[str]:
    """Every one of `operations` operations succeeded on every host."""
    ops, problems = observed.status["operations"], []
    for op in ops:
        if op["success"] != hosts:
            problems.append(f"operation {op['name']}: success = {op['success']}")
    if len(ops) != operations:
        problems.append(f"{len(ops)} operations in status")
    return problems
