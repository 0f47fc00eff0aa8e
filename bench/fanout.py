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
from pathlib import Path

from fanout_rows.suites import Setup, bench_pod, bench_pyinfra, bench_ssh
from harness.procs import Procs, stop_all
from harness.workdir import ROOT, scratch
from runstate_dev import runnerroot
from runstate_dev.cluster import ControlPlane
from runstate_dev.hosts import MAX_HOSTS, HostFleet
from runstate_dev.redis import RedisServer


def parse(argv: list[str] | None = None) -> argparse.Namespace:
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
    args = parser.parse_args(argv)
    args.ssh = args.connector == "ssh"
    if args.pyinfra and not args.ssh:
        parser.error("--pyinfra needs --connector ssh")
    if args.hosts is None:
        args.hosts = 50 if args.ssh else 500
    if args.ssh and not 1 <= args.hosts <= MAX_HOSTS:
        parser.error(f"--hosts: 1 to {MAX_HOSTS} SSH test hosts")
    return args


def start_fleet(args: argparse.Namespace, work: Path, stack: contextlib.ExitStack) -> HostFleet:
    """The SSH test hosts, downed last (the stack unwinds in reverse)."""
    # Before the control plane, which would refresh the default root on its own.
    runnerroot.ensure(ROOT, root=Path(args.runner_root))
    # Started from this (main) thread: die_with_parent follows the thread.
    fleet = HostFleet(work / "hosts", die_with_parent=True)
    stack.callback(fleet.down)
    fleet.up(args.hosts)
    return fleet


def run(args: argparse.Namespace, work: Path) -> None:
    """Everything up, the suite, everything down in reverse: operator and kubelet, then
    Redis, the control plane, the hosts."""
    procs: Procs = []
    with contextlib.ExitStack() as stack:
        fleet = start_fleet(args, work, stack) if args.ssh else None
        plane = ControlPlane(work / "cluster", kubelet=False, die_with_parent=True).start()
        stack.callback(plane.stop)
        redis = RedisServer(work / "redis", die_with_parent=True).start()
        stack.callback(redis.stop)
        stack.callback(stop_all, procs)
        setup = Setup(
            work=work,
            kubeconfig=str(plane.kubeconfig),
            redis_url=redis.url,
            procs=procs,
            parallel=args.parallel,
            operator_source=args.operator_path,
            runner_root=args.runner_root if args.ssh else None,
        )
        if fleet is not None and args.pyinfra:
            asyncio.run(bench_pyinfra(setup, fleet))
        elif fleet is not None:
            asyncio.run(bench_ssh(setup, fleet))
        else:
            asyncio.run(bench_pod(setup, hosts=args.hosts))


def main() -> None:
    args = parse()
    with scratch("runstate-fanout-") as work:
        run(args, work)


if __name__ == "__main__":
    main()
