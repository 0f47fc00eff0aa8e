"""The pod informer: list + watch of every pod in the cluster, for the kubelet.

Owns the paged list (restarted when its continue token expires), the watch from the list's
resourceVersion (bookmarks on), decoding watch events, re-listing on 410 Gone, backoff when the
watch is interrupted, and the ready file written once the first list is handled. Handling is
level-triggered on the latest pod object, so a re-list never loses an event.

Must not act on pods itself: every pod goes to the subclass's `handle` or `handle_deleted`,
and after each list the complete set to `resync`. Those run inside the watch loop and must
never block; processes, status writes, bindings and deletes belong in tasks of their own.
"""

from __future__ import annotations

import abc
import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp

from .api import ApiCallError, PodApi
from .pod import Pod, log


class _Expired(Exception):
    """The watch's resourceVersion is too old (410 Gone): re-list."""


class PodInformer(abc.ABC):
    """List + watch all pods forever, handing each pod object to the subclass."""

    def __init__(self, api: PodApi, *, ready_file: Path | None = None) -> None:
        self.api = api
        self._ready_file = ready_file

    @abc.abstractmethod
    def resync(self, pods: list[Pod]) -> None:
        """After a (re-)list: `pods` are all pods there are; anything else is gone."""

    @abc.abstractmethod
    def handle(self, pod: Pod) -> None:
        """A pod was added or changed (or listed): its latest object."""

    @abc.abstractmethod
    def handle_deleted(self, pod: Pod) -> None:
        """A pod object was removed from the API server."""

    async def run(self) -> None:
        """List + watch forever; returns only when cancelled."""
        resource_version: str | None = None
        backoff = 0.5
        while True:
            try:
                if resource_version is None:
                    resource_version = await self._relist()
                    if self._ready_file is not None:
                        await asyncio.to_thread(self._ready_file.write_text, "ready\n")
                resource_version = await self._watch(resource_version)
                backoff = 0.5
            except _Expired:
                log.info("watch expired (410 Gone); re-listing pods")
                resource_version = None
            except (ApiCallError, aiohttp.ClientError, TimeoutError, ValueError) as exc:
                log.warning("pod watch interrupted: %r; retrying in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    async def _relist(self) -> str:
        pods, resource_version = await self._list()
        self.resync(pods)
        log.info("listed %d pods at resourceVersion %s", len(pods), resource_version)
        return resource_version

    async def _list(self) -> tuple[list[Pod], str]:
        """Every pod, page by page, and the resourceVersion of the list."""
        pods: list[Pod] = []
        cont: str | None = None
        while True:
            try:
                page = await self.api.list_pods(cont=cont)
            except ApiCallError as exc:
                if exc.status == 410:  # continue token expired mid-list
                    pods, cont = [], None
                    continue
                raise
            pods.extend(page.get("items") or [])
            cont = page.get("metadata", {}).get("continue")
            if not cont:
                resource_version: str = page["metadata"]["resourceVersion"]
                return pods, resource_version

    async def _watch(self, resource_version: str) -> str:
        response = await self.api.watch_pods(resource_version)
        try:
            if response.status == 410:
                raise _Expired()
            if response.status != 200:
                body = (await response.read()).decode(errors="replace")
                raise ApiCallError("watch pods", response.status, body)
            buffer = b""
            async for chunk in response.content.iter_any():
                buffer += chunk
                while (newline := buffer.find(b"\n")) >= 0:
                    line, buffer = buffer[:newline], buffer[newline + 1 :]
                    if line.strip():
                        resource_version = self._on_event(json.loads(line), resource_version)
        finally:
            response.release()
        return resource_version

    def _on_event(self, event: dict[str, Any], resource_version: str) -> str:
        kind = event.get("type")
        obj = event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise _Expired()
            raise ApiCallError("watch pods", int(obj.get("code") or 0), json.dumps(obj))
        new_version = str(obj.get("metadata", {}).get("resourceVersion") or resource_version)
        if kind == "BOOKMARK":
            return new_version
        if kind == "DELETED":
            self.handle_deleted(obj)
        else:
            self.handle(obj)
        return new_version
