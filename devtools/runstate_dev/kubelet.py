"""The process kubelet: scheduler and kubelet of the dev cluster, running pods as processes.

This module owns everything that happens to a pod after the API server accepted
it, the way kwok fakes nodes but with real processes, so that the operator
cannot tell it from a cluster with real nodes:

* **Scheduling.** A pod without ``spec.nodeName`` is bound to this kubelet's
  node through the ``pods/binding`` subresource, as kube-scheduler would.
* **Running.** Every bound, non-terminal pod (bound to *any* node name, so tests
  may create extra Node objects) gets its first container's ``command + args``
  run as a local process in its own process group: no image, no volumes, cwd a
  fresh temporary directory, env = the container's ``env``/``envFrom`` (values,
  field refs, ConfigMap and Secret keys, ``$(VAR)`` expansion) plus
  ``PATH``/``HOME`` of the kubelet and ``HOSTNAME`` = pod name.  Other and init
  containers are not run.
* **Status.** Real pod status through the status subresource: Running with
  ``startTime``, the four conditions and ``state.running``; then Succeeded or
  Failed with ``state.terminated`` (exit code, ``Completed``/``Error``, times,
  and with ``terminationMessagePolicy: FallbackToLogsOnError`` the last 80 lines
  / 4096 bytes of output as ``message``).  Death by signal N gives exit code
  128+N.  Like the real kubelet's status manager, which batches updates, a
  process that exits within ``FAST_EXIT_SECONDS`` of its start only gets the
  final status written (one write instead of two).
* **activeDeadlineSeconds**, counted from ``startTime``: the process group is
  killed (SIGTERM, SIGKILL after the grace period) and the pod fails with
  ``reason: DeadlineExceeded``.
* **Ephemeral-storage eviction**, as the kubelet's eviction manager does it: a
  pod whose containers set ``resources.limits["ephemeral-storage"]`` has its
  local storage (the files under its working directory, standing in for the
  container's writable layer, plus its output log) measured every
  ``STORAGE_CHECK_SECONDS``.  Above the pod's limit (the sum over its
  containers) the process group is killed at once (the kubelet evicts with
  grace period 0) and the pod fails with ``reason: Evicted`` and the kubelet's
  message; the container ends terminated with exit code 137.
* **Deletion.** A pod with a ``deletionTimestamp`` gets SIGTERM, SIGKILL after
  its ``deletionGracePeriodSeconds``, a final status, and is then deleted with
  ``gracePeriodSeconds=0`` as a real kubelet finishes a graceful delete.  A pod
  removed outright (force delete) has its process group killed at once.
* **restartPolicy** ``OnFailure`` and ``Always`` are treated as ``Never``: a
  container runs once and its pod ends Succeeded or Failed.
* **Restarts of the kubelet.** Pods with a terminal phase are never re-run.  A
  pod found ``Running`` that this kubelet did not start lost its process with
  the previous kubelet; it is marked Failed with ``ContainerStatusUnknown``,
  exit code 137, as the real kubelet reports a container it cannot find.  On
  SIGTERM the kubelet kills every pod process it started.

Pods are watched with list + watch from the list's resourceVersion (bookmarks
on) and re-listed on 410 Gone; handling is level-triggered on the latest pod
object, so a re-list never loses an event.  The watch loop only dispatches:
processes, status writes, bindings and deletes run in per-pod tasks.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import math
import os
import re
import shutil
import signal
import stat
import sys
import tempfile
from collections.abc import Awaitable, Coroutine, Mapping
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio import client, config

log = logging.getLogger("runstate_dev.kubelet")

Pod = dict[str, Any]

TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})
FAST_EXIT_SECONDS = 0.05
MESSAGE_MAX_LINES = 80
MESSAGE_MAX_BYTES = 4096
DEADLINE_REASON = "DeadlineExceeded"
DEADLINE_MESSAGE = "Pod was active on the node longer than the specified deadline"
EVICTED_REASON = "Evicted"
# The kubelet's podEphemeralStorageMessageFmt, trailing space included.
EVICTED_STORAGE_MESSAGE = (
    "Pod ephemeral local storage usage exceeds the total limit of containers {}. "
)
STORAGE_CHECK_SECONDS = 0.5
LOST_REASON = "ContainerStatusUnknown"
LOST_MESSAGE = "The container could not be located when the pod was terminated"
DEFAULT_GRACE_SECONDS = 30
HOST_IP = "127.0.0.1"
WATCH_TIMEOUT_SECONDS = 290
_CONFIG_RETRY_SECONDS = 2.0


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _pod_ref(pod: Pod) -> str:
    meta = pod.get("metadata", {})
    return f"pod {meta.get('namespace')}/{meta.get('name')} ({meta.get('uid')})"


class ApiCallError(Exception):
    """A non-2xx answer (status 0: no answer) from the API server, with what was tried."""

    def __init__(self, what: str, status: int, body: str) -> None:
        super().__init__(f"{what}: HTTP {status}: {body[:500]}")
        self.status = status


class _Expired(Exception):
    """The watch's resourceVersion is too old (410 Gone): re-list."""


class ConfigError(Exception):
    """The container's env refers to something missing (CreateContainerConfigError)."""


# --- API access -------------------------------------------------------------------


class PodApi:
    """The few calls the kubelet makes, on plain JSON dicts.

    ``_preload_content=False`` everywhere: the kubelet never needs models, and
    kubernetes_asyncio raises while deserializing some responses (Binding).
    """

    def __init__(self, api_client: client.ApiClient) -> None:
        # Typed as Any: with _preload_content=False the calls return raw aiohttp
        # responses and take plain dicts, which the generated stubs do not model.
        self.core: Any = client.CoreV1Api(api_client)

    async def _call(self, what: str, request: Awaitable[Any]) -> Pod:
        try:
            response = await request
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ApiCallError(what, 0, repr(exc)) from exc
        try:
            payload = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ApiCallError(what, 0, repr(exc)) from exc
        finally:
            response.release()
        if not 200 <= response.status < 300:
            raise ApiCallError(what, response.status, payload.decode(errors="replace"))
        result: Pod = json.loads(payload) if payload else {}
        return result

    async def list_pods(self, limit: int = 500, cont: str | None = None) -> Pod:
        kwargs: dict[str, Any] = {"limit": limit, "_preload_content": False}
        if cont:
            kwargs["_continue"] = cont
        return await self._call("list pods", self.core.list_pod_for_all_namespaces(**kwargs))

    async def watch_pods(self, resource_version: str) -> aiohttp.ClientResponse:
        response: aiohttp.ClientResponse = await self.core.list_pod_for_all_namespaces(
            watch=True,
            resource_version=resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=WATCH_TIMEOUT_SECONDS,
            _preload_content=False,
            _request_timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=10, sock_read=WATCH_TIMEOUT_SECONDS + 30
            ),
        )
        return response

    async def bind(self, pod: Pod, node: str) -> None:
        meta = pod["metadata"]
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        }
        await self._call(
            f"bind {_pod_ref(pod)} to {node}",
            self.core.create_namespaced_pod_binding(
                meta["name"], meta["namespace"], body, _preload_content=False
            ),
        )

    async def patch_status(self, pod: Pod, status: Mapping[str, Any]) -> None:
        meta = pod["metadata"]
        # Merge patch replaces lists whole: each write carries the full status.
        await self._call(
            f"status of {_pod_ref(pod)}",
            self.core.patch_namespaced_pod_status(
                meta["name"],
                meta["namespace"],
                {"status": dict(status)},
                _content_type="application/merge-patch+json",
                _preload_content=False,
            ),
        )

    async def delete_now(self, pod: Pod) -> None:
        meta = pod["metadata"]
        body = {"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}}
        await self._call(
            f"delete {_pod_ref(pod)}",
            self.core.delete_namespaced_pod(
                meta["name"],
                meta["namespace"],
                body=body,
                grace_period_seconds=0,
                _preload_content=False,
            ),
        )

    async def config_map(self, namespace: str, name: str) -> Pod:
        return await self._call(
            f"configmap {namespace}/{name}",
            self.core.read_namespaced_config_map(name, namespace, _preload_content=False),
        )

    async def secret(self, namespace: str, name: str) -> Pod:
        return await self._call(
            f"secret {namespace}/{name}",
            self.core.read_namespaced_secret(name, namespace, _preload_content=False),
        )


def _retryable(exc: ApiCallError) -> bool:
    return exc.status == 0 or exc.status == 429 or exc.status >= 500


async def _with_retries(what: str, call: Any, attempts: int = 12) -> bool:
    """Run ``call()`` with backoff on transient errors; False when the object is gone (404/409).

    409 here means a delete precondition (uid) or a binding found the pod
    already changed: either way the object this call was about no longer exists.
    """
    delay = 0.2
    for attempt in range(attempts):
        try:
            await call()
            return True
        except ApiCallError as exc:
            if exc.status in (404, 409):
                return False
            if not _retryable(exc) or attempt == attempts - 1:
                raise
            log.warning("%s: %s; retrying in %.1fs", what, exc, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 5.0)
    return False


# --- env ------------------------------------------------------------------------


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: ``$$`` escapes, unknown references stay as written."""
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "$" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "(":
                end = text.find(")", i + 2)
                if end != -1:
                    name = text[i + 2 : end]
                    out.append(env[name] if name in env else text[i : end + 1])
                    i = end + 1
                    continue
        out.append(char)
        i += 1
    return "".join(out)


_SUBSCRIPT = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")


def field_value(pod: Pod, path: str) -> str:
    """The value of a ``fieldRef.fieldPath`` as the kubelet's downward API gives it."""
    meta, spec = pod.get("metadata", {}), pod.get("spec", {})
    simple: dict[str, Any] = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.hostIP": HOST_IP,
        "status.podIP": HOST_IP,
        "status.podIPs": HOST_IP,
    }
    if path in simple:
        return str(simple[path] or "")
    match = _SUBSCRIPT.match(path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    raise ConfigError(f"unsupported fieldRef.fieldPath {path!r}")


# --- status documents -------------------------------------------------------------


def _condition(kind: str, status: bool, when: str, reason: str | None = None) -> dict[str, Any]:
    cond: dict[str, Any] = {
        "type": kind,
        "status": "True" if status else "False",
        "lastProbeTime": None,
        "lastTransitionTime": when,
    }
    if reason:
        cond["reason"] = reason
    return cond


def _container_status(
    pod: Pod, state: dict[str, Any], *, running: bool, container_id: str | None = None
) -> list[dict[str, Any]]:
    """`containerStatuses` for the pod's one container, in the given state."""
    container = pod["spec"]["containers"][0]
    entry: dict[str, Any] = {
        "name": container["name"],
        "image": container.get("image", ""),
        "imageID": "",
        "ready": running,
        "started": running,
        "restartCount": 0,
        "state": state,
    }
    if container_id is not None:
        entry["containerID"] = container_id
    return [entry]


def _base_status(pod: Pod, phase: str, start_time: str) -> dict[str, Any]:
    return {
        "phase": phase,
        "hostIP": HOST_IP,
        "podIP": HOST_IP,
        "podIPs": [{"ip": HOST_IP}],
        "startTime": start_time,
        "qosClass": "BestEffort",
    }


def running_status(pod: Pod, start_time: str, started_at: str, pid: int) -> dict[str, Any]:
    status = _base_status(pod, "Running", start_time)
    status["conditions"] = [
        _condition("Initialized", True, start_time),
        _condition("Ready", True, started_at),
        _condition("ContainersReady", True, started_at),
        _condition("PodScheduled", True, start_time),
    ]
    status["containerStatuses"] = _container_status(
        pod,
        {"running": {"startedAt": started_at}},
        running=True,
        container_id=f"process://{pid}",
    )
    return status


def terminal_status(
    pod: Pod,
    *,
    start_time: str,
    terminated: dict[str, Any],
    phase: str,
    container_id: str = "",
    reason: str | None = None,
    message: str | None = None,
) -> dict[str, Any]:
    when = terminated.get("finishedAt") or _now()
    status = _base_status(pod, phase, start_time)
    status["conditions"] = [
        _condition("Initialized", True, start_time, "PodCompleted"),
        _condition("Ready", False, when, "PodCompleted"),
        _condition("ContainersReady", False, when, "PodCompleted"),
        _condition("PodScheduled", True, start_time),
    ]
    status["containerStatuses"] = _container_status(
        pod, {"terminated": terminated}, running=False, container_id=container_id
    )
    # Merge patch: null removes a reason/message left by an earlier write.
    status["reason"] = reason
    status["message"] = message
    return status


def waiting_status(pod: Pod, start_time: str, reason: str, message: str) -> dict[str, Any]:
    status = _base_status(pod, "Pending", start_time)
    status["conditions"] = [
        _condition("Initialized", True, start_time),
        _condition("Ready", False, start_time, "ContainersNotReady"),
        _condition("ContainersReady", False, start_time, "ContainersNotReady"),
        _condition("PodScheduled", True, start_time),
    ]
    status["containerStatuses"] = _container_status(
        pod, {"waiting": {"reason": reason, "message": message}}, running=False
    )
    return status


def output_tail(path: Path) -> str:
    """Last 80 lines / 4096 bytes of a pod's output (what FallbackToLogsOnError reports)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - MESSAGE_MAX_BYTES))
            data = handle.read()
    except OSError:
        return ""
    lines = data.decode(errors="replace").splitlines()[-MESSAGE_MAX_LINES:]
    text = "\n".join(lines)
    return text + "\n" if text and data.endswith(b"\n") else text


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


# --- ephemeral storage -------------------------------------------------------------

_QUANTITY = re.compile(
    r"([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(Ki|Mi|Gi|Ti|Pi|Ei|[eE][+-]?[0-9]+|[numkMGTPE]?)"
)
_BINARY_SUFFIXES = ("", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei")
_DECIMAL_EXPONENTS = {
    "n": -9,
    "u": -6,
    "m": -3,
    "": 0,
    "k": 3,
    "M": 6,
    "G": 9,
    "T": 12,
    "P": 15,
    "E": 18,
}
_DECIMAL_SUFFIXES = {exponent: suffix for suffix, exponent in _DECIMAL_EXPONENTS.items()}


def _quantity(text: str) -> tuple[Fraction, str]:
    """A Kubernetes quantity's exact value and format (BinarySI, DecimalSI, DecimalExponent)."""
    match = _QUANTITY.fullmatch(text)
    if match is None:
        raise ValueError(f"invalid quantity {text!r}")
    number, suffix = Fraction(match.group(1)), match.group(2)
    if suffix in _BINARY_SUFFIXES[1:]:
        return number * 1024 ** _BINARY_SUFFIXES.index(suffix), "BinarySI"
    if suffix[:1] in ("e", "E") and suffix[1:]:
        return number * Fraction(10) ** int(suffix[1:]), "DecimalExponent"
    return number * Fraction(10) ** _DECIMAL_EXPONENTS[suffix], "DecimalSI"


def parse_quantity(text: str) -> int:
    """A Kubernetes quantity ("1Mi", "500M", "1e6", "1.5Gi", "100") as an integer.

    Suffixes Ki..Ei are powers of 1024, m k M G T P E powers of 1000, e<N> of
    10.  A fractional result is rounded up, as ``Quantity.Value()`` does.
    Raises ValueError on anything else.
    """
    value, _ = _quantity(text)
    return math.ceil(value)


def format_quantity(value: int, like: str) -> str:
    """``value`` as ``Quantity.String()`` prints it in the format of the quantity ``like``.

    Canonical form: BinarySI uses the largest exact 1024-power suffix (values
    below 1024 fall back to DecimalSI); DecimalSI and DecimalExponent use a
    power of 1000, so 1048576 like "1Mi" is "1Mi", 1000000 like "1" is "1M"
    and like "1e3" is "1e6".
    """
    if value == 0:
        return "0"
    _, fmt = _quantity(like)
    if fmt == "BinarySI" and abs(value) >= 1024:
        power = 0
        while value % 1024 == 0 and power < len(_BINARY_SUFFIXES) - 1:
            value //= 1024
            power += 1
        return f"{value}{_BINARY_SUFFIXES[power]}"
    exponent = 0
    while value % 10 == 0:
        value //= 10
        exponent += 1
    value *= 10 ** (exponent % 3)
    exponent -= exponent % 3
    if fmt == "DecimalExponent" or exponent not in _DECIMAL_SUFFIXES:
        return f"{value}e{exponent}" if exponent else str(value)
    return f"{value}{_DECIMAL_SUFFIXES[exponent]}"


def _storage_limit(container: Mapping[str, Any]) -> str | None:
    limits = (container.get("resources") or {}).get("limits") or {}
    limit = limits.get("ephemeral-storage")
    return None if limit is None else str(limit)


def pod_storage_limit(pod: Pod) -> tuple[int, str] | None:
    """The pod's ephemeral-storage limit in bytes and as printed; None when no container sets one.

    Computed as the kubelet's eviction manager does (``PodRequestsAndLimits``):
    the sum over the containers, raised to a larger init container's limit,
    printed in the format of the first quantity that set it.
    """
    spec = pod.get("spec") or {}
    total: int | None = None
    like = ""
    for container in spec.get("containers") or []:
        text = _storage_limit(container)
        if text is None:
            continue
        if not total:  # Quantity.Add takes the addend's format while the sum is zero
            like = text
        total = (total or 0) + parse_quantity(text)
    for container in spec.get("initContainers") or []:
        text = _storage_limit(container)
        if text is not None and (total is None or parse_quantity(text) > total):
            total, like = parse_quantity(text), text
    return None if total is None else (total, format_quantity(total, like))


def local_storage_bytes(*paths: Path) -> int:
    """Bytes in the regular files at or under ``paths``; hard links count once.

    Symlinks are not followed; files that vanish or cannot be read during the
    walk are skipped.  Blocking: run it in a thread.
    """
    seen: set[tuple[int, int]] = set()
    total = 0
    pending = list(paths)
    while pending:
        path = pending.pop()
        try:
            info = path.lstat()
        except OSError:
            continue
        if stat.S_ISDIR(info.st_mode):
            with contextlib.suppress(OSError):
                pending.extend(path.iterdir())
        elif stat.S_ISREG(info.st_mode) and (info.st_dev, info.st_ino) not in seen:
            seen.add((info.st_dev, info.st_ino))
            total += info.st_size
    return total


# --- one pod ----------------------------------------------------------------------


class PodWorker:
    """Runs one pod's process from start to its final status (and final delete)."""

    def __init__(self, kubelet: ProcessKubelet, pod: Pod) -> None:
        self.kubelet = kubelet
        self.pod = pod
        self.uid: str = pod["metadata"]["uid"]
        self.ref = _pod_ref(pod)
        self._proc: asyncio.subprocess.Process | None = None
        self._stop_reason: str | None = None  # deleted | deadline | evicted | gone | shutdown
        self._stop_requested = asyncio.Event()
        self._start_time = _now()
        self._eviction_message = ""
        self._deleted = False

    # Called from the watch loop: must never block.

    def observe(self, pod: Pod) -> None:
        self.pod = pod
        meta = pod["metadata"]
        if meta.get("deletionTimestamp"):
            grace = meta.get("deletionGracePeriodSeconds")
            if grace is None:
                grace = pod["spec"].get("terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS)
            self.request_stop("deleted", int(grace))

    def request_stop(self, reason: str, grace: int) -> None:
        if self._stop_reason in ("gone", "shutdown"):
            return
        if reason in ("gone", "shutdown"):
            # The pod object is gone (or the kubelet stops): no grace, no status.
            self._stop_reason = reason
            self._stop_requested.set()
            if self._proc is not None:
                _signal_group(self._proc.pid, signal.SIGKILL)
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
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout=max(grace, 0))
        except TimeoutError:
            log.info("%s: grace period over, SIGKILL", self.ref)
            _signal_group(proc.pid, signal.SIGKILL)

    async def _watch_storage(
        self, proc: asyncio.subprocess.Process, limit: tuple[int, str], paths: tuple[Path, ...]
    ) -> None:
        """The eviction manager for one pod: evict it once its local storage exceeds ``limit``."""
        limit_bytes, limit_text = limit
        while True:
            await asyncio.sleep(STORAGE_CHECK_SECONDS)
            if proc.returncode is not None or self._stop_reason is not None:
                return
            used = await asyncio.to_thread(local_storage_bytes, *paths)
            if used > limit_bytes:
                self._evict(proc, used, limit_text)
                return

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
        self._stop_reason = "evicted"
        self._eviction_message = EVICTED_STORAGE_MESSAGE.format(limit_text)
        self._stop_requested.set()
        _signal_group(proc.pid, signal.SIGKILL)

    # The worker task.

    async def run(self) -> None:
        try:
            await self._run()
        except asyncio.CancelledError:
            if self._proc is not None:
                _signal_group(self._proc.pid, signal.SIGKILL)
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
            await self._run_container(container)
        finally:
            if timer is not None:
                timer.cancel()

    async def _deadline(self, seconds: int, grace: int) -> None:
        await asyncio.sleep(seconds)
        log.info("%s: activeDeadlineSeconds=%d exceeded", self.ref, seconds)
        self.request_stop("deadline", grace)

    async def _run_container(self, container: dict[str, Any]) -> None:
        env = await self._env_when_ready(container)
        if env is None:
            await self._finish_unstarted()
            return
        argv = [
            expand(str(a), env)
            for a in [*(container.get("command") or []), *(container.get("args") or [])]
        ]
        if not argv:
            await self._finish_unstarted(
                f"container {container['name']!r} has no command: the runstate process "
                "kubelet runs command + args as a local process and cannot run an image"
            )
            return

        base = Path(
            await asyncio.to_thread(
                tempfile.mkdtemp, prefix=f"runstate-pod-{self.pod['metadata']['name'][:40]}-"
            )
        )
        try:
            await self._run_process(container, argv, env, base)
        finally:
            await asyncio.to_thread(shutil.rmtree, base, True)

    async def _run_process(
        self, container: dict[str, Any], argv: list[str], env: dict[str, str], base: Path
    ) -> None:
        meta = self.pod["metadata"]
        workdir = base / "work"
        log_dir = self.kubelet.pod_log_dir
        output = (
            log_dir / f"{meta['namespace']}_{meta['name']}_{self.uid}.log"
            if log_dir is not None
            else base / "output.log"
        )

        def open_output() -> int:
            workdir.mkdir()
            return os.open(output, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

        try:
            storage_limit = pod_storage_limit(self.pod)
        except ValueError as exc:  # the API server validates quantities: not expected
            log.warning("%s: ephemeral-storage limit not enforced: %s", self.ref, exc)
            storage_limit = None
        fd = await asyncio.to_thread(open_output)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=fd,
                stderr=asyncio.subprocess.STDOUT,
                cwd=workdir,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            # What the real kubelet reports when the runtime cannot exec the command.
            await self._finish_unstarted(
                f"failed to start container {container['name']!r}: {argv[0]}: {exc.strerror}"
            )
            return
        finally:
            os.close(fd)
        self._proc = proc
        started_at = _now()
        log.info("%s: started pid %d: %s", self.ref, proc.pid, argv)
        if self._stop_reason in ("gone", "shutdown"):
            _signal_group(proc.pid, signal.SIGKILL)
        elif self._stop_reason is not None:
            # Deleted (or past its deadline) while starting: stop it right away.
            reason, self._stop_reason = self._stop_reason, None
            self.request_stop(reason, 0)

        monitor: asyncio.Task[None] | None = None
        if storage_limit is not None and self._stop_reason is None:
            monitor = self.kubelet.spawn(
                self._watch_storage(proc, storage_limit, (workdir, output)),
                f"ephemeral storage of {self.ref}",
            )
        try:
            waiter = asyncio.ensure_future(proc.wait())
            done, _ = await asyncio.wait({waiter}, timeout=FAST_EXIT_SECONDS)
            if not done and self._stop_reason not in ("gone", "shutdown"):
                await self._write_status(
                    running_status(self.pod, self._start_time, started_at, proc.pid)
                )
            returncode = await waiter
        finally:
            if monitor is not None:
                monitor.cancel()
        finished_at = _now()
        # The container is over: whatever it left running in its group goes too.
        _signal_group(proc.pid, signal.SIGKILL)
        exit_code = returncode if returncode >= 0 else 128 - returncode
        log.info("%s: pid %d exited with code %d", self.ref, proc.pid, exit_code)
        if self._stop_reason in ("gone", "shutdown"):
            return

        terminated: dict[str, Any] = {
            "exitCode": exit_code,
            "reason": "Completed" if exit_code == 0 else "Error",
            "startedAt": started_at,
            "finishedAt": finished_at,
            "containerID": f"process://{proc.pid}",
        }
        if exit_code != 0 and container.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            message = await asyncio.to_thread(output_tail, output)
            if message:
                terminated["message"] = message
        # Stopped by the kubelet itself: the pod fails with the kubelet's reason, whatever
        # the exit code says.
        stopped_by: tuple[str, str] | None = {
            "deadline": (DEADLINE_REASON, DEADLINE_MESSAGE),
            "evicted": (EVICTED_REASON, self._eviction_message),
        }.get(self._stop_reason or "")
        pod_reason, pod_message = stopped_by or (None, None)
        status = terminal_status(
            self.pod,
            start_time=self._start_time,
            terminated=terminated,
            phase="Succeeded" if exit_code == 0 and stopped_by is None else "Failed",
            container_id=f"process://{proc.pid}",
            reason=pod_reason,
            message=pod_message,
        )
        await self._write_status(status)
        await self._delete_if_deleting()

    async def _finish_unstarted(self, start_error: str | None = None) -> None:
        """Final status of a pod whose process never ran (start error, or stopped first)."""
        if self._stop_reason in ("gone", "shutdown"):
            return
        now = _now()
        if start_error is not None:
            log.warning("%s: %s", self.ref, start_error)
            terminated = {
                "exitCode": 128,
                "reason": "StartError",
                "message": start_error,
                "startedAt": now,
                "finishedAt": now,
            }
        else:
            terminated = {"exitCode": 137, "reason": "Error", "startedAt": now, "finishedAt": now}
        deadline = self._stop_reason == "deadline"
        await self._write_status(
            terminal_status(
                self.pod,
                start_time=self._start_time,
                terminated=terminated,
                phase="Failed",
                reason=DEADLINE_REASON if deadline else None,
                message=DEADLINE_MESSAGE if deadline else None,
            )
        )
        await self._delete_if_deleting()

    async def _delete_if_deleting(self) -> None:
        if self.pod["metadata"].get("deletionTimestamp") and self._stop_reason != "gone":
            await self.kubelet.delete_now(self.pod)
            self._deleted = True

    def delete_pending(self) -> bool:
        """Deleted after the worker's own last look (e.g. while it wrote an eviction status)."""
        return (
            bool(self.pod["metadata"].get("deletionTimestamp"))
            and not self._deleted
            and self._stop_reason not in ("gone", "shutdown")
        )

    async def _write_status(self, status: dict[str, Any]) -> None:
        if self._stop_reason == "gone":
            return
        try:
            written = await _with_retries(
                f"status of {self.ref}", lambda: self.kubelet.api.patch_status(self.pod, status)
            )
        except ApiCallError as exc:
            log.error("%s: cannot write status %s: %s", self.ref, status.get("phase"), exc)
            return
        if not written:
            log.info("%s: gone before its %s status was written", self.ref, status.get("phase"))

    async def _env_when_ready(self, container: dict[str, Any]) -> dict[str, str] | None:
        """The container's env; waits (CreateContainerConfigError) while a ref is missing."""
        reported: str | None = None
        while self._stop_reason is None:
            try:
                return await self._container_env(container)
            except ConfigError as exc:
                if str(exc) != reported:
                    reported = str(exc)
                    log.warning("%s: CreateContainerConfigError: %s", self.ref, exc)
                    await self._write_status(
                        waiting_status(
                            self.pod, self._start_time, "CreateContainerConfigError", str(exc)
                        )
                    )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_requested.wait(), _CONFIG_RETRY_SECONDS)
        return None

    async def _container_env(self, container: dict[str, Any]) -> dict[str, str]:
        namespace = self.pod["metadata"]["namespace"]
        declared: dict[str, str] = {}
        for source in container.get("envFrom") or []:
            prefix = source.get("prefix") or ""
            if "configMapRef" in source:
                ref = source["configMapRef"]
                data = await self._object_data(
                    "configmap", namespace, ref["name"], bool(ref.get("optional"))
                )
            else:
                ref = source.get("secretRef") or {}
                data = await self._object_data(
                    "secret", namespace, ref.get("name", ""), bool(ref.get("optional"))
                )
            declared.update({f"{prefix}{key}": value for key, value in data.items()})
        for item in container.get("env") or []:
            name = item["name"]
            value_from = item.get("valueFrom")
            if value_from is None:
                declared[name] = expand(str(item.get("value") or ""), declared)
                continue
            value = await self._value_from(namespace, name, value_from)
            if value is not None:
                declared[name] = value
        env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/root"),
            "HOSTNAME": self.pod["metadata"]["name"],
        }
        env.update(declared)
        return env

    async def _value_from(self, namespace: str, name: str, source: dict[str, Any]) -> str | None:
        if "fieldRef" in source:
            return field_value(self.pod, source["fieldRef"]["fieldPath"])
        for kind, key in (("configmap", "configMapKeyRef"), ("secret", "secretKeyRef")):
            if key in source:
                ref = source[key]
                optional = bool(ref.get("optional"))
                data = await self._object_data(kind, namespace, ref["name"], optional)
                if ref["key"] in data:
                    return data[ref["key"]]
                if optional:
                    return None
                raise ConfigError(
                    f"couldn't find key {ref['key']} in {kind} "
                    f"{namespace}/{ref['name']} (env {name})"
                )
        raise ConfigError(f"env {name}: unsupported valueFrom {sorted(source)}")

    async def _object_data(
        self, kind: str, namespace: str, name: str, optional: bool
    ) -> dict[str, str]:
        api = self.kubelet.api
        try:
            if kind == "configmap":
                obj = await api.config_map(namespace, name)
                return {k: str(v) for k, v in (obj.get("data") or {}).items()}
            obj = await api.secret(namespace, name)
            return {
                k: base64.b64decode(v).decode(errors="replace")
                for k, v in (obj.get("data") or {}).items()
            }
        except ApiCallError as exc:
            if exc.status == 404:
                if optional:
                    return {}
                raise ConfigError(f"{kind} {namespace}/{name} not found") from exc
            raise ConfigError(f"cannot read {kind} {namespace}/{name}: {exc}") from exc


# --- the kubelet ------------------------------------------------------------------


class ProcessKubelet:
    """Watches all pods; binds unbound ones to ``node_name`` and runs bound ones."""

    def __init__(
        self,
        api_client: client.ApiClient,
        node_name: str,
        *,
        pod_log_dir: Path | None = None,
        ready_file: Path | None = None,
    ) -> None:
        self.api = PodApi(api_client)
        self.node_name = node_name
        self.pod_log_dir = pod_log_dir
        self._ready_file = ready_file
        self._workers: dict[str, PodWorker] = {}
        self._worker_tasks: dict[str, asyncio.Task[None]] = {}
        # uids this instance must not start: finished here, or terminal/lost when seen.
        self._done: set[str] = set()
        self._binding: set[str] = set()
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

    # --- watch loop -------------------------------------------------------------

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
                break
        seen = {pod["metadata"]["uid"] for pod in pods}
        for uid, worker in list(self._workers.items()):
            if uid not in seen:
                worker.request_stop("gone", 0)
        self._done &= seen
        self._finalizing &= seen
        for pod in pods:
            self.handle(pod)
        log.info("listed %d pods at resourceVersion %s", len(pods), resource_version)
        return resource_version

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

    # --- level-triggered pod handling (never blocks) ------------------------------

    def handle(self, pod: Pod) -> None:
        meta, spec = pod["metadata"], pod.get("spec") or {}
        uid: str = meta["uid"]
        deleting = bool(meta.get("deletionTimestamp"))
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
                self._bind(pod)
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
        if not spec.get("containers"):
            self._done.add(uid)
            log.error("%s has no containers; not running it", _pod_ref(pod))
            return
        if _was_started(pod):
            self._done.add(uid)
            self.spawn(self._mark_lost(pod), f"mark lost {_pod_ref(pod)}")
            return
        worker = PodWorker(self, pod)
        self._workers[uid] = worker
        self._worker_tasks[uid] = self.spawn(worker.run(), f"run {_pod_ref(pod)}")

    def handle_deleted(self, pod: Pod) -> None:
        uid = pod["metadata"]["uid"]
        worker = self._workers.get(uid)
        if worker is not None:
            worker.request_stop("gone", 0)
        self._done.discard(uid)
        self._finalizing.discard(uid)

    def worker_finished(self, worker: PodWorker) -> None:
        self._workers.pop(worker.uid, None)
        self._worker_tasks.pop(worker.uid, None)
        self._done.add(worker.uid)
        if worker.delete_pending():
            # The deletion arrived while the worker was finishing: it only updated worker.pod.
            self._finalize(worker.pod)

    def _bind(self, pod: Pod) -> None:
        uid = pod["metadata"]["uid"]
        if uid in self._binding:
            return
        self._binding.add(uid)

        async def bind() -> None:
            try:
                bound = await _with_retries(
                    f"bind {_pod_ref(pod)}", lambda: self.api.bind(pod, self.node_name)
                )
                if bound:
                    log.info("%s: bound to %s", _pod_ref(pod), self.node_name)
            finally:
                self._binding.discard(uid)

        self.spawn(bind(), f"bind {_pod_ref(pod)}")

    def _finalize(self, pod: Pod) -> None:
        uid = pod["metadata"]["uid"]
        if uid in self._finalizing:
            return
        self._finalizing.add(uid)
        self.spawn(self.delete_now(pod), f"delete {_pod_ref(pod)}")

    async def delete_now(self, pod: Pod) -> None:
        """Finish a graceful delete the way a kubelet does: delete with grace 0."""
        if await _with_retries(f"delete {_pod_ref(pod)}", lambda: self.api.delete_now(pod)):
            log.info("%s: deleted", _pod_ref(pod))

    async def _mark_lost(self, pod: Pod) -> None:
        old = ((pod.get("status") or {}).get("containerStatuses") or [{}])[0]
        started_at = ((old.get("state") or {}).get("running") or {}).get("startedAt") or _now()
        terminated = {
            "exitCode": 137,
            "reason": LOST_REASON,
            "message": LOST_MESSAGE,
            "startedAt": started_at,
            "finishedAt": _now(),
        }
        start_time = (pod.get("status") or {}).get("startTime") or started_at
        log.warning("%s: was running under a previous kubelet; marking it failed", _pod_ref(pod))
        await _with_retries(
            f"status of {_pod_ref(pod)}",
            lambda: self.api.patch_status(
                pod,
                terminal_status(
                    pod,
                    start_time=start_time,
                    terminated=terminated,
                    phase="Failed",
                    container_id=old.get("containerID", ""),
                ),
            ),
        )

    async def shutdown(self) -> None:
        """Kill every pod process this kubelet started and wait for the workers to end."""
        for worker in list(self._workers.values()):
            worker.request_stop("shutdown", 0)
        tasks = list(self._worker_tasks.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=5)
            for task in pending:
                task.cancel()
        for task in list(self._tasks):
            task.cancel()


def _was_started(pod: Pod) -> bool:
    status = pod.get("status") or {}
    if status.get("phase") == "Running":
        return True
    return any(
        "running" in (cs.get("state") or {}) or "terminated" in (cs.get("state") or {})
        for cs in status.get("containerStatuses") or []
    )


# --- entry point ------------------------------------------------------------------


async def run_kubelet(
    kubeconfig: str,
    node_name: str,
    *,
    pod_log_dir: Path | None = None,
    ready_file: Path | None = None,
) -> None:
    """Run the process kubelet until SIGTERM/SIGINT, then kill its pods and return."""
    configuration = client.Configuration()
    await config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    configuration.connection_pool_maxsize = 200
    if pod_log_dir is not None:
        await asyncio.to_thread(pod_log_dir.mkdir, parents=True, exist_ok=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with client.ApiClient(configuration) as api_client:
        kubelet = ProcessKubelet(
            api_client, node_name, pod_log_dir=pod_log_dir, ready_file=ready_file
        )
        log.info("process kubelet for node %s watching pods", node_name)
        watcher = asyncio.create_task(kubelet.run(), name="pod watch")
        stopper = asyncio.create_task(stop.wait(), name="stop signal")
        done, _ = await asyncio.wait({watcher, stopper}, return_when=asyncio.FIRST_COMPLETED)
        watcher.cancel()
        stopper.cancel()
        log.info("process kubelet stopping: killing pod processes")
        await kubelet.shutdown()
        if watcher in done and not watcher.cancelled():
            failure = watcher.exception()
            if failure is not None:
                raise failure


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m runstate_dev kubelet", description="Run pods as local processes."
    )
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument(
        "--node", default="runstate-local", help="node name unbound pods are bound to"
    )
    parser.add_argument(
        "--pod-log-dir",
        type=Path,
        default=None,
        help="keep each pod's output as <dir>/<ns>_<name>_<uid>.log",
    )
    parser.add_argument(
        "--ready-file",
        type=Path,
        default=None,
        help="file written once the first pod list is handled",
    )
    parser.add_argument("-v", "--verbose", action="store_true")


def run_from_args(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        logging.getLogger("kubernetes_asyncio").setLevel(logging.WARNING)
    asyncio.run(
        run_kubelet(
            args.kubeconfig, args.node, pod_log_dir=args.pod_log_dir, ready_file=args.ready_file
        )
    )
    return 0
