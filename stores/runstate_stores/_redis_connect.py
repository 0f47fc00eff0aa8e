"""Building, naming and closing the redis-py clients of a `RedisStateStore`.

Owns the connection options (timeouts, retries with backoff, pool size, decoding) and applies
them alike to the async client (redis.asyncio) and the blocking one (redis), for each topology
parsed by `_urls`: one server, Sentinel (`Sentinel.master_for`), Redis Cluster. It also says
where a client points (host:port, for messages) and which values of its configuration are
secrets to redact.

It must not send commands (building a blocking `RedisCluster` is the one exception: redis-py
connects it at once, so the store builds that client lazily) and must never put a password
into a description.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.retry
import redis.asyncio.sentinel
import redis.cluster
import redis.retry
import redis.sentinel
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff

from ._urls import RedisTarget

__all__ = [
    "AsyncClient",
    "ConnectOptions",
    "SyncClient",
    "aclose_client",
    "async_client",
    "client_secrets",
    "close_client",
    "describe",
    "sync_client",
]

AsyncClient = redis.asyncio.Redis | redis.asyncio.RedisCluster
SyncClient = redis.Redis | redis.RedisCluster

_MAX_NAMED_HOSTS = 3  # a description lists this many hosts, then "…"


@dataclass(frozen=True)
class ConnectOptions:
    """How a store built from a URL connects, whichever the topology and flavour.

    Connection errors and timeouts are retried `retries` times with jittered exponential
    backoff. Retrying a commit is safe: if the first attempt did land, the version fence turns
    the replay into a `VersionConflict` instead of a second write.
    """

    socket_timeout: float = 5.0
    max_connections: int = 50
    retries: int = 3


def _backoff() -> ExponentialWithJitterBackoff:
    return ExponentialWithJitterBackoff(base=0.05, cap=1.0)


def _connection_kwargs(target: RedisTarget, options: ConnectOptions) -> dict[str, Any]:
    """Options of a connection to a Redis data node (not a sentinel)."""
    kwargs: dict[str, Any] = {
        "socket_timeout": options.socket_timeout,
        "socket_connect_timeout": options.socket_timeout,
        "decode_responses": True,
    }
    if target.username:
        kwargs["username"] = target.username
    if target.password is not None:
        kwargs["password"] = target.password
    if target.client_name:
        kwargs["client_name"] = target.client_name
    return kwargs


def _pool_kwargs(
    options: ConnectOptions, retry: redis.retry.Retry | redis.asyncio.retry.Retry
) -> dict[str, Any]:
    """Options of the blocking pool of a single server, the same for both flavours."""
    return {
        "max_connections": options.max_connections,
        "timeout": options.socket_timeout,
        "socket_timeout": options.socket_timeout,
        "socket_connect_timeout": options.socket_timeout,
        "retry": retry,
        "health_check_interval": 30,
        "decode_responses": True,
    }


def _sentinel_kwargs(
    target: RedisTarget,
    options: ConnectOptions,
    retry: redis.retry.Retry | redis.asyncio.retry.Retry,
) -> dict[str, Any]:
    """Options of a connection to a sentinel.

    `retry` must not retry: the master lookup asks the next sentinel when one fails, and the
    connection to the master retries the whole lookup. redis-py's default (10 retries per
    sentinel) would turn an outage or a wrong password into half a minute per call.
    """
    kwargs: dict[str, Any] = {
        "socket_timeout": options.socket_timeout,
        "socket_connect_timeout": options.socket_timeout,
        "retry": retry,
    }
    if target.sentinel_password:
        kwargs["password"] = target.sentinel_password
    if target.tls:
        kwargs["ssl"] = True
    return kwargs


def async_client(target: RedisTarget, options: ConnectOptions) -> AsyncClient:
    """The redis.asyncio client for `target`; it connects on first use."""
    retry = redis.asyncio.retry.Retry(_backoff(), options.retries)
    if target.topology == "single":
        # A blocking pool makes a burst of callers wait for a connection instead of failing
        # with "Too many connections".
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            target.url, **_pool_kwargs(options, retry)
        )
        return redis.asyncio.Redis.from_pool(pool)
    kwargs = _connection_kwargs(target, options)
    if target.topology == "sentinel":
        sentinel = redis.asyncio.sentinel.Sentinel(  # type: ignore[no-untyped-call]
            list(target.hosts),
            sentinel_kwargs=_sentinel_kwargs(
                target, options, redis.asyncio.retry.Retry(NoBackoff(), 0)
            ),
            retry=retry,
            ssl=target.tls,
            **kwargs,
        )
        master: redis.asyncio.Redis = sentinel.master_for(target.service, db=target.db)
        return master
    return redis.asyncio.RedisCluster(
        startup_nodes=[redis.asyncio.cluster.ClusterNode(h, p) for h, p in target.hosts],
        retry=retry,
        max_connections=options.max_connections,
        ssl=target.tls,
        **kwargs,
    )


def sync_client(target: RedisTarget, options: ConnectOptions) -> SyncClient:
    """The blocking client for `target`. A cluster client connects here, the others on use."""
    retry = redis.retry.Retry(_backoff(), options.retries)
    if target.topology == "single":
        pool = redis.BlockingConnectionPool.from_url(target.url, **_pool_kwargs(options, retry))
        return redis.Redis.from_pool(pool)
    kwargs = _connection_kwargs(target, options)
    if target.topology == "sentinel":
        # The blocking Sentinel and ClusterNode are untyped in redis-py.
        sentinel = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call]
            list(target.hosts),
            sentinel_kwargs=_sentinel_kwargs(target, options, redis.retry.Retry(NoBackoff(), 0)),
            retry=retry,
            ssl=target.tls,
            **kwargs,
        )
        master: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
            target.service, db=target.db
        )
        return master
    return redis.RedisCluster(
        startup_nodes=[
            redis.cluster.ClusterNode(h, p)  # type: ignore[no-untyped-call]
            for h, p in target.hosts
        ],
        retry=retry,
        max_connections=options.max_connections,
        ssl=target.tls,
        **kwargs,
    )


# -- naming, secrets, closing ----------------------------------------------------------------


def _hosts(pairs: Iterable[tuple[object, object]]) -> str:
    names = [f"{host}:{port}" for host, port in pairs]
    if len(names) > _MAX_NAMED_HOSTS:
        names = [*names[:_MAX_NAMED_HOSTS], "…"]
    return ",".join(names)


def _cluster_nodes(client: redis.RedisCluster | redis.asyncio.RedisCluster) -> list[Any]:
    if isinstance(client, redis.asyncio.RedisCluster):
        return list(client.startup_nodes)
    return list(client.nodes_manager.startup_nodes.values())


def _sentinel_manager(client: AsyncClient | SyncClient) -> Any:
    """The `Sentinel` behind a `master_for` client, or None."""
    if isinstance(client, redis.Redis | redis.asyncio.Redis):
        return getattr(client.connection_pool, "sentinel_manager", None)
    return None


def describe(client: AsyncClient | SyncClient) -> str:
    """Where the store is, for messages: host:port, never credentials."""
    if isinstance(client, redis.RedisCluster | redis.asyncio.RedisCluster):
        nodes = _cluster_nodes(client)
        via = _hosts((node.host, node.port) for node in nodes)
        return f"redis store (cluster via {via})" if via else "redis store (cluster)"
    pool = client.connection_pool
    sentinel = _sentinel_manager(client)
    if sentinel is not None:
        via = _hosts(
            (
                s.connection_pool.connection_kwargs.get("host"),
                s.connection_pool.connection_kwargs.get("port"),
            )
            for s in sentinel.sentinels
        )
        service = getattr(pool, "service_name", "?")
        return f"redis store (sentinel service {service} via {via})"
    kwargs = pool.connection_kwargs
    db = kwargs.get("db", 0)
    if kwargs.get("path"):
        return f"redis store at unix:{kwargs['path']} db {db}"
    return f"redis store at {kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{db}"


def client_secrets(client: AsyncClient | SyncClient) -> set[str]:
    """Passwords in the client's configuration, to redact from messages."""
    if isinstance(client, redis.asyncio.RedisCluster):
        configs = [client.connection_kwargs]
    elif isinstance(client, redis.RedisCluster):
        configs = [client.nodes_manager.connection_kwargs]
    else:
        configs = [client.connection_pool.connection_kwargs]
        sentinel = _sentinel_manager(client)
        if sentinel is not None:
            configs.append(sentinel.sentinel_kwargs)
    return {str(v) for c in configs for k in ("password", "ssl_password") if (v := c.get(k))}


async def aclose_client(client: AsyncClient) -> None:
    """Close the client and, behind Sentinel, its connections to the sentinels."""
    sentinel = _sentinel_manager(client)
    await client.aclose()
    if sentinel is not None:
        await sentinel.aclose()


def close_client(client: SyncClient) -> None:
    sentinel = _sentinel_manager(client)
    client.close()
    if sentinel is not None:
        sentinel.close()
