"""Fixtures for the state-store tests: a real redis-server, and one `store` per implementation.

Owns a small local redis-server helper so these tests do not depend on the dev cluster code.
With CI=true a missing redis-server fails the run; it must never silently skip there.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio

from runstate.stores import AsyncStateStore, InMemoryStateStore, RedisStateStore
from tests.availability import unavailable

#: History cap the contract tests run with (small, so capping is cheap to exercise).
TEST_HISTORY_CAP = 5

Advance = Callable[[float], Awaitable[None]]


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def find_redis_server() -> str | None:
    """RUNSTATE_REDIS_SERVER if set (an explicit choice: no fallback), else redis-server."""
    explicit = os.environ.get("RUNSTATE_REDIS_SERVER")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    found = shutil.which("redis-server")
    if found:
        return found
    return "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None


class LocalRedisServer:
    """A throwaway redis-server on 127.0.0.1, no persistence."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, attempts: int = 3, timeout: float = 10.0) -> None:
        # The free port can be taken between probing and binding; try a few.
        last_error = ""
        for _ in range(attempts):
            self.port = free_port()
            log_path = self.workdir / f"redis-{self.port}.log"
            with log_path.open("wb") as log:
                self.proc = subprocess.Popen(
                    [
                        self.binary,
                        "--port", str(self.port),
                        "--bind", "127.0.0.1",
                        "--save", "",
                        "--appendonly", "no",
                        "--dir", str(self.workdir),
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )  # fmt: skip
            if self._wait_until_ready(timeout):
                return
            last_error = log_path.read_text(errors="replace")[-2000:]
            self.stop()
        raise RuntimeError(f"redis-server did not start on 127.0.0.1: {last_error}")

    def _wait_until_ready(self, timeout: float) -> bool:
        assert self.proc is not None
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=0.5)
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    return False
                try:
                    if client.ping():
                        return True
                except redis.ConnectionError:
                    time.sleep(0.05)
            return False
        finally:
            client.close()

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.proc = None


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a redis-server started for this test session."""
    binary = find_redis_server()
    if binary is None:
        unavailable("redis-server is not installed (apt-get install redis-server)")
    server = LocalRedisServer(binary, tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
async def raw_redis(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    """A plain client on the test server, to look at keys the way an operator admin would."""
    client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


class FakeClock:
    """A monotonic clock that only moves when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["memory", "redis"])
def store_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    if kind == "redis":
        # Start the server here, outside the event loop, rather than from the async fixture.
        request.getfixturevalue("redis_url")
    return kind


@pytest.fixture
async def store(
    store_kind: str, clock: FakeClock, request: pytest.FixtureRequest
) -> AsyncIterator[AsyncStateStore]:
    """The store under test: the contract suite runs once per implementation."""
    if store_kind == "memory":
        yield InMemoryStateStore(history_cap=TEST_HISTORY_CAP, clock=clock)
        return
    url: str = request.getfixturevalue("redis_url")
    async with redis.asyncio.Redis.from_url(url) as raw:
        await raw.flushdb()
    redis_store = RedisStateStore.from_url(url, history_cap=TEST_HISTORY_CAP)
    try:
        yield redis_store
    finally:
        await redis_store.aclose()


@pytest.fixture
def advance(store: AsyncStateStore, clock: FakeClock) -> Advance:
    """Let `seconds` pass for the store: the fake clock for memory, real time for Redis."""

    async def _advance(seconds: float) -> None:
        if isinstance(store, InMemoryStateStore):
            clock.advance(seconds)
        else:
            await asyncio.sleep(seconds)

    return _advance
