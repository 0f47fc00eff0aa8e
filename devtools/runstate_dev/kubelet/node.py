"""The process kubelet itself: the node that decides what happens to each pod it sees.

Owns the dispatch of every pod object the informer delivers (level-triggered, never
blocking): bind it (unscheduled), start a `PodWorker` (bound, not terminal, never started),
pass it to its worker (running here), mark it lost (started by a previous kubelet), finish
its delete (terminal or never started here, with a deletionTimestamp), or leave it alone;
which uids this instance must never start again; the bound pods by namespace and name (what
the kubelet API serves logs of); the background tasks it keeps; and shutdown, which kills every
pod process it started. Must not talk to processes or write statuses
itself: workers, `recovery` and `binding` do.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client

from runstate_dev.imagestore import Image, ImageStore

from .api import PodApi, with_retries
from .binding import Binder
from .informer import PodInformer
from .logs import ContainerLogs
from .noderoot import NodeRoots
from .pod import Pod, log, pod_ref
from .recovery import mark_lost, was_started
from .stop import StopReason
from .worker import PodWorker

TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})


class ProcessKubelet(PodInformer):
    """Watches all pods; binds unbound ones to ``node_name`` and runs bound ones."""

    def __init__(
        self,
        api_client: client.ApiClient,
        node_name: str,
        *,
        pod_log_dir: Path | None = None,
        ready_file: Path | None = None,
        node_roots: NodeRoots | None = None,
        images: ImageStore | None = None,
        service_env: dict[str, str] | None = None,
        service_hosts: dict[str, tuple[str, ...]] | None = None,
    ) -> None:
        super().__init__(PodApi(api_client), ready_file=ready_file)
        self.node_name = node_name
        self.pod_log_dir = pod_log_dir
        # Each container instance's output (`kubectl logs`): under the pod log dir if any.
        self.container_logs = ContainerLogs(
            pod_log_dir or Path(tempfile.gettempdir()) / "runstate-kubelet"
        )
        self._bound: dict[tuple[str, str], Pod] = {}
        # With node roots (the kubelet runs as root in a mount namespace of its own), pods
        # get their volumes, user and private mounts; without, they run as plain processes.
        self.node_roots = node_roots
        self.isolation = node_roots is not None
        # Local images: a container whose image the store holds runs in that image's root
        # (which needs the isolation above); any other runs on the machine's root.
        self.images = images if self.isolation else None
        if images is not None and not self.isolation:
            log.warning("image store %s ignored: no mount namespace of its own", images.directory)
        # KUBERNETES_SERVICE_HOST/PORT... for containers of local images.
        self.service_env = dict(service_env or {})
        # ... and the /etc/hosts entries that name the `kubernetes` Service (`services`).
        self.service_hosts = dict(service_hosts or {})
        self._workers: dict[str, PodWorker] = {}
        self._worker_tasks: dict[str, asyncio.Task[None]] = {}
        # uids this instance must not start: finished here, or terminal/lost when seen.
        self._done: set[str] = set()
        self._binder = Binder(self.api, node_name, self.spawn)
        self._finalizing: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], what: str) -> asyncio.Task[Any]:
        """A background task the kubelet keeps a reference to; failures are logged."""
        task = asyncio.get_running_loop().create_task(coro, name=what)
        self._tasks.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("%s failed: %r", what, t.exception(), exc_info=t.exception())

        task.add_done_callback(done)
        return task

    def image_of(self, container: dict[str, Any]) -> Image | None:
        """The container's image when the image store holds it. Blocking (reads its config)."""
        reference = container.get("image")
        if self.images is None or not reference:
            return None
        return self.images.get(str(reference))

    # --- what the informer delivers (never blocks) --------------------------------------

    def bound_pod(self, namespace: str, name: str) -> Pod | None:
        """The latest object of a pod bound to a node, as the watch showed it."""
        return self._bound.get((namespace, name))

    def resync(self, pods: list[Pod]) -> None:
        seen = {pod["metadata"]["uid"] for pod in pods}
        self._bound.clear()
        for uid, worker in list(self._workers.items()):
            if uid not in seen:
                worker.request_stop(StopReason.GONE, 0)
        self._done &= seen
        self._finalizing &= seen
        for pod in pods:
            self.handle(pod)

    def handle(self, pod: Pod) -> None:
        meta, spec = pod["metadata"], pod.get("spec") or {}
        uid: str = meta["uid"]
        deleting = bool(meta.get("deletionTimestamp"))
        if spec.get("nodeName"):
            self._bound[(meta["namespace"], meta["name"])] = pod
        worker = self._workers.get(uid)
        if worker is not None:
            worker.observe(pod)
            return
        phase = (pod.get("status") or {}).get("phase")
        if uid in self._done:
            if deleting:
                self._finalize(pod)
            return
        if not spec.get("nodeName"):
            if not deleting:
                self._binder.bind(pod)
            return
        if phase in TERMINAL_PHASES:
            self._done.add(uid)
            if deleting:
                self._finalize(pod)
            return
        if deleting:
            # Bound but never started here: nothing to kill, finish the delete.
            self._done.add(uid)
            self._finalize(pod)
            return
        self._start(pod)

    def _start(self, pod: Pod) -> None:
        """A bound, live pod seen for the first time by this kubelet."""
        uid: str = pod["metadata"]["uid"]
        if not (pod.get("spec") or {}).get("containers"):
            self._done.add(uid)
            log.error("%s has no containers; not running it", pod_ref(pod))
            return
        if was_started(pod):
            self._done.add(uid)
            self.spawn(mark_lost(self.api, pod), f"mark lost {pod_ref(pod)}")
            return
        worker = PodWorker(self, pod)
        self._workers[uid] = worker
        self._worker_tasks[uid] = self.spawn(worker.run(), f"run {pod_ref(pod)}")

    def handle_deleted(self, pod: Pod) -> None:
        uid = pod["metadata"]["uid"]
        key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
        if (self._bound.get(key) or {}).get("metadata", {}).get("uid") == uid:
            del self._bound[key]
        worker = self._workers.get(uid)
        if worker is not None:
            worker.request_stop(StopReason.GONE, 0)
        self._done.discard(uid)
        self._finalizing.discard(uid)

    # --- workers and deletes ------------------------------------------------------------

    def worker_finished(self, worker: PodWorker) -> None:
        self._workers.pop(worker.uid, None)
        self._worker_tasks.pop(worker.uid, None)
        self._done.add(worker.uid)
        if worker.delete_pending():
            # The deletion arrived while the worker was finishing: it only updated worker.pod.
            self._finalize(worker.pod)

    def _finalize(self, pod: Pod) -> None:
        uid = pod["metadata"]["uid"]
        if uid in self._finalizing:
            return
        self._finalizing.add(uid)
        self.spawn(self.delete_now(pod), f"delete {pod_ref(pod)}")

    async def delete_now(self, pod: Pod) -> None:
        """Finish a graceful delete the way a kubelet does: delete with grace 0."""
        if await with_retries(f"delete {pod_ref(pod)}", lambda: self.api.delete_now(pod)):
            log.info("%s: deleted", pod_ref(pod))

    async def shutdown(self) -> None:
        """Kill every pod process this kubelet started and wait for the workers to end."""
        for worker in list(self._workers.values()):
            worker.request_stop(StopReason.SHUTDOWN, 0)
        tasks = list(self._worker_tasks.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=5)
            for task in pending:
                task.cancel()
        for task in list(self._tasks):
            task.cancel()
        if self.node_roots is not None:
            await self.node_roots.unmount_all()
