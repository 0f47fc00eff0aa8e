"""The kubelet API: the HTTPS server through which the API server reads container logs.

Owns the server (aiohttp, on a loopback port of its own, with a serving certificate of the
cluster's CA), who may call it (only the API server's client certificate, CN
`KUBELET_CLIENT_CN`: no certificate is a 401, any other a 403, as a kubelet with webhook
authorization answers), ``GET /containerLogs/{namespace}/{pod}/{container}``: its query
(v1 PodLogOptions, with the real kubelet's answers to a bad one), which container instance
the pod's status names (the real kubelet's ``validateContainerLogStatus``, with its messages),
and the streamed answer; and ``/portForward/{namespace}/{pod}[/{uid}]``: the pod lookup and
the HTTP upgrade to SPDY/3.1 (``portforward.k8s.io``), refusing any other upgrade with a 400
(a WebSocket one too, so that kubectl falls back to SPDY) and a request without the protocol
with a 403, as httpstream's ``Handshake`` does, before the connection is handed to a
`portforward` session. Must not write pod status or touch processes;
the log files belong to `logs`, the streams to `portforward`.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from aiohttp import web

from runstate_dev.pki import KUBELET_CLIENT_CN

from . import logs, portforward
from .pod import Pod, log

if TYPE_CHECKING:
    from multidict import CIMultiDictProxy  # aiohttp's request headers (typing only)

PodLookup = Callable[[str, str], Pod | None]


@dataclass(frozen=True)
class TlsFiles:
    """The kubelet's serving certificate and key, and the CA its clients' certificates need."""

    cert: Path
    key: Path
    client_ca: Path

    def context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(self.client_ca))
        context.load_cert_chain(str(self.cert), str(self.key))
        # Optional at the handshake, so that a client without one gets an HTTP answer (401).
        context.verify_mode = ssl.CERT_OPTIONAL
        return context


class LogError(Exception):
    """A request the kubelet refuses: its HTTP status and plain-text message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _common_name(peer: dict[str, Any] | None) -> str | None:
    for rdn in (peer or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


@web.middleware
async def _authenticate(request: web.Request, handler: Any) -> web.StreamResponse:
    transport = request.transport
    peer = transport.get_extra_info("peercert") if transport is not None else None
    if not peer:
        return web.Response(status=401, text="Unauthorized")
    user = _common_name(peer)
    if user != KUBELET_CLIENT_CN:
        return web.Response(
            status=403,
            text=f"Forbidden (user={user}, verb=get, resource=nodes, subresource=proxy)",
        )
    response: web.StreamResponse = await handler(request)
    return response


def _integer(query: Any, name: str, *, minimum: int) -> int | None:
    text = query.get(name)
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        raise LogError(400, '{"message": "Unable to decode query."}') from None
    if value < minimum:
        raise LogError(422, '{"message": "Invalid request."}')
    return value


def _truth(query: Any, name: str) -> bool:
    return str(query.get(name, "false")).lower() in ("true", "1")


def log_options(query: Any) -> logs.LogOptions:
    """The query as the kubelet decodes and validates it (``tail=all`` is no tail)."""
    tail = query.get("tail")
    query = dict(query)
    if tail is not None:
        query.pop("tail")
        if tail != "all":
            query["tailLines"] = tail
    seconds = _integer(query, "sinceSeconds", minimum=1)
    since_time = query.get("sinceTime")
    if seconds is not None and since_time is not None:
        raise LogError(422, '{"message": "Invalid request."}')
    since = None
    if seconds is not None:
        since = datetime.now(UTC) - timedelta(seconds=seconds)
    elif since_time is not None:
        try:
            since = datetime.fromisoformat(str(since_time))
        except ValueError:
            raise LogError(400, '{"message": "Unable to decode query."}') from None
    return logs.LogOptions(
        follow=_truth(query, "follow"),
        tail_lines=_integer(query, "tailLines", minimum=0),
        limit_bytes=_integer(query, "limitBytes", minimum=1),
        timestamps=_truth(query, "timestamps"),
        since=since,
    )


def _container_status(pod: Pod, name: str) -> dict[str, Any] | None:
    status = pod.get("status") or {}
    for key in ("containerStatuses", "initContainerStatuses"):
        for entry in status.get(key) or []:
            if entry.get("name") == name:
                return dict(entry)
    return None


def container_id(pod: Pod, name: str, *, previous: bool) -> str:
    """The containerID whose log a request means, or the kubelet's LogError (400)."""
    pod_name = pod["metadata"]["name"]
    where = f"container {name!r} in pod {pod_name!r}".replace("'", '"')
    entry = _container_status(pod, name)
    if entry is None:
        raise LogError(400, f"{where} is not available")
    last = (entry.get("lastState") or {}).get("terminated") or {}
    state = entry.get("state") or {}
    if previous:
        if not last.get("containerID"):
            raise LogError(400, f"previous terminated {where} not found")
        return str(last["containerID"])
    if "running" in state:
        return str(entry.get("containerID") or "")
    if "terminated" in state or ("waiting" not in state and last):
        found = (state.get("terminated") or {}).get("containerID") or last.get("containerID")
        if not found:
            raise LogError(400, f"{where} is terminated")
        return str(found)
    if "waiting" in state:
        reason = state["waiting"].get("reason", "")
        raise LogError(400, f"{where} is waiting to start: {reason}")
    raise LogError(400, f"{where} is waiting to start - no logs yet")


def _declares(pod: Pod, name: str) -> bool:
    spec = pod.get("spec") or {}
    containers = [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]
    return any(c.get("name") == name for c in containers)


class KubeletServer:
    """``/containerLogs`` over HTTPS for the pods ``lookup`` finds, from ``container_logs``."""

    def __init__(self, lookup: PodLookup, container_logs: logs.ContainerLogs) -> None:
        self._lookup = lookup
        self._logs = container_logs
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self, tls: TlsFiles, host: str = "127.0.0.1") -> int:
        """Listen on a free port of ``host``; returns the port."""
        app = web.Application(middlewares=[_authenticate])
        app.router.add_get("/containerLogs/{namespace}/{pod}/{container}", self._container_logs)
        for method in ("GET", "POST"):
            app.router.add_route(method, "/portForward/{namespace}/{pod}", self._port_forward)
            app.router.add_route(method, "/portForward/{namespace}/{pod}/{uid}", self._port_forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, 0))
        self.port = int(sock.getsockname()[1])
        await web.SockSite(self._runner, sock, ssl_context=tls.context()).start()
        log.info("kubelet API on https://%s:%d", host, self.port)
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _instance(self, request: web.Request) -> tuple[Path, logs.LogOptions]:
        namespace, name = request.match_info["namespace"], request.match_info["pod"]
        container = request.match_info["container"]
        options = log_options(request.query)
        pod = self._lookup(namespace, name)
        if pod is None:
            raise LogError(404, f'pod "{name}" does not exist')
        if not _declares(pod, container):
            raise LogError(404, f'container "{container}" not found in pod "{name}"')
        wanted = container_id(pod, container, previous=_truth(request.query, "previous"))
        path = self._logs.instance(pod, container, wanted)
        if path is None:
            # Started by an earlier kubelet, or the files are gone: nothing to show.
            raise LogError(400, f'container "{container}" in pod "{name}" has no log here')
        return path, options

    async def _container_logs(self, request: web.Request) -> web.StreamResponse:
        try:
            path, options = self._instance(request)
        except LogError as error:
            return web.Response(status=error.status, text=str(error))
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        async for chunk in logs.read(self._logs, path, options):
            transport = request.transport
            if transport is None or transport.is_closing():
                break
            if chunk:
                await response.write(chunk)
        await response.write_eof()
        return response

    async def _port_forward(self, request: web.Request) -> web.StreamResponse:
        namespace, name = request.match_info["namespace"], request.match_info["pod"]
        pod = self._lookup(namespace, name)
        if pod is None:
            return web.Response(status=404, text="pod does not exist")
        uid = str(pod["metadata"].get("uid", ""))
        wanted_uid = request.match_info.get("uid")
        if wanted_uid and wanted_uid != uid:
            return web.Response(status=404, text="pod not found")
        refusal = upgrade_refusal(request.headers)
        transport = request.transport
        if refusal is not None or transport is None:
            status, text = refusal or (400, "connection gone")
            return web.Response(status=status, text=text)
        session = portforward.PortForwardSession(transport, name, uid)
        # The connection's next bytes are SPDY frames: the session parses them from now on.
        # aiohttp's HTTP parser treats only WebSocket (and "tcp") as upgrades, so the session
        # is set as the connection's payload parser (as aiohttp's WebSocketResponse sets its
        # reader) before the 101, when the client has sent nothing more yet.
        request.protocol.set_parser(cast(Any, session))
        response = web.StreamResponse(
            status=101,
            headers={
                "Connection": "Upgrade",
                "Upgrade": SPDY_UPGRADE,
                PROTOCOL_HEADER: portforward.PROTOCOL,
            },
        )
        response.force_close()
        await response.prepare(request)
        log.info("port-forward to pod %s/%s: upgraded", namespace, name)
        await session.run()
        return response


SPDY_UPGRADE = "SPDY/3.1"
PROTOCOL_HEADER = "X-Stream-Protocol-Version"


def upgrade_refusal(headers: CIMultiDictProxy[str]) -> tuple[int, str] | None:
    """None for a SPDY/3.1 upgrade that accepts ``portforward.k8s.io``; else the kubelet's
    answer (httpstream's ``Handshake`` and the SPDY upgrader: a WebSocket upgrade is refused
    as any other, which makes kubectl fall back to SPDY)."""
    connection = [t.strip().lower() for t in headers.get("Connection", "").split(",")]
    if "upgrade" not in connection or not headers.get("Upgrade"):
        return 400, "unable to upgrade: missing upgrade headers in request"
    if headers.get("Upgrade", "").lower() != SPDY_UPGRADE.lower():
        return 400, f"unable to upgrade: protocol {headers.get('Upgrade')!r} is not {SPDY_UPGRADE}"
    offered = [p.strip() for value in headers.getall(PROTOCOL_HEADER, []) for p in value.split(",")]
    if offered and portforward.PROTOCOL not in offered:
        return 403, (
            "unable to upgrade: unable to negotiate protocol: client supports "
            f"{offered}, server supports [{portforward.PROTOCOL}]"
        )
    return None
