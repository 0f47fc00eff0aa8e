"""Throughput of trivial runs (1 host, 1 operation) against two baselines, in one run.

On one fresh local control plane (runstate_dev) and one Redis:
  raw       a client loop of status merge-patches on existing objects (the API server's limit)
  bare      a bare kopf operator completing each object with one status patch (bench/bare_kopf.py)
  runstate  the runstate operator completing N Runs (pod created, run by the process kubelet,
            status written back), with Redis as the store
For bare and runstate, N objects are created at a fixed concurrency while the operator runs;
the clock runs from the first create to the moment every object shows its final status.
API writes per run come from the operator's own `runstate_api_writes_total` counter.

    python bench/throughput.py [--runs 200] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client as k8s

from harness.components import WRITES, start_operator
from harness.cpu import cpu_seconds
from harness.kube import bare_pod, items, prepare_cluster
from harness.metrics import metric_sum, settled
from harness.procs import Proc, Procs, spawn, stop, stop_all
from harness.waiting import bounded, wait_until
from harness.workdir import ROOT, scratch
from runstate_dev.cluster import ControlPlane
from runstate_dev.redis import RedisServer

BENCH = ("bench.runstate.dev", "v1", "benches")
RUNS = ("runstate.dev", "v1alpha1", "runs")
WARM = "warm"  # bare kopf's warm-up object: proof that its watch runs, never counted
BENCH_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "benches.bench.runstate.dev"},
    "spec": {
        "group": "bench.runstate.dev",
        "scope": "Namespaced",
        "names": {"kind": "Bench", "plural": "benches", "singular": "bench"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": True,
                    }
                },
            }
        ],
    },
}


def bench_obj(i: int, name: str = "") -> dict[str, Any]:
    return {
        "apiVersion": "bench.runstate.dev/v1",
        "kind": "Bench",
        "metadata": {"name": name or f"b{i}"},
        "spec": {"i": i},
    }


def run_obj(i: int) -> dict[str, Any]:
    return {
        "apiVersion": "runstate.dev/v1alpha1",
        "kind": "Run",
        "metadata": {"name": f"r{i}"},
        "spec": {
            "runbook": {
                "inventory": {"hosts": [{"name": "h"}]},
                "operations": [{"name": "op", "run": "true"}],
            }
        },
    }


def bench_done(obj: dict[str, Any]) -> bool:
    return obj["metadata"]["name"] != WARM and bool((obj.get("status") or {}).get("done"))


def run_completed(obj: dict[str, Any]) -> bool:
    return ((obj.get("status") or {}).get("state") or {}).get("type") == "COMPLETED"


@dataclass
class Rows:
    """The client side of every row: the API, N objects and the concurrency."""

    api: k8s.ApiClient
    n: int
    conc: int

    @property
    def custom(self) -> Any:
        return k8s.CustomObjectsApi(self.api)

    @property
    def core(self) -> Any:
        return k8s.CoreV1Api(self.api)

    async def create(self, kind: tuple[str, str, str], ns: str, body: dict[str, Any]) -> None:
        group, version, plural = kind
        await self.custom.create_namespaced_custom_object(
            group, version, ns, plural, body, _preload_content=False
        )

    async def objects(self, kind: tuple[str, str, str], ns: str) -> list[dict[str, Any]]:
        group, version, plural = kind
        call = self.custom.list_namespaced_custom_object(
            group, version, ns, plural, _preload_content=False
        )
        return await items(call)

    async def wait_all(
        self,
        listing: Callable[[], Awaitable[list[dict[str, Any]]]],
        done: Callable[[dict[str, Any]], bool],
        *,
        limit: float,
        alive: Sequence[Proc] = (),
    ) -> None:
        """Until `n` listed objects are done; fails early when one of `alive` exits."""

        async def all_done() -> bool:
            return sum(1 for o in await listing() if done(o)) >= self.n

        await wait_until(
            all_done, f"all {self.n} objects done", limit=limit, alive=alive, every=0.25
        )


async def raw_row(rows: Rows) -> float:
    """Status merge-patches on existing objects, a client loop: objects/s."""
    await bounded(rows.n, rows.conc, lambda i: rows.create(BENCH, "raw", bench_obj(i)))
    t0 = time.perf_counter()
    await bounded(
        rows.n,
        rows.conc,
        lambda i: rows.custom.patch_namespaced_custom_object_status(
            *BENCH[:2],
            "raw",
            BENCH[2],
            f"b{i}",
            {"status": {"done": True}},
            _content_type="application/merge-patch+json",
            _preload_content=False,
        ),
    )
    return rows.n / (time.perf_counter() - t0)


async def bare_kopf_row(
    rows: Rows, work: Path, env: dict[str, str], *, procs: Procs
) -> tuple[float, float]:
    """bench/bare_kopf.py completing N objects: objects/s and its CPU ms per object."""
    argv = [sys.executable, "-m", "kopf", "run", str(ROOT / "bench/bare_kopf.py")]
    kopf = spawn([*argv, "--standalone", "--namespace", "bare"], env, work / "bare.log")
    procs.append(kopf)
    # kopf's start-up, not part of the measurement: until it has completed a warm-up object.
    await rows.create(BENCH, "bare", bench_obj(-1, WARM))

    async def warmed() -> bool:
        objs = await rows.objects(BENCH, "bare")
        return any(
            o["metadata"]["name"] == WARM and (o.get("status") or {}).get("done") for o in objs
        )

    await wait_until(warmed, "bare kopf completing its warm-up object", limit=120, alive=[kopf])
    cpu0 = cpu_seconds(kopf.pid, children=False)
    t0 = time.perf_counter()
    await bounded(rows.n, rows.conc, lambda i: rows.create(BENCH, "bare", bench_obj(i)))
    await rows.wait_all(lambda: rows.objects(BENCH, "bare"), bench_done, limit=300, alive=[kopf])
    rate = rows.n / (time.perf_counter() - t0)
    cpu_ms = 1000 * (cpu_seconds(kopf.pid, children=False) - cpu0) / rows.n
    stop(kopf)
    return rate, cpu_ms


@dataclass
class RunstateFigures:
    rate: float
    cpu_ms: float
    writes: dict[str, float]  # per run, by label set


async def runstate_row(
    rows: Rows, work: Path, env: dict[str, str], *, procs: Procs, redis_url: str, source: str | None
) -> RunstateFigures:
    """N trivial Runs to COMPLETED: runs/s, operator CPU ms per run, API writes per run."""
    operator, metrics_url = await start_operator(
        work, env, procs, namespace="rs", redis_url=redis_url, source=source, log="runstate.log"
    )
    writes_before = metric_sum(metrics_url, WRITES)
    cpu0 = cpu_seconds(operator.pid, children=False)
    t0 = time.perf_counter()
    await bounded(rows.n, rows.conc, lambda i: rows.create(RUNS, "rs", run_obj(i)))
    await rows.wait_all(
        lambda: rows.objects(RUNS, "rs"), run_completed, limit=600, alive=[operator]
    )
    rate = rows.n / (time.perf_counter() - t0)
    cpu_ms = 1000 * (cpu_seconds(operator.pid, children=False) - cpu0) / rows.n

    async def completed_events() -> bool:  # trailing Events are posted after the status
        events = rows.core.list_namespaced_event(
            "rs", field_selector="reason=Completed", _preload_content=False
        )
        return len(await items(events)) >= rows.n

    await wait_until(completed_events, "a Completed Event per run", limit=60, alive=[operator])
    writes_after = await settled(metrics_url, WRITES, quiet=1.0)
    stop(operator)
    writes = {k: (writes_after.get(k, 0) - writes_before.get(k, 0)) / rows.n for k in writes_after}
    return RunstateFigures(rate, cpu_ms, writes)


async def kubelet_row(rows: Rows) -> float:
    """Bare pods to Succeeded with no operator: the process kubelet's own ceiling, pods/s."""
    t0 = time.perf_counter()
    await bounded(
        rows.n,
        rows.conc,
        lambda i: rows.core.create_namespaced_pod("raw", bare_pod(f"p{i}"), _preload_content=False),
    )

    async def pods() -> list[dict[str, Any]]:
        return await items(rows.core.list_namespaced_pod("raw", _preload_content=False))

    await rows.wait_all(pods, lambda p: p["status"].get("phase") == "Succeeded", limit=300)
    return rows.n / (time.perf_counter() - t0)


def report(
    n: int, conc: int, *, raw: float, bare: tuple[float, float], rs: RunstateFigures, kubelet: float
) -> None:
    (bare_rate, bare_cpu_ms), rs_rate = bare, rs.rate
    print(f"## Throughput, trivial runs (1 host × 1 operation), N={n}, concurrency={conc}\n")
    print("| what | objects/s | runstate relative |")
    print("|---|---:|---:|")
    print(f"| raw status patches (client loop) | {raw:.1f} | {rs_rate / raw:.2f} |")
    print(
        f"| bare kopf, one status patch per object | {bare_rate:.1f} | {rs_rate / bare_rate:.2f} |"
    )
    print(f"| **runstate runs to COMPLETED** | **{rs_rate:.1f}** | 1.00 |")
    print(
        f"| (harness) process kubelet alone, bare pods to Succeeded | {kubelet:.1f} | "
        f"{rs_rate / kubelet:.2f} |\n"
    )
    print(
        f"Operator CPU per object: bare kopf {bare_cpu_ms:.1f} ms, runstate "
        f"{rs.cpu_ms:.1f} ms per run ({rs.cpu_ms / bare_cpu_ms:.1f}×); at 1 CPU that is "
        f"{1000 / bare_cpu_ms:.0f} vs {1000 / rs.cpu_ms:.0f} objects/s.\n"
    )
    total = sum(rs.writes.values())
    detail = ", ".join(
        f"{k.strip('{}').split('=')[1].strip(chr(34))}: {v:.2f}"
        for k, v in sorted(rs.writes.items())
    )
    print(f"API writes by the operator per run: **{total:.2f}** ({detail})")


async def bench(args: argparse.Namespace, work: Path, *, kubeconfig: str, redis_url: str) -> None:
    """The four rows in order on one cluster, then the report."""
    procs: Procs = []
    env = {**os.environ, "KUBECONFIG": kubeconfig}
    try:
        api = await prepare_cluster(
            kubeconfig, pool=64, namespaces=("raw", "bare", "rs"), crds=(BENCH_CRD,)
        )
        async with api:
            rows = Rows(api, args.runs, args.concurrency)
            raw = await raw_row(rows)
            bare = await bare_kopf_row(rows, work, env, procs=procs)
            rs = await runstate_row(
                rows, work, env, procs=procs, redis_url=redis_url, source=args.operator_path
            )
            kubelet = await kubelet_row(rows)
    finally:
        stop_all(procs)
    report(args.runs, args.concurrency, raw=raw, bare=bare, rs=rs, kubelet=kubelet)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--operator-path",
        default=None,
        help="run the operator from this source folder (a baseline's operator/), not this tree",
    )
    args = parser.parse_args()
    with scratch("runstate-bench-") as work, contextlib.ExitStack() as stack:
        plane = ControlPlane(work / "cluster", die_with_parent=True).start()
        stack.callback(plane.stop)
        redis = RedisServer(work / "redis", die_with_parent=True).start()
        stack.callback(redis.stop)
        asyncio.run(bench(args, work, kubeconfig=str(plane.kubeconfig), redis_url=redis.url))


if __name__ == "__main__":
    main()
