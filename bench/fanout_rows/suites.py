"""The three fan-out suites, each a sequence of rows on one cluster: pod (raw, kubelet alone,
runstate), ssh (the ssh loop twice, runstate) and pyinfra (the CLI twice, runstate).

Owns the order of the rows, which components run during which, and the hand-over of their
figures to the report. Must not start or stop the control plane, Redis or the fleet (they come
in through `Setup`), nor measure or verify a row itself (the row modules do).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client as k8s

from fanout_rows import pods, pyinfra, report, ssh
from fanout_rows.kubelet import measure_kubelet
from fanout_rows.podwatch import PodWatch
from fanout_rows.raw import measure_raw
from fanout_rows.result import Result
from fanout_rows.runs import NAMESPACE, Observed, observe_run
from fanout_rows.runs import pods as list_pods
from harness.components import start_kubelet, start_operator
from harness.cpu import Cpu, component_pids
from harness.kube import checked, prepare_cluster
from harness.procs import Proc, Procs, guarded
from runstate_dev.hosts import HostFleet

SSHD = "SSH test hosts (sshd)"


@dataclass
class Setup:
    """What the entry point started and chose: the scratch dir, the cluster, Redis, the
    processes to stop at the end, and the options of the run."""

    work: Path
    kubeconfig: str
    redis_url: str
    procs: Procs
    parallel: int
    operator_source: str | None = None
    runner_root: str | None = None

    def env(self) -> dict[str, str]:
        """The components' environment; the kubelet puts the runner root's bin first on every
        container's PATH."""
        env = {**os.environ, "KUBECONFIG": self.kubeconfig}
        if self.runner_root:
            env["RUNSTATE_DEV_RUNNER_ROOT"] = self.runner_root
        return env


@dataclass
class Components:
    """The kubelet and operator this suite started, and every pid whose CPU is counted."""

    pids: dict[str, int]
    kubelet: Proc
    operator: Proc
    metrics_url: str


async def kubelet_up(setup: Setup, pids: dict[str, int]) -> Proc:
    kubelet = await start_kubelet(setup.work, setup.env(), setup.procs)
    pids["process kubelet"] = kubelet.pid
    return kubelet


async def operator_up(setup: Setup, pids: dict[str, int]) -> tuple[Proc, str]:
    operator, metrics_url = await start_operator(
        setup.work,
        setup.env(),
        setup.procs,
        namespace=NAMESPACE,
        redis_url=setup.redis_url,
        source=setup.operator_source,
    )
    pids["operator"] = operator.pid
    return operator, metrics_url


async def start_components(setup: Setup, pids: dict[str, int]) -> Components:
    kubelet = await kubelet_up(setup, pids)
    operator, metrics_url = await operator_up(setup, pids)
    return Components(pids, kubelet, operator, metrics_url)


async def watched(
    core: Any, namespace: str, measure: Callable[[PodWatch], Awaitable[Result]]
) -> Result:
    """`measure` under a pod watch of `namespace`, stopped afterwards whatever happens."""
    watch = PodWatch(core, namespace)
    await watch.start()
    try:
        return await measure(watch)
    finally:
        await watch.stop()


async def run_row(
    core: Any, body: dict[str, Any], running: Components, *, n: int, cpu: Callable[[], Cpu]
) -> tuple[Observed, list[dict[str, Any]]]:
    """The runstate row: the Run followed to COMPLETED, then its pods for verification."""
    observed = await observe_run(
        core,
        k8s.CustomObjectsApi(core.api_client),
        body,
        n=n,
        cpu=cpu,
        metrics_url=running.metrics_url,
        alive=[running.operator, running.kubelet],
    )
    return observed, await list_pods(core)


async def bench_pod(setup: Setup, *, hosts: int) -> None:
    """raw, then the kubelet alone, then runstate; each started only when its row comes."""
    n, parallel = 2 * hosts, setup.parallel
    namespaces = ("raw", "kubelet", NAMESPACE)
    async with await prepare_cluster(
        setup.kubeconfig, pool=parallel + 16, namespaces=namespaces
    ) as api:
        core: Any = k8s.CoreV1Api(api)
        pids = component_pids(setup.work)
        # raw: no kubelet runs yet, so nothing but this loop touches these pods.
        raw = await watched(
            core, "raw", lambda w: measure_raw(core, w, n=n, parallel=parallel, cpu=Cpu(pids))
        )
        kubelet = await kubelet_up(setup, pids)
        bare = await kubelet_row(setup, core, kubelet, n=n, pids=pids)
        operator, metrics_url = await operator_up(setup, pids)
        running = Components(pids, kubelet, operator, metrics_url)
        body = pods.run_obj(hosts, parallel)
        observed, left = await run_row(core, body, running, n=n, cpu=lambda: Cpu(pids))
        pods.verify(observed, left, hosts=hosts, parallel=parallel)
    spec_bytes = len(json.dumps(body["spec"], separators=(",", ":")))
    report.report_pod(observed, raw, bare, hosts=hosts, parallel=parallel, spec_bytes=spec_bytes)


async def kubelet_row(
    setup: Setup, core: Any, kubelet: Proc, *, n: int, pids: dict[str, int]
) -> Result:
    """Bare pods through the kubelet, guarded: a kubelet that dies fails the row at once."""

    async def measure(watch: PodWatch) -> Result:
        row = measure_kubelet(core, watch, n=n, parallel=setup.parallel, cpu=Cpu(pids))
        return await asyncio.wait_for(guarded(row, [kubelet]), timeout=600)

    return await watched(core, "kubelet", measure)


async def fleet_cluster(setup: Setup, fleet: HostFleet) -> tuple[k8s.ApiClient, Components]:
    """The cluster for the fleet's rows: namespace, the fleet's Secret, kubelet and operator."""
    api = await prepare_cluster(setup.kubeconfig, pool=setup.parallel + 16, namespaces=(NAMESPACE,))
    core: Any = k8s.CoreV1Api(api)
    secret = ssh.ssh_secret(fleet)
    await checked(core.create_namespaced_secret(NAMESPACE, secret, _preload_content=False))
    return api, await start_components(setup, component_pids(setup.work))


async def fleet_rows(
    setup: Setup,
    fleet: HostFleet,
    *,
    children: str,
    baselines: Callable[[Callable[[], Cpu]], Awaitable[list[Result]]],
    body: dict[str, Any],
    n: int,
) -> tuple[list[Result], Observed, list[dict[str, Any]]]:
    """A fleet suite: its baselines with everything up and idle, then the Run; the sshd
    processes and this process's reaped children (`children`) counted as components."""
    api, running = await fleet_cluster(setup, fleet)
    async with api:
        groups = {SSHD: fleet.processes()}

        def cpu() -> Cpu:
            return Cpu(running.pids, groups, children=children)

        measured = await baselines(cpu)
        observed, left = await run_row(k8s.CoreV1Api(api), body, running, n=n, cpu=cpu)
    return measured, observed, left


async def bench_ssh(setup: Setup, fleet: HostFleet) -> None:
    """The ssh loop, sequential and `parallel` at once; then the Run with the ssh connector."""
    hosts, parallel = len(fleet.hosts), setup.parallel

    async def loops(cpu: Callable[[], Cpu]) -> list[Result]:
        out = []
        for workers, name in ((1, "ssh, sequential"), (parallel, f"ssh, {parallel} threads")):
            loop = ssh.measure_ssh_loop
            out.append(await asyncio.to_thread(loop, fleet, workers=workers, cpu=cpu(), name=name))
        return out

    body = ssh.ssh_run_obj(fleet, parallel)
    baselines, observed, left = await fleet_rows(
        setup, fleet, children="ssh clients", baselines=loops, body=body, n=2 * hosts
    )
    ssh.verify(observed, left, hosts=hosts, parallel=parallel)
    report.report_ssh(observed, baselines, hosts=hosts, parallel=parallel)


async def bench_pyinfra(setup: Setup, fleet: HostFleet) -> None:
    """The pyinfra CLI, `--dry` then `-y`; then the Run with one pyinfra operation. Lines no
    host has yet (fresh hosts, and a token): work on every host."""
    hosts, parallel, work = len(fleet.hosts), setup.parallel, setup.work
    token = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    cli_line, rs_line = f"runstate bench {token}: pyinfra CLI", f"runstate bench {token}: runstate"
    inventory = pyinfra.pyinfra_inventory(fleet, work / "inventory.py")

    async def clis(cpu: Callable[[], Cpu]) -> list[Result]:
        out = []
        for dry, name in ((True, "pyinfra --dry"), (False, "pyinfra -y")):
            argv = pyinfra.pyinfra_argv(fleet, inventory, parallel=parallel, line=cli_line, dry=dry)
            cli = pyinfra.measure_pyinfra_cli
            out.append(await asyncio.to_thread(cli, argv, work, n=hosts, cpu=cpu(), name=name))
            pyinfra.check_cli(fleet, cli_line, dry=dry, name=name)
        return out

    body = ssh.ssh_run_obj(fleet, parallel, [pyinfra.operation(rs_line)])
    baselines, observed, left = await fleet_rows(
        setup, fleet, children="pyinfra CLI", baselines=clis, body=body, n=hosts
    )
    pyinfra.verify(observed, left, fleet, parallel=parallel, lines=(rs_line, cli_line))
    report.report_pyinfra(observed, baselines, hosts=hosts, parallel=parallel)
