"""The ``kubernetes`` Service as pods of local images reach it: a stand-in for kube-proxy and
cluster DNS, for the API server only.

Owns a TCP forwarder listening on ``<address>:443``, where the address is a loopback address of
its own for this API server (``127.79.<port / 256>.<port % 256>``: all of 127.0.0.0/8 is local,
and no two running API servers share a port), passing bytes through to the API server, and the
names that ``/etc/hosts`` of such pods gives that address: ``kubernetes``,
``kubernetes.default``, ``kubernetes.default.svc`` and ``kubernetes.default.svc.cluster.local``.
TLS passes through untouched, and the API server's certificate names all four, so a client
that connects to ``https://kubernetes.default.svc`` (kopf's ``login_with_service_account``)
verifies it with the service account's ca.crt, as in a real cluster. Must not look at pods.
"""

from __future__ import annotations

import asyncio
import contextlib

from .pod import log

SERVICE_PORT = 443
NAMES = (
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)


def service_address(api_port: int) -> str:
    """The loopback address that stands for the ``kubernetes`` Service of this API server."""
    return f"127.79.{api_port >> 8}.{api_port & 0xFF}"


class ApiServiceProxy:
    """``<service address>:443`` forwarded to the API server at ``host:port``."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.address = service_address(port)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self) -> bool:
        """Listen; False (logged) when the address cannot be bound."""
        try:
            self._server = await asyncio.start_server(self._accept, self.address, SERVICE_PORT)
        except OSError as exc:
            log.warning(
                "kubernetes Service stand-in on %s:%d not available: %s",
                self.address,
                SERVICE_PORT,
                exc,
            )
            return False
        log.info(
            "kubernetes Service stand-in: %s:%d -> %s:%d",
            self.address,
            SERVICE_PORT,
            *self.upstream,
        )
        return True

    def hosts(self) -> dict[str, tuple[str, ...]]:
        """/etc/hosts entries of the Service's names, once it listens."""
        return {self.address: NAMES} if self._server is not None else {}

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError as exc:
            log.warning("kubernetes Service stand-in: API server unreachable: %s", exc)
            writer.close()
            return
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            for end in (writer, up_writer):
                end.close()
            if task is not None:
                self._connections.discard(task)


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    """Copy until EOF (or a broken connection), then half-close the other side."""
    with contextlib.suppress(OSError):
        while chunk := await source.read(65536):
            sink.write(chunk)
            await sink.drain()
        if sink.can_write_eof():
            sink.write_eof()
