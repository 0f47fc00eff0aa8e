"""Fan-out of one run (500 hosts × 2 operations, parallel 50) against two baselines, in one run.

On one fresh local control plane (runstate_dev) and one Redis, three measurements of the
same number of pods, N = hosts × operations, each with at most `parallel` pods in flight:
  raw       a client loop that creates a pod and patches its status to Succeeded (the kubelet's
            own final-status payload), with no kubelet: what the API server can take
  kubelet   a client loop that creates a bare pod (`sh -c true`) and waits until the process
            kubelet has run it to Succeeded: the ceiling of the harness's fake kubelet
  runstate  one Run with an inline runbook of `hosts` hosts and 2 operations (`true`; the second
            depends on the first), config.parallel = `parallel`, from create to COMPLETED
The process kubelet is started by this script after the raw measurement, so no pod of that
measurement is ever run. One pod watch per measurement namespace observes every pod (first
pod, pods in flight); it runs in all three. API writes come from the operator's own
`runstate_api_writes_total` counter, CPU from /proc of every component.

With `--connector ssh`, the ssh row instead (issue 11): `hosts` (default 50) SSH test hosts
(`runstate_dev.hosts`, real sshd processes, started first and downed last), and on the same
cluster, in the same run:
  ssh loop  plain OpenSSH `ssh host true` (`HostFleet.ssh_argv`, a full connection each) for
            every host × 2 operations, all hosts' first before any second: one at a time, then
            `parallel` at once (a thread pool)
  runstate  one Run with the ssh connector over the fleet (key and known hosts from a Secret),
            operations `true` and `echo second`, config.parallel = `parallel`: Connect (one pod
            per host) and 2 × hosts work pods, each running `runstate exec --connector=ssh`
            from the dev runner root (`--runner-root`) as uid 65532, create to COMPLETED
The rate is op × host per second in both; Connect is reported on its own from the pod watch.

With `--connector ssh --pyinfra`, the pyinfra row (issue 12) instead, on the same kind of fleet:
  pyinfra   the `pyinfra` CLI (this venv's, pinned) applying `files.line` (path /etc/motd, a
            line no host has yet) to every host, an inventory file listing them, `--parallel`
            = `parallel`: once `--dry` (connect, facts, nothing changed), once `-y` (applied)
  runstate  one Run with the ssh connector and ONE pyinfra operation, `files.line` with
            another new line: Connect, Prepare (pyinfra's dry mode, a pod per host) and
            Execute (a pod per host that needs the change: all), create to COMPLETED
Every host's file is checked for the line after each; N = hosts op × host per row.

    python bench/fanout.py [--hosts 500] [--parallel 50]
    python bench/fanout.py --connector ssh [--pyinfra] [--hosts 50] [--parallel 50]
        [--runner-root DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import aiohttp
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config
from throughput import free_port, kubectl, metric_sum  # bench/ is sys.path[0] when run

from runstate_dev import runnerroot
from runstate_dev.cluster import ControlPlane
from runstate_dev.hosts import MAX_HOSTS, HostFleet
from runstate_dev.kubelet import terminal_status
from runstate_dev.redis import RedisServer

ROOT = Path(__file__).resolve().parents[1]


def operator_path(path: str | None) -> dict[str, str]:
    """The environment that makes `python -m runstate` import the operator from `path`
    (bench/compare.py: a baseline extracted from git), ahead of the installed one."""
    return {"PYTHONPATH": str(Path(path).resolve())} if path else {}


SETPRIV = "/usr/bin/setpriv"  # util-linux: parent-death signal, so a killed bench leaves nothing
NODE = "runstate-local"  # the dev control plane's Node
WRITES = "runstate_api_writes_total"
TERMINAL = ("Succeeded", "Failed")
MACHINE = "machine"
CORES = os.cpu_count() or 1
Procs = list[subprocess.Popen[bytes]]


# --- processes and CPU ----------------------------------------------------------------------


def spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A child that gets SIGTERM if this process dies (as the devcluster's die_with_parent)."""
    if os.path.exists(SETPRIV):
        argv = [SETPRIV, "--pdeathsig", "TERM", "--", *argv]
    with log.open("wb") as out:
        return subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def stop_all(procs: Procs) -> None:
    for proc in reversed(procs):
        stop(proc)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its reaped children (the kubelet's `sh` processes)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def component_pids(work: Path) -> dict[str, int]:
    """etcd, kube-apiserver, kube-controller-manager and redis, from their devcluster pid files."""
    pids: dict[str, int] = {}
    for path in [*(work / "cluster/pids").glob("*.json"), *(work / "redis/pids").glob("*.json")]:
        data = json.loads(path.read_text())
        pids[str(data["name"])] = int(data["pid"])
    return pids


class Cpu:
    """CPU seconds per component over one measurement.

    `groups` are components of several processes (the SSH test hosts' sshd, each with the
    sessions it reaped); with `children`, the bench's own reaped children (the `ssh` clients
    of the baseline) are a component of their own.
    """

    def __init__(
        self,
        pids: dict[str, int],
        groups: dict[str, list[int]] | None = None,
        children: str | None = None,
    ) -> None:
        self.pids, self.groups, self.children = pids, groups or {}, children
        self.start = self._now()

    def _now(self) -> dict[str, float]:
        out = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        for name, group in self.groups.items():
            out[name] = sum(cpu_seconds(pid) for pid in group)
        out["bench client"] = time.process_time()
        if self.children is not None:
            times = os.times()
            out[self.children] = times.children_user + times.children_system
        out[MACHINE] = machine_busy_seconds()
        return out

    def used(self) -> dict[str, float]:
        """Per component; MACHINE is every process's CPU, ours and others' (the noise)."""
        end = self._now()
        return {name: end[name] - self.start[name] for name in end}


def machine_busy_seconds() -> float:
    """Busy CPU time of the whole machine so far (all cores; /proc/stat without idle, iowait)."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


# --- observing pods -----------------------------------------------------------------------


class PodWatch:
    """Watches one namespace's pods: when each appeared and reached a terminal phase."""

    def __init__(self, core: Any, namespace: str) -> None:
        self.core, self.namespace = core, namespace
        self.added: dict[str, float] = {}
        self.finished: dict[str, float] = {}
        self.failed: set[str] = set()
        self.operation: dict[str, str] = {}
        self._waiters: dict[str, asyncio.Future[None]] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        resp = await self.core.list_namespaced_pod(self.namespace, _preload_content=False)
        rv = json.loads(await resp.read())["metadata"]["resourceVersion"]
        self._task = asyncio.create_task(self._run(rv))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def expect(self, name: str) -> asyncio.Future[None]:
        """A future that resolves once pod `name` is Succeeded or Failed (register first)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[name] = fut
        return fut

    async def _run(self, rv: str) -> None:
        resp = await self.core.list_namespaced_pod(
            self.namespace,
            watch=True,
            resource_version=rv,
            timeout_seconds=3600,
            _preload_content=False,
            _request_timeout=aiohttp.ClientTimeout(total=None, sock_read=3700),
        )
        buffer = b""
        try:
            async for chunk in resp.content.iter_any():
                buffer += chunk
                while (newline := buffer.find(b"\n")) >= 0:
                    line, buffer = buffer[:newline], buffer[newline + 1 :]
                    if line.strip():
                        self._on(json.loads(line))
            raise RuntimeError(f"pod watch of {self.namespace} ended (HTTP {resp.status})")
        except Exception as exc:
            for fut in self._waiters.values():  # nobody waits forever on a dead watch
                if not fut.done():
                    fut.set_exception(exc)
            raise
        finally:
            resp.release()

    def _on(self, event: dict[str, Any]) -> None:
        now = time.perf_counter()
        if event.get("type") == "ERROR":
            raise RuntimeError(f"pod watch of {self.namespace}: {event.get('object')}")
        pod = event["object"]
        name = pod["metadata"]["name"]
        self.added.setdefault(name, now)
        labels = pod["metadata"].get("labels") or {}
        kind = labels.get("runstate.dev/kind", "")
        operation = labels.get("runstate.dev/operation", "")
        self.operation.setdefault(name, operation if kind in ("", "run") else kind)
        phase = (pod.get("status") or {}).get("phase")
        if phase in TERMINAL and name not in self.finished:
            self.finished[name] = now
            if phase == "Failed":
                self.failed.add(name)
            fut = self._waiters.pop(name, None)
            if fut is not None and not fut.done():
                fut.set_result(None)

    def in_flight(self, t0: float, t1: float) -> tuple[int, float]:
        """Most pods seen at once between added and terminal, and the mean over [t0, t1]."""
        edges = sorted(
            [(t, 1) for n, t in self.added.items() if n in self.finished]
            + [(t, -1) for t in self.finished.values()],
            key=lambda e: (e[0], e[1]),
        )
        peak = level = 0
        for _, step in edges:
            level += step
            peak = max(peak, level)
        busy = sum(self.finished[n] - self.added[n] for n in self.finished)
        return peak, busy / (t1 - t0)

    def durations(self) -> dict[str, list[float]]:
        """Per operation label (or kind): each finished pod's seconds from seen to terminal."""
        out: dict[str, list[float]] = {}
        for name, op in self.operation.items():
            if name in self.finished:
                out.setdefault(op, []).append(self.finished[name] - self.added[name])
        return out

    def spans(self, t0: float) -> dict[str, tuple[float, float]]:
        """Per operation label: first pod seen and last pod finished, in seconds after t0."""
        out: dict[str, tuple[float, float]] = {}
        for name, op in self.operation.items():
            if name not in self.finished:
                continue
            first, last = out.get(op, (float("inf"), 0.0))
            out[op] = (min(first, self.added[name] - t0), max(last, self.finished[name] - t0))
        return out


# --- the three measurements ---------------------------------------------------------------


async def bounded(n: int, limit: int, fn: Callable[[int], Awaitable[None]]) -> None:
    sem = asyncio.Semaphore(limit)

    async def one(i: int) -> None:
        async with sem:
            await fn(i)

    await asyncio.gather(*(one(i) for i in range(n)))


def bare_pod(name: str, node: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "containers": [{"name": "c", "image": "none", "command": ["/bin/sh", "-c", "true"]}],
    }
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def checked(call: Awaitable[Any]) -> bytes:
    resp = await call
    try:
        body: bytes = await resp.read()
    finally:
        resp.release()
    if not 200 <= resp.status < 300:
        raise RuntimeError(f"API call failed: {resp.status} {body[:300]!r}")
    return body


class Result:
    def __init__(self, name: str, n: int, seconds: float, cpu: dict[str, float]) -> None:
        self.name, self.n, self.seconds, self.cpu = name, n, seconds, cpu
        self.rate = n / seconds
        self.peak, self.mean_in_flight = 0, 0.0


async def measure_raw(core: Any, watch: PodWatch, n: int, parallel: int, cpu: Cpu) -> Result:
    """Create + final status patch per pod, no kubelet: the API server's ceiling."""

    async def unit(i: int) -> None:
        pod = bare_pod(f"p{i}", node=NODE)
        await checked(core.create_namespaced_pod("raw", pod, _preload_content=False))
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
                "raw",
                {"status": status},
                _content_type="application/merge-patch+json",
                _preload_content=False,
            )
        )

    t0 = time.perf_counter()
    await bounded(n, parallel, unit)
    t1 = time.perf_counter()
    result = Result("raw", n, t1 - t0, cpu.used())
    await asyncio.sleep(0.5)  # the watch catches up
    result.peak, result.mean_in_flight = watch.in_flight(t0, t1)
    return result


async def measure_kubelet(core: Any, watch: PodWatch, n: int, parallel: int, cpu: Cpu) -> Result:
    """Create a bare pod and wait for Succeeded, at most `parallel` at once."""

    async def unit(i: int) -> None:
        done = watch.expect(f"p{i}")
        await checked(
            core.create_namespaced_pod("kubelet", bare_pod(f"p{i}"), _preload_content=False)
        )
        await done

    t0 = time.perf_counter()
    await bounded(n, parallel, unit)
    t1 = time.perf_counter()
    result = Result("kubelet", n, t1 - t0, cpu.used())
    result.peak, result.mean_in_flight = watch.in_flight(t0, t1)
    if watch.failed:
        raise RuntimeError(f"{len(watch.failed)} bare pods failed, e.g. {sorted(watch.failed)[0]}")
    return result


def run_obj(hosts: int, parallel: int) -> dict[str, Any]:
    return {
        "apiVersion": "runstate.dev/v1alpha1",
        "kind": "Run",
        "metadata": {"name": "fanout"},
        "spec": {
            "runbook": {
                "inventory": {"hosts": [{"name": f"h{i:04d}"} for i in range(hosts)]},
                "operations": [{"name": "first", "run": "true"}, {"name": "second", "run": "true"}],
                # Kept, so the pods can be verified after the run (and the measured window
                # is the run, not the default clean-up of its 1000 pods that follows it).
                "config": {"parallel": parallel, "podRetention": {"succeededSeconds": 3600}},
            }
        },
    }


# --- the ssh row ----------------------------------------------------------------------------


SSH_SECRET = "fleet-key"


def ssh_secret(fleet: HostFleet) -> dict[str, Any]:
    """The fleet's client key and known hosts, as the ssh connector reads them."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SSH_SECRET},
        "stringData": {
            "id": fleet.client_key.read_text(),
            "known_hosts": fleet.known_hosts.read_text(),
        },
    }


SSH_OPERATIONS = [{"name": "first", "run": "true"}, {"name": "second", "run": "echo second"}]


def ssh_run_obj(
    fleet: HostFleet, parallel: int, operations: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The fan-out Run over the fleet: by default operations `true` and `echo`, each on the
    host."""
    return {
        "apiVersion": "runstate.dev/v1alpha1",
        "kind": "Run",
        "metadata": {"name": "fanout"},
        "spec": {
            "runbook": {
                "inventory": {
                    "hosts": [
                        {"name": h.name, "data": {"ssh_hostname": h.address, "ssh_port": h.port}}
                        for h in fleet.hosts
                    ]
                },
                "connector": {
                    "type": "ssh",
                    "ssh": {
                        "user": fleet.user,
                        "privateKey": {"secretRef": {"name": SSH_SECRET, "key": "id"}},
                        "knownHosts": {"secretRef": {"name": SSH_SECRET, "key": "known_hosts"}},
                        "connectTimeoutSeconds": 10,
                    },
                },
                "operations": operations or SSH_OPERATIONS,
                "config": {"parallel": parallel, "podRetention": {"succeededSeconds": 3600}},
            }
        },
    }


def ssh_true(fleet: HostFleet, index: int) -> None:
    """One plain OpenSSH `ssh host true`: a full connection, key exchange and session."""
    done = subprocess.run(
        fleet.ssh_argv(index, "true"), stdin=subprocess.DEVNULL, capture_output=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"ssh to host {index}: exit {done.returncode}: {done.stderr[-300:]!r}")


def measure_ssh_loop(fleet: HostFleet, workers: int, cpu: Cpu, name: str) -> Result:
    """`ssh host true` for each host × 2 operations (all hosts' first, then all second), at
    most `workers` at once (a thread pool); 1 is a plain sequential loop."""
    hosts = len(fleet.hosts)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _operation in range(2):  # the second waits for the first on every host, as a Run
            list(pool.map(lambda i: ssh_true(fleet, i), range(hosts)))
    t1 = time.perf_counter()
    return Result(name, 2 * hosts, t1 - t0, cpu.used())


async def ssh_components(
    args: argparse.Namespace, work: Path, env: dict[str, str], redis: RedisServer, procs: Procs
) -> tuple[dict[str, int], subprocess.Popen[bytes], str]:
    """Process kubelet and operator up (the control plane's components already are): the
    pids whose CPU is counted, the operator and its metrics URL."""
    pids = component_pids(work)
    kubelet = start_kubelet(work, env, procs)
    await wait_file(work / "kubelet.ready", kubelet, "process kubelet", 60)
    pids["process kubelet"] = kubelet.pid
    operator, metrics_url = await start_operator(args, work, env, redis, procs)
    pids["operator"] = operator.pid
    return pids, operator, metrics_url


async def bench_ssh(
    args: argparse.Namespace,
    work: Path,
    plane: ControlPlane,
    redis: RedisServer,
    fleet: HostFleet,
    procs: Procs,
) -> None:
    hosts, parallel = len(fleet.hosts), args.parallel
    n = hosts * 2
    kubeconfig = str(plane.kubeconfig)
    # The kubelet puts the runner root's bin first on every container's PATH.
    env = {**os.environ, "KUBECONFIG": kubeconfig, "RUNSTATE_DEV_RUNNER_ROOT": args.runner_root}
    async with await prepare_cluster(kubeconfig, parallel, ("rs",)) as api:
        core: Any = k8s.CoreV1Api(api)
        custom: Any = k8s.CustomObjectsApi(api)
        await checked(
            core.create_namespaced_secret("rs", ssh_secret(fleet), _preload_content=False)
        )
        pids, operator, metrics_url = await ssh_components(args, work, env, redis, procs)
        groups = {"SSH test hosts (sshd)": fleet.processes()}

        # The baseline, with everything up and idle: a sequential loop, then `parallel` at once.
        baselines = []
        for workers, name in ((1, "ssh, sequential"), (parallel, f"ssh, {parallel} threads")):
            cpu = Cpu(pids, groups, children="ssh clients")
            baselines.append(await asyncio.to_thread(measure_ssh_loop, fleet, workers, cpu, name))

        watch = PodWatch(core, "rs")
        await watch.start()
        body = ssh_run_obj(fleet, parallel)
        writes0 = metric_sum(metrics_url, WRITES)
        cpu = Cpu(pids, groups, children="ssh clients")
        run, t0, t1 = await run_to_completion(custom, body, operator, work)
        rs = Result("runstate", n, t1 - t0, cpu.used())
        rs.peak, rs.mean_in_flight = watch.in_flight(t0, t1)
        spans = watch.spans(t0)
        durations = watch.durations()
        await asyncio.sleep(1.5)  # trailing Events are posted after the status
        writes1 = metric_sum(metrics_url, WRITES)
        await watch.stop()

        status = run["status"]
        resp = await core.list_namespaced_pod("rs", _preload_content=False)
        pods = json.loads(await resp.read())["items"]
        succeeded = sum(1 for p in pods if p["status"].get("phase") == "Succeeded")
        problems = []
        if status["hosts"]["total"] != hosts or status["hosts"].get("unreachable"):
            problems.append(f"hosts: {status['hosts']}")
        for op in status["operations"]:
            if op["success"] != hosts:
                problems.append(f"operation {op['name']}: success = {op['success']}")
        if len(status["operations"]) != 2:
            problems.append(f"{len(status['operations'])} operations in status")
        if len(pods) != hosts + n or succeeded != hosts + n:
            problems.append(f"{len(pods)} pods, {succeeded} Succeeded (want {hosts} + {n})")
        if rs.peak > parallel:
            problems.append(f"{rs.peak} pods in flight at once, over parallel {parallel}")
        if problems:
            raise RuntimeError("run verification failed: " + "; ".join(problems))

    report_ssh(
        hosts,
        parallel,
        baselines,
        rs,
        spans=spans,
        durations=durations,
        writes=writes_delta(writes0, writes1),
        status_message=str(status["state"].get("message", "")),
    )


def report_ssh(
    hosts: int,
    parallel: int,
    baselines: list[Result],
    rs: Result,
    *,
    spans: dict[str, tuple[float, float]],
    durations: dict[str, list[float]],
    writes: dict[str, float],
    status_message: str,
) -> None:
    n = rs.n
    print(
        f"## Fan-out over SSH: {hosts} SSH test hosts × 2 operations, parallel {parallel} "
        f"(N = {n} op × host per row)\n"
    )
    print("| what | op × host /s | seconds | runstate relative |")
    print("|---|---:|---:|---:|")
    for r in baselines:
        print(
            f"| plain OpenSSH `ssh host true`, {r.name.split(', ')[1]} | {r.rate:.1f} | "
            f"{r.seconds:.1f} | {rs.rate / r.rate:.3f} |"
        )
    print(
        f"| **runstate: one Run, ssh connector, Connect + 2 operations to COMPLETED** | "
        f"**{rs.rate:.1f}** | {rs.seconds:.1f} | 1.000 |\n"
    )
    connect = spans.get("connect", (0.0, 0.0))
    ops = [(op, ab) for op, ab in sorted(spans.items(), key=lambda x: x[1]) if op != "connect"]
    execute = rs.seconds - connect[1]
    print(f"- Run status: {status_message!r}; all {hosts + n} pods Succeeded, checked.")
    print(
        f"- Connect: {hosts} pods (one per host), {connect[0]:.1f}–{connect[1]:.1f} s after the "
        f"create. Operations: "
        + ", ".join(f"{op} {a:.1f}–{b:.1f}" for op, (a, b) in ops)
        + f"; COMPLETED seen at {rs.seconds:.1f}."
    )
    if connect[1] > 0 and execute > 0:
        print(
            f"- Without Connect (its end → COMPLETED, {execute:.1f} s): "
            f"{n / execute:.1f} op × host/s."
        )
    print(
        "- Pod wall time, seen → terminal, mean / max: "
        + ", ".join(
            f"{op} {sum(d) / len(d):.2f} / {max(d):.2f} s" for op, d in sorted(durations.items())
        )
        + f". Pods in flight, peak / mean: {rs.peak} / {rs.mean_in_flight:.1f} (cap {parallel})."
    )
    total = sum(writes.values())
    detail = ", ".join(f"{k}: {v:.0f}" for k, v in sorted(writes.items()))
    print(f"- API writes by the operator: {total:.0f} ({detail}).\n")
    print_cpu([*baselines, rs])
    kubelet = rs.cpu.get("process kubelet", 0.0)
    print(
        f"Per runstate pod ({hosts + n} pods): process kubelet with the pods' processes "
        f"{1000 * kubelet / (hosts + n):.0f} ms, operator "
        f"{1000 * rs.cpu.get('operator', 0.0) / (hosts + n):.0f} ms."
    )


def print_cpu(results: list[Result]) -> None:
    """CPU seconds per component in each row (the last is runstate's), and per op × host."""
    rs = results[-1]
    names = sorted({k for r in results for k in r.cpu} - {MACHINE}, key=lambda k: -rs.cpu.get(k, 0))
    print(f"CPU seconds per component during each row ({CORES} cores = {CORES} s per wall s):\n")
    print("| component | " + " | ".join(r.name for r in results) + " |")
    print("|---|" + "---:|" * len(results))
    for name in names:
        cells = " | ".join(f"{r.cpu[name]:.1f}" if name in r.cpu else "–" for r in results)
        print(f"| {name} | {cells} |")
    ours = [sum(v for k, v in r.cpu.items() if k != MACHINE) for r in results]
    print("| **all of the above** | " + " | ".join(f"{o:.1f}" for o in ours) + " |")
    cells = " | ".join(
        f"{max(0.0, r.cpu[MACHINE] - o):.1f}" for r, o in zip(results, ours, strict=True)
    )
    print(f"| other processes on the machine | {cells} |")
    cells = " | ".join(f"{r.cpu[MACHINE]:.1f} of {CORES * r.seconds:.1f}" for r in results)
    print(f"| **machine busy** | {cells} |\n")
    per = ", ".join(f"{r.name} {1000 * o / r.n:.0f} ms" for r, o in zip(results, ours, strict=True))
    print(f"Our CPU per op × host (all of the above / N): {per}.")


# --- the pyinfra row ------------------------------------------------------------------------


PYINFRA_OP = "files.line"
PYINFRA_PATH = "/etc/motd"


def pyinfra_inventory(fleet: HostFleet, path: Path) -> Path:
    """A pyinfra inventory file (Python) of the fleet: each host's name, with its address and
    port as host data, as the Run's inventory has them (user, key and known hosts are given
    on the command line)."""
    hosts = [(h.name, {"ssh_hostname": h.address, "ssh_port": h.port}) for h in fleet.hosts]
    path.write_text(f"hosts = {hosts!r}\n")
    return path


def pyinfra_argv(
    fleet: HostFleet, inventory: Path, parallel: int, line: str, *, dry: bool
) -> list[str]:
    """The `pyinfra` command line (this venv's) applying `files.line` to the fleet; `--dry`
    only reports, `-y` applies without asking (and skips the separate change detection)."""
    return [
        str(Path(sys.executable).parent / "pyinfra"),
        "--dry" if dry else "-y",
        "--parallel",
        str(parallel),
        "--ssh-user",
        fleet.user,
        "--ssh-key",
        str(fleet.client_key),
        "--data",
        f"ssh_known_hosts_file={fleet.known_hosts}",
        "--data",
        "ssh_strict_host_key_checking=yes",
        str(inventory),
        PYINFRA_OP,
        f"path={PYINFRA_PATH}",
        f"line={line}",
    ]


def measure_pyinfra_cli(argv: list[str], work: Path, n: int, cpu: Cpu, name: str) -> Result:
    """One `pyinfra` process over the fleet, start to exit; its output goes to a log."""
    t0 = time.perf_counter()
    done = subprocess.run(
        argv, cwd=work, stdin=subprocess.DEVNULL, capture_output=True, check=False
    )
    t1 = time.perf_counter()
    result = Result(name, n, t1 - t0, cpu.used())
    log = work / f"{name.replace(' ', '_')}.log"
    log.write_bytes(done.stdout + done.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"{name}: exit {done.returncode}, see {log}: {done.stderr[-300:]!r}")
    return result


def pod_outcome(pod: dict[str, Any]) -> tuple[str, str, int | None]:
    """A pod's kind label, phase and exit code."""
    kind = (pod["metadata"].get("labels") or {}).get("runstate.dev/kind", "")
    statuses = pod["status"].get("containerStatuses") or [{}]
    code = ((statuses[0].get("state") or {}).get("terminated") or {}).get("exitCode")
    return kind, str(pod["status"].get("phase")), code


def hosts_without(fleet: HostFleet, line: str) -> list[str]:
    """The hosts whose file (read from the host's overlay upper dir) lacks `line`."""
    missing = []
    for host in fleet.hosts:
        path = host.upper / PYINFRA_PATH.lstrip("/")
        if not path.exists() or line not in path.read_text().splitlines():
            missing.append(host.name)
    return missing


async def bench_pyinfra(
    args: argparse.Namespace,
    work: Path,
    plane: ControlPlane,
    redis: RedisServer,
    fleet: HostFleet,
    procs: Procs,
) -> None:
    hosts, parallel = len(fleet.hosts), args.parallel
    kubeconfig = str(plane.kubeconfig)
    env = {**os.environ, "KUBECONFIG": kubeconfig, "RUNSTATE_DEV_RUNNER_ROOT": args.runner_root}
    # Lines no host has yet (the hosts are fresh, the token makes sure): work on every host.
    token = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    cli_line = f"runstate bench {token}: pyinfra CLI"
    rs_line = f"runstate bench {token}: runstate"
    inventory = pyinfra_inventory(fleet, work / "inventory.py")
    async with await prepare_cluster(kubeconfig, parallel, ("rs",)) as api:
        core: Any = k8s.CoreV1Api(api)
        custom: Any = k8s.CustomObjectsApi(api)
        await checked(
            core.create_namespaced_secret("rs", ssh_secret(fleet), _preload_content=False)
        )
        pids, operator, metrics_url = await ssh_components(args, work, env, redis, procs)
        groups = {"SSH test hosts (sshd)": fleet.processes()}

        # The baseline, with everything up and idle: the pyinfra CLI, dry, then applying.
        baselines = []
        for dry, name in ((True, "pyinfra --dry"), (False, "pyinfra -y")):
            cpu = Cpu(pids, groups, children="pyinfra CLI")
            argv = pyinfra_argv(fleet, inventory, parallel, cli_line, dry=dry)
            baselines.append(
                await asyncio.to_thread(measure_pyinfra_cli, argv, work, hosts, cpu, name)
            )
            missing = hosts_without(fleet, cli_line)
            if len(missing) != (hosts if dry else 0):
                raise RuntimeError(f"after {name}: {len(missing)} hosts without the line")

        watch = PodWatch(core, "rs")
        await watch.start()
        operation = {
            "name": "line",
            "pyinfra": {"op": PYINFRA_OP, "args": {"path": PYINFRA_PATH, "line": rs_line}},
        }
        body = ssh_run_obj(fleet, parallel, [operation])
        writes0 = metric_sum(metrics_url, WRITES)
        cpu = Cpu(pids, groups, children="pyinfra CLI")
        run, t0, t1 = await run_to_completion(custom, body, operator, work)
        rs = Result("runstate", hosts, t1 - t0, cpu.used())
        rs.peak, rs.mean_in_flight = watch.in_flight(t0, t1)
        spans = watch.spans(t0)
        durations = watch.durations()
        await asyncio.sleep(1.5)  # trailing Events are posted after the status
        writes1 = metric_sum(metrics_url, WRITES)
        await watch.stop()

        status = run["status"]
        resp = await core.list_namespaced_pod("rs", _preload_content=False)
        pods = json.loads(await resp.read())["items"]
        # A Prepare pod ends as a `check` command does: exit 1 (Failed) is "would change".
        outcomes = sorted(pod_outcome(p) for p in pods)
        want = sorted(
            [("connect", "Succeeded", 0)] * hosts
            + [("check", "Failed", 1)] * hosts
            + [("run", "Succeeded", 0)] * hosts
        )
        problems = []
        if status["hosts"]["total"] != hosts or status["hosts"].get("unreachable"):
            problems.append(f"hosts: {status['hosts']}")
        ops = status["operations"]
        if len(ops) != 1 or (ops[0]["changed"], ops[0]["error"]) != (hosts, 0):
            problems.append(f"operations in status: {ops}")
        if outcomes != want:
            got = {o: outcomes.count(o) for o in set(outcomes)}
            problems.append(f"pods (kind, phase, exit code): {got}, want {hosts} of each of 3")
        if rs.peak > parallel:
            problems.append(f"{rs.peak} pods in flight at once, over parallel {parallel}")
        for line in (rs_line, cli_line):
            if missing := hosts_without(fleet, line):
                problems.append(f"{len(missing)} hosts without {line!r}, e.g. {missing[0]}")
        if problems:
            raise RuntimeError("run verification failed: " + "; ".join(problems))

    report_pyinfra(
        hosts,
        parallel,
        baselines,
        rs,
        spans=spans,
        durations=durations,
        writes=writes_delta(writes0, writes1),
        status_message=str(status["state"].get("message", "")),
    )


def report_pyinfra(
    hosts: int,
    parallel: int,
    baselines: list[Result],
    rs: Result,
    *,
    spans: dict[str, tuple[float, float]],
    durations: dict[str, list[float]],
    writes: dict[str, float],
    status_message: str,
) -> None:
    version = importlib.metadata.version("pyinfra")
    print(
        f"## pyinfra over SSH: {hosts} SSH test hosts × `{PYINFRA_OP}`, parallel {parallel} "
        f"(N = {hosts} op × host per row)\n"
    )
    print("| what | op × host /s | seconds | runstate relative |")
    print("|---|---:|---:|---:|")
    labels = {
        "pyinfra --dry": f"pyinfra {version} CLI `--dry`: connect, facts, no change",
        "pyinfra -y": f"pyinfra {version} CLI `-y`: connect, facts, apply",
    }
    for r in baselines:
        print(f"| {labels[r.name]} | {r.rate:.2f} | {r.seconds:.1f} | {rs.rate / r.rate:.3f} |")
    print(
        f"| **runstate: one Run, Connect + Prepare (dry) + Execute to COMPLETED** | "
        f"**{rs.rate:.2f}** | {rs.seconds:.1f} | 1.000 |\n"
    )
    names = {"connect": "Connect", "check": "Prepare (dry)"}
    phases = sorted(spans.items(), key=lambda x: x[1])
    print(
        f"- Run status: {status_message!r}; checked: {hosts} Connect pods Succeeded, {hosts} "
        f"Prepare pods exit 1 (would change), {hosts} Execute pods Succeeded, changed = "
        f"{hosts}, every host's file has both lines."
    )
    print(
        "- Phases (first pod seen → last pod finished, s after the create): "
        + ", ".join(f"{names.get(op, 'Execute')} {a:.1f}–{b:.1f}" for op, (a, b) in phases)
        + f"; COMPLETED seen at {rs.seconds:.1f}."
    )
    print(
        "- Pod wall time, seen → terminal, mean / max: "
        + ", ".join(
            f"{names.get(op, 'Execute')} {sum(d) / len(d):.2f} / {max(d):.2f} s"
            for op, d in sorted(durations.items(), key=lambda x: spans.get(x[0], (0.0, 0.0)))
        )
        + f". Pods in flight, peak / mean: {rs.peak} / {rs.mean_in_flight:.1f} (cap {parallel})."
    )
    total = sum(writes.values())
    detail = ", ".join(f"{k}: {v:.0f}" for k, v in sorted(writes.items()))
    print(f"- API writes by the operator: {total:.0f} ({detail}).\n")
    print_cpu([*baselines, rs])
    kubelet = rs.cpu.get("process kubelet", 0.0)
    print(
        f"Per runstate pod ({3 * hosts} pods): process kubelet with the pods' processes "
        f"{1000 * kubelet / (3 * hosts):.0f} ms, operator "
        f"{1000 * rs.cpu.get('operator', 0.0) / (3 * hosts):.0f} ms."
    )


# --- driver -------------------------------------------------------------------------------


async def kubectl_retrying(kubeconfig: str, *args: str) -> None:
    """kubectl, retried: a fresh API server can answer the first discovery calls with errors."""
    for attempt in range(5):
        try:
            kubectl(kubeconfig, *args)
            return
        except subprocess.CalledProcessError as exc:
            if attempt == 4:
                raise RuntimeError(f"kubectl {' '.join(args)}: {exc.stderr}") from exc
            await asyncio.sleep(1)


async def wait_default_sa(core: Any, namespace: str) -> None:
    for _ in range(300):
        resp = await core.read_namespaced_service_account(
            "default", namespace, _preload_content=False
        )
        body = await resp.read()
        if resp.status == 200 and json.loads(body).get("secrets"):
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"no default ServiceAccount in {namespace}")


async def wait_file(path: Path, proc: subprocess.Popen[bytes], what: str, limit: float) -> None:
    deadline = time.monotonic() + limit
    while not await asyncio.to_thread(path.exists):
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready in {limit}s")
        await asyncio.sleep(0.1)


def start_kubelet(work: Path, env: dict[str, str], procs: Procs) -> subprocess.Popen[bytes]:
    """The process kubelet, as the control plane would start it (it skips terminal pods)."""
    kubelet = spawn(
        [
            sys.executable,
            "-m",
            "runstate_dev",
            "kubelet",
            "--kubeconfig",
            env["KUBECONFIG"],
            "--node",
            NODE,
            "--pod-log-dir",
            str(work / "pods"),
            "--ready-file",
            str(work / "kubelet.ready"),
            "--state-dir",
            str(work / "kubelet"),
        ],
        env,
        work / "kubelet.log",
    )
    procs.append(kubelet)
    return kubelet


async def start_operator(
    args: argparse.Namespace,
    work: Path,
    env: dict[str, str],
    redis: RedisServer,
    procs: Procs,
) -> tuple[subprocess.Popen[bytes], str]:
    """The operator on namespace `rs`, once its metrics answer; and its metrics URL."""
    port = free_port()
    operator = spawn(
        [sys.executable, "-m", "runstate", "operator", "--standalone", "--namespace", "rs"],
        {
            **env,
            **operator_path(args.operator_path),
            "RUNSTATE_REDIS_URL": redis.url,
            "RUNSTATE_METRICS_PORT": str(port),
            "RUNSTATE_METRICS_HOST": "127.0.0.1",
        },
        work / "operator.log",
    )
    procs.append(operator)
    metrics_url = f"http://127.0.0.1:{port}/metrics"
    for _ in range(150):
        if operator.poll() is not None:
            raise RuntimeError(f"operator exited with {operator.returncode}")
        try:
            metric_sum(metrics_url, WRITES)
            break
        except OSError:
            await asyncio.sleep(0.2)
    await asyncio.sleep(2)  # kopf's start-up: not part of the measurement
    return operator, metrics_url


async def run_to_completion(
    custom: Any,
    body: dict[str, Any],
    operator: subprocess.Popen[bytes],
    work: Path,
    limit: float = 900,
) -> tuple[dict[str, Any], float, float]:
    """Create the Run and poll it until COMPLETED: the Run, and perf_counter at both ends."""
    t0 = time.perf_counter()
    await checked(
        custom.create_namespaced_custom_object(
            "runstate.dev", "v1alpha1", "rs", "runs", body, _preload_content=False
        )
    )
    deadline = t0 + limit
    while True:
        raw_run = await checked(
            custom.get_namespaced_custom_object(
                "runstate.dev", "v1alpha1", "rs", "runs", "fanout", _preload_content=False
            )
        )
        run: dict[str, Any] = json.loads(raw_run)
        state = ((run.get("status") or {}).get("state") or {}).get("type")
        if state == "COMPLETED":
            return run, t0, time.perf_counter()
        if state in ("FAILED", "CRASHED", "CANCELLED"):
            raise RuntimeError(
                f"the run ended {state}: {run['status']['state']}; "
                f"failed hosts: {run['status'].get('failedHosts')}"
            )
        if time.perf_counter() > deadline or operator.poll() is not None:
            raise TimeoutError(f"the run is still {state}; see {work}/operator.log")
        await asyncio.sleep(0.2)


async def prepare_cluster(
    kubeconfig: str, parallel: int, namespaces: tuple[str, ...]
) -> k8s.ApiClient:
    """CRDs in, an API client, and `namespaces` created with their default ServiceAccount."""
    await kubectl_retrying(kubeconfig, "apply", "-f", str(ROOT / "crds"))
    await kubectl_retrying(
        kubeconfig, "wait", "--for=condition=Established", "crd/runs.runstate.dev"
    )
    cfg = k8s.Configuration()
    await k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    cfg.connection_pool_maxsize = parallel + 16
    api = k8s.ApiClient(cfg)
    core: Any = k8s.CoreV1Api(api)
    for ns in namespaces:
        await checked(core.create_namespace({"metadata": {"name": ns}}, _preload_content=False))
        await wait_default_sa(core, ns)
    return api


def writes_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {
        k.split('"')[1]: after.get(k, 0) - before.get(k, 0)
        for k in after
        if after.get(k, 0) != before.get(k, 0)
    }


async def bench(
    args: argparse.Namespace, work: Path, plane: ControlPlane, redis: RedisServer, procs: Procs
) -> None:
    hosts, parallel = args.hosts, args.parallel
    n = hosts * 2
    kubeconfig = str(plane.kubeconfig)
    env = {**os.environ, "KUBECONFIG": kubeconfig}
    async with await prepare_cluster(kubeconfig, parallel, ("raw", "kubelet", "rs")) as api:
        core: Any = k8s.CoreV1Api(api)
        custom: Any = k8s.CustomObjectsApi(api)
        pids = component_pids(work)

        # raw: no kubelet runs yet, so nothing but this loop touches these pods.
        watch = PodWatch(core, "raw")
        await watch.start()
        raw = await measure_raw(core, watch, n, parallel, Cpu(pids))
        await watch.stop()

        kubelet = start_kubelet(work, env, procs)
        await wait_file(work / "kubelet.ready", kubelet, "process kubelet", 60)
        pids["process kubelet"] = kubelet.pid

        watch = PodWatch(core, "kubelet")
        await watch.start()
        bare = await asyncio.wait_for(
            measure_kubelet(core, watch, n, parallel, Cpu(pids)), timeout=600
        )
        await watch.stop()

        # runstate: one Run of hosts × 2 operations.
        operator, metrics_url = await start_operator(args, work, env, redis, procs)
        pids["operator"] = operator.pid

        watch = PodWatch(core, "rs")
        await watch.start()
        body = run_obj(hosts, parallel)
        writes0 = metric_sum(metrics_url, WRITES)
        cpu = Cpu(pids)
        run, t0, t1 = await run_to_completion(custom, body, operator, work)
        rs = Result("runstate", n, t1 - t0, cpu.used())
        rs.peak, rs.mean_in_flight = watch.in_flight(t0, t1)
        first_pod = min(watch.added.values()) - t0
        spans = watch.spans(t0)
        await asyncio.sleep(1.5)  # trailing Events are posted after the status
        writes1 = metric_sum(metrics_url, WRITES)
        await watch.stop()

        # Verify the run and its pods.
        status = run["status"]
        resp = await core.list_namespaced_pod("rs", _preload_content=False)
        pods = json.loads(await resp.read())["items"]
        succeeded = sum(1 for p in pods if p["status"].get("phase") == "Succeeded")
        problems = []
        if status["hosts"]["total"] != hosts:
            problems.append(f"hosts.total = {status['hosts']['total']}")
        for op in status["operations"]:
            if op["success"] != hosts:
                problems.append(f"operation {op['name']}: success = {op['success']}")
        if len(status["operations"]) != 2:
            problems.append(f"{len(status['operations'])} operations in status")
        if len(pods) != n or succeeded != n:
            problems.append(f"{len(pods)} pods, {succeeded} Succeeded (want {n})")
        if rs.peak > parallel:
            problems.append(f"{rs.peak} pods in flight at once, over parallel {parallel}")
        if problems:
            raise RuntimeError("run verification failed: " + "; ".join(problems))

    report(
        hosts,
        parallel,
        raw,
        bare,
        rs,
        first_pod=first_pod,
        spans=spans,
        writes=writes_delta(writes0, writes1),
        status_bytes=len(json.dumps(status, separators=(",", ":"))),
        spec_bytes=len(json.dumps(body["spec"], separators=(",", ":"))),
        status_message=str(status["state"].get("message", "")),
    )


def report(
    hosts: int,
    parallel: int,
    raw: Result,
    bare: Result,
    rs: Result,
    *,
    first_pod: float,
    spans: dict[str, tuple[float, float]],
    writes: dict[str, float],
    status_bytes: int,
    spec_bytes: int,
    status_message: str,
) -> None:
    n = rs.n
    print(
        f"## Fan-out: one run, {hosts} hosts × 2 operations, parallel {parallel} "
        f"(N = {n} pods per row)\n"
    )
    print("| what | pods (op × host) /s | seconds | runstate relative |")
    print("|---|---:|---:|---:|")
    rows = [
        ("raw API: create pod + status patch, no kubelet", raw),
        ("(harness) process kubelet alone, bare pods to Succeeded", bare),
    ]
    for label, r in rows:
        print(f"| {label} | {r.rate:.1f} | {r.seconds:.1f} | {rs.rate / r.rate:.2f} |")
    print(
        f"| **runstate: one Run, op × host to COMPLETED** | **{rs.rate:.1f}** | "
        f"{rs.seconds:.1f} | 1.00 |\n"
    )
    print(f"- Run status: {status_message!r}; all {n} pods Succeeded, checked.")
    print(
        f"- Time to first pod: {first_pod:.2f} s. Per operation (first pod seen → last pod "
        "finished, s after the create): "
        + ", ".join(
            f"{op} {a:.1f}–{b:.1f}" for op, (a, b) in sorted(spans.items(), key=lambda x: x[1])
        )
        + f"; COMPLETED seen at {rs.seconds:.1f}."
    )
    print(
        "- Pods in flight (watch: added → terminal), peak / mean: "
        + ", ".join(f"{r.name} {r.peak} / {r.mean_in_flight:.1f}" for r in (raw, bare, rs))
        + f" (cap {parallel})."
    )
    total = sum(writes.values())
    detail = ", ".join(f"{k}: {v:.0f}" for k, v in sorted(writes.items()))
    print(f"- API writes by the operator: **{total:.0f}** ({detail}), {total / n:.3f} per pod.")
    print(
        f"- Size of the Run: spec {spec_bytes} bytes, **status {status_bytes} bytes** "
        "(JSON, compact).\n"
    )
    results = (raw, bare, rs)
    names = sorted({k for r in results for k in r.cpu} - {MACHINE}, key=lambda k: -rs.cpu.get(k, 0))
    print(
        f"CPU seconds per component during each measurement ({CORES} cores = {CORES} s per "
        "wall second):\n"
    )
    print("| component | raw | kubelet | runstate |")
    print("|---|---:|---:|---:|")
    for name in names:
        cells = " | ".join(f"{r.cpu[name]:.1f}" if name in r.cpu else "–" for r in results)
        print(f"| {name} | {cells} |")
    ours = [sum(v for k, v in r.cpu.items() if k != MACHINE) for r in results]
    cells = " | ".join(f"{o:.1f}" for o in ours)
    print(f"| **all of the above** | {cells} |")
    cells = " | ".join(
        f"{max(0.0, r.cpu[MACHINE] - o):.1f}" for r, o in zip(results, ours, strict=True)
    )
    print(f"| other processes on the machine | {cells} |")
    cells = " | ".join(f"{r.cpu[MACHINE]:.1f} of {CORES * r.seconds:.1f}" for r in results)
    print(f"| **machine busy** | {cells} |\n")
    per_pod = ", ".join(
        f"{r.name} {1000 * o / r.n:.1f} ms ({CORES * r.n / o:.0f}/s)"
        for r, o in zip(results, ours, strict=True)
    )
    print(
        f"Own CPU per pod (all of the above / N), and the rate {CORES} cores would allow if "
        f"nothing else ran: {per_pod}.\n"
    )
    op_cpu = rs.cpu.get("operator", 0.0)
    print(f"Operator CPU: {op_cpu:.1f} s, {1000 * op_cpu / n:.1f} ms per op × host.")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument(
        "--connector",
        choices=("pod", "ssh"),
        default="pod",
        help="pod: the three rows above; ssh: the ssh row (SSH test hosts, plain ssh baseline)",
    )
    parser.add_argument(
        "--pyinfra",
        action="store_true",
        help="with --connector ssh: the pyinfra row (files.line; the pyinfra CLI as baseline)",
    )
    parser.add_argument("--hosts", type=int, default=None, help="default 500, or 50 with ssh")
    parser.add_argument("--parallel", type=int, default=50)
    parser.add_argument(
        "--operator-path",
        default=None,
        help="run the operator from this source folder (a baseline's operator/), not this tree",
    )
    parser.add_argument(
        "--runner-root",
        default=str(runnerroot.default_root()),
        help="ssh: the dev runner root the work pods run `runstate exec` from (refreshed from "
        "this tree; default: the dev cluster's, shared with it)",
    )
    args = parser.parse_args()
    ssh = args.connector == "ssh"
    if args.pyinfra and not ssh:
        parser.error("--pyinfra needs --connector ssh")
    if args.hosts is None:
        args.hosts = 50 if ssh else 500
    if ssh and not 1 <= args.hosts <= MAX_HOSTS:
        parser.error(f"--hosts: 1 to {MAX_HOSTS} SSH test hosts")
    work = Path(tempfile.mkdtemp(prefix="runstate-fanout-"))
    procs: Procs = []
    ok = False

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)  # unwinds through the cleanup below

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        # Stopped in reverse: operator and kubelet, then Redis, the control plane, the hosts.
        with contextlib.ExitStack() as stack:
            fleet = None
            if ssh:
                # Before the control plane, which would refresh the default root on its own.
                runnerroot.ensure(ROOT, root=Path(args.runner_root))
                # Started from this (main) thread: die_with_parent follows the thread.
                fleet = HostFleet(work / "hosts", die_with_parent=True)
                stack.callback(fleet.down)
                fleet.up(args.hosts)
            plane = ControlPlane(work / "cluster", kubelet=False, die_with_parent=True).start()
            stack.callback(plane.stop)
            redis = RedisServer(work / "redis", die_with_parent=True).start()
            stack.callback(redis.stop)
            stack.callback(stop_all, procs)
            if fleet is not None and args.pyinfra:
                asyncio.run(bench_pyinfra(args, work, plane, redis, fleet, procs))
            elif fleet is not None:
                asyncio.run(bench_ssh(args, work, plane, redis, fleet, procs))
            else:
                asyncio.run(bench(args, work, plane, redis, procs))
        ok = True
    finally:
        signal.signal(signal.SIGTERM, previous)
        if ok:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"logs kept in {work}", file=sys.stderr)


if __name__ == "__main__":
    main()
