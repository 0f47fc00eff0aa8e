"""The throwaway Redis server."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import redis.asyncio

from runstate_dev.redis import RedisServer
from tests.components import start_redis


@pytest.fixture
def redis_server(tmp_path: Path) -> RedisServer:
    return start_redis(tmp_path)


async def test_redis_server_serves_and_stops(redis_server: RedisServer, tmp_path: Path) -> None:
    port = redis_server.port
    assert redis_server.url == f"redis://127.0.0.1:{port}/0"
    conn = redis.asyncio.from_url(redis_server.url)
    try:
        await conn.set("k", "v")
        assert await conn.get("k") == b"v"
        assert (await conn.config_get("save"))["save"] == ""  # no persistence
    finally:
        await conn.aclose()
    attached = RedisServer.attach(tmp_path)
    assert attached is not None and attached.port == port
    redis_server.stop()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
    assert RedisServer.attach(tmp_path) is None
