"""A throwaway local Redis server for the dev cluster.

This module owns starting and stopping Debian's ``redis-server`` on a free
loopback port, without persistence, with its log and pid record in the dev
cluster's state dir (``redis.log``, ``pids/redis.json``, ``redis.json``) so
that ``down`` from another process stops it too.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
from pathlib import Path
from types import TracebackType

from runstate_dev import build
from runstate_dev._proc import (
    ComponentError,
    ProcessRecord,
    free_port,
    read_records,
    spawn,
    stop_record,
    wait_until,
)

__all__ = ["RedisServer"]

_REDIS_SERVER = "/usr/bin/redis-server"


class RedisServer:
    """``redis-server`` on 127.0.0.1; ``url`` is ``redis://127.0.0.1:PORT/0`` once started."""

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        *,
        port: int | None = None,
        startup_timeout: float = 20.0,
        die_with_parent: bool = False,
    ) -> None:
        self.state_dir = Path(state_dir).absolute()
        self._port = port
        self._startup_timeout = startup_timeout
        self._die_with_parent = die_with_parent
        self._proc: subprocess.Popen[bytes] | None = None
        self._record: ProcessRecord | None = None

    @property
    def port(self) -> int:
        if self._port is None or self._record is None:
            raise ComponentError(f"redis in {self.state_dir} is not started")
        return self._port

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @classmethod
    def attach(cls, state_dir: str | os.PathLike[str]) -> RedisServer | None:
        """The running redis recorded in ``state_dir``, or None."""
        server = cls(state_dir)
        record = read_records(server.state_dir).get("redis")
        try:
            info = json.loads((server.state_dir / "redis.json").read_text())
        except (OSError, ValueError):
            return None
        if record is None or not record.alive():
            return None
        server._port = int(info["port"])
        server._record = record
        return server if _ping(server._port) else None

    def start(self) -> RedisServer:
        if self._record is not None:
            raise ComponentError(f"redis in {self.state_dir} is already started")
        build.ensure_packages(build.REDIS_PACKAGES)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        existing = read_records(self.state_dir).get("redis")
        if existing is not None:
            if existing.alive():
                raise ComponentError(
                    f"a redis is already running in {self.state_dir} (pid {existing.pid}); "
                    "use RedisServer.attach()"
                )
            stop_record(self.state_dir, existing)
        port = self._port or free_port()
        data = self.state_dir / "redis-data"
        data.mkdir(exist_ok=True)
        proc, record = spawn(
            "redis",
            [
                _REDIS_SERVER,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(data),
                "--daemonize",
                "no",
                "--protected-mode",
                "yes",
            ],
            state_dir=self.state_dir,
            die_with_parent=self._die_with_parent,
        )
        self._proc, self._record, self._port = proc, record, port
        try:
            wait_until(
                lambda: _ping(port),
                name="redis",
                what="PING reply",
                log=self.state_dir / "redis.log",
                timeout=self._startup_timeout,
                proc=proc,
            )
        except BaseException:
            self.stop()
            raise
        (self.state_dir / "redis.json").write_text(json.dumps({"port": port, "url": self.url}))
        return self

    def stop(self) -> None:
        if self._record is not None:
            stop_record(self.state_dir, self._record, proc=self._proc)
        self._record = self._proc = None
        with contextlib.suppress(FileNotFoundError):
            (self.state_dir / "redis.json").unlink()

    @staticmethod
    def stop_dir(state_dir: str | os.PathLike[str]) -> bool:
        """Stop the redis recorded in ``state_dir``; True when there was one."""
        directory = Path(state_dir).absolute()
        record = read_records(directory).get("redis")
        with contextlib.suppress(FileNotFoundError):
            (directory / "redis.json").unlink()
        if record is None:
            return False
        stop_record(directory, record)
        return True


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False
