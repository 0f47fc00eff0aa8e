"""Scheduling, kube-scheduler's one job here: bind an unscheduled pod to this kubelet's node.

Owns the binding through the `pods/binding` subresource (with retries), and making sure one
pod has at most one binding in flight. Must not run or finish pods; a pod already gone or
already bound (404/409) is simply left alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from .api import PodApi, with_retries
from .pod import Pod, log, pod_ref

Spawn = Callable[[Coroutine[Any, Any, Any], str], "asyncio.Task[Any]"]


class Binder:
    """Binds pods to ``node_name``, in background tasks made by ``spawn``."""

    def __init__(self, api: PodApi, node_name: str, spawn: Spawn) -> None:
        self.api = api
        self.node_name = node_name
        self._spawn = spawn
        self._in_flight: set[str] = set()

    def bind(self, pod: Pod) -> None:
        """Start binding ``pod`` unless a binding of it is already under way. Never blocks."""
        uid = pod["metadata"]["uid"]
        if uid in self._in_flight:
            return
        self._in_flight.add(uid)
        self._spawn(self._bind(pod, uid), f"bind {pod_ref(pod)}")

    async def _bind(self, pod: Pod, uid: str) -> None:
        try:
            bound = await with_retries(
                f"bind {pod_ref(pod)}", lambda: self.api.bind(pod, self.node_name)
            )
            if bound:
                log.info("%s: bound to %s", pod_ref(pod), self.node_name)
        finally:
            self._in_flight.discard(uid)
