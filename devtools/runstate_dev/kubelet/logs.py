"""Container logs: each container instance's output kept on disk, and read back as asked.

Owns the layout of the log files and their format, as a CRI runtime keeps them under
``/var/log/pods``: one file per container instance,
``<dir>/<ns>_<name>_<uid>/<container>/<restart>-<pid>.log`` (the pid is the instance's
``containerID``, ``process://<pid>``), each line ``<RFC3339 time> stdout <F|P> <text>`` (``P``: a
part of a longer line). A `LogWriter` takes the output of one instance from a pipe and writes it
there and, unchanged, to the pod's output file (``<ns>_<name>_<uid>.log``, what the termination
message and the storage limit read). `read` serves ``kubectl logs``' options (tailLines,
limitBytes, timestamps, sinceTime/sinceSeconds, follow until the instance ends).

Must not start or signal processes, write pod status or decide which instance a request means
(`server` does, from the pod's status).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from .pod import Pod, log

#: A line longer than this is written as parts (``P``), as containerd splits them.
MAX_LINE_BYTES = 16 * 1024
FOLLOW_POLL_SECONDS = 0.1
_DRAIN_SECONDS = 2.0


def _stamp() -> bytes:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ").encode()


@dataclass(frozen=True)
class LogOptions:
    """The query of ``GET /containerLogs/...`` (v1 PodLogOptions), already validated."""

    follow: bool = False
    tail_lines: int | None = None
    limit_bytes: int | None = None
    timestamps: bool = False
    since: datetime | None = None


class ContainerLogs:
    """The container log files of every pod under one directory, and which are being written."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._active: set[Path] = set()

    def container_dir(self, pod: Pod, container: str) -> Path:
        meta = pod["metadata"]
        return self.directory / f"{meta['namespace']}_{meta['name']}_{meta['uid']}" / container

    def instance(self, pod: Pod, container: str, container_id: str) -> Path | None:
        """The file of the instance with this containerID (``process://<pid>``), or None."""
        pid = container_id.rpartition("://")[2]
        found = sorted(
            self.container_dir(pod, container).glob(f"*-{pid}.log"),
            key=lambda path: int(path.name.partition("-")[0]),
        )
        return found[-1] if found else None

    def writing(self, path: Path) -> bool:
        return path in self._active

    def mark(self, path: Path, *, writing: bool) -> None:
        """Whether the instance of ``path`` is still being written (`read` follows it)."""
        if writing:
            self._active.add(path)
        else:
            self._active.discard(path)

    def writer(self, pod: Pod, container: str, restart: int, pod_output: Path) -> LogWriter:
        """A writer for a new instance (blocking: makes its directory and opens the files)."""
        directory = self.container_dir(pod, container)
        directory.mkdir(parents=True, exist_ok=True)
        return LogWriter(self, directory / f"{restart}.log", pod_output)


class LogWriter:
    """One container instance's output: the pipe its process writes to, and the reader of that
    pipe that keeps the output in the instance's log file and the pod's output file."""

    def __init__(self, logs: ContainerLogs, path: Path, pod_output: Path) -> None:
        self._logs = logs
        self.path = path
        self.pod_output = pod_output
        self._finished = False
        self.read_fd, self.write_fd = os.pipe()
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        self._raw = os.open(pod_output, flags, 0o644)
        self._log = os.open(path, flags, 0o640)
        self._partial = b""
        self._done = asyncio.Event()
        self._transport: asyncio.ReadTransport | None = None
        logs.mark(path, writing=True)

    def named_for(self, pid: int) -> None:
        """The instance started as ``pid``: its file takes the containerID's name."""
        named = self.path.with_name(f"{self.path.stem}-{pid}.log")
        os.rename(self.path, named)
        self._logs.mark(self.path, writing=False)
        self._logs.mark(named, writing=True)
        self.path = named

    async def start(self) -> None:
        """Read the pipe from now on (the process holds the write end, the kubelet no more)."""
        os.close(self.write_fd)
        self.write_fd = -1
        loop = asyncio.get_running_loop()
        pipe = os.fdopen(self.read_fd, "rb", buffering=0)
        self._transport, _ = await loop.connect_read_pipe(lambda: _PipeReader(self), pipe)

    async def finish(self) -> None:
        """Once the process is over: read what is left (a while at most, in case something
        outside its process group holds the pipe), then close the files. Idempotent."""
        if self._finished:
            return
        self._finished = True
        if self._transport is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._done.wait(), _DRAIN_SECONDS)
            self._transport.close()
        else:
            for fd in (self.read_fd, self.write_fd):
                if fd >= 0:
                    os.close(fd)
        if self._partial:  # a last line without its newline is a line all the same
            os.write(self._log, _stamp() + b" stdout F " + self._partial + b"\n")
            self._partial = b""
        os.close(self._raw)
        os.close(self._log)
        self._logs.mark(self.path, writing=False)

    def _received(self, data: bytes) -> None:
        os.write(self._raw, data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        stamp = _stamp()
        entries = [stamp + b" stdout F " + line + b"\n" for line in lines]
        while len(self._partial) > MAX_LINE_BYTES:
            part, self._partial = self._partial[:MAX_LINE_BYTES], self._partial[MAX_LINE_BYTES:]
            entries.append(stamp + b" stdout P " + part + b"\n")
        if entries:
            os.write(self._log, b"".join(entries))


class _PipeReader(asyncio.Protocol):
    def __init__(self, writer: LogWriter) -> None:
        self._writer = writer

    def data_received(self, data: bytes) -> None:
        try:
            self._writer._received(data)
        except OSError as exc:
            log.error("cannot keep container output in %s: %s", self._writer.path, exc)

    def eof_received(self) -> bool | None:
        self._writer._done.set()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._writer._done.set()


@dataclass(frozen=True)
class _Entry:
    stamp: bytes
    text: bytes
    full: bool  # ``F``: the text ends a line

    def render(self, *, timestamps: bool) -> bytes:
        body = self.text + (b"\n" if self.full else b"")
        return self.stamp + b" " + body if timestamps else body


def _parse(data: bytes) -> list[_Entry]:
    entries = []
    for line in data.split(b"\n"):
        stamp, _, rest = line.partition(b" ")
        _stream, _, rest = rest.partition(b" ")
        tag, _, text = rest.partition(b" ")
        if tag in (b"F", b"P"):
            entries.append(_Entry(stamp, text, tag == b"F"))
    return entries


def _time(stamp: bytes) -> datetime | None:
    try:
        return datetime.fromisoformat(stamp.decode())
    except ValueError:
        return None


def _select(entries: list[_Entry], options: LogOptions) -> list[_Entry]:
    if options.since is not None:
        since = options.since
        entries = [e for e in entries if (when := _time(e.stamp)) is None or when >= since]
    if options.tail_lines is not None:
        ends = [i for i, entry in enumerate(entries) if entry.full]
        if options.tail_lines == 0:
            return []
        if len(ends) > options.tail_lines:
            entries = entries[ends[-options.tail_lines - 1] + 1 :]
    return entries


def _read_from(path: Path, offset: int) -> bytes:
    with path.open("rb") as handle:
        handle.seek(offset)
        return handle.read()


async def read(logs: ContainerLogs, path: Path, options: LogOptions) -> AsyncIterator[bytes]:
    """The instance's log as ``kubectl logs`` shows it; with ``follow``, new lines as they are
    written, until the instance's output ends."""
    budget = options.limit_bytes
    offset, first = 0, True
    while True:
        writing = logs.writing(path)  # before reading: what follows the last read is seen
        data = await asyncio.to_thread(_read_from, path, offset)
        complete = data[: data.rfind(b"\n") + 1]
        offset += len(complete)
        entries = _parse(complete)
        if first:
            entries, first = _select(entries, options), False
        elif options.since is not None:
            entries = _select(entries, LogOptions(since=options.since))
        chunk = b"".join(entry.render(timestamps=options.timestamps) for entry in entries)
        if budget is not None:
            chunk = chunk[:budget]
            budget -= len(chunk)
        if chunk or options.follow:  # following: an empty chunk lets the caller look up
            yield chunk
        if not options.follow or not writing or budget == 0:
            return
        await asyncio.sleep(FOLLOW_POLL_SECONDS)
