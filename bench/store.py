"""State-store transitions per second: RedisStateStore against two baselines, in one run.

On one fresh local redis-server (runstate_dev), for each concurrency level C and in every
round, interleaved, on the same server and key space (RUNS runs or keys, N = 3 × RUNS writes):
  set              `redis-benchmark -t set -P 1 -c C -n N -r RUNS`: one SET per round trip on C
                   connections, from Redis's own C client: what server + loopback can do
  runstate         RedisStateStore.acommit (Lua compare-and-set + XADD of the history entry),
                   RUNS runs each walked PENDING/Pending -> RUNNING/Running -> COMPLETED/Completed
                   by C asyncio tasks (the operator's workers) in one Python process; concurrent
                   commits share pipelines (the store's batching, as the operator runs it)
  pystator         PyStator 0.0.47's RedisStateStore.set_state (sync, with the metadata its
                   Orchestrator writes), the same walk by C threads, in its own venv
                   (~/.cache/runstate/bench-pystator, created here when missing)
and, unless --no-diagnose, rows that explain the runstate number:
  evalsha          redis-benchmark sending the store's own commit script (EVALSHA): Redis's cost
  memory           InMemoryStateStore.acommit, no Redis: the floor of the Python side
  hiredis          runstate with hiredis importable (redis-py then parses replies in C); hiredis
                   lives in ~/.cache/runstate/bench-pystator/hiredis-site, never the main venv
  unbatched        runstate with max_batch=1: every commit its own round trip (the store before
                   batching), to show what batching buys in the same round
  sync             the store's blocking commit, C threads (it never batches)
Each Python row runs in a fresh child process, which times only its transitions and then checks
every run it wrote (final state, version, history length) plus a sample through the store's own
read API; the parent checks Redis's command counters (INFO commandstats). A row that fails a
check fails the benchmark. CPU: the client process's own (time.process_time, or rusage of
redis-benchmark), Redis's (INFO cpu), and the whole machine's (/proc/stat) for the noise.

    python bench/store.py [--runs 3000] [--concurrency 1,16,64] [--rounds 3] [--no-diagnose]
                          [--rows set,pystator,...]   # only these rows (and runstate)
    python bench/store.py --profile [--concurrency 16]  # where the client's CPU goes (cProfile)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import hashlib
import importlib.metadata
import json
import os
import pstats
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from redis.asyncio import Redis

from runstate_dev.redis import RedisServer
from runstate_stores import (
    HISTORY_CAP,
    AsyncStateStore,
    HistoryEntry,
    InMemoryStateStore,
    RedisStateStore,
    StateRecord,
)
from runstate_stores.redis import MAX_BATCH

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("RUNSTATE_CACHE", Path.home() / ".cache/runstate"))
PYSTATOR_DIR = CACHE / "bench-pystator"
HIREDIS_DIR = PYSTATOR_DIR / "hiredis-site"  # `pip install --target`: never in the main venv
REDIS_BENCHMARK = "/usr/bin/redis-benchmark"
PREFIX = "runstate"  # RedisStateStore's default key prefix
CORES = os.cpu_count() or 1
# 0.0.47 imports pydantic, sqlalchemy and fastapi without declaring them, and its Redis store
# needs redis-py, which no extra pulls in: pinned to the main venv's version, so both sides
# use the same client library.
PYSTATOR_REQUIREMENTS = [
    "pystator[api]==0.0.47",
    "pydantic",
    "sqlalchemy",
    "fastapi",
    f"redis=={importlib.metadata.version('redis')}",
]
HIREDIS_REQUIREMENT = "hiredis==3.5.0"

# One run's walk: (type, name, stage, message). Every commit carries one HistoryEntry.
WALK = (
    ("PENDING", "Pending", "Setup", ""),
    ("RUNNING", "Running", "Execute", "1 host × 1 operation"),
    ("COMPLETED", "Completed", "Disconnect", "all operations succeeded"),
)
FINAL = f"{WALK[-1][0]}/{WALK[-1][1]}"
LABELS = [f"{t}/{n}" for t, n, _, _ in WALK]
SAMPLE = 50  # runs read back through the store's own API, per row


def run_uid(i: int) -> str:
    """A run UID as Kubernetes makes them (36 characters), deterministic."""
    return str(uuid.UUID(int=(0xB5 << 120) | i))


def rfc3339_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def machine_busy_seconds() -> float:
    """Busy CPU time of the whole machine so far (all cores; /proc/stat without idle, iowait)."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def server_cpu(admin: redis.Redis) -> float:
    """CPU seconds the Redis server has used so far (all its threads)."""
    info: dict[str, Any] = admin.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def command_calls(admin: redis.Redis) -> dict[str, int]:
    """Calls per command since the server started, commands run by scripts included."""
    info: dict[str, Any] = admin.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in info.items()}


# --- the measured client side (child processes) ------------------------------------------


def step(index: int, start: str, previous: str) -> tuple[StateRecord, HistoryEntry]:
    """The record and history entry of a run's `index`-th transition, as the operator builds
    them (its context keeps the attempt's start, the run's start and end)."""
    type_, name, stage, message = WALK[index]
    now = rfc3339_now()
    start = start or now
    context: dict[str, Any] = {"attemptStart": start}
    if type_ != "PENDING":
        context["startTime"] = start
    if type_ == "COMPLETED":
        context["endTime"] = now
    record = StateRecord(
        type=type_, name=name, stage=stage, message=message, timestamp=now, context=context
    )
    entry = HistoryEntry(from_state=previous, to_state=f"{type_}/{name}", at=now, message=message)
    return record, entry


async def walk_runs(committer: AsyncStateStore, uids: list[str], concurrency: int) -> None:
    """`concurrency` workers take runs one at a time and walk each through WALK, each commit
    fenced by the version the previous one returned (the operator caches its record)."""
    todo = iter(uids)

    async def worker() -> None:
        for uid in todo:
            version, previous, start = 0, "", ""
            for index in range(len(WALK)):
                record, entry = step(index, start, previous)
                committed = await committer.acommit(
                    uid, record, expected_version=version, history=[entry]
                )
                version, previous = committed.version, entry.to_state
                start = start or entry.at

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def walk_runs_sync(store: Any, uids: list[str], concurrency: int) -> None:
    """The same walk through the store's blocking `commit`, by `concurrency` threads."""

    def worker(chunk: list[str]) -> None:
        for uid in chunk:
            version, previous, start = 0, "", ""
            for index in range(len(WALK)):
                record, entry = step(index, start, previous)
                committed = store.commit(uid, record, expected_version=version, history=[entry])
                version, previous = committed.version, entry.to_state
                start = start or entry.at

    if concurrency == 1:
        worker(uids)
        return
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(worker, [uids[k::concurrency] for k in range(concurrency)]))


def commit_script() -> str:
    """The store's commit script (its module moved in the store refactor of issue 5)."""
    for module, name in (
        ("runstate_stores._redis_calls", "COMMIT_LUA"),
        ("runstate_stores.redis", "_COMMIT_LUA"),
    ):
        with contextlib.suppress(ImportError):
            script = getattr(importlib.import_module(module), name, None)
            if isinstance(script, str):
                return script
    raise RuntimeError("cannot find the store's commit script (COMMIT_LUA)")


async def check_sample(reader: Any, uids: list[str]) -> list[str]:
    """Read a sample of runs back through the store's own API: state, version, history."""
    problems: list[str] = []
    for uid in random.Random(7).sample(uids, min(SAMPLE, len(uids))):
        record = await reader.aget_state(uid)
        got = None if record is None else (f"{record.type}/{record.name}", record.version)
        if got != (FINAL, len(WALK)):
            problems.append(f"run {uid}: state {got}, want {(FINAL, len(WALK))}")
        history = await reader.aread_history(uid)
        chain = [(h.from_state, h.to_state) for h in history]
        if chain != list(zip(["", *LABELS[:-1]], LABELS, strict=True)):
            problems.append(f"run {uid}: history {chain}")
    return problems


async def check_all(url: str, uids: list[str]) -> list[str]:
    """Every run in Redis: final type and version in the state hash, history length."""
    client: Redis = Redis.from_url(url, decode_responses=True)
    try:
        pipe = client.pipeline(transaction=False)
        for uid in uids:
            base = f"{PREFIX}:{{{uid}}}"
            pipe.hmget(f"{base}:state", ["type", "version"])
            pipe.xlen(f"{base}:history")
        replies = await pipe.execute()
    finally:
        await client.aclose()
    bad = [
        f"run {uid}: {state} / {length} history entries"
        for uid, state, length in zip(uids, replies[::2], replies[1::2], strict=True)
        if state != [WALK[-1][0], str(len(WALK))] or length != len(WALK)
    ]
    return bad[:5] + ([f"... {len(bad)} runs wrong in all"] if len(bad) > 5 else [])


async def child_store(args: argparse.Namespace) -> dict[str, Any]:
    """One timed pass of a store in this (fresh) process; prints nothing itself."""
    concurrency = int(args.concurrency)
    uids = [run_uid(i) for i in range(args.runs)]
    warm = [f"warm-{i}" for i in range(concurrency)]
    admin = redis.Redis.from_url(args.url)
    store: Any
    if args.child == "memory":
        store = InMemoryStateStore()
    else:
        store = RedisStateStore.from_url(
            args.url, max_connections=args.max_connections, max_batch=args.max_batch
        )
    committer: AsyncStateStore = store

    async def walk(ids: list[str]) -> None:
        if args.child == "sync":
            await asyncio.to_thread(walk_runs_sync, store, ids, concurrency)
        else:
            await walk_runs(committer, ids, concurrency)

    # Warm-up, not timed: the script cache and one pooled connection per worker.
    await walk(warm)
    trips0 = store.batching.round_trips if args.child == "redis" else 0
    profiler = cProfile.Profile() if args.profile else None
    cpu0, busy0, srv0 = time.process_time(), machine_busy_seconds(), server_cpu(admin)
    t0 = time.perf_counter()
    if profiler:
        profiler.enable()
    await walk(uids)
    if profiler:
        profiler.disable()
    seconds = time.perf_counter() - t0
    cpu, busy = time.process_time() - cpu0, machine_busy_seconds() - busy0
    srv = server_cpu(admin) - srv0
    # How the timed commits left: commits per round trip (1.0 when nothing shared one).
    trips = store.batching.round_trips - trips0 if args.child == "redis" else 0
    if profiler:
        profiler.dump_stats(args.profile)
    problems = await check_sample(store, uids)
    if args.child != "memory":
        problems += await check_all(args.url, uids)
        for uid in warm:
            await store.adelete(uid)
    if hasattr(store, "close"):
        store.close()  # the blocking client, if any
    if hasattr(store, "aclose"):
        await store.aclose()
    admin.close()
    return {
        "ops": len(uids) * len(WALK),
        "seconds": seconds,
        "cpu": cpu,
        "server_cpu": srv,
        "busy": busy,
        "server_calls": 0 if args.child == "memory" else (len(uids) + len(warm)) * len(WALK),
        "hiredis": redis.utils.HIREDIS_AVAILABLE,
        "checked": f"all {len(uids)} runs {FINAL} v{len(WALK)} with {len(WALK)} history "
        f"entries; {min(SAMPLE, len(uids))} read back through the store",
        "problems": problems,
        **({"mean_batch": len(uids) * len(WALK) / max(1, trips)} if trips else {}),
    }


# --- PyStator, in its own venv ------------------------------------------------------------

PYSTATOR_CHILD = r"""
import json, os, random, sys, time, uuid
from concurrent.futures import ThreadPoolExecutor
import redis
from pystator.stores.redis import RedisStateStore

url, runs, conc = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
PREFIX = "pystator"
STATES = ["pending", "running", "completed"]

def busy():
    f = [int(x) for x in open("/proc/stat").readline().split()[1:9]]
    return (f[0] + f[1] + f[2] + f[5] + f[6] + f[7]) / os.sysconf("SC_CLK_TCK")

admin = redis.Redis.from_url(url, decode_responses=True)
def server_cpu():
    i = admin.info("cpu")
    return float(i["used_cpu_sys"]) + float(i["used_cpu_user"])

store = RedisStateStore(url, key_prefix=PREFIX)
store.connect()
ids = [str(uuid.UUID(int=(0xB5 << 120) | i)) for i in range(runs)]

def walk(chunk):
    for eid in chunk:
        previous = None
        for state in STATES:
            # What the Orchestrator writes with each transition (trigger, states, flags).
            store.set_state(eid, state, metadata={
                "trigger": "advance", "source_state": previous, "target_state": state,
                "is_terminal": state == "completed", "workflow_status": state,
                "machine_name": "run", "machine_version": "1",
            })
            previous = state

def walk_all(ids):
    if conc == 1:
        walk(ids)
    else:
        with ThreadPoolExecutor(conc) as pool:
            list(pool.map(walk, [ids[k::conc] for k in range(conc)]))

walk_all([f"warm-{i}" for i in range(conc)])  # one pooled connection per thread
cpu0, busy0, srv0 = time.process_time(), busy(), server_cpu()
t0 = time.perf_counter()
walk_all(ids)
seconds = time.perf_counter() - t0
cpu, bsy, srv = time.process_time() - cpu0, busy() - busy0, server_cpu() - srv0

pipe = admin.pipeline(transaction=False)
for eid in ids:
    pipe.get(f"{PREFIX}:entity:{eid}:state")
    pipe.get(f"{PREFIX}:entity:{eid}:metadata")
replies = pipe.execute()
problems = [
    f"{eid}: {s} {m}" for eid, s, m in zip(ids, replies[::2], replies[1::2])
    if s != "completed" or json.loads(m or "{}").get("target_state") != "completed"
][:5]
for eid in random.Random(7).sample(ids, min(50, len(ids))):
    if store.get_state(eid) != "completed":
        problems.append(f"{eid}: get_state {store.get_state(eid)!r}")
indexed = admin.scard(f"{PREFIX}:entities:index")
if indexed != runs + conc:
    problems.append(f"index holds {indexed} entities, want {runs + conc}")
store.disconnect()
print(json.dumps({
    "ops": runs * len(STATES), "seconds": seconds, "cpu": cpu, "server_cpu": srv, "busy": bsy,
    "server_calls": (runs + conc) * len(STATES),
    "checked": f"all {runs} entities 'completed' with metadata; 50 through get_state; index",
    "problems": problems,
}))
"""


def pip_install(python: Path | str, args: list[str], what: str) -> None:
    print(f"(installing {what}: {' '.join(args)})", file=sys.stderr, flush=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *args], check=True)


def ensure_pystator() -> Path:
    """The PyStator venv, created or updated when its requirements changed."""
    python = PYSTATOR_DIR / "bin/python"
    marker = PYSTATOR_DIR / ".bench-requirements"
    wanted = "\n".join(PYSTATOR_REQUIREMENTS)
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PYSTATOR_DIR)], check=True)
    if not marker.exists() or marker.read_text() != wanted:
        pip_install(python, PYSTATOR_REQUIREMENTS, "PyStator's venv")
        marker.write_text(wanted)
    return python


def ensure_hiredis() -> Path:
    """hiredis in a directory of its own, put on PYTHONPATH only for the hiredis rows."""
    marker = HIREDIS_DIR / ".bench-requirement"
    if not marker.exists() or marker.read_text() != HIREDIS_REQUIREMENT:
        shutil.rmtree(HIREDIS_DIR, ignore_errors=True)
        pip_install(sys.executable, ["--target", str(HIREDIS_DIR), HIREDIS_REQUIREMENT], "hiredis")
        marker.write_text(HIREDIS_REQUIREMENT)
    return HIREDIS_DIR


# --- the parent: rows, rounds, report -----------------------------------------------------


@dataclass
class Sample:
    rate: float  # operations (transitions, SETs) per second
    client_us: float  # client CPU per operation
    server_us: float  # Redis CPU per operation
    others: float  # CPU seconds of every other process on the machine meanwhile
    busy: float  # machine busy fraction (of all cores)
    note: str = ""


@dataclass
class Row:
    key: str
    label: str
    diagnostic: bool = False
    applies: Callable[[int], bool] = lambda c: True
    samples: dict[int, list[Sample]] = field(default_factory=dict)
    checked: str = ""


class Bench:
    def __init__(self, args: argparse.Namespace, server: RedisServer, work: Path) -> None:
        self.args = args
        self.url = server.url
        self.port = server.port
        self.work = work
        self.admin = redis.Redis.from_url(server.url, decode_responses=True)
        self.commit_lua = commit_script()
        self.pystator = ensure_pystator()
        self.hiredis = ensure_hiredis() if args.diagnose else None

    def fresh(self) -> None:
        """Every row starts on an empty database with the commit script cached."""
        self.admin.flushall()
        self.admin.script_load(self.commit_lua)

    # -- the three kinds of measurement --------------------------------------------------------

    def redis_benchmark(self, row: Row, c: int, command: list[str]) -> Sample:
        n = self.args.runs * len(WALK)
        argv = [REDIS_BENCHMARK, "-p", str(self.port), "-c", str(c), "-n", str(n)]
        argv += ["-r", str(self.args.runs), "-P", "1", "--csv", *command]
        calls0, srv0 = command_calls(self.admin), server_cpu(self.admin)
        ru0, busy0 = resource.getrusage(resource.RUSAGE_CHILDREN), machine_busy_seconds()
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        ru1, busy1 = resource.getrusage(resource.RUSAGE_CHILDREN), machine_busy_seconds()
        srv, calls1 = server_cpu(self.admin) - srv0, command_calls(self.admin)
        # The last line: "name","rps",then 6 latencies; the name (the command) may hold commas.
        rate = float(out.strip().splitlines()[-1].rsplit(",", 7)[1].strip('"'))
        cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
        verb = command[-1].lower() if command[0] == "-t" else command[0].lower()
        done = calls1.get(verb, 0) - calls0.get(verb, 0)
        if done != n:
            raise RuntimeError(f"{row.key}: Redis counted {done} {verb} calls, want {n}")
        if verb == "evalsha":
            for inner in ("hset", "xadd"):
                got = calls1.get(inner, 0) - calls0.get(inner, 0)
                if got != n:
                    raise RuntimeError(f"{row.key}: {got} {inner} calls inside, want {n}")
        row.checked = f"Redis counted exactly {n} {verb.upper()} calls" + (
            " and as many HSET and XADD inside" if verb == "evalsha" else ""
        )
        seconds = n / rate
        return self._sample(n, rate, cpu, srv, busy1 - busy0, seconds)

    def child(self, row: Row, argv: list[str], env: dict[str, str]) -> Sample:
        calls0 = command_calls(self.admin)
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT)
        if proc.returncode != 0:
            raise RuntimeError(f"{row.key}: child failed:\n{proc.stderr[-3000:]}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        if result["problems"]:
            raise RuntimeError(f"{row.key}: check failed: {result['problems']}")
        calls1 = command_calls(self.admin)
        verbs = {"pystator": ("set", "sadd")}.get(row.key, ("evalsha", "xadd"))
        want = result["server_calls"]
        for verb in verbs:
            got = calls1.get(verb, 0) - calls0.get(verb, 0)
            expected = want * (2 if verb == "set" else 1)  # PyStator: state + metadata
            if got != expected:
                raise RuntimeError(f"{row.key}: Redis counted {got} {verb} calls, want {expected}")
        if row.key.endswith("hiredis") != bool(result.get("hiredis", False)):
            raise RuntimeError(f"{row.key}: hiredis in use = {result.get('hiredis')}")
        row.checked = result["checked"] + (
            f"; Redis counted {'/'.join(v.upper() for v in verbs)} as expected" if want else ""
        )
        rate = result["ops"] / result["seconds"]
        note = f"mean batch {result['mean_batch']:.1f}" if "mean_batch" in result else ""
        sample = self._sample(
            result["ops"], rate, result["cpu"], result["server_cpu"], result["busy"], 0.0
        )
        sample.note = note
        return sample

    def _sample(
        self, n: int, rate: float, cpu: float, srv: float, busy: float, seconds: float
    ) -> Sample:
        seconds = seconds or n / rate
        return Sample(
            rate=rate,
            client_us=1e6 * cpu / n,
            server_us=1e6 * srv / n,
            others=max(0.0, busy - cpu - srv),
            busy=min(1.0, busy / (CORES * seconds)),
        )

    def store_argv(self, c: int, kind: str = "redis", **opts: Any) -> list[str]:
        argv = [sys.executable, __file__, "--child", kind, "--url", self.url]
        argv += ["--runs", str(self.args.runs), "--concurrency", str(c)]
        argv += ["--max-batch", str(opts.get("max_batch", MAX_BATCH))]
        return argv

    def env(self, hiredis: bool) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        if hiredis:
            assert self.hiredis is not None
            env["PYTHONPATH"] = str(self.hiredis)
        return env

    def measure(self, row: Row, c: int) -> Sample:
        self.fresh()
        plain, with_hiredis = self.env(False), self.env(True) if self.hiredis else {}
        match row.key:
            case "set":
                return self.redis_benchmark(row, c, ["-t", "set"])
            case "evalsha":
                return self.redis_benchmark(row, c, evalsha_command(self.commit_lua))
            case "runstate":
                return self.child(row, self.store_argv(c), plain)
            case "pystator":
                argv = [str(self.pystator), "-c", PYSTATOR_CHILD, self.url]
                return self.child(row, [*argv, str(self.args.runs), str(c)], plain)
            case "memory":
                return self.child(row, self.store_argv(c, "memory"), plain)
            case "hiredis":
                return self.child(row, self.store_argv(c), with_hiredis)
            case "unbatched":
                return self.child(row, self.store_argv(c, max_batch=1), plain)
            case "sync":
                return self.child(row, self.store_argv(c, "sync"), plain)
        raise ValueError(row.key)


def evalsha_command(script: str) -> list[str]:
    """The commit script as the store sends it for a Pending -> Running transition, with an
    unconditional fence (-1): redis-benchmark cannot carry a version from one call to the next.
    The CAS read still runs."""
    now = "2026-11-24T12:00:00.000000Z"
    context = json.dumps({"attemptStart": now, "startTime": now}, separators=(",", ":"))
    fields = ["type", "RUNNING", "name", "Running", "stage", "Execute", "attempt", "1"]
    fields += ["message", "1 host × 1 operation", "timestamp", now, "context", context]
    history = ["PENDING/Pending", "RUNNING/Running", now, "1 host × 1 operation", "1"]
    sha = hashlib.sha1(script.encode()).hexdigest()
    keys = [f"{PREFIX}:{{__rand_int__}}:state", f"{PREFIX}:{{__rand_int__}}:history"]
    return ["EVALSHA", sha, "2", *keys, "-1", str(HISTORY_CAP), "7", *fields, *history]


def rows(diagnose: bool) -> list[Row]:
    out = [
        Row("set", "redis-benchmark SET (-P 1, C connections)"),
        Row("runstate", "**runstate RedisStateStore.acommit (CAS + history)**"),
        Row("pystator", "PyStator 0.0.47 RedisStateStore.set_state (sync, C threads)"),
    ]
    if diagnose:
        out += [
            Row("evalsha", "redis-benchmark EVALSHA of the commit script", True),
            Row("memory", "InMemoryStateStore.acommit (no Redis)", True),
            Row("hiredis", "runstate + hiredis", True),
            Row("unbatched", "runstate, batching off (max_batch=1)", True),
            Row("sync", "runstate blocking commit (sync, C threads)", True),
        ]
    return out


def fmt_range(values: list[float], digits: int = 0) -> str:
    med = statistics.median(values)
    if len(values) == 1:
        return f"{med:,.{digits}f}"
    return f"{med:,.{digits}f} ({min(values):,.{digits}f}–{max(values):,.{digits}f})"


def report(args: argparse.Namespace, table: list[Row], levels: list[int]) -> None:
    print(
        f"## State store: {args.runs} runs × {len(WALK)} transitions per row, "
        f"{args.rounds} round(s), median (min–max)\n"
    )
    main = next(r for r in table if r.key == "runstate")
    for c in levels:
        print(f"### Concurrency {c}\n")
        print("| what | ops/s | client CPU µs/op | Redis CPU µs/op | × runstate, same round |")
        print("|---|---:|---:|---:|---:|")
        base = [s.rate for s in main.samples[c]]
        first_diagnostic = True
        for row in table:
            if c not in row.samples:
                continue
            if row.diagnostic and first_diagnostic:
                print("| *diagnostics* | | | | |")
                first_diagnostic = False
            ss = row.samples[c]
            rate = fmt_range([s.rate for s in ss])
            note = f" ({ss[-1].note})" if ss[-1].note else ""
            rel = [s.rate / b for s, b in zip(ss, base, strict=True)]
            print(
                f"| {row.label}{note} | {rate} | {fmt_range([s.client_us for s in ss])} | "
                f"{fmt_range([s.server_us for s in ss])} | {fmt_range(rel, 2)} |"
            )
        others = [s.others for row in table for s in row.samples.get(c, [])]
        busy = [s.busy for row in table for s in row.samples.get(c, [])]
        print(
            f"\nOther processes' CPU during these rows: {min(others):.2f}–{max(others):.2f} s "
            f"per row; machine busy {100 * min(busy):.0f}–{100 * max(busy):.0f}% of "
            f"{CORES} cores.\n"
        )
    print("Checks, per row (every round):")
    for row in table:
        print(f"- {row.key}: {row.checked}")
    print()
    for row in table:
        if row.key not in ("runstate", "hiredis", "unbatched"):
            continue
        for c in levels:
            rates = [s.rate for s in row.samples[c]]
            verdict = "met" if statistics.median(rates) >= 10_000 else "NOT met"
            print(
                f"Target ≥ 10,000 transitions/s, {row.key}, concurrency {c}: {verdict} "
                f"(median {fmt_range(rates)})"
            )


def run_bench(args: argparse.Namespace, server: RedisServer, work: Path) -> None:
    bench = Bench(args, server, work)
    levels = [int(c) for c in args.concurrency.split(",")]
    table = rows(args.diagnose)
    if args.rows:
        keep = set(args.rows.split(",")) | {"runstate"}
        table = [row for row in table if row.key in keep]
    for rnd in range(args.rounds):
        for c in levels:
            for row in table:
                if not row.applies(c):
                    continue
                sample = bench.measure(row, c)
                row.samples.setdefault(c, []).append(sample)
                print(
                    f"round {rnd + 1} c={c:<3} {row.key:<16} {sample.rate:>9,.0f}/s  "
                    f"client {sample.client_us:6.1f} µs  redis {sample.server_us:5.1f} µs  "
                    f"others {sample.others:4.1f} s {sample.note}",
                    file=sys.stderr,
                    flush=True,
                )
    report(args, table, levels)


# --- profile ------------------------------------------------------------------------------

Func = tuple[str, int, str]  # pstats' (file, line, function)
REDIS_PY = "site-packages/redis/"
POOL_FUNCS = {"get_connection", "release", "ensure_connection", "can_read_destructive"}
POOL_FUNCS |= {"get_available_connection", "_maybe_pool_lock", "can_get_connection"}
CATEGORIES: list[tuple[str, Callable[[str, str], bool]]] = [
    (
        "redis-py: packing commands (pure Python)",
        lambda f, n: REDIS_PY in f and (n.startswith("pack_command") or "encoders.py" in f),
    ),
    (
        "redis-py: reading and parsing replies",
        lambda f, n: f"{REDIS_PY}_parsers/" in f or (REDIS_PY in f and n == "read_response"),
    ),
    (
        "redis-py: connection pool (get/release, its Condition and timeout)",
        lambda f, n: (
            (REDIS_PY in f and n in POOL_FUNCS)
            or "asyncio/locks.py" in f
            or "asyncio/timeouts.py" in f
        ),
    ),
    ("redis-py: client, retry, observability, pipeline", lambda f, n: REDIS_PY in f),
    (
        "socket I/O, epoll, asyncio streams",
        lambda f, n: "socket" in n or "epoll" in n or "selector" in f or "asyncio/streams.py" in f,
    ),
    ("asyncio event loop, tasks, futures", lambda f, n: "/asyncio/" in f),
    (
        "runstate store code (checks, JSON, Call objects, batching)",
        lambda f, n: "runstate_stores/" in f,
    ),
    ("bench harness (building records, timestamps)", lambda f, n: f.endswith("bench/store.py")),
]
OTHER = "unattributed"


def categorize(stats: dict[Func, Any]) -> dict[str, float]:
    """Self time per category. Time in a function of no category (builtins, json, dataclasses)
    goes to its callers, in proportion to the time each call site spent in it, up to the first
    caller that has one."""
    shares = dict.fromkeys([*(name for name, _ in CATEGORIES), OTHER], 0.0)

    def category(func: Func) -> str | None:
        filename, _line, name = func
        return next((c for c, match in CATEGORIES if match(filename, name)), None)

    def give(func: Func, amount: float, depth: int) -> None:
        found = category(func)
        if found is not None:
            shares[found] += amount
            return
        callers: dict[Func, tuple[int, int, float, float]] = stats[func][4] if func in stats else {}
        weight = sum(ct for _, _, _, ct in callers.values())
        if depth > 30 or weight <= 0:
            shares[OTHER] += amount
            return
        for caller, (_, _, _, ct) in callers.items():
            give(caller, amount * ct / weight, depth + 1)

    for func, (_cc, _nc, tottime, _ct, _callers) in stats.items():
        give(func, tottime, 0)
    return shares


def profile(args: argparse.Namespace, server: RedisServer, work: Path) -> None:
    """Where the client's CPU goes per transition: one pass without and one under cProfile."""
    bench = Bench(args, server, work)
    c = int(args.concurrency.split(",")[0])
    for key, label, max_batch in (
        ("runstate", "RedisStateStore.acommit (batched)", MAX_BATCH),
        ("unbatched", "RedisStateStore.acommit, max_batch=1", 1),
    ):
        results: list[dict[str, Any]] = []
        out = work / f"{key}.prof"
        for extra in ([], ["--profile", str(out)]):
            bench.fresh()
            argv = [*bench.store_argv(c, max_batch=max_batch), *extra]
            proc = subprocess.run(argv, capture_output=True, text=True, env=bench.env(False))
            if proc.returncode != 0:
                raise RuntimeError(proc.stderr[-3000:])
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        plain, profiled = results
        batch = f", mean batch {plain['mean_batch']:.1f}" if "mean_batch" in plain else ""
        ops = profiled["ops"]
        stats: dict[Func, Any] = pstats.Stats(str(out)).stats  # type: ignore[attr-defined]
        shares = categorize(stats)
        total = sum(shares.values())
        print(f"### Profile: {label}, concurrency {c}, {ops} transitions\n")
        print(
            f"Client CPU per transition: {1e6 * plain['cpu'] / ops:.0f} µs unprofiled "
            f"({ops / plain['seconds']:,.0f}/s{batch}); {1e6 * total / ops:.0f} µs under cProfile, "
            "which inflates pure-Python code most, so read the shares, not the µs.\n"
        )
        print("| where (self time; builtins and stdlib charged to their callers) | share |")
        print("|---|---:|")
        for category, t in sorted(shares.items(), key=lambda kv: -kv[1]):
            print(f"| {category} | {100 * t / total:.0f}% |")
        print()
        top = sorted(stats.items(), key=lambda kv: -kv[1][2])[:10]
        print("Top functions by self time (calls per transition):\n")
        for (filename, line, name), (_cc, ncalls, tottime, _ct, _c) in top:
            short = filename.split("site-packages/")[-1].split(str(ROOT) + "/")[-1]
            share = 100 * tottime / total
            print(f"- {short}:{line} {name}: {share:.0f}%, {ncalls / ops:.1f} calls")
        print()


# --- entry points -------------------------------------------------------------------------


@contextlib.contextmanager
def redis_server(work: Path) -> Iterator[RedisServer]:
    server = RedisServer(work / "redis", die_with_parent=True).start()
    try:
        yield server
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--runs", type=int, default=3000, help="runs (entities, keys) per row")
    parser.add_argument("--concurrency", default="1,16,64", help="comma-separated levels")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-diagnose", dest="diagnose", action="store_false")
    parser.add_argument("--rows", default="", help="only these rows (keys, comma-separated)")
    parser.add_argument("--profile", nargs="?", const="", default=None, help=argparse.SUPPRESS)
    # A child process: one timed pass of a Python store, JSON on stdout.
    parser.add_argument("--child", choices=("redis", "memory", "sync"), help=argparse.SUPPRESS)
    parser.add_argument("--url", default="", help=argparse.SUPPRESS)
    parser.add_argument("--max-connections", type=int, default=50, help=argparse.SUPPRESS)
    parser.add_argument("--max-batch", type=int, default=MAX_BATCH, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(asyncio.run(child_store(args))))
        return
    if not os.access(REDIS_BENCHMARK, os.X_OK):
        sys.exit(f"{REDIS_BENCHMARK} is missing (Debian package redis-tools)")
    work = Path(tempfile.mkdtemp(prefix="runstate-store-"))
    ok = False
    try:
        with redis_server(work) as server:
            if args.profile is not None:
                if args.concurrency == "1,16,64":
                    args.concurrency = "16"
                profile(args, server, work)
            else:
                run_bench(args, server, work)
        ok = True
    finally:
        if ok:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"logs kept in {work}", file=sys.stderr)


if __name__ == "__main__":
    main()
