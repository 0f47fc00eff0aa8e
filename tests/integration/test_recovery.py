"""Issue 5's recovery scenarios on the real control plane: the operator SIGKILLed with 50 runs
in flight, Redis unreachable for 30 s, and two operator replicas under kopf peering.

These tests are disruptive (they kill the session's operator, stop Redis, stop the session's
operator to run peered replicas): they are marked `disruptive`, which tests/conftest.py runs
after every other test, and each leaves the session's operator and Redis running and ready.

What they assert is what a user can see: the Runs' status, the pods the API server saw created
(recorded by a watch from before the first run is applied to the end), the run history in
Redis, /metrics, /readyz and the operators' logs.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from runstate_dev.redis import RedisServer
from tests.conftest import KUBECTL, Cluster, Operator, free_port, wait_for
from tests.integration.test_runs import final_status, run, runbook

pytestmark = [pytest.mark.integration, pytest.mark.disruptive]

FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


# ---- What the API server saw: every pod event of a namespace, from before the first run.


@dataclass
class PodWatch:
    """`kubectl get pods -w --output-watch-events -o json` in the background.

    Started on an empty namespace before anything is applied, it sees every pod the operator
    creates, also pods deleted again (a run's succeeded pods are removed when it ends)."""

    cluster: Cluster
    namespace: str
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    _reader: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> PodWatch:
        self.process = subprocess.Popen(
            [
                KUBECTL,
                "--kubeconfig",
                self.cluster.kubeconfig,
                "get",
                "pods",
                "-n",
                self.namespace,
                "--watch",
                "--output-watch-events",
                "-o",
                "json",
                "--request-timeout=0",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        # The watch is established once kubectl has listed the (empty) namespace; give it a
        # pod of our own to see, so nothing the operator creates can come before it.
        marker = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "watch-marker"},
            "spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "c", "image": "none", "command": ["true"]}],
            },
        }
        self.cluster.apply(json.dumps(marker), self.namespace)
        wait_for(
            "the pod watch to see its marker pod",
            lambda: "watch-marker" in self.added(),
            timeout=30,
        )
        return self

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        decoder = json.JSONDecoder()
        buffer = ""
        while chunk := os.read(self.process.stdout.fileno(), 65536):
            buffer += chunk.decode()
            while True:
                buffer = buffer.lstrip()
                try:
                    event, end = decoder.raw_decode(buffer)
                except json.JSONDecodeError:
                    break
                buffer = buffer[end:]
                with self._lock:
                    self.events.append((str(event["type"]), event["object"]))

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def added(self) -> dict[str, list[dict[str, Any]]]:
        """Pod name → the pod objects of its ADDED events (the operator's pods only)."""
        with self._lock:
            events = list(self.events)
        result: dict[str, list[dict[str, Any]]] = {}
        for kind, obj in events:
            if kind == "ADDED":
                result.setdefault(obj["metadata"]["name"], []).append(obj)
        return result

    def uids(self) -> dict[str, set[str]]:
        """Pod name → every UID any event showed under that name."""
        with self._lock:
            events = list(self.events)
        result: dict[str, set[str]] = {}
        for _, obj in events:
            result.setdefault(obj["metadata"]["name"], set()).add(obj["metadata"]["uid"])
        return result

    def assert_each_pod_created_once(self) -> dict[str, list[str]]:
        """No pod name was created twice (the watch was up the whole time); returns run name
        → the names of its pods."""
        assert self.alive(), "the pod watch ended early: pod creations may have been missed"
        added = self.added()
        added.pop("watch-marker", None)
        twice = {name: len(objs) for name, objs in added.items() if len(objs) > 1}
        assert not twice, f"pods created more than once: {twice}"
        uids = self.uids()
        reused = {name: sorted(u) for name, u in uids.items() if len(u) > 1}
        assert not reused, f"pod names seen with more than one UID: {reused}"
        by_run: dict[str, list[str]] = {}
        for name, (obj,) in added.items():
            by_run.setdefault(obj["metadata"]["labels"]["runstate.dev/run"], []).append(name)
        return by_run


@pytest.fixture
def pod_watch(kube_cluster: Cluster) -> Iterator[Callable[[str], PodWatch]]:
    watches: list[PodWatch] = []

    def start(namespace: str) -> PodWatch:
        watch = PodWatch(kube_cluster, namespace).start()
        watches.append(watch)
        return watch

    try:
        yield start
    finally:
        for watch in watches:
            watch.stop()


# ---- Small readers.


def statuses(cluster: Cluster, ns: str) -> dict[str, dict[str, Any]]:
    return {r["metadata"]["name"]: r.get("status") or {} for r in cluster.items("runs", ns)}


def all_final(cluster: Cluster, ns: str, names: list[str]) -> dict[str, dict[str, Any]] | None:
    st = statuses(cluster, ns)
    done = {n: st[n] for n in names if (st.get(n, {}).get("state") or {}).get("type") in FINAL}
    return st if len(done) == len(names) else None


def assert_history_matches_redis(
    cluster: Cluster, client: redis.Redis, ns: str, name: str
) -> list[str]:
    """status.history is the tail of the run's Redis history stream, entry for entry, and the
    history is one unbroken chain of transitions: none repeated, none missing."""
    obj = cluster.get("run", name, ns)
    history = obj["status"]["history"]
    key = f"runstate:{{{obj['metadata']['uid']}}}:history"
    stream: list[tuple[str, dict[str, str]]] = client.xrange(key)  # type: ignore[assignment]
    assert stream, f"{name}: no history stream in Redis"
    as_stream = [(e["from"], e["to"], e["at"], e["message"]) for _, e in stream]
    as_status = [(h.get("from", ""), h["to"], h["at"], h.get("message", "")) for h in history]
    assert as_stream[-len(as_status) :] == as_status, (
        f"{name}: status.history differs from Redis:\n{as_status}\n{as_stream}"
    )
    chain = [e[1] for e in as_stream]
    assert as_stream[0][0] == "", f"{name}: history does not start at the beginning: {as_stream}"
    for before, after in itertools.pairwise(as_stream):
        assert after[0] == before[1], f"{name}: broken or repeated transition in {chain}"
        assert after[1] != before[1], f"{name}: repeated transition in {chain}"
    return chain


def redis_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True, socket_timeout=5)


# ---- 1. SIGKILL with 50 runs in every stage.


@dataclass(frozen=True)
class Kind:
    """A runbook and what each of its runs must come to."""

    runbook: str
    runs: int
    manifest: str
    final: str  # state type each run ends in
    pods: int  # pods each run creates, every attempt and hook included
    attempt: int = 1
    scheduled: bool = False
    hosts: int = 2


def fifty_runs(start_at: str) -> list[Kind]:
    slow_check = "sleep 10; exit 1"  # Prepare: "a change is needed", after a while
    return [
        # Most runs execute two slow-ish operations on two hosts.
        Kind(
            "execute",
            18,
            runbook(
                "execute",
                ops=[{"name": "first", "run": "sleep 6"}, {"name": "second", "run": "sleep 3"}],
                hosts=2,
            ),
            "COMPLETED",
            4,
        ),
        # A Connect probe that takes its time: 2 probe pods, then 2 × 2 operations.
        Kind(
            "connect",
            6,
            runbook(
                "connect",
                ops=[{"name": "first", "run": "true"}, {"name": "second", "run": "true"}],
                hosts=2,
                connect={"run": "sleep 10"},
            ),
            "COMPLETED",
            6,
        ),
        # Checks in Prepare: 4 check pods, then 4 operation pods.
        Kind(
            "prepare",
            6,
            runbook(
                "prepare",
                ops=[
                    {"name": "first", "check": slow_check, "run": "true"},
                    {"name": "second", "check": slow_check, "run": "true"},
                ],
                hosts=2,
            ),
            "COMPLETED",
            8,
        ),
        # Attempt 1 fails on both hosts (2 pods), attempt 2 runs everything (4 pods).
        Kind(
            "retry",
            5,
            runbook(
                "retry",
                ops=[
                    {
                        "name": "first",
                        "run": '[ "$RUNSTATE_ATTEMPT" -ge 2 ] || { sleep 3; exit 1; }',
                    },
                    {"name": "second", "run": "sleep 2"},
                ],
                hosts=2,
                retries={"limit": 1, "delaySeconds": 8},
            ),
            "COMPLETED",
            6,
            attempt=2,
        ),
        # Runs that end with an onCompletion hook (one more pod each), likely running at the
        # kill: the restarted operator must neither start it again nor lose its result.
        Kind(
            "hooked",
            5,
            runbook(
                "hooked",
                ops=[{"name": "first", "run": "sleep 1"}, {"name": "second", "run": "true"}],
                hosts=2,
                hooks={"onCompletion": ["notify"]},
                hookOperations=[{"name": "notify", "run": "sleep 8; echo notified"}],
            ),
            "COMPLETED",
            5,
        ),
        # Runs that fail: the first operation fails on both hosts, no retries.
        Kind(
            "failing",
            3,
            runbook(
                "failing",
                ops=[
                    {"name": "first", "run": "sleep 4; exit 3"},
                    {"name": "second", "run": "true"},
                ],
                hosts=2,
            ),
            "FAILED",
            2,
        ),
        # One at a time: the others wait in AwaitingConcurrencySlot.
        Kind(
            "queued",
            4,
            runbook(
                "queued",
                ops=[{"name": "only", "run": "sleep 4"}],
                hosts=1,
                trigger={"concurrency": {"limit": 1, "policy": "Queue"}},
            ),
            "COMPLETED",
            1,
            hosts=1,
        ),
        # Scheduled for after the kill and the restart.
        Kind(
            "scheduled",
            3,
            runbook(
                "scheduled",
                ops=[{"name": "first", "run": "sleep 2"}, {"name": "second", "run": "true"}],
                hosts=2,
                lateAfterSeconds=600,
            ),
            "COMPLETED",
            4,
            scheduled=True,
        ),
    ]


def assert_final_counts(name: str, kind: Kind, status: dict[str, Any]) -> None:
    """Every run shows the results of every operation on every host, not only its state."""
    ops = status["operations"]
    assert len(ops) == 2 or kind.runbook == "queued", (name, ops)
    if kind.final == "COMPLETED":
        assert status["hostsSummary"] == f"{kind.hosts}/{kind.hosts}", (name, status)
        assert status["hosts"] == {
            "total": kind.hosts,
            "active": kind.hosts,
            "failed": 0,
            "unreachable": 0,
            "limited": 0,
        }, (name, status)
        for op in ops:
            assert (op["hosts"], op["success"], op["error"]) == (kind.hosts, kind.hosts, 0), (
                name,
                ops,
            )
    else:  # "failing": the first operation fails on both hosts, the second never runs
        assert status["hostsSummary"] == "0/2", (name, status)
        assert status["hosts"]["failed"] == 2, (name, status)
        assert [(o["name"], o["success"], o["error"]) for o in ops] == [
            ("first", 0, 2),
            ("second", 0, 0),
        ], (name, ops)


def hooks_over(cluster: Cluster, ns: str, name: str) -> Callable[[], list[dict[str, Any]]]:
    """A probe: the run's hook results once none is running any more."""

    def probe() -> list[dict[str, Any]]:
        hooks: list[dict[str, Any]] = (cluster.get("run", name, ns).get("status") or {}).get(
            "hooks"
        ) or []
        return hooks if hooks and all(h["result"] != "Running" for h in hooks) else []

    return probe


def in_every_stage(st: dict[str, dict[str, Any]]) -> bool:
    live = [s for s in st.values() if (s.get("state") or {}).get("type") not in (*FINAL, None)]
    stages = {s.get("stage") for s in live if (s.get("state") or {}).get("type") == "RUNNING"}
    names = {(s.get("state") or {}).get("name") for s in live}
    return {"Connect", "Prepare", "Execute"} <= stages and {
        "Scheduled",
        "AwaitingConcurrencySlot",
        "AwaitingRetry",
    } <= names


@pytest.mark.timeout(900)
def test_sigkill_with_fifty_runs_in_every_stage(
    kube_cluster: Cluster,
    operator: Operator,
    redis_url: str,
    pod_watch: Callable[[str], PodWatch],
) -> None:
    ns = kube_cluster.namespace()
    watch = pod_watch(ns)
    start_at = (datetime.now(UTC) + timedelta(seconds=60)).strftime("%Y-%m-%dT%H:%M:%SZ")
    kinds = fifty_runs(start_at)
    assert sum(k.runs for k in kinds) == 50
    expected: dict[str, Kind] = {}
    for kind in kinds:
        kube_cluster.apply(kind.manifest, ns)
    manifests = []
    for kind in kinds:
        for i in range(kind.runs):
            name = f"{kind.runbook}-{i}"
            extra = {"scheduledTime": start_at} if kind.scheduled else {}
            manifests.append(run(name, kind.runbook, **extra))
            expected[name] = kind
    started = time.monotonic()
    kube_cluster.apply("\n".join(manifests), ns)  # kubectl reads a stream of JSON objects

    wait_for(
        "runs in Connect, Prepare and Execute, Scheduled, queued and awaiting a retry, at once",
        lambda: in_every_stage(statuses(kube_cluster, ns)),
        timeout=240,
        every=0.5,
    )
    operator.kill()
    killed_after = time.monotonic() - started
    try:
        # The status is what the dead operator last wrote: read it again, nothing moves it now.
        at_kill = statuses(kube_cluster, ns)
        assert in_every_stage(at_kill), at_kill
        seen = Counter(
            f"{(s.get('state') or {}).get('name')}/{s.get('stage')}" for s in at_kill.values()
        )
        finished_at_kill = sum(
            (s.get("state") or {}).get("type") in FINAL for s in at_kill.values()
        )
        hooks_at_kill = sum(
            any(h.get("result") == "Running" for h in s.get("hooks") or [])
            for s in at_kill.values()
        )
        assert finished_at_kill < 25, f"the kill came too late to matter: {seen}"
    finally:
        operator.start()

    final = wait_for(
        "all 50 runs to end after the restart",
        lambda: all_final(kube_cluster, ns, list(expected)),
        timeout=600,
        every=2,
    )
    total = time.monotonic() - started
    wrong = {
        name: final[name]["state"]
        for name, kind in expected.items()
        if final[name]["state"]["type"] != kind.final
    }
    assert not wrong, f"runs that ended other than their spec implies: {wrong}"
    for name, kind in expected.items():
        assert final[name]["attempt"] == kind.attempt, (name, final[name])
        assert_final_counts(name, kind, final[name])
        if kind.runbook == "failing":
            assert final[name]["state"]["message"] == "No hosts remaining! (2/2 hosts failed)"
        if kind.runbook == "hooked":
            hooks = wait_for(f"the hook of {name}", hooks_over(kube_cluster, ns, name), timeout=60)
            assert [(h["name"], h["result"]) for h in hooks] == [("notify", "Succeeded")]

    # No op × host × attempt was started twice, and each run created exactly its pods.
    by_run = watch.assert_each_pod_created_once()
    counts = {name: len(by_run.get(name, [])) for name in expected}
    wanted = {name: kind.pods for name, kind in expected.items()}
    assert counts == wanted, {n: (counts[n], wanted[n]) for n in expected if counts[n] != wanted[n]}

    # Redis and the status tell the same history, without a repeated or missing transition.
    client = redis_client(redis_url)
    for name, kind in expected.items():
        chain = assert_history_matches_redis(kube_cluster, client, ns, name)
        if kind.attempt == 2:
            assert chain.count("RUNNING/Retrying") == 1, (name, chain)
        if kind.runbook == "queued":
            assert "SCHEDULED/AwaitingConcurrencySlot" in chain or name == "queued-0", chain
    print(
        f"\nkilled {killed_after:.0f}s after applying 50 runs; at the kill: {dict(seen)}, "
        f"{hooks_at_kill} with a hook running; "
        f"all ended {total:.0f}s after applying, {sum(counts.values())} pods created once each"
    )


@pytest.mark.timeout(600)
def test_three_sigkills_five_seconds_apart_lose_no_result(
    kube_cluster: Cluster, operator: Operator, pod_watch: Callable[[str], PodWatch]
) -> None:
    """Issue 10's report: with the operator SIGKILLed three times, five seconds apart, during
    30 runs of 3 hosts × 3 operations, some runs ended COMPLETED with `hostsSummary: 0/3`:
    their final state was committed and their pods deleted by retention before their results
    were recorded. Every run must end with every result, and no pod started twice."""
    ns = kube_cluster.namespace()
    watch = pod_watch(ns)
    ops = [{"name": n, "run": "sleep 1"} for n in ("one", "two", "three")]
    # Pods go at once when a run ends (the default retention): the case that lost results.
    kube_cluster.apply(runbook("fleet", ops=ops, hosts=3, config={"podRetention": {}}), ns)
    names = [f"fleet-{i}" for i in range(30)]
    kube_cluster.apply("\n".join(run(n, "fleet") for n in names), ns)
    for _ in range(3):
        time.sleep(5)
        operator.kill()
        operator.start()
    final = wait_for("all 30 runs to end", lambda: all_final(kube_cluster, ns, names), timeout=300)
    for name in names:
        st = final[name]
        assert st["state"]["type"] == "COMPLETED", (name, st["state"])
        assert st["hostsSummary"] == "3/3", (name, st)
        got = [
            (o["name"], o["hosts"], o["changed"], o["success"], o["error"])
            for o in st["operations"]
        ]
        assert got == [(n, 3, 3, 3, 0) for n in ("one", "two", "three")], (name, got)
    by_run = watch.assert_each_pod_created_once()
    assert {n: len(by_run.get(n, [])) for n in names} == {n: 9 for n in names}


# ---- 2. Redis unreachable for 30 s.


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """The HTTP status of a GET, or None when no answer came within `timeout`."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return None


@dataclass
class Outage:
    """Make the session's Redis unreachable, and bring it back with its data.

    restart: SHUTDOWN SAVE, then the same redis-server binary on the same port and data
      directory, as a Redis restart with persistence looks: connections are refused at once.
    freeze: SIGSTOP / SIGCONT, as a hung server or a network partition looks: the kernel still
      accepts connections, but no reply comes, so every call runs into its timeout.
    """

    mode: str
    server: RedisServer
    pid: int = 0
    down: bool = False

    def begin(self) -> None:
        client = redis_client(self.server.url)
        self.pid = int(client.info("server")["process_id"])
        if self.mode == "restart":
            client.shutdown(save=True)
            self.server.stop()
        else:
            os.kill(self.pid, signal.SIGSTOP)
        self.down = True

    def end(self) -> None:
        if not self.down:
            return
        if self.mode == "restart":
            self.server.start()
        else:
            os.kill(self.pid, signal.SIGCONT)
        self.down = False


@pytest.mark.timeout(600)
@pytest.mark.parametrize("mode", ["restart", "freeze"])
def test_redis_unreachable_for_30s_mid_execute(
    kube_cluster: Cluster,
    operator: Operator,
    redis_server: RedisServer,
    pod_watch: Callable[[str], PodWatch],
    mode: str,
) -> None:
    ns = kube_cluster.namespace()
    watch = pod_watch(ns)
    ops = [{"name": name, "run": "sleep 4"} for name in ("first", "second", "third")]
    kube_cluster.apply(runbook("steady", ops=ops, hosts=2), ns)
    names = [f"r{i}" for i in range(5)]
    kube_cluster.apply("\n".join(run(n, "steady") for n in names), ns)
    wait_for(
        "every run executing",
        lambda: (
            all(s.get("stage") == "Execute" for s in statuses(kube_cluster, ns).values())
            and len(statuses(kube_cluster, ns)) == len(names)
        ),
        timeout=90,
    )
    client = redis_client(redis_server.url)
    keys_before = client.dbsize()
    log_from = operator.log.stat().st_size
    errors_before = operator.metric("runstate_store_errors_total")
    outage = Outage(mode, redis_server)
    readiness: list[int | None] = []
    try:
        outage.begin()
        began = time.monotonic()
        not_ready_after: float | None = None
        # 30 s without Redis: the operator lives, says it is not ready, stays live, and fails
        # no run for it.
        while time.monotonic() - began < 30:
            assert operator.process.poll() is None, f"operator died:\n{operator.log_tail()}"
            code = http_status(operator.metrics_url + "/readyz")
            readiness.append(code)
            if code != 200 and not_ready_after is None:
                not_ready_after = time.monotonic() - began
            assert http_status(operator.metrics_url + "/healthz", timeout=5) == 200
            broken = {
                n: s["state"]
                for n, s in statuses(kube_cluster, ns).items()
                if s["state"]["type"] in ("FAILED", "CRASHED")
            }
            assert not broken, f"runs failed because Redis was away: {broken}"
            time.sleep(1)
        assert not_ready_after is not None and not_ready_after < 15, (
            f"/readyz stayed ready without Redis: {readiness}"
        )
        first_not_ready = next(i for i, code in enumerate(readiness) if code != 200)
        assert 200 not in readiness[first_not_ready:], (
            f"/readyz went ready again while Redis was away: {readiness}"
        )
    finally:
        outage.end()
    wait_for("/readyz after Redis is back", operator.ready, timeout=60)
    assert client.dbsize() >= keys_before, "Redis came back without its data"

    for name in names:
        st = final_status(kube_cluster, ns, name, timeout=180)
        assert st["state"]["type"] == "COMPLETED", (name, st["state"])
        chain = assert_history_matches_redis(kube_cluster, client, ns, name)
        assert chain == ["PENDING/Pending", "RUNNING/Running", "COMPLETED/Completed"], chain
    by_run = watch.assert_each_pod_created_once()
    assert {n: len(p) for n, p in by_run.items()} == dict.fromkeys(names, 6)
    assert operator.metric("runstate_store_errors_total") > errors_before
    assert operator.process.poll() is None
    # An outage is a warning per reconcile that waits for the store, never a traceback.
    during = operator.log.read_bytes()[log_from:].decode(errors="replace")
    assert "waits for the state store" in during
    assert "Traceback" not in during, during[-5000:]
    print(f"\n{mode}: /readyz while Redis was away: {readiness}")


# ---- 3. Two replicas under kopf peering.


PEERING = "runstate-ha"


def peering_crds() -> str:
    """kopf's peering CRDs (kopf.dev/v1), as kopf documents them; the chart ships the same (test_chart.py checks they agree)."""
    docs = []
    for kind, plural, scope in (
        ("ClusterKopfPeering", "clusterkopfpeerings", "Cluster"),
        ("KopfPeering", "kopfpeerings", "Namespaced"),
    ):
        docs.append(
            {
                "apiVersion": "apiextensions.k8s.io/v1",
                "kind": "CustomResourceDefinition",
                "metadata": {"name": f"{plural}.kopf.dev"},
                "spec": {
                    "scope": scope,
                    "group": "kopf.dev",
                    "names": {"kind": kind, "plural": plural, "singular": plural[:-1]},
                    "versions": [
                        {
                            "name": "v1",
                            "served": True,
                            "storage": True,
                            "schema": {
                                "openAPIV3Schema": {
                                    "type": "object",
                                    "properties": {
                                        "status": {
                                            "type": "object",
                                            "x-kubernetes-preserve-unknown-fields": True,
                                        }
                                    },
                                }
                            },
                        }
                    ],
                },
            }
        )
    return "\n".join(json.dumps(d) for d in docs)


def replica(session: Operator, log: Path, priority: int) -> Operator:
    port = free_port()
    env = {
        **session.env,
        "RUNSTATE_METRICS_PORT": str(port),
        "RUNSTATE_PEERING_LIFETIME": "10",
        "POD_ID": f"replica-{priority}",  # kopf's peer identity, readable in the peering object
    }
    argv = [
        sys.executable,
        "-m",
        "runstate",
        "operator",
        "--peering",
        PEERING,
        "--priority",
        str(priority),
    ]
    log.write_bytes(b"")
    op = Operator(metrics_url=f"http://127.0.0.1:{port}", log=log, argv=argv, env=env)
    op.start()
    return op


def activity(op: Operator) -> tuple[float, float]:
    """What an operator did: API writes sent, state-store calls made."""
    return (
        op.metric("runstate_api_writes_total"),
        op.metric("runstate_store_operation_seconds_count"),
    )


def logged(op: Operator, text: str) -> int:
    """How often the operator's log says `text`."""
    return op.log.read_text(errors="replace").count(text)


@pytest.mark.timeout(600)
def test_two_peered_replicas_only_the_higher_priority_one_acts(
    kube_cluster: Cluster,
    operator: Operator,
    redis_url: str,
    pod_watch: Callable[[str], PodWatch],
    tmp_path: Path,
) -> None:
    replicas: list[Operator] = []
    operator.process.terminate()  # a standalone operator would act whatever the peers say
    operator.process.wait(timeout=30)
    try:
        kube_cluster.apply(peering_crds())
        for crd in ("clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"):
            kube_cluster.wait_established(crd)
        kube_cluster.apply(
            json.dumps(
                {
                    "apiVersion": "kopf.dev/v1",
                    "kind": "ClusterKopfPeering",
                    "metadata": {"name": PEERING},
                }
            )
        )
        ns = kube_cluster.namespace()
        watch = pod_watch(ns)
        ops = [{"name": f"op{i}", "run": "sleep 4"} for i in range(1, 7)]
        kube_cluster.apply(runbook("ha", ops=ops, hosts=2), ns)

        # The standby-to-be starts alone: it is the only peer, so it acts.
        low = replica(operator, tmp_path / "low.log", priority=10)
        replicas.append(low)
        kube_cluster.apply(run("r1", "ha"), ns)
        wait_for(
            "r1 executing under the only replica",
            lambda: kube_cluster.get("run", "r1", ns).get("status", {}).get("stage") == "Execute",
            timeout=60,
        )
        assert activity(low)[0] > 0

        # A replica with a higher priority joins: the first one must stop acting at once.
        high = replica(operator, tmp_path / "high.log", priority=100)
        replicas.append(high)
        wait_for(
            "the low-priority replica to pause: kopf's watches and our workers",
            lambda: (
                logged(low, "Pausing operations in favour of")
                and logged(low, f"peering {PEERING}: standing by in favour of replica-100")
            ),
            timeout=60,
        )
        assert not logged(high, "Pausing operations")
        assert not logged(high, "standing by in favour of")
        low_paused = activity(low)
        high_before = activity(high)
        pods_then = len(watch.added())
        wait_for(
            "the high-priority replica to start more of r1's pods",
            lambda: len(watch.added()) >= pods_then + 2,
            timeout=60,
        )
        assert activity(high)[0] > high_before[0], "the active replica wrote nothing"
        assert activity(low) == low_paused, (
            "the paused replica went on acting (API writes, store calls): "
            f"{low_paused} -> {activity(low)}"
        )
        st = kube_cluster.get("run", "r1", ns)["status"]
        assert st["state"]["type"] == "RUNNING", "r1 must still be running at the kill"

        # The active replica dies; the standby takes over once its peering record expires.
        high.kill()
        killed = time.monotonic()
        # Both say so once at the start (mandatory peering starts paused), and again now.
        wait_for(
            "the standby to resume",
            lambda: (
                logged(low, "Resuming operations") >= 2
                and logged(low, f"peering {PEERING}: acting") >= 2
            ),
            timeout=90,
        )
        took_over = time.monotonic() - killed
        st = final_status(kube_cluster, ns, "r1", timeout=180)
        assert st["state"]["type"] == "COMPLETED", st["state"]
        assert activity(low)[0] > low_paused[0]
        by_run = watch.assert_each_pod_created_once()
        assert len(by_run["r1"]) == 12, sorted(by_run["r1"])
        chain = assert_history_matches_redis(kube_cluster, redis_client(redis_url), ns, "r1")
        assert chain == ["PENDING/Pending", "RUNNING/Running", "COMPLETED/Completed"], chain
        for op in replicas:
            text = op.log.read_text(errors="replace")
            assert "Traceback" not in text, f"{op.log.name}:\n{op.log_tail(200)}"
        print(f"\nthe standby took over {took_over:.0f}s after the active replica was killed")
    finally:
        for op in replicas:
            if op.process.poll() is None:
                op.process.kill()
                op.process.wait(timeout=10)
        kube_cluster.kubectl(
            "delete", "clusterkopfpeering", PEERING, "--ignore-not-found", check=False
        )
        kube_cluster.kubectl(
            "delete",
            "crd",
            "clusterkopfpeerings.kopf.dev",
            "kopfpeerings.kopf.dev",
            "--ignore-not-found",
            check=False,
        )
        operator.start()
