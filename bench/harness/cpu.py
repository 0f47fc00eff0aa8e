"""CPU time: of one process (with or without its reaped children), of the whole machine, and
per component over one measured span.

Owns reading /proc and the `Cpu` sampler. Must not decide which processes are components
(callers pass pids) nor print anything.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

MACHINE = "machine"  # the key of the machine's busy time in Cpu.used()
CORES = os.cpu_count() or 1


def cpu_seconds(pid: int, *, children: bool = True) -> float:
    """User + system CPU of a process so far; with `children`, of the children it reaped too
    (the kubelet's `sh` processes). 0 for a process that is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = fields[11:15] if children else fields[11:13]
    return sum(int(f) for f in ticks) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """Busy CPU time of the whole machine so far (all cores; /proc/stat without idle, iowait)."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


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
