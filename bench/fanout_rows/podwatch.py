"""A watch on one namespace's pods: when each appeared and when it reached a terminal phase,
by operation label, for pods in flight, spans and wall times.

Owns the watch stream and the timings taken from it. Must not create or change pods.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import aiohttp

TERMINAL = ("Succeeded", "Failed")


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
        resp.release()
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
        try:
            await self._read(resp)
            raise RuntimeError(f"pod watch of {self.namespace} ended (HTTP {resp.status})")
        except Exception as exc:
            for fut in self._waiters.values():  # nobody waits forever on a dead watch
                if not fut.done():
                    fut.set_exception(exc)
            raise
        finally:
            resp.release()

    async def _read(self, resp: Any) -> None:
        buffer = b""
        async for chunk in resp.content.iter_any():
            buffer += chunk
            while (newline := buffer.find(b"\n")) >= 0:
                line, buffer = buffer[:newline], buffer[newline + 1 :]
                if line.strip():
                    self._on(json.loads(line))

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
