"""Measuring one row once at one concurrency, on an emptied database: redis-benchmark (with
Redis's own counters checked) or a Python child process (with its checks and Redis's counters).

Owns running a row and turning its figures into a Sample. Must not loop over rounds or print
the report.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import redis

from harness.cpu import CORES, machine_busy_seconds
from harness.workdir import ROOT
from runstate_dev.redis import RedisServer
from runstate_stores.redis import MAX_BATCH
from store_rows.pystator import PYSTATOR_CHILD, ensure_hiredis, ensure_pystator
from store_rows.redisside import (
    REDIS_BENCHMARK,
    command_calls,
    commit_script,
    evalsha_command,
    server_cpu,
)
from store_rows.rows import Row, Sample
from store_rows.walk import WALK

ENTRY = ROOT / "bench/store.py"  # its --child runs one pass of a Python store


class Bench:
    """The server, its admin client and the baselines' environments, for every row."""

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
        return self._sample(n, rate, cpu=cpu, srv=srv, busy=busy1 - busy0, seconds=seconds)

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
            result["ops"],
            rate,
            cpu=result["cpu"],
            srv=result["server_cpu"],
            busy=result["busy"],
            seconds=0.0,
        )
        sample.note = note
        return sample

    def _sample(
        self, n: int, rate: float, *, cpu: float, srv: float, busy: float, seconds: float
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
        argv = [sys.executable, str(ENTRY), "--child", kind, "--url", self.url]
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
