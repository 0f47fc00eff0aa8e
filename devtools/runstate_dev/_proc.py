"""Child processes of the dev cluster: spawning, recording, health waits and stopping.

Every component (etcd, kube-apiserver, kube-controller-manager, the process
kubelet, redis) runs in its own session (process group) with its output in a log
file of the state dir, and is recorded in ``<state dir>/pids/<name>.json`` with
its pid and kernel start time.  The start time guards against pid reuse, so a
``down`` from another process, possibly much later, never kills a stranger.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

_SETPRIV = "/usr/bin/setpriv"  # util-linux, essential in Debian
# Components are stopped in this order: consumers before what they consume,
# the kubelet first so that it kills the pod processes it started.
STOP_ORDER = ("kubelet", "kube-controller-manager", "kube-apiserver", "etcd", "redis")


class ComponentError(RuntimeError):
    """A dev-cluster component failed to start or answer; the message names it."""


def free_port() -> int:
    """A currently free loopback TCP port (another process may take it before use)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 16384))
            text = handle.read().decode(errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(text.splitlines()[-lines:])


def _start_ticks(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat: the process start time, constant for its lifetime."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces; fields after it are plain.
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


@dataclass(frozen=True)
class ProcessRecord:
    name: str
    pid: int
    start_ticks: str
    log: str

    def alive(self) -> bool:
        ticks = _start_ticks(self.pid)
        if ticks is None or ticks != self.start_ticks:
            return False
        # A zombie is dead for our purposes (its parent just has not reaped it).
        try:
            state = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return False
        return state[state.rfind(")") + 2 :].split()[0] != "Z"


def pids_dir(state_dir: Path) -> Path:
    return state_dir / "pids"


def read_records(state_dir: Path) -> dict[str, ProcessRecord]:
    records: dict[str, ProcessRecord] = {}
    directory = pids_dir(state_dir)
    if not directory.is_dir():
        return records
    for path in directory.glob("*.json"):
        try:
            data = json.loads(path.read_text())
            records[data["name"]] = ProcessRecord(
                name=data["name"],
                pid=int(data["pid"]),
                start_ticks=str(data["start_ticks"]),
                log=str(data["log"]),
            )
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a torn or foreign file: nothing we can stop safely
    return records


def spawn(
    name: str,
    argv: Sequence[str],
    *,
    state_dir: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    die_with_parent: bool = False,
) -> tuple[subprocess.Popen[bytes], ProcessRecord]:
    """Start a component detached (own session, output to ``<state dir>/<name>.log``).

    ``die_with_parent``: the component gets SIGTERM when the thread that started
    it exits (Linux parent-death signal), so a test run that is killed leaves no
    cluster behind.  Off for ``up``, whose cluster must outlive the command.
    """
    if die_with_parent and os.path.exists(_SETPRIV):
        # setpriv sets the parent-death signal and execs the command (same pid);
        # a preexec_fn would do the same but is unsafe in threaded parents.
        argv = [_SETPRIV, "--pdeathsig", "TERM", "--", *argv]
    log_path = state_dir / f"{name}.log"
    with log_path.open("ab") as sink:
        sink.write(
            f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} starting: {' '.join(argv)}\n".encode()
        )
        sink.flush()
        try:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=None if env is None else dict(env),
                start_new_session=True,
            )
        except OSError as exc:
            raise ComponentError(f"{name}: cannot execute {argv[0]}: {exc}") from exc
    record = ProcessRecord(
        name=name, pid=proc.pid, start_ticks=_start_ticks(proc.pid) or "", log=str(log_path)
    )
    directory = pids_dir(state_dir)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{name}.json.tmp"
    tmp.write_text(json.dumps(record.__dict__))
    tmp.replace(directory / f"{name}.json")
    return proc, record


def stop_record(
    state_dir: Path,
    record: ProcessRecord,
    *,
    timeout: float = 10.0,
    proc: subprocess.Popen[bytes] | None = None,
) -> None:
    """SIGTERM the component's process group, SIGKILL it after ``timeout``; forget it."""
    if record.alive():
        _signal_group(record.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                break
            if proc is None and not record.alive():
                break
            time.sleep(0.05)
        else:
            _signal_group(record.pid, signal.SIGKILL)
    # Stragglers of the group (children the leader left behind) go too, unless
    # the pid now belongs to a stranger.  While any member of our group lives,
    # the kernel does not hand its id out as a new pid, so "no such pid" is safe.
    if _start_ticks(record.pid) in (None, record.start_ticks):
        _signal_group(record.pid, signal.SIGKILL)
    if proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
    with contextlib.suppress(FileNotFoundError):
        (pids_dir(state_dir) / f"{record.name}.json").unlink()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop_all(state_dir: Path, names: Sequence[str] | None = None) -> list[str]:
    """Stop recorded components (all, or the named ones) in dependency order."""
    records = read_records(state_dir)
    wanted = list(records) if names is None else [n for n in names if n in records]
    ordered = [n for n in STOP_ORDER if n in wanted] + sorted(
        n for n in wanted if n not in STOP_ORDER
    )
    for name in ordered:
        stop_record(state_dir, records[name])
    return ordered


def wait_until(
    check: Callable[[], bool],
    *,
    name: str,
    what: str,
    log: Path,
    timeout: float,
    proc: subprocess.Popen[bytes] | None = None,
    interval: float = 0.1,
) -> None:
    """Poll ``check`` until true; raise with the component's log tail on exit or timeout."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise ComponentError(
                f"{name} exited with code {proc.returncode} while waiting for {what}; "
                f"last lines of {log}:\n{log_tail(log)}"
            )
        if check():
            return
        if time.monotonic() > deadline:
            raise ComponentError(
                f"{name}: no {what} after {timeout:.0f}s; last lines of {log}:\n{log_tail(log)}"
            )
        time.sleep(interval)


def http_ok(
    url: str,
    *,
    context: ssl.SSLContext | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 2.0,
) -> bool:
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return 200 <= int(response.status) < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False
