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
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config

from runstate_dev.cluster import ControlPlane
from runstate_dev.redis import RedisServer

ROOT = Path(__file__).resolve().parents[1]


def operator_path(path: str | None) -> dict[str, str]:
    """The environment that makes `python -m runstate` import the operator from `path`
    (bench/compare.py: a baseline extracted from git), ahead of the installed one."""
    return {"PYTHONPATH": str(Path(path).resolve())} if path else {}


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def kubectl(kubeconfig: str, *args: str, input: str | None = None) -> str:
    return subprocess.run(
        ["kubectl", "--kubeconfig", kubeconfig, *args],
        input=input,
        text=True,
        capture_output=True,
        check=True,
    ).stdout


async def bounded(n: int, concurrency: int, fn: Callable[[int], Awaitable[None]]) -> None:
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with sem:
            await fn(i)

    await asyncio.gather(*(one(i) for i in range(n)))


async def wait_all(
    list_fn: Callable[[], Awaitable[list[dict[str, Any]]]],
    n: int,
    done: Callable[[dict[str, Any]], bool],
    limit: float,
) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        items = await list_fn()
        if sum(1 for i in items if done(i)) >= n:
            return
        await asyncio.sleep(0.25)
    raise TimeoutError(f"not all {n} objects finished in {limit}s")


def metric_sum(url: str, name: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, value = line.rsplit(" ", 1)
            out[labels[len(name) :]] = float(value)
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_process(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--operator-path",
        default=None,
        help="run the operator from this source folder (a baseline's operator/), not this tree",
    )
    args = parser.parse_args()
    n, conc = args.runs, args.concurrency
    work = Path(tempfile.mkdtemp(prefix="runstate-bench-"))
    plane = ControlPlane(work / "cluster").start()
    redis = RedisServer(work / "redis").start()
    kubeconfig = str(plane.kubeconfig)
    env = {**os.environ, "KUBECONFIG": kubeconfig}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        kubectl(kubeconfig, "apply", "-f", str(ROOT / "crds"))
        kubectl(kubeconfig, "apply", "-f", "-", input=json.dumps(BENCH_CRD))
        for crd in ("runs.runstate.dev", "benches.bench.runstate.dev"):
            kubectl(kubeconfig, "wait", "--for=condition=Established", f"crd/{crd}")
        for ns in ("raw", "bare", "rs"):
            kubectl(kubeconfig, "create", "namespace", ns)
        await asyncio.sleep(2)  # the default ServiceAccount of each namespace
        cfg = k8s.Configuration()
        await k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
        cfg.connection_pool_maxsize = 64
        api = k8s.ApiClient(cfg)
        custom: Any = k8s.CustomObjectsApi(api)

        def bench_obj(i: int) -> dict[str, Any]:
            return {
                "apiVersion": "bench.runstate.dev/v1",
                "kind": "Bench",
                "metadata": {"name": f"b{i}"},
                "spec": {"i": i},
            }

        async def create_bench(ns: str, i: int) -> None:
            await custom.create_namespaced_custom_object(
                "bench.runstate.dev", "v1", ns, "benches", bench_obj(i), _preload_content=False
            )

        # (b) raw status patches on existing objects.
        await bounded(n, conc, lambda i: create_bench("raw", i))
        t0 = time.perf_counter()
        await bounded(
            n,
            conc,
            lambda i: custom.patch_namespaced_custom_object_status(
                "bench.runstate.dev",
                "v1",
                "raw",
                "benches",
                f"b{i}",
                {"status": {"done": True}},
                _content_type="application/merge-patch+json",
                _preload_content=False,
            ),
        )
        raw_rate = n / (time.perf_counter() - t0)

        async def list_of(group: str, version: str, ns: str, plural: str) -> list[dict[str, Any]]:
            resp = await custom.list_namespaced_custom_object(
                group, version, ns, plural, _preload_content=False
            )
            return list(json.loads(await resp.read())["items"])

        # (a) a bare kopf operator, one status patch per object.
        procs.append(
            start_process(
                [
                    sys.executable,
                    "-m",
                    "kopf",
                    "run",
                    str(ROOT / "bench/bare_kopf.py"),
                    "--standalone",
                    "--namespace",
                    "bare",
                ],
                env,
                work / "bare.log",
            )
        )
        await asyncio.sleep(4)  # kopf's start-up: not part of the measurement
        cpu0 = cpu_seconds(procs[-1].pid)
        t0 = time.perf_counter()
        await bounded(n, conc, lambda i: create_bench("bare", i))
        await wait_all(
            lambda: list_of("bench.runstate.dev", "v1", "bare", "benches"),
            n,
            lambda o: bool((o.get("status") or {}).get("done")),
            300,
        )
        bare_rate = n / (time.perf_counter() - t0)
        bare_cpu_ms = 1000 * (cpu_seconds(procs[-1].pid) - cpu0) / n
        procs[-1].terminate()

        # runstate: N trivial runs.
        port = free_port()
        procs.append(
            start_process(
                [sys.executable, "-m", "runstate", "operator", "--standalone", "--namespace", "rs"],
                {
                    **env,
                    **operator_path(args.operator_path),
                    "RUNSTATE_REDIS_URL": redis.url,
                    "RUNSTATE_METRICS_PORT": str(port),
                    "RUNSTATE_METRICS_HOST": "127.0.0.1",
                },
                work / "runstate.log",
            )
        )
        metrics_url = f"http://127.0.0.1:{port}/metrics"
        for _ in range(100):
            try:
                metric_sum(metrics_url, "runstate_api_writes_total")
                break
            except OSError:
                await asyncio.sleep(0.2)
        await asyncio.sleep(2)

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

        writes_before = metric_sum(metrics_url, "runstate_api_writes_total")
        cpu0 = cpu_seconds(procs[-1].pid)
        t0 = time.perf_counter()
        await bounded(
            n,
            conc,
            lambda i: custom.create_namespaced_custom_object(
                "runstate.dev", "v1alpha1", "rs", "runs", run_obj(i), _preload_content=False
            ),
        )
        await wait_all(
            lambda: list_of("runstate.dev", "v1alpha1", "rs", "runs"),
            n,
            lambda o: ((o.get("status") or {}).get("state") or {}).get("type") == "COMPLETED",
            600,
        )
        rs_rate = n / (time.perf_counter() - t0)
        rs_cpu_ms = 1000 * (cpu_seconds(procs[-1].pid) - cpu0) / n
        await asyncio.sleep(1)  # trailing Events are posted after the status
        writes_after = metric_sum(metrics_url, "runstate_api_writes_total")
        procs[-1].terminate()

        # The process kubelet alone: the harness's own ceiling for pods on this machine.
        def bare_pod(i: int) -> dict[str, Any]:
            return {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"p{i}"},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "containers": [
                        {"name": "c", "image": "none", "command": ["/bin/sh", "-c", "true"]}
                    ],
                },
            }

        core: Any = k8s.CoreV1Api(api)
        t0 = time.perf_counter()
        await bounded(
            n,
            conc,
            lambda i: core.create_namespaced_pod("raw", bare_pod(i), _preload_content=False),
        )

        async def raw_pods() -> list[dict[str, Any]]:
            resp = await core.list_namespaced_pod("raw", _preload_content=False)
            return list(json.loads(await resp.read())["items"])

        await wait_all(raw_pods, n, lambda p: p["status"].get("phase") == "Succeeded", 300)
        kubelet_rate = n / (time.perf_counter() - t0)
        writes = {k: (writes_after.get(k, 0) - writes_before.get(k, 0)) / n for k in writes_after}
        await api.close()

        print(f"## Throughput, trivial runs (1 host × 1 operation), N={n}, concurrency={conc}\n")
        print("| what | objects/s | runstate relative |")
        print("|---|---:|---:|")
        print(f"| raw status patches (client loop) | {raw_rate:.1f} | {rs_rate / raw_rate:.2f} |")
        print(
            f"| bare kopf, one status patch per object | {bare_rate:.1f} | "
            f"{rs_rate / bare_rate:.2f} |"
        )
        print(f"| **runstate runs to COMPLETED** | **{rs_rate:.1f}** | 1.00 |")
        print(
            f"| (harness) process kubelet alone, bare pods to Succeeded | {kubelet_rate:.1f} | "
            f"{rs_rate / kubelet_rate:.2f} |\n"
        )
        print(
            f"Operator CPU per object: bare kopf {bare_cpu_ms:.1f} ms, runstate "
            f"{rs_cpu_ms:.1f} ms per run ({rs_cpu_ms / bare_cpu_ms:.1f}×); at 1 CPU that is "
            f"{1000 / bare_cpu_ms:.0f} vs {1000 / rs_cpu_ms:.0f} objects/s.\n"
        )
        total = sum(writes.values())
        detail = ", ".join(
            f"{k.strip('{}').split('=')[1].strip(chr(34))}: {v:.2f}"
            for k, v in sorted(writes.items())
        )
        print(f"API writes by the operator per run: **{total:.2f}** ({detail})")
    finally:
        for p in procs:
            p.terminate()
        redis.stop()
        plane.stop()


if __name__ == "__main__":
    asyncio.run(main())
