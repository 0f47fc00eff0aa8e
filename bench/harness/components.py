"""The benchmark's own components on a dev control plane: the process kubelet and an operator
(runstate's, or bare kopf), each started as the devcluster would and ready before it returns.

Owns their command lines, logs and readiness. Must not measure anything; the control plane and
Redis themselves come from runstate_dev (ControlPlane, RedisServer), started by the scripts.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from harness.metrics import free_port, wait_answering
from harness.procs import Proc, Procs, check_alive, spawn
from harness.waiting import wait_file

NODE = "runstate-local"  # the dev control plane's Node
WRITES = "runstate_api_writes_total"  # the operator's counter of its API writes
KOPF_SETTLE = 2.0  # s after the operator answers: kopf's start-up, kept out of the measurement


def operator_path(path: str | None) -> dict[str, str]:
    """The environment that makes `python -m runstate` import the operator from `path`
    (bench/compare.py: a baseline extracted from git), ahead of the installed one."""
    return {"PYTHONPATH": str(Path(path).resolve())} if path else {}


async def start_kubelet(work: Path, env: dict[str, str], procs: Procs) -> Proc:
    """The process kubelet, as the control plane would start it (it skips terminal pods),
    once its ready file is there."""
    kubelet = spawn(
        [
            *(sys.executable, "-m", "runstate_dev", "kubelet"),
            *("--kubeconfig", env["KUBECONFIG"], "--node", NODE),
            *("--pod-log-dir", str(work / "pods"), "--ready-file", str(work / "kubelet.ready")),
            *("--state-dir", str(work / "kubelet")),
        ],
        env,
        work / "kubelet.log",
    )
    procs.append(kubelet)
    await wait_file(work / "kubelet.ready", kubelet, "process kubelet", limit=60)
    return kubelet


async def start_operator(
    work: Path,
    env: dict[str, str],
    procs: Procs,
    *,
    namespace: str,
    redis_url: str,
    source: str | None = None,
    log: str = "operator.log",
) -> tuple[Proc, str]:
    """runstate's operator on `namespace` (from `source`, a baseline's operator/, if given),
    once its metrics answer and kopf has started; and its metrics URL."""
    port = free_port()
    operator = spawn(
        [sys.executable, "-m", "runstate", "operator", "--standalone", "--namespace", namespace],
        {
            **env,
            **operator_path(source),
            "RUNSTATE_REDIS_URL": redis_url,
            "RUNSTATE_METRICS_PORT": str(port),
            "RUNSTATE_METRICS_HOST": "127.0.0.1",
        },
        work / log,
    )
    procs.append(operator)
    metrics_url = f"http://127.0.0.1:{port}/metrics"
    await wait_answering(metrics_url, WRITES, operator)
    await _settle(operator)
    return operator, metrics_url


async def _settle(operator: Proc) -> None:
    """Let kopf's start-up (its first lists and watches) pass before anything is measured;
    an operator that exits meanwhile fails here."""
    await asyncio.sleep(KOPF_SETTLE)
    check_alive([operator], "the operator")
