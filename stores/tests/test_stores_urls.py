"""Store URLs: the syntax of the three topologies, and errors that never show the URL or its
password. Parsing does no I/O, so nothing here needs a server."""

from __future__ import annotations

import traceback

import pytest

from runstate_stores import RedisStateStore, redact_url, store_from_url
from runstate_stores._urls import RedisTarget, parse_redis_url

PASSWORD = "hunter2"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "redis+sentinel://:pw@s1:26380,s2,[::1]:26381/mymaster",
            RedisTarget(
                topology="sentinel",
                tls=False,
                hosts=(("s1", 26380), ("s2", 26379), ("::1", 26381)),
                service="mymaster",
                password="pw",
            ),
        ),
        (
            "rediss+sentinel://app:p%40ss%2Fw%3Ard@sentinel.redis:26379/my%20svc/3"
            "?sentinel_password=s%26p&client_name=runstate",
            RedisTarget(
                topology="sentinel",
                tls=True,
                hosts=(("sentinel.redis", 26379),),
                service="my svc",
                db=3,
                username="app",
                password="p@ss/w:rd",
                sentinel_password="s&p",
                client_name="runstate",
            ),
        ),
        (
            "redis+sentinel://s1/mymaster/",  # a trailing slash means db 0
            RedisTarget(topology="sentinel", tls=False, hosts=(("s1", 26379),), service="mymaster"),
        ),
        (
            "redis+cluster://:pw@n1:7000,n2:7001,n3",
            RedisTarget(
                topology="cluster",
                tls=False,
                hosts=(("n1", 7000), ("n2", 7001), ("n3", 6379)),
                password="pw",
            ),
        ),
        (
            "rediss+cluster://n1:7000/?client_name=x",
            RedisTarget(topology="cluster", tls=True, hosts=(("n1", 7000),), client_name="x"),
        ),
        (
            "redis+cluster://:@n1",  # an empty password is a password
            RedisTarget(topology="cluster", tls=False, hosts=(("n1", 6379),), password=""),
        ),
    ],
)
def test_good_urls(url: str, expected: RedisTarget) -> None:
    assert parse_redis_url(url) == expected


@pytest.mark.parametrize(
    ("url", "password"),
    [
        ("redis://:p%40ss@host:6379/0", "p@ss"),
        ("rediss://user:pw@host:6380/1", "pw"),
        ("unix://:pw@/run/redis.sock?db=2", "pw"),
    ],
)
def test_single_server_urls_go_to_redis_py_as_they_are(url: str, password: str) -> None:
    target = parse_redis_url(url)
    assert (target.topology, target.url, target.password) == ("single", url, password)
    assert password in target.secrets()


def test_a_target_hides_its_secrets() -> None:
    target = parse_redis_url(f"redis+sentinel://:{PASSWORD}@s1/m?sentinel_password={PASSWORD}9")
    assert PASSWORD not in repr(target)
    assert set(target.secrets()) == {PASSWORD, f"{PASSWORD}9"}
    assert target.secrets()[0] == f"{PASSWORD}9"  # longest first


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        (f"redis+sentinel://:{PASSWORD}@s1:26379", "service name is missing"),
        (f"redis+sentinel://:{PASSWORD}@s1:26379/", "service name is missing"),
        (f"redis+sentinel://:{PASSWORD}@s1/mymaster/x{PASSWORD}", "only a db number"),
        (f"redis+sentinel://:{PASSWORD}@s1/mymaster/1/2", "only a db number"),
        (f"redis+sentinel://:{PASSWORD}@s1:{PASSWORD}/m", "port of host 1"),
        (f"redis+sentinel://:{PASSWORD}@s1,s2:70000/m", "port of host 2"),
        (f"redis+sentinel://:{PASSWORD}@s1,,s3/m", "host 2 is empty"),
        (f"redis+sentinel://:{PASSWORD}@/m", "host 1 is empty"),
        (f"redis+sentinel://:{PASSWORD}@[::1/m", "IPv6"),
        (f"redis+sentinel://:{PASSWORD}@s1/m?{PASSWORD}", "option 1 is unknown"),
        (f"redis+sentinel://:{PASSWORD}@s1/m?client_name=a&x={PASSWORD}", "option 2 is unknown"),
        (f"redis+sentinel://:{PASSWORD}@s1/m?sentinel_password=", "'sentinel_password' is empty"),
        (
            f"redis+sentinel://:x@s1/m?client_name={PASSWORD}&client_name=b",
            "'client_name' is given twice",
        ),
        (f"redis+sentinel://{PASSWORD}@s1/m", "':password@'"),
        (f"redis+cluster://:{PASSWORD}@n1/0", "no databases"),
        (f"redis+cluster://:{PASSWORD}@n1?sentinel_password={PASSWORD}", "option 1 is unknown"),
        (f"redis+cluster://:{PASSWORD}@n 1", "whitespace"),
        (f"redis+cluster://:{PASSWORD}#x@n1", "fragment"),
        (f"redis://:{PASSWORD}@host:{PASSWORD}/0", "port must be a number"),
        (f"redis://:{PASSWORD}@:6379/0", "host is missing"),
        (f"unix://:{PASSWORD}@", "socket path is missing"),
        (f"redis+memcache://:{PASSWORD}@h", "scheme 'redis+memcache' is not supported"),
        (f"{PASSWORD}@host:6379", "scheme '(none)'"),
    ],
)
def test_bad_urls_name_the_problem_and_never_the_url(url: str, problem: str) -> None:
    with pytest.raises(ValueError) as rejected:
        parse_redis_url(url)
    message = str(rejected.value)
    assert problem in message
    assert PASSWORD not in message
    assert url not in message
    # Nor in a chained exception a traceback would print.
    assert PASSWORD not in "".join(traceback.format_exception(rejected.value))


@pytest.mark.parametrize(
    ("url", "where"),
    [
        (
            f"redis+sentinel://:{PASSWORD}@10.0.0.1,10.0.0.2:26380/mymaster/2",
            "redis store (sentinel service mymaster via 10.0.0.1:26379,10.0.0.2:26380)",
        ),
        (
            f"rediss+sentinel://:{PASSWORD}@s1/m?sentinel_password={PASSWORD}",
            "redis store (sentinel service m via s1:26379)",
        ),
        (
            f"redis+cluster://:{PASSWORD}@10.0.0.1:7000,10.0.0.2:7001,10.0.0.3,10.0.0.4",
            "redis store (cluster via 10.0.0.1:7000,10.0.0.2:7001,10.0.0.3:6379,…)",
        ),
        (f"unix://:{PASSWORD}@/run/redis.sock?db=2", "redis store at unix:/run/redis.sock db 2"),
    ],
)
async def test_the_factory_builds_every_topology_without_connecting(url: str, where: str) -> None:
    # Building does no I/O (nobody listens at these addresses); the store names where it is.
    store = store_from_url(url)
    assert isinstance(store, RedisStateStore)
    assert repr(store) == f"RedisStateStore({where}, prefix='runstate')"
    assert PASSWORD not in repr(store)
    await store.aclose()


def test_the_factory_error_lists_the_schemes_it_knows() -> None:
    with pytest.raises(ValueError) as rejected:
        store_from_url(f"http://:{PASSWORD}@redis:6379")
    message = str(rejected.value)
    assert "'http'" in message and PASSWORD not in message
    for scheme in ("redis://", "rediss://", "unix://", "redis+sentinel://", "redis+cluster://"):
        assert scheme in message


def test_redis_py_url_errors_are_redacted() -> None:
    # redis-py checks the query options of a single-server URL itself.
    with pytest.raises(ValueError) as rejected:
        store_from_url(f"redis://:{PASSWORD}@host:6379/0?socket_timeout={PASSWORD}")
    assert "redis URL" in str(rejected.value)
    assert PASSWORD not in "".join(traceback.format_exception(rejected.value))


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            f"redis+sentinel://:{PASSWORD}@s1:26379,s2/m/0?sentinel_password={PASSWORD}",
            "redis+sentinel://:***@s1:26379,s2/m/0?sentinel_password=***",
        ),
        (
            f"redis+cluster://app:{PASSWORD}@n1:7000,n2:7001?client_name=rs&{PASSWORD}",
            "redis+cluster://app:***@n1:7000,n2:7001?client_name=rs&***",
        ),
        (f"redis://{PASSWORD}@host:6379/0", "redis://***@host:6379/0"),
        (f"redis://:{PASSWORD}@host:bad/0#{PASSWORD}", "redis://:***@host:bad/0"),
        (
            f"rediss://host:6380/1?password={PASSWORD}&db=1",
            "rediss://host:6380/1?password=***&db=1",
        ),
        ("unix:///run/redis.sock?db=2", "unix:///run/redis.sock?db=2"),
        (f"{PASSWORD}", "***"),
    ],
)
def test_redact_url_keeps_where_and_hides_secrets(url: str, shown: str) -> None:
    assert redact_url(url) == shown
