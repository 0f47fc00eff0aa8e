"""The port-forward protocol (``portforward.k8s.io``) on one upgraded SPDY/3.1 connection.

Owns a session as the real kubelet's port-forward handler runs it
(pkg/kubelet/cri/streaming/portforward/httpstream.go): each stream the client opens must name
a ``port`` and a ``streamtype`` (``error`` or ``data``), or it is reset; every accepted stream
gets a SYN_REPLY; the two streams of one ``requestid`` (or, from clients without it, of
neighbouring stream ids) form a pair, and the pair's forward connects to the pod's port at the
pod's IP (`HOST_IP`: pods share the node's network here, as probes reach them) and copies bytes
both ways on the data stream. A connection that fails is reported as text on the error stream,
as the kubelet words it. PINGs are answered; SETTINGS, HEADERS and WINDOW_UPDATE are accepted
and ignored (spdystream, the client's side, does no flow control either). The bytes come in
through ``feed_data`` (the server hands the session the connection's input) and go out on the
transport. Must not decide who may forward (the server authenticates and finds the pod) and
must not know the HTTP upgrade; the frames' wire format is `spdy`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from . import spdy
from .pod import HOST_IP, log

PROTOCOL = "portforward.k8s.io"
#: How long the first stream of a pair waits for the second (the kubelet's default).
PAIR_TIMEOUT = 30.0
_CHUNK = 32 * 1024
_OUTPUT_HIGH = 1 << 20  # bytes queued on the transport before a copy waits
_INPUT_HIGH = 4 << 20  # bytes buffered for pods before reading from the client pauses
_INPUT_LOW = 1 << 20

Connect = Callable[[str, int], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


@dataclass
class _Stream:
    stream_id: int
    kind: str
    port: int
    inbound: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)
    remote_closed: bool = False
    local_closed: bool = False
    reset: bool = False


@dataclass
class _Pair:
    request_id: str
    error: _Stream | None = None
    data: _Stream | None = None
    timer: asyncio.TimerHandle | None = None


class PortForwardSession:
    """One client's port-forward connection to ``pod`` (``namespace/name``, ``uid``)."""

    def __init__(
        self,
        transport: asyncio.Transport,
        pod_name: str,
        uid: str,
        connect: Connect | None = None,
    ) -> None:
        self._transport = transport
        self._pod_name = pod_name
        self._uid = uid
        self._connect: Connect = connect or _open_connection
        self._decoder = spdy.Decoder()
        self._encoder = spdy.Encoder()
        self._streams: dict[int, _Stream] = {}
        self._pairs: dict[str, _Pair] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._done = asyncio.Event()
        self._buffered = 0
        self._paused = False

    # ---- input, called by the HTTP server's protocol ------------------------------------

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        """Take the client's bytes (the aiohttp payload-parser interface: never "done")."""
        if self._done.is_set():
            return False, b""
        try:
            frames = self._decoder.feed(bytes(data))
        except spdy.ProtocolError as exc:
            log.warning("port-forward to %s: %s", self._pod_name, exc)
            self._send(spdy.GoAway(0, spdy.GoAwayStatus.PROTOCOL_ERROR))
            self.close()
            return False, b""
        for frame in frames:
            self._handle(frame)
        return False, b""

    def feed_eof(self) -> None:
        self.close()

    async def run(self) -> None:
        """Until the connection ends; then every forward of it ends too."""
        try:
            await self._done.wait()
        finally:
            self.close()
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)

    def close(self) -> None:
        if not self._done.is_set():
            self._done.set()
            for pair in self._pairs.values():
                if pair.timer is not None:
                    pair.timer.cancel()
            for stream in self._streams.values():
                stream.inbound.put_nowait(None)
            if not self._transport.is_closing():
                self._transport.close()

    # ---- frames ---------------------------------------------------------------------------

    def _send(self, frame: spdy.Frame) -> None:
        if not self._transport.is_closing():
            self._transport.write(self._encoder.encode(frame))

    def _handle(self, frame: spdy.Frame) -> None:
        match frame:
            case spdy.SynStream():
                self._open(frame)
            case spdy.Data():
                self._data(frame)
            case spdy.RstStream():
                stream = self._streams.pop(frame.stream_id, None)
                if stream is not None:
                    stream.reset = stream.remote_closed = stream.local_closed = True
                    stream.inbound.put_nowait(None)
            case spdy.Ping():
                if frame.ping_id % 2 == 1:  # the client's: answer it (ours would be even)
                    self._send(frame)
            case spdy.GoAway():
                self.close()
            case _:
                pass  # SETTINGS, HEADERS, WINDOW_UPDATE, unknown control frames: ignored

    def _open(self, frame: spdy.SynStream) -> None:
        stream = self._accept(frame)
        if stream is None:
            return
        request_id = (frame.headers.get("requestid") or ("",))[0]
        if not request_id:
            # Clients before requestID: a pair is an error stream and the data stream after it.
            request_id = str(stream.stream_id if stream.kind == "error" else stream.stream_id - 2)
        self._pair_up(request_id, stream)

    def _accept(self, frame: spdy.SynStream) -> _Stream | None:
        """The new stream, answered with a SYN_REPLY; None (and reset) when it names no valid
        stream type and port, or reuses an id."""
        kind = (frame.headers.get("streamtype") or ("",))[0]
        port_text = (frame.headers.get("port") or ("",))[0]
        port = int(port_text) if port_text.isdigit() else 0
        if (
            kind not in ("error", "data")
            or not 0 < port < 65536
            or frame.stream_id in self._streams
        ):
            log.warning(
                "port-forward to %s: stream %d rejected (streamType %r, port %r)",
                self._pod_name,
                frame.stream_id,
                kind,
                port_text,
            )
            self._send(spdy.RstStream(frame.stream_id, spdy.RstStatus.CANCEL))
            return None
        stream = _Stream(frame.stream_id, kind, port)
        stream.remote_closed = bool(frame.flags & spdy.FLAG_FIN)
        if stream.remote_closed:
            stream.inbound.put_nowait(None)
        self._streams[frame.stream_id] = stream
        self._send(spdy.SynReply(frame.stream_id))
        return stream

    def _pair_up(self, request_id: str, stream: _Stream) -> None:
        """Add ``stream`` to its request's pair; a complete pair starts its forward. The first
        stream of a pair waits at most PAIR_TIMEOUT for the second."""
        pair = self._pairs.get(request_id)
        if pair is None:
            pair = self._pairs[request_id] = _Pair(request_id)
            loop = asyncio.get_running_loop()
            pair.timer = loop.call_later(PAIR_TIMEOUT, self._pair_timed_out, request_id)
        if (pair.error if stream.kind == "error" else pair.data) is not None:
            self._send(spdy.RstStream(stream.stream_id, spdy.RstStatus.PROTOCOL_ERROR))
            return
        if stream.kind == "error":
            pair.error = stream
        else:
            pair.data = stream
        if pair.error is None or pair.data is None:
            return
        if pair.timer is not None:
            pair.timer.cancel()
        del self._pairs[request_id]
        task = asyncio.get_running_loop().create_task(
            self._forward(pair.error, pair.data), name=f"port-forward {stream.port}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _pair_timed_out(self, request_id: str) -> None:
        pair = self._pairs.pop(request_id, None)
        if pair is None:
            return
        for stream in (pair.error, pair.data):
            if stream is not None:
                self._streams.pop(stream.stream_id, None)
                while not stream.inbound.empty():
                    self._consumed(len(stream.inbound.get_nowait() or b""))
                self._send(spdy.RstStream(stream.stream_id, spdy.RstStatus.CANCEL))
        log.warning("port-forward to %s: timed out waiting for streams", self._pod_name)

    def _data(self, frame: spdy.Data) -> None:
        stream = self._streams.get(frame.stream_id)
        if stream is None or stream.remote_closed:
            return
        if frame.data and stream.kind == "data":  # the kubelet reads nothing from error streams
            stream.inbound.put_nowait(frame.data)
            self._buffered += len(frame.data)
            if self._buffered > _INPUT_HIGH and not self._paused:
                self._paused = True
                self._transport.pause_reading()
        if frame.fin:
            stream.remote_closed = True
            stream.inbound.put_nowait(None)
            self._forget(stream)

    def _consumed(self, size: int) -> None:
        self._buffered -= size
        if self._paused and self._buffered < _INPUT_LOW:
            self._paused = False
            self._transport.resume_reading()

    def _finish(self, stream: _Stream, data: bytes = b"") -> None:
        """Send what is left and close our side of ``stream``."""
        if stream.local_closed:
            return
        stream.local_closed = True
        self._send(spdy.Data(stream.stream_id, data, spdy.FLAG_FIN))
        self._forget(stream)

    def _forget(self, stream: _Stream) -> None:
        if stream.local_closed and stream.remote_closed:
            self._streams.pop(stream.stream_id, None)

    # ---- one forwarded connection ------------------------------------------------------

    async def _forward(self, error: _Stream, data: _Stream) -> None:
        try:
            reader, writer = await self._connect(HOST_IP, data.port)
        except OSError as exc:
            message = (
                f"error forwarding port {data.port} to pod {self._pod_name}, uid {self._uid}: "
                f"failed to connect to localhost:{data.port} inside the pod: "
                f"dial tcp {HOST_IP}:{data.port}: {_reason(exc)}"
            )
            log.warning("port-forward: %s", message)
            self._finish(error, message.encode())
            self._finish(data)
            return
        upload = asyncio.create_task(self._to_pod(data, writer), name="port-forward upload")
        try:
            await self._from_pod(data, reader)
        finally:
            upload.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await upload
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            self._finish(data)
            self._finish(error)

    async def _to_pod(self, stream: _Stream, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while (chunk := await stream.inbound.get()) is not None:
                self._consumed(len(chunk))
                writer.write(chunk)
                await writer.drain()
            if stream.reset:
                writer.close()  # the client gave up: so does the read from the pod
            elif writer.can_write_eof():
                writer.write_eof()

    async def _from_pod(self, stream: _Stream, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(OSError):
            while not stream.reset and not self._done.is_set():
                chunk = await reader.read(_CHUNK)
                if not chunk:
                    return
                self._send(spdy.Data(stream.stream_id, chunk))
                while self._transport.get_write_buffer_size() > _OUTPUT_HIGH:
                    if self._done.is_set():
                        return
                    await asyncio.sleep(0.01)


async def _open_connection(
    host: str, port: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(host, port)


def _reason(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connect: connection refused"
    return f"connect: {exc.strerror or exc}"
