"""One pod's life on the node: the pod worker, from its environment to its final status.

Owns the lifecycle of one pod this kubelet runs: wait for its volumes (ContainerCreating and a
FailedMount event while one cannot be set up) and its env and user (CreateContainerConfigError
while a reference is missing), start its process (in its own mount namespace with its volumes
and user, when the kubelet can isolate pods), write Running (unless it exits within
`FAST_EXIT_SECONDS`, as a status manager batches updates), enforce activeDeadlineSeconds and
the ephemeral-storage limit, stop it for a `StopReason` (graceful or at once), write the final
Succeeded/Failed status, and finish a graceful delete. Only the first container runs; with
restartPolicy Always (or OnFailure, after a failure) it runs again in the same pod, after the
kubelet's back-off (CrashLoopBackOff, restartCount, lastState), with fresh volumes.

Must not watch pods or decide which pods to run (`node`), and must never block the watch loop:
`observe` and `request_stop` only record and schedule.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runstate_dev.imagestore import Image

from . import probes, process, runtime, security, termination, volumes
from .api import ApiCallError, with_retries
from .env import ConfigError, container_env, expand
from .logs import LogWriter
from .pod import Pod, log, now, pod_ref
from .status import backoff_status, running_status, terminal_status, waiting_status
from .stop import DEFAULT_GRACE_SECONDS, StopReason, pod_failure
from .storage import EVICTED_STORAGE_MESSAGE, pod_storage_limit, watch_storage
from .volumes import VolumeError

if TYPE_CHECKING:
    from .node import ProcessKubelet

FAST_EXIT_SECONDS = 0.05
#: The kubelet's restart back-off: none for the first restart, then 10 s doubling up to 5 min.
BACKOFF_START_SECONDS = 10
BACKOFF_MAX_SECONDS = 300
_CONFIG_RETRY_SECONDS = 2.0


class PodWorker:
    """Runs one pod's process from start to its final status (and final delete)."""

    def __init__(self, kubelet: ProcessKubelet, pod: Pod) -> None:
        self.kubelet = kubelet
        self.pod = pod
        self.uid: str = pod["metadata"]["uid"]
        self.ref = pod_ref(pod)
        self._proc: asyncio.subprocess.Process | None = None
        self._stop_reason: StopReason | None = None
        self._stop_requested = asyncio.Event()
        self._start_time = now()
        self._eviction_message = ""
        self._deleted = False
        self._image: Image | None = None  # the container's local image, when the store has it
        self._image_id = ""
        # Restarts (restartPolicy Always / OnFailure): how many, and how the last run ended.
        self._restarts = 0
        self._last_state: dict[str, Any] | None = None
        self._restart_due = False

    def _abandoned(self) -> bool:
        """Stopped with no grace and no status (the pod is gone, or the kubelet stops)."""
        return self._stop_reason is not None and self._stop_reason.abandons_pod

    # --- called from the watch loop: must never block --------------------------------

    def observe(self, pod: Pod) -> None:
        self.pod = pod
        meta = pod["metadata"]
        if meta.get("deletionTimestamp"):
            grace = meta.get("deletionGracePeriodSeconds")
            if grace is None:
                grace = pod["spec"].get("terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS)
            self.request_stop(StopReason.DELETED, int(grace))

    def request_stop(self, reason: StopReason, grace: int) -> None:
        if self._abandoned():
            return
        if reason.abandons_pod:
            # The pod object is gone (or the kubelet stops): no grace, no status.
            self._stop_reason = reason
            self._stop_requested.set()
            if self._proc is not None:
                process.signal_group(self._proc.pid, signal.SIGKILL)
            return
        if self._stop_reason is not None:
            return  # already terminating; the first reason decides the status
        self._stop_reason = reason
        self._stop_requested.set()
        if self._proc is not None and self._proc.returncode is None:
            self.kubelet.spawn(self._kill_gracefully(self._proc, grace), f"kill {self.ref}")

    async def _kill_gracefully(self, proc: asyncio.subprocess.Process, grace: int) -> None:
        log.info(
            "%s: stopping (%s): SIGTERM to process group %d, grace %ds",
            self.ref,
            self._stop_reason,
            proc.pid,
            grace,
        )
        process.signal_group(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout=max(grace, 0))
        except TimeoutError:
            log.info("%s: grace period over, SIGKILL", self.ref)
            process.signal_group(proc.pid, signal.SIGKILL)

    def _evict(self, proc: asyncio.subprocess.Process, used: int, limit_text: str) -> None:
        if proc.returncode is not None or self._stop_reason is not None:
            return  # already over or terminating: that decides the status
        log.info(
            "%s: ephemeral storage %d bytes exceeds the limit %s: evicting, SIGKILL to "
            "process group %d",
            self.ref,
            used,
            limit_text,
            proc.pid,
        )
        # The kubelet evicts for a storage limit with grace period 0.
        self._stop_reason = StopReason.EVICTED
        self._eviction_message = EVICTED_STORAGE_MESSAGE.format(limit_text)
        self._stop_requested.set()
        process.signal_group(proc.pid, signal.SIGKILL)

    # --- the worker task ------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self._run()
        except asyncio.CancelledError:
            if self._proc is not None:
                process.signal_group(self._proc.pid, signal.SIGKILL)
            raise
        except Exception:
            log.exception("%s: worker failed", self.ref)
        finally:
            self.kubelet.worker_finished(self)

    async def _run(self) -> None:
        spec = self.pod["spec"]
        container = spec["containers"][0]
        deadline = spec.get("activeDeadlineSeconds")
        grace = int(spec.get("terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS))
        timer: asyncio.Task[None] | None = None
        if deadline is not None:
            timer = self.kubelet.spawn(
                self._deadline(int(deadline), grace), f"deadline of {self.ref}"
            )
        try:
            while True:
                self._restart_due = False
                await self._run_container(container)
                if not self._restart_due or not await self._back_off(container):
                    break
        finally:
            if timer is not None:
                timer.cancel()

    def _history(self) -> dict[str, Any]:
        """restartCount and lastState for every status write."""
        return {"restart_count": self._restarts, "last_state": self._last_state}

    def _restart(self, succeeded: bool, terminated: dict[str, Any]) -> bool:
        """Whether the container runs again (restartPolicy, and not stopped by the kubelet
        but for a failed liveness probe); if so its end becomes lastState."""
        policy = self.pod["spec"].get("restartPolicy") or "Always"
        restartable = self._stop_reason in (None, StopReason.LIVENESS)
        if not restartable or policy == "Never" or (policy == "OnFailure" and succeeded):
            return False
        if self._stop_reason is StopReason.LIVENESS:
            self._stop_reason = None
            self._stop_requested.clear()
        self._last_state = {"terminated": terminated}
        self._restart_due = True
        log.info(
            "%s: container ended (exit code %s), restartPolicy %s: restarting",
            self.ref,
            terminated.get("exitCode"),
            policy,
        )
        return True

    async def _back_off(self, container: dict[str, Any]) -> bool:
        """Wait out the restart back-off (CrashLoopBackOff); False when the pod was stopped
        meanwhile (its final status is then written)."""
        delay = 0
        if self._restarts:
            delay = min(BACKOFF_START_SECONDS * 2 ** (self._restarts - 1), BACKOFF_MAX_SECONDS)
        if delay and self._stop_reason is None:
            meta = self.pod["metadata"]
            message = (
                f"back-off {delay}s restarting failed container={container['name']} "
                f"pod={meta['name']}_{meta['namespace']}({meta['uid']})"
            )
            await self._write_status(
                backoff_status(
                    self.pod,
                    self._start_time,
                    message,
                    restart_count=self._restarts,
                    last_state=self._last_state or {},
                    image_id=self._image_id,
                )
            )
            await self._record_event("Warning", "BackOff", "Back-off restarting failed container")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_requested.wait(), delay)
        if self._stop_reason is not None:
            await self._finish_after_restarts()
            return False
        self._restarts += 1
        return True

    async def _finish_after_restarts(self) -> None:
        """Final status of a pod stopped between two runs of its container."""
        if self._abandoned() or self._last_state is None:
            return
        terminated = self._last_state["terminated"]
        stopped_by = pod_failure(self._stop_reason, self._eviction_message)
        pod_reason, pod_message = stopped_by or (None, None)
        succeeded = terminated.get("exitCode") == 0 and stopped_by is None
        await self._write_status(
            terminal_status(
                self.pod,
                start_time=self._start_time,
                terminated=terminated,
                phase="Succeeded" if succeeded else "Failed",
                container_id=str(terminated.get("containerID") or ""),
                image_id=self._image_id,
                reason=pod_reason,
                message=pod_message,
                restart_count=self._restarts,
            )
        )
        await self._delete_if_deleting()

    async def _deadline(self, seconds: int, grace: int) -> None:
        await asyncio.sleep(seconds)
        log.info("%s: activeDeadlineSeconds=%d exceeded", self.ref, seconds)
        self.request_stop(StopReason.DEADLINE, grace)

    async def _run_container(self, container: dict[str, Any]) -> None:
        base = await process.make_scratch(self.pod["metadata"]["name"])
        try:
            ready = await self._setup_when_ready(container, base)
            if ready is None:
                await self._finish_unstarted()
                return
            env, plan = ready
            argv = self._argv(container, env)
            if not argv:
                await self._finish_unstarted(
                    f"container {container['name']!r} has no command: the runstate process "
                    "kubelet runs command + args as a local process and cannot run an image"
                )
                return
            await self._run_process(container, argv, env, base, plan)
        finally:
            await process.remove_scratch(base)

    def _argv(self, container: dict[str, Any], env: dict[str, str]) -> list[str]:
        """command + args, ``$(VAR)``-expanded; with a local image, resolved against its
        Entrypoint and Cmd as a runtime does."""
        command = [expand(str(a), env) for a in container.get("command") or []]
        args = [expand(str(a), env) for a in container.get("args") or []]
        if self._image is None:
            return [*command, *args]
        config = self._image.config
        return runtime.resolve_argv(command, args, config.entrypoint, config.cmd)

    def _output_path(self, base: Path) -> Path:
        """The pod's output log: in the kubelet's pod log dir when it keeps one."""
        meta = self.pod["metadata"]
        log_dir = self.kubelet.pod_log_dir
        if log_dir is None:
            return base / "output.log"
        return log_dir / f"{meta['namespace']}_{meta['name']}_{self.uid}.log"

    def _storage_limit(self) -> tuple[int, str] | None:
        try:
            return pod_storage_limit(self.pod)
        except ValueError as exc:  # the API server validates quantities: not expected
            log.warning("%s: ephemeral-storage limit not enforced: %s", self.ref, exc)
            return None

    async def _run_process(
        self,
        container: dict[str, Any],
        argv: list[str],
        env: dict[str, str],
        base: Path,
        plan: process.LaunchPlan | None,
    ) -> None:
        workdir, output = base / "work", self._output_path(base)
        writer = await asyncio.to_thread(self._log_writer, container, workdir, output)
        try:
            try:
                if plan is not None and plan.identity is not None:
                    await asyncio.to_thread(process.give_workdir, base, workdir, plan.identity)
                proc = await process.start(argv, env, workdir, writer.write_fd, plan)
            except OSError as exc:
                # What the real kubelet reports when the runtime cannot exec the command.
                await self._finish_unstarted(
                    f"failed to start container {container['name']!r}: {argv[0]}: {exc.strerror}"
                )
                return
            log.info("%s: started pid %d: %s", self.ref, proc.pid, argv)
            writer.named_for(proc.pid)
            await writer.start()
            await self._supervise_process(
                container, proc, env=env, base=base, writer=writer, plan=plan
            )
        finally:
            await writer.finish()

    def _log_writer(self, container: dict[str, Any], workdir: Path, output: Path) -> LogWriter:
        """The container instance's output pipe and files (`logs`). Blocking."""
        workdir.mkdir()
        return self.kubelet.container_logs.writer(
            self.pod, container["name"], self._restarts, output
        )

    async def _supervise_process(
        self,
        container: dict[str, Any],
        proc: asyncio.subprocess.Process,
        *,
        env: dict[str, str],
        base: Path,
        writer: LogWriter,
        plan: process.LaunchPlan | None,
    ) -> None:
        """From a started process to the container's end: restart or final status."""
        workdir, output, storage_limit = base / "work", writer.pod_output, self._storage_limit()
        self._proc = proc
        started_at = now()
        self._stop_if_requested_while_starting(proc)
        # The container's writable layer (its working directory), its log and its disk-backed
        # emptyDirs: what the kubelet counts as the pod's local ephemeral storage.
        layer = (plan.image.upper,) if plan is not None and plan.image is not None else ()
        local = (workdir, *layer, output, *volumes.empty_dirs(self.pod, base / "volumes"))
        target = probes.Target(
            container=container,
            pid=proc.pid,
            env=env,
            identity=None if plan is None else plan.identity,
            isolated=plan is not None,
        )
        returncode = await self._supervise(proc, started_at, storage_limit, local, target)
        finished_at = now()
        # The container is over: whatever it left running in its group goes too.
        process.signal_group(proc.pid, signal.SIGKILL)
        await writer.finish()  # all its output in the files before the status reads them
        code = termination.exit_code(returncode)
        log.info("%s: pid %d exited with code %d", self.ref, proc.pid, code)
        if self._abandoned():
            return
        terminated = await termination.exited(
            container,
            code=code,
            started_at=started_at,
            finished_at=finished_at,
            pid=proc.pid,
            output=output,
            message_file=base / termination.MESSAGE_FILE if plan is not None else None,
        )
        if self._restart(code == 0, {**terminated, "containerID": f"process://{proc.pid}"}):
            return
        await self._write_final_status(terminated, succeeded=code == 0, pid=proc.pid)
        await self._delete_if_deleting()

    def _stop_if_requested_while_starting(self, proc: asyncio.subprocess.Process) -> None:
        if self._abandoned():
            process.signal_group(proc.pid, signal.SIGKILL)
        elif self._stop_reason is not None:
            # Deleted (or past its deadline) while starting: stop it right away.
            reason, self._stop_reason = self._stop_reason, None
            self.request_stop(reason, 0)

    async def _supervise(
        self,
        proc: asyncio.subprocess.Process,
        started_at: str,
        storage_limit: tuple[int, str] | None,
        paths: tuple[Path, ...],
        target: probes.Target,
    ) -> int:
        """Until the process exits: Running status (unless it exits at once), its readiness
        and liveness probes, and the storage monitor when the pod has a limit. Returns the
        process's return code."""
        monitor: asyncio.Task[None] | None = None
        if storage_limit is not None and self._stop_reason is None:
            limit_bytes, limit_text = storage_limit
            monitor = self.kubelet.spawn(
                watch_storage(
                    limit_bytes,
                    paths,
                    over=lambda: proc.returncode is not None or self._stop_reason is not None,
                    evict=lambda used: self._evict(proc, used, limit_text),
                ),
                f"ephemeral storage of {self.ref}",
            )
        prober = probes.Prober(
            target,
            self.kubelet.spawn,
            readiness=lambda ready, failure, changed: self._readiness(
                proc.pid, started_at, ready, failure, changed
            ),
            liveness=self._liveness,
        )
        try:
            waiter = asyncio.ensure_future(proc.wait())
            done, _ = await asyncio.wait({waiter}, timeout=FAST_EXIT_SECONDS)
            if not done and not self._abandoned():
                await self._write_status(
                    running_status(
                        self.pod,
                        self._start_time,
                        started_at,
                        proc.pid,
                        image_id=self._image_id,
                        ready=prober.ready_at_start,
                        **self._history(),
                    )
                )
                prober.start()
            return await waiter
        finally:
            # Before the final status: a readiness write must not follow it.
            await prober.stop()
            if monitor is not None:
                monitor.cancel()

    async def _readiness(
        self, pid: int, started_at: str, ready: bool, failure: str, changed: bool
    ) -> None:
        if failure:
            await self._record_event("Warning", "Unhealthy", f"Readiness probe failed: {failure}")
        if changed and self._stop_reason is None:
            log.info("%s: readiness probe: %s", self.ref, "ready" if ready else "not ready")
            await self._write_status(
                running_status(
                    self.pod,
                    self._start_time,
                    started_at,
                    pid,
                    image_id=self._image_id,
                    ready=ready,
                    ready_since=now(),
                    **self._history(),
                )
            )

    async def _liveness(self, alive: bool, failure: str, changed: bool) -> None:
        if failure:
            await self._record_event("Warning", "Unhealthy", f"Liveness probe failed: {failure}")
        if changed and not alive:
            name = self.pod["spec"]["containers"][0]["name"]
            await self._record_event("Normal", "Killing", f"Container {name} failed liveness probe")
            grace = int(
                self.pod["spec"].get("terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS)
            )
            self.request_stop(StopReason.LIVENESS, grace)

    async def _write_final_status(
        self, terminated: dict[str, Any], *, succeeded: bool, pid: int
    ) -> None:
        # Stopped by the kubelet itself: the pod fails with the kubelet's reason, whatever
        # the exit code says.
        stopped_by = pod_failure(self._stop_reason, self._eviction_message)
        pod_reason, pod_message = stopped_by or (None, None)
        await self._write_status(
            terminal_status(
                self.pod,
                start_time=self._start_time,
                terminated=terminated,
                phase="Succeeded" if succeeded and stopped_by is None else "Failed",
                container_id=f"process://{pid}",
                image_id=self._image_id,
                reason=pod_reason,
                message=pod_message,
                **self._history(),
            )
        )

    async def _finish_unstarted(self, start_error: str | None = None) -> None:
        """Final status of a pod whose process never ran (start error, or stopped first)."""
        if self._abandoned():
            return
        if start_error is not None:
            log.warning("%s: %s", self.ref, start_error)
            if self._restart(False, termination.never_started(now(), start_error)):
                return
        stopped_by = pod_failure(self._stop_reason, self._eviction_message)
        pod_reason, pod_message = stopped_by or (None, None)
        await self._write_status(
            terminal_status(
                self.pod,
                start_time=self._start_time,
                terminated=termination.never_started(now(), start_error),
                phase="Failed",
                reason=pod_reason,
                message=pod_message,
                **self._history(),
            )
        )
        await self._delete_if_deleting()

    async def _delete_if_deleting(self) -> None:
        if self.pod["metadata"].get("deletionTimestamp") and self._stop_reason != StopReason.GONE:
            await self.kubelet.delete_now(self.pod)
            self._deleted = True

    def delete_pending(self) -> bool:
        """Deleted after the worker's own last look (e.g. while it wrote an eviction status)."""
        return (
            bool(self.pod["metadata"].get("deletionTimestamp"))
            and not self._deleted
            and not self._abandoned()
        )

    async def _write_status(self, status: dict[str, Any]) -> None:
        if self._stop_reason == StopReason.GONE:
            return
        try:
            written = await with_retries(
                f"status of {self.ref}", lambda: self.kubelet.api.patch_status(self.pod, status)
            )
        except ApiCallError as exc:
            log.error("%s: cannot write status %s: %s", self.ref, status.get("phase"), exc)
            return
        if not written:
            log.info("%s: gone before its %s status was written", self.ref, status.get("phase"))

    async def _setup_when_ready(
        self, container: dict[str, Any], base: Path
    ) -> tuple[dict[str, str], process.LaunchPlan | None] | None:
        """The container's env and launch plan, once its volumes and env can be set up.

        As the kubelet: while a volume cannot be set up the container waits in
        ContainerCreating (with a FailedMount event); while its env or user cannot, in
        CreateContainerConfigError. Both are retried until they work or the pod stops.
        """
        reported: str | None = None
        while self._stop_reason is None:
            try:
                return await self._prepare(container, base)
            except VolumeError as exc:
                if str(exc) != reported:
                    reported = str(exc)
                    log.warning("%s: FailedMount: %s", self.ref, exc)
                    await self._write_status(
                        waiting_status(self.pod, self._start_time, "ContainerCreating")
                    )
                    await self._record_event("Warning", "FailedMount", str(exc))
            except ConfigError as exc:
                if str(exc) != reported:
                    reported = str(exc)
                    log.warning("%s: CreateContainerConfigError: %s", self.ref, exc)
                    await self._write_status(
                        waiting_status(
                            self.pod, self._start_time, "CreateContainerConfigError", str(exc)
                        )
                    )
                    await self._record_event("Warning", "Failed", f"Error: {exc}")
            except ApiCallError as exc:
                log.warning("%s: cannot set up its volumes yet: %s", self.ref, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_requested.wait(), _CONFIG_RETRY_SECONDS)
        return None

    async def _prepare(
        self, container: dict[str, Any], base: Path
    ) -> tuple[dict[str, str], process.LaunchPlan | None]:
        """The process's env and launch plan: from its local image when the store has it."""
        image = await asyncio.to_thread(self.kubelet.image_of, container)
        if image is None:
            plan = await self._launch_plan(container, base)
            env = await container_env(self.kubelet.api, lambda: self.pod, container)
            return env, plan
        self._image = image
        self._image_id = image.config.digest or f"runstate-store://{image.root.name}"
        # As the kubelet: volumes first (ContainerCreating), then the container's config.
        mounts = await self._volume_mounts(container, base)
        identity = await asyncio.to_thread(runtime.identity, self.pod, container, image)
        image_plan = await self._image_plan(container, base, image, mounts, identity)
        env = await container_env(
            self.kubelet.api,
            lambda: self.pod,
            container,
            base=runtime.base_env(image, identity.uid, self.pod["metadata"]["name"]),
            services=self.kubelet.service_env,
        )
        return env, image_plan

    async def _image_plan(
        self,
        container: dict[str, Any],
        base: Path,
        image: Image,
        mounts: tuple[process.Mount, ...],
        identity: process.Identity,
    ) -> process.LaunchPlan:
        """As a runtime starts a container of a local image: its root, user and cwd, the
        pod's volumes in it, and the kubelet's /etc files."""
        name = self.pod["metadata"]["name"]
        etc = await asyncio.to_thread(
            runtime.etc_files, base / "etc", name, self.kubelet.service_hosts
        )
        return process.LaunchPlan(
            root=base / "root",
            mounts=(*etc, *mounts),
            identity=identity,
            hostname=name,
            image=process.ImageLayers(
                rootfs=image.rootfs, upper=base / "upper", work=base / "overlay-work"
            ),
            cwd=runtime.working_dir(container, image),
            read_only_root=bool(
                (container.get("securityContext") or {}).get("readOnlyRootFilesystem")
            ),
        )

    async def _volume_mounts(
        self, container: dict[str, Any], base: Path
    ) -> tuple[process.Mount, ...]:
        """The container's volume mounts and its termination message file."""
        ready = await volumes.materialise(
            self.kubelet.api, self.pod, base / "volumes", self.kubelet.node_roots
        )
        mounts = await volumes.container_mounts(ready, container)
        # The file the container may write its termination message to, as the kubelet
        # mounts it at terminationMessagePath (writable by any user).
        message_file = base / termination.MESSAGE_FILE
        await asyncio.to_thread(termination.make_message_file, message_file)
        message_path = container.get("terminationMessagePath") or termination.DEFAULT_MESSAGE_PATH
        return (*mounts, process.Mount(source=message_file, path=message_path))

    async def _launch_plan(
        self, container: dict[str, Any], base: Path
    ) -> process.LaunchPlan | None:
        """Volumes and user of the process; None when this kubelet cannot isolate pods."""
        if not self.kubelet.isolation:
            if self.pod["spec"].get("volumes") or security.identity(self.pod, container):
                log.warning(
                    "%s: volumes and securityContext ignored: the kubelet has no mount "
                    "namespace of its own (it must run as root)",
                    self.ref,
                )
            return None
        mounts = await self._volume_mounts(container, base)
        identity = security.identity(self.pod, container)
        return process.LaunchPlan(
            root=base / "root",
            mounts=mounts,
            identity=identity,
            hostname=self.pod["metadata"]["name"],
        )

    async def _record_event(self, kind: str, reason: str, message: str) -> None:
        try:
            await self.kubelet.api.record_event(self.pod, kind, reason, message)
        except ApiCallError as exc:
            log.warning("%s: cannot record event %s: %s", self.ref, reason, exc)
