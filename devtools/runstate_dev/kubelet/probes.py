"""Readiness and liveness probes of a running container, as the kubelet's prober runs them.

Owns one probe attempt (``httpGet`` to the pod's IP, which here is the node's loopback since
pods share the host's network; ``tcpSocket``; ``exec`` inside the container's mount and UTS
namespaces and root, with its user and env, through ``nsenter``) and the prober loop:
``initialDelaySeconds``, ``periodSeconds``, ``timeoutSeconds``, ``successThreshold`` and
``failureThreshold`` with the kubelet's defaults, reporting each change of the result and
every failure (the kubelet records an Unhealthy event for each). ``startupProbe`` is not
run. Must not write status or stop processes: the worker does, from the callbacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from .pod import HOST_IP
from .process import Identity

#: ``report(result, failure, changed)``: the probe's result, the last attempt's failure message
#: ("" when it succeeded), and whether the result just changed.
Report = Callable[[bool, str, bool], Awaitable[None]]


@dataclass(frozen=True)
class Target:
    """The container a probe looks at: its spec, its process, and how to exec in it."""

    container: dict[str, Any]
    pid: int
    env: dict[str, str]
    identity: Identity | None
    isolated: bool  # in a mount namespace and root of its own (exec goes through nsenter)


def _port(container: dict[str, Any], port: Any) -> int:
    """A probe's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for entry in container.get("ports") or []:
        if entry.get("name") == port:
            return int(entry["containerPort"])
    raise ValueError(f"port {port!r} is not a port of the container")


async def _http_get(target: Target, spec: dict[str, Any]) -> tuple[bool, str]:
    port = _port(target.container, spec.get("port"))
    host = spec.get("host") or HOST_IP
    path = spec.get("path") or "/"
    context: ssl.SSLContext | None = None
    if str(spec.get("scheme") or "HTTP").upper() == "HTTPS":
        # The kubelet does not verify a probe's certificate.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    headers = {"Host": f"{host}:{port}", "User-Agent": "kube-probe/1.20", "Accept": "*/*"}
    headers.update({h["name"]: h["value"] for h in spec.get("httpHeaders") or []})
    request = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    reader, writer = await asyncio.open_connection(host, port, ssl=context)
    try:
        writer.write((request + "Connection: close\r\n\r\n").encode())
        line = await reader.readline()
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
    parts = line.decode(errors="replace").split()
    code = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    if 200 <= code < 400:
        return True, ""
    return False, f"HTTP probe failed with statuscode: {code}"


async def _tcp_socket(target: Target, spec: dict[str, Any]) -> tuple[bool, str]:
    port = _port(target.container, spec.get("port"))
    host = spec.get("host") or HOST_IP
    _, writer = await asyncio.open_connection(host, port)
    writer.close()
    return True, ""


async def _exec(target: Target, spec: dict[str, Any]) -> tuple[bool, str]:
    argv = [str(a) for a in spec.get("command") or []]
    if target.isolated:
        enter = ["nsenter", f"--target={target.pid}", "--mount", "--uts", "--root", "--wd"]
        if target.identity is not None:
            enter += [f"--setgid={target.identity.gid}", f"--setuid={target.identity.uid}"]
        argv = [*enter, *argv]
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=target.env,
    )
    try:
        output, _ = await proc.communicate()
    except asyncio.CancelledError:  # timed out
        proc.kill()
        raise
    if proc.returncode == 0:
        return True, ""
    text = output.decode(errors="replace").strip()[-1024:]
    return False, text or f"command {argv} exited with {proc.returncode}"


async def attempt(target: Target, probe: dict[str, Any]) -> tuple[bool, str]:
    """One probe attempt: (success, the failure's message)."""
    timeout = float(probe.get("timeoutSeconds") or 1)
    handlers = {"httpGet": _http_get, "tcpSocket": _tcp_socket, "exec": _exec}
    kind = next((k for k in handlers if k in probe), None)
    if kind is None:
        return False, f"unsupported probe handler {sorted(probe)}"
    try:
        async with asyncio.timeout(timeout):
            return await handlers[kind](target, probe[kind] or {})
    except TimeoutError:
        return False, f"probe timed out after {timeout:g}s"
    except (OSError, ValueError) as exc:
        return False, str(exc)


async def run(
    target: Target, probe: dict[str, Any], initial: bool, report: Report, over: asyncio.Event
) -> None:
    """Probe until ``over`` is set. The result starts as ``initial`` and changes after
    ``successThreshold`` successes or ``failureThreshold`` failures in a row;
    ``report(result, failure, changed)`` after every failed attempt and every change."""
    period = float(probe.get("periodSeconds") or 10)
    success_needed = int(probe.get("successThreshold") or 1)
    failure_needed = int(probe.get("failureThreshold") or 3)
    result, streak_ok, streak_bad = initial, 0, 0
    delay = float(probe.get("initialDelaySeconds") or 0)
    while not await _wait(over, delay):
        delay = period
        ok, failure = await attempt(target, probe)
        if over.is_set():
            return
        streak_ok, streak_bad = (streak_ok + 1, 0) if ok else (0, streak_bad + 1)
        new = result
        if ok and streak_ok >= success_needed:
            new = True
        elif not ok and streak_bad >= failure_needed:
            new = False
        changed, result = new != result, new
        if not ok or changed:
            await report(result, failure, changed)


async def _wait(event: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds`` unless ``event`` is set first; whether it is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)
    return event.is_set()


Spawn = Callable[[Coroutine[Any, Any, Any], str], "asyncio.Task[Any]"]


class Prober:
    """The readiness and liveness probes of one running container."""

    def __init__(self, target: Target, spawn: Spawn, readiness: Report, liveness: Report) -> None:
        self.target = target
        self._spawn = spawn
        self._reports = {"readinessProbe": readiness, "livenessProbe": liveness}
        self._over = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []

    @property
    def ready_at_start(self) -> bool:
        """Ready as soon as it runs: the container has no readiness probe."""
        return not self.target.container.get("readinessProbe")

    def start(self) -> None:
        for kind, report in self._reports.items():
            probe = self.target.container.get(kind)
            if probe:
                initial = kind == "livenessProbe"  # live until proven dead, unready until ready
                self._tasks.append(
                    self._spawn(run(self.target, probe, initial, report, self._over), kind)
                )

    async def stop(self) -> None:
        """Stop probing; an attempt (or report) under way finishes first, within its timeout."""
        self._over.set()
        if not self._tasks:
            return
        longest = max(
            float((self.target.container.get(kind) or {}).get("timeoutSeconds") or 1)
            for kind in self._reports
        )
        _, pending = await asyncio.wait(self._tasks, timeout=longest + 5)
        for task in pending:
            task.cancel()
